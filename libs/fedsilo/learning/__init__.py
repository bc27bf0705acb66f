"""Client-side learning with PyTorch: the model zoo, the flat-vector contract, training."""

from fedsilo.learning.models import build_model
from fedsilo.learning.params import (
    TensorEntry,
    flatten,
    load_flat,
    manifest,
    manifest_from_json,
    manifest_to_json,
    state_dict_from_flat,
    vector_size,
)
from fedsilo.learning.train import (
    EvalResult,
    TrainResult,
    evaluate,
    pool_train_splits,
    predict,
    train_centralized,
    train_local,
)

__all__ = [
    "EvalResult",
    "TensorEntry",
    "TrainResult",
    "build_model",
    "evaluate",
    "flatten",
    "load_flat",
    "manifest",
    "manifest_from_json",
    "manifest_to_json",
    "pool_train_splits",
    "predict",
    "state_dict_from_flat",
    "train_centralized",
    "train_local",
    "vector_size",
]
