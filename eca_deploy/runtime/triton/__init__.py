"""A running Triton Inference Server as one more backend (client side), and ``eca-deploy serve`` (server side).

tritonclient and pytriton are imported here only, and only when used: the rest of the toolchain works
where they are absent.
"""
