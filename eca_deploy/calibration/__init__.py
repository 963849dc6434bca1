"""Calibration data, statistics and INT8 Q/DQ placement; FP16/INT8 quantization of an exported ONNX."""
