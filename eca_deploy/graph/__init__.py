"""Low-level ONNX helpers below every stage: load and summarise a graph, onnxruntime sessions, output comparison."""
