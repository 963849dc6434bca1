"""Fixtures shared by the TensorRT tests (which import fake_tensorrt / fake_polygraphy from this folder)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def digit_folder(tmp_path_factory):
    """20 of scikit-learn's handwritten digits as 32x32 PNG files: real images through the real decode path."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("calib_digits")
    digits = load_digits()
    for i in range(20):
        pixels = np.round(digits.images[i] * (255.0 / 16.0)).astype(np.uint8)
        Image.fromarray(pixels, mode="L").resize((32, 32), Image.BILINEAR).save(folder / f"d{i:02d}.png")
    return folder
