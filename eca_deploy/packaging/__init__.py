"""Packaging: what a serving stack needs from a verified artifact (Triton model repository, DeepStream config)."""
