"""fedsilo: cross-silo federated learning. The data stays, the model moves."""

__version__ = "0.1.0"
