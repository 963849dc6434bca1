"""Preprocessing against an independent torch implementation of torchvision's ImageNet eval transform."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_sample_image

from eca_deploy.data.preprocess import MEAN, STD, preprocess

ATOL_UINT8 = 1.0  # Pillow rounds its resize to uint8; torch keeps float: at most one gray level apart


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(load_sample_image("china.jpg"))  # a real 640x427 photo shipped with scikit-learn


def torch_reference(image: Image.Image, imgsz: int) -> np.ndarray:
    """Resize(round(imgsz*256/224)) + CenterCrop(imgsz) + ToTensor + Normalize, written with torch ops."""
    x = torch.tensor(np.array(image.convert("RGB")), dtype=torch.float32).permute(2, 0, 1)[None]
    height, width = x.shape[-2:]
    short = round(imgsz * 256 / 224)
    size = (short, int(short * width / height)) if height <= width else (int(short * height / width), short)
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = int(round((size[0] - imgsz) / 2)), int(round((size[1] - imgsz) / 2))
    x = x[:, top:top + imgsz, left:left + imgsz] / 255.0
    return ((x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]).numpy()


def uint8_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) * STD[:, None, None] * 255.0


@pytest.mark.parametrize("box", [(13, 7, 314, 210), (100, 0, 300, 427), (0, 0, 640, 427)],
                         ids=["landscape", "portrait", "full"])
@pytest.mark.parametrize("imgsz", [224, 64, 32])
def test_matches_torch_reference(photo, box, imgsz):
    image = photo.crop(box)
    ours = preprocess(image, imgsz)
    assert ours.shape == (3, imgsz, imgsz) and ours.dtype == np.float32
    diff = uint8_diff(ours, torch_reference(image, imgsz))
    assert diff.max() <= ATOL_UINT8 + 1e-3
    assert diff.mean() < 0.35


def test_a_shifted_crop_would_be_caught(photo):
    """The tolerance is tight enough that an off-by-one crop fails it."""
    image = photo.crop((13, 7, 314, 210))
    shifted = preprocess(image.crop((1, 0, image.width, image.height)), 64)
    assert uint8_diff(shifted, torch_reference(image, 64)).max() > 5 * ATOL_UINT8


def test_grayscale_becomes_three_equal_channels(photo):
    gray = photo.convert("L")
    out = preprocess(gray, 64) * STD[:, None, None] + MEAN[:, None, None]
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    np.testing.assert_allclose(out[1], out[2], atol=1e-6)
    assert uint8_diff(preprocess(gray, 64), torch_reference(gray, 64)).max() <= ATOL_UINT8 + 1e-3


def test_alpha_is_dropped(photo):
    rgb = photo.crop((0, 0, 200, 160))
    alpha = Image.fromarray(np.random.default_rng(0).integers(0, 256, (160, 200), dtype=np.uint8))
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    np.testing.assert_array_equal(preprocess(rgba, 64), preprocess(rgb, 64))


def test_cmyk_and_palette_convert_to_rgb(photo):
    rgb = photo.crop((0, 0, 200, 160))
    np.testing.assert_allclose(preprocess(rgb.convert("CMYK"), 64), preprocess(rgb, 64), atol=1e-6)
    palette = rgb.convert("P", palette=Image.ADAPTIVE, colors=256)
    assert palette.mode == "P"
    # 256 palette colours approximate the photo: close to it, but not identical.
    diff = uint8_diff(preprocess(palette, 64), preprocess(rgb, 64))
    assert 0 < diff.mean() < 8
