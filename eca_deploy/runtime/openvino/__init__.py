"""OpenVINO on the CPU: the backend and the artifact kind (an IR .xml, or openvino:<file.onnx>)."""
