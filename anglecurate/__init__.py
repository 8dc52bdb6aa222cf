"""anglecurate: rank prompt datasets for RL fine-tuning by layer-wise angle concentration."""

__version__ = "0.1.0"
