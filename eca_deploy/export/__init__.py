"""torch -> ONNX export and simplification."""
