"""neo: train GPT-Neo-style language models on JAX."""

__version__ = "0.1.0"
