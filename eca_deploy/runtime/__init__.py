"""Runtime: backends (torch, onnxruntime, TensorRT), comparisons, benchmarks, reports."""
