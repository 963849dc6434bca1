"""Inference backends (torch, onnxruntime, ...) and the registry that opens one from what the user typed."""
