"""Shared fixtures, and the CPU the suite ran on in its header."""

import os
import tempfile
from pathlib import Path

import pytest
import torch

from eca_deploy.data.sources import load_dataset
from eca_deploy.graph.cpu import describe_features, this_cpu_features
from eca_deploy.testing.digits import Digits, cached_digits
from eca_deploy.testing.exports import RandomExports
from eca_deploy.testing.outliers import OutlierModel, build_outlier_model


# Under pytest-xdist the workers share the cores: torch's pool (and OpenMP's, in the CLI runs the tests start) sized
# for the whole machine in every worker made them fight for it (default tier on 2 workers, 2 cores: 87-96 s, split
# evenly 76-81 s).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    os.environ.setdefault("OMP_NUM_THREADS", _share)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_report_header(config):
    """INT8 results on the CPU differ with its vector features (graph/cpu.py): every run says which it had."""
    return f"CPU vector features: {describe_features(this_cpu_features())}"


def _cache_dir(config) -> Path:
    """$ECA_DEPLOY_TEST_CACHE, else pytest's cache folder, else the temp folder (pytest -p no:cacheprovider)."""
    if os.environ.get("ECA_DEPLOY_TEST_CACHE"):
        return Path(os.environ["ECA_DEPLOY_TEST_CACHE"])
    cache = getattr(config, "cache", None)
    return cache.mkdir("eca-deploy") if cache is not None else Path(tempfile.gettempdir()) / "eca-deploy-test-cache"


@pytest.fixture(scope="session")
def digits(request) -> Digits:
    """A trained ECA-ResNet-18 on scikit-learn's handwritten digits, with ImageFolder calib/val splits on disk.

    Trained (deterministically, about half a minute on two cores) once per version of its code and reused by
    later runs from the cache folder (eca_deploy/testing/digits.py: cached_digits); treat it as read-only.
    """
    return cached_digits(_cache_dir(request.config))


@pytest.fixture(scope="session")
def outliers(digits, tmp_path_factory) -> OutlierModel:
    """The digits model with two planted outlier channels: same FP32 function, per-tensor INT8 breaks."""
    images = next(load_dataset(digits.calib_dir, digits.imgsz, 64, 0).batches(64))[0]
    return build_outlier_model(digits.model, digits.checkpoint, digits.imgsz, torch.from_numpy(images),
                               tmp_path_factory.mktemp("outliers"))


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """A folder of 8 real photos (crops of scikit-learn's sample images, JPEG and PNG); read-only."""
    from eca_deploy.testing.photos import write_photos

    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder)
    return folder


@pytest.fixture(scope="session")
def random_exports(tmp_path_factory) -> RandomExports:
    """Registered models with seeded random weights, exported once per run at 64x64 (dynamic batch) on first
    use, each with its weights file: ``random_exports["eca_resnet50"].onnx``; read-only."""
    return RandomExports(tmp_path_factory.mktemp("random_exports"))
