"""onnxruntime: the backend on its CPU, CUDA or TensorRT execution provider, and the ONNX artifact kind."""
