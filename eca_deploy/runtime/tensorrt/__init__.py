"""Everything TensorRT and pycuda: build plan, builder, trtexec command, compatibility rules, environment probing,
implicit calibrator and engine backend. The only package that imports tensorrt or pycuda (lazily)."""
