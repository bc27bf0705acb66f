"""Differential privacy: client-level DP on updates, accounting, and the job spec's part.

Sample-level DP-SGD lives in `fedsilo.privacy.dpsgd`, imported on its own because it needs
torch and Opacus (the client extra), which control-plane images do not install.
"""

from fedsilo.privacy.accountant import (
    PrivacyAccountant,
    RecordedRounds,
    epsilon_after,
    noise_for_target_epsilon,
)
from fedsilo.privacy.client_dp import (
    PrivatizedUpdate,
    add_gaussian_noise,
    clip_update,
    noise_std_per_client,
    privatize_update,
)
from fedsilo.privacy.config import DifferentialPrivacy

__all__ = [
    "DifferentialPrivacy",
    "PrivacyAccountant",
    "PrivatizedUpdate",
    "RecordedRounds",
    "add_gaussian_noise",
    "clip_update",
    "epsilon_after",
    "noise_for_target_epsilon",
    "noise_std_per_client",
    "privatize_update",
]
