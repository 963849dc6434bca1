"""What serves a verified artifact: a Triton model repository, a DeepStream nvinfer config."""
