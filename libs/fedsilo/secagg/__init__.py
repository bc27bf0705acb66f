"""Secure aggregation (Bonawitz et al. 2017, SecAgg+ graph of Bell et al. 2020): pure maths.

No networking: a client agent and the aggregator call these functions and move the bytes.
"""

from fedsilo.secagg.graph import (
    neighbours,
    recommended_degree,
    recommended_threshold,
    share_holders,
)
from fedsilo.secagg.keys import ClientKeys, agree, agreement_context
from fedsilo.secagg.masking import (
    DanglingPair,
    apply_masks,
    mask_update,
    pairwise_seed,
    recover_dangling_pairs,
    ring_add_into,
    unmask_sum,
)
from fedsilo.secagg.prg import (
    MASK_GENERATOR,
    SEED_BYTES,
    MaskStream,
    check_mask_generator,
    expand_mask,
    new_seed,
)
from fedsilo.secagg.protocol import (
    KEY_ALGORITHM,
    AdvertisedKeys,
    ClientRound,
    ProtocolError,
    Reveal,
    RoundConfig,
    SealedShare,
    ServerRound,
    Unmasking,
)
from fedsilo.secagg.quantize import RingSpec, dequantize_sum, quantization_step, quantize
from fedsilo.secagg.shamir import Share, combine_shares, share_secret

__all__ = [
    "KEY_ALGORITHM",
    "MASK_GENERATOR",
    "SEED_BYTES",
    "AdvertisedKeys",
    "ClientKeys",
    "ClientRound",
    "DanglingPair",
    "MaskStream",
    "ProtocolError",
    "Reveal",
    "RingSpec",
    "RoundConfig",
    "SealedShare",
    "ServerRound",
    "Share",
    "Unmasking",
    "agree",
    "agreement_context",
    "apply_masks",
    "check_mask_generator",
    "combine_shares",
    "dequantize_sum",
    "expand_mask",
    "mask_update",
    "neighbours",
    "new_seed",
    "pairwise_seed",
    "quantization_step",
    "quantize",
    "recommended_degree",
    "recommended_threshold",
    "recover_dangling_pairs",
    "ring_add_into",
    "share_holders",
    "share_secret",
    "unmask_sum",
]
