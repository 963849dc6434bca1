"""eca-deploy: take trained ECA networks from PyTorch to ONNX, FP16/INT8 and TensorRT engines."""

__version__ = "0.1.0"
