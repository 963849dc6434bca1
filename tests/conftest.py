"""Shared fixtures."""

import pytest

from eca_deploy.testing.digits import Digits, build_digits


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Digits:
    """A trained ECA-ResNet-18 on scikit-learn's handwritten digits, with ImageFolder calib/val splits on disk.

    Built once per test session (about half a minute on two cores); treat everything in it as read-only.
    """
    return build_digits(tmp_path_factory.mktemp("digits"))
