"""The PyTorch backend, the reference every other artifact is judged against."""


def test_the_torch_reference_computes_in_fp32_and_gives_the_tf32_flags_back():
    """TF32 would make the reference's own error, by which FP32 candidates are judged, TF32's."""
    import torch

    from eca_deploy.runtime.torch.backend import full_fp32

    flags = lambda: (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)  # noqa: E731
    before = flags()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with full_fp32(torch):
            assert flags() == (False, False)
        assert flags() == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
