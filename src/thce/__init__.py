"""thce: rare acoustic event detection with imbalanced data (triple-header cross-entropy embeddings)."""

__version__ = "0.1.0"
