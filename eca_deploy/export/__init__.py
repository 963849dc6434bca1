"""torch -> ONNX export, graph inspection and simplification."""
