"""Aggregation maths (pure functions over coordinate ranges) and named algorithms."""

from fedsilo.algorithms.aggregate import normalized_weights, weighted_average, weighted_sum_into
from fedsilo.algorithms.registry import (
    ALGORITHM_NAMES,
    AlgorithmParams,
    proximal_mu,
    server_optimizer,
)
from fedsilo.algorithms.server_optimizers import ServerOptimizer

__all__ = [
    "ALGORITHM_NAMES",
    "AlgorithmParams",
    "ServerOptimizer",
    "normalized_weights",
    "proximal_mu",
    "server_optimizer",
    "weighted_average",
    "weighted_sum_into",
]
