"""A copy of the digits model's FP32 ONNX with a real INT8 calibration (minmax, TensorRT layout) beside it."""

from __future__ import annotations

import shutil

import pytest

from eca_deploy.artifacts import manifest_path
from eca_deploy.cli.main import main


@pytest.fixture(scope="session")
def calibrated_digits(digits, tmp_path_factory):
    """Folder with eca_resnet18.onnx (+ manifest), eca_resnet18.int8.onnx and eca_resnet18.calib.json, made by
    `eca-deploy quantize` on 16 real digit images (about 3 s); read-only."""
    folder = tmp_path_factory.mktemp("calibrated")
    for path in (digits.onnx, manifest_path(digits.onnx)):
        shutil.copy(path, folder / path.name)
    onnx = folder / digits.onnx.name
    assert main(["quantize", "--onnx", str(onnx), "--precision", "int8", "--target", "tensorrt", "--calib-data",
                 str(digits.calib_dir), "--calib-count", "16", "--calib-method", "minmax", "--check-count",
                 "16"]) == 0
    return folder
