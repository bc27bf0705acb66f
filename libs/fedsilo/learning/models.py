"""The model zoo: a job names a model, each site builds it for its dataset's width."""

from __future__ import annotations

import torch
from torch import nn

from fedsilo.jobs import ModelSpec


def build_model(
    spec: ModelSpec, in_features: int, num_outputs: int = 1, seed: int = 0
) -> nn.Module:
    """The model `spec` names, initialised identically for the same seed wherever it is built.

    The global random state is left as it was: initialisation draws from a forked generator.
    """
    if in_features < 1:
        raise ValueError(f"in_features must be at least 1, got {in_features}")
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be at least 1, got {num_outputs}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        match spec.name:
            case "logistic_regression" | "linear":
                return nn.Sequential(nn.Linear(in_features, num_outputs))
            case "cox":
                # The partial likelihood does not see an intercept: the risk score has none.
                return nn.Sequential(nn.Linear(in_features, num_outputs, bias=False))
            case "mlp":
                layers: list[nn.Module] = []
                width = in_features
                for hidden in spec.hidden:
                    layers += [nn.Linear(width, hidden), nn.ReLU()]
                    if spec.dropout > 0:
                        layers.append(nn.Dropout(spec.dropout))
                    width = hidden
                layers.append(nn.Linear(width, num_outputs))
                return nn.Sequential(*layers)
    raise ValueError(f"unknown model '{spec.name}'")
