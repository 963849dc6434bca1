"""Runtime: the TensorRT build stage, inference backends behind one base class, and the harness above them."""
