"""Packed Paillier encryption of model updates (BatchCrypt, Zhang et al. 2020): pure functions.

Clients call encrypt_update (with r^n precomputed while they train), aggregator replicas
multiply_range over their index ranges, and the keymanager checks (verify_sample, canary_ok)
and decrypts (decrypt_sum).
"""

from fedsilo.paillier.cipher import (
    CANARY,
    canary_ok,
    ciphertext_bytes,
    decrypt_sum,
    encrypt_update,
    multiply_range,
    parse_ciphertexts,
    private_key_from_dict,
    private_key_to_dict,
    public_key_from_bytes,
    public_key_to_bytes,
    serialize_ciphertexts,
    verify_sample,
)
from fedsilo.paillier.packing import PackingSpec, dequantize_sum, pack, quantize, unpack
from fedsilo.paillier.randomness import PrecomputedRandomness, compute_randomness, encrypt_with

__all__ = [
    "CANARY",
    "PackingSpec",
    "PrecomputedRandomness",
    "canary_ok",
    "ciphertext_bytes",
    "compute_randomness",
    "decrypt_sum",
    "dequantize_sum",
    "encrypt_update",
    "encrypt_with",
    "multiply_range",
    "pack",
    "parse_ciphertexts",
    "private_key_from_dict",
    "private_key_to_dict",
    "public_key_from_bytes",
    "public_key_to_bytes",
    "quantize",
    "serialize_ciphertexts",
    "unpack",
    "verify_sample",
]
