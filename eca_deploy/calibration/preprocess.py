"""torchvision's ImageNet evaluation transform, done with Pillow and numpy.

``Resize(256) -> CenterCrop(224) -> ToTensor() -> Normalize(mean, std)`` on a PIL
image, scaled to the model's input size: the shorter side goes to
round(imgsz * 256 / 224) with Pillow's antialiased bilinear filter (what
torchvision itself calls for PIL input), the long side to int(short * long / short)
as torchvision computes it, and the crop offsets are rounded as in
``torchvision.transforms.functional.center_crop``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
RESIZE_RATIO = 256 / 224
# Part of every data hash: bump when the numbers this module produces change.
PREPROCESS_VERSION = "imagenet-eval-pil-1"


def resize_size(imgsz: int) -> int:
    return int(round(imgsz * RESIZE_RATIO))


def to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, palette, RGBA/LA and CMYK to RGB (alpha dropped, as torchvision's default loader does)."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow warns when a palette with transparency goes straight to RGB
    return image.convert("RGB")


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return image
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)
    return image.resize(new_size, Image.BILINEAR)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def preprocess(image: Image.Image, imgsz: int) -> np.ndarray:
    """PIL image -> float32 [3, imgsz, imgsz], normalized with the ImageNet mean and std."""
    image = center_crop(resize_shorter(to_rgb(image), resize_size(imgsz)), imgsz)
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = (array - MEAN) / STD
    return np.ascontiguousarray(array.transpose(2, 0, 1))
