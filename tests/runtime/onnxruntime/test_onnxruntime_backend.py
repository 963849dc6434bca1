"""The onnxruntime backend's providers."""

import pytest

from eca_deploy.errors import MissingDependencyError
from eca_deploy.runtime.registry import open_backend


def test_a_provider_that_is_not_installed_is_a_one_line_error(digits):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has onnxruntime's CUDA provider")
    with pytest.raises(MissingDependencyError, match="CUDAExecutionProvider is not installed"):
        open_backend(str(digits.onnx), provider="cuda")
