"""Data: manifests, splits, features, built-in synthetic scenes."""
