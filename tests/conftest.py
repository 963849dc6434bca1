"""Shared fixtures."""

import pytest

from eca_deploy.testing.digits import Digits, build_digits


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Digits:
    """A trained ECA-ResNet-18 on scikit-learn's handwritten digits, with ImageFolder calib/val splits on disk.

    Built once per test session (about half a minute on two cores); treat everything in it as read-only.
    """
    return build_digits(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """A folder of 8 real photos (crops of scikit-learn's sample images, JPEG and PNG); read-only."""
    from eca_deploy.testing.photos import write_photos

    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder)
    return folder
