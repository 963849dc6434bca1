"""PyTorch: the eager backend (the reference every artifact is judged against) and the torch: artifact kind."""
