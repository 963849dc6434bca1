"""Shared fixtures."""

import pytest
import torch

from eca_deploy.data.sources import load_dataset
from eca_deploy.testing.digits import Digits, build_digits
from eca_deploy.testing.outliers import OutlierModel, build_outlier_model


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Digits:
    """A trained ECA-ResNet-18 on scikit-learn's handwritten digits, with ImageFolder calib/val splits on disk.

    Built once per test session (about half a minute on two cores); treat everything in it as read-only.
    """
    return build_digits(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def outliers(digits, tmp_path_factory) -> OutlierModel:
    """The digits model with two planted outlier channels: same FP32 function, per-tensor INT8 breaks."""
    images = next(load_dataset(digits.calib_dir, digits.imgsz, 64, 0).batches(64))[0]
    return build_outlier_model(digits.model, digits.checkpoint, digits.imgsz, torch.from_numpy(images),
                               tmp_path_factory.mktemp("outliers"))
