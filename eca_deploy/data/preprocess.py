"""torchvision's ImageNet evaluation transform, done with Pillow and numpy.

``Resize(256) -> CenterCrop(224) -> ToTensor() -> Normalize(mean, std)`` on a PIL
image, scaled to the model's input size: the shorter side goes to
round(imgsz * 256 / 224) with Pillow's antialiased bilinear filter (what
torchvision itself calls for PIL input), the long side to int(short * long / short)
as torchvision computes it, and the crop offsets are rounded as in
``torchvision.transforms.functional.center_crop``.

Images above LARGE_IMAGE_PIXELS are decoded at reduced size (JPEG DCT scaling, else ``reduce``),
never below the size of that resize: a 13000x13000 image is not held in full, twice, for a
256-pixel result. One that would still decode above MAX_DECODED_PIXELS (a PNG: no DCT scaling) is
refused before it is decoded.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
# Part of every data hash: bump when the numbers this module produces change.
PREPROCESS_VERSION = "imagenet-eval-pil-2"  # 2: large images decoded at reduced size
LARGE_IMAGE_PIXELS = 1 << 24  # 16.7 MP: above this, decode at reduced size
# reduce() (a box filter) leaves the image this many times the resize's size, for the antialiased resize to finish
# (Pillow's own reducing_gap idea): a cheaper box filter all the way down moved pixels by about 3 levels of 255.
REDUCING_GAP = 3
# Above this, an image that cannot be decoded at reduced size (not a JPEG) is refused: a 13000x13000 PNG held
# 1186 MiB at its peak. 67 MP is 201 MB as RGB, a 9500x7000 photo.
MAX_DECODED_PIXELS = 1 << 26
MIN_IMAGE_SIZE = 32  # the smallest input the models and their exports take


@dataclass(frozen=True)
class DataConfig:
    """What a model expects of its input, as timm's pretrained_cfg says it: evaluation transform settings."""

    input_size: int = 224  # the size the model was trained at (export's default --imgsz)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize_ratio: float = 256 / 224  # shorter side before the centre crop = round(imgsz * ratio); timm: 1 / crop_pct
    interpolation: str = "bilinear"

    @property
    def settings(self) -> str:
        """Part of a data hash: the same images preprocessed otherwise are other data."""
        default = DataConfig()
        if self == default:
            return PREPROCESS_VERSION  # unchanged hashes (and calibration caches) for the ImageNet default
        return (f"{PREPROCESS_VERSION}|mean={self.mean}|std={self.std}|ratio={self.resize_ratio:.6f}"
                f"|interp={self.interpolation}")

    def as_dict(self) -> dict:
        return {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std),
                "resize_ratio": self.resize_ratio, "interpolation": self.interpolation}


DEFAULT_DATA_CONFIG = DataConfig()
MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
STD = np.array(IMAGENET_STD, dtype=np.float32)


def resize_size(imgsz: int, config: DataConfig = DEFAULT_DATA_CONFIG) -> int:
    return int(round(imgsz * config.resize_ratio))


def to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, palette, RGBA/LA and CMYK to RGB (alpha dropped, as torchvision's default loader does)."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow warns when a palette with transparency goes straight to RGB
    return image.convert("RGB")


def resize_shorter(image: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return image
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)
    return image.resize(new_size, INTERPOLATIONS[interpolation])


def center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def pixels(image: Image.Image, imgsz: int, config: DataConfig = DEFAULT_DATA_CONFIG) -> np.ndarray:
    """PIL image -> uint8 [imgsz, imgsz, 3] RGB: the evaluation transform up to (not including) normalisation,
    what a model exported with ``--input-format uint8-nhwc`` takes."""
    resized = resize_shorter(to_rgb(image), resize_size(imgsz, config), config.interpolation)
    return np.asarray(center_crop(resized, imgsz), dtype=np.uint8)


def normalize(sample: np.ndarray, config: DataConfig = DEFAULT_DATA_CONFIG) -> np.ndarray:
    """uint8 [H, W, 3] pixels -> float32 [3, H, W], normalized with the model's mean and std."""
    array = np.asarray(sample, dtype=np.float32) / 255.0
    array = (array - np.asarray(config.mean, dtype=np.float32)) / np.asarray(config.std, dtype=np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def preprocess(image: Image.Image, imgsz: int, config: DataConfig = DEFAULT_DATA_CONFIG) -> np.ndarray:
    """PIL image -> float32 [3, imgsz, imgsz], normalized with the model's mean and std (ImageNet's by default)."""
    return normalize(pixels(image, imgsz, config), config)


def refuse_full_decode(image: Image.Image) -> None:
    """Refuse, before decoding, an image that would decode above MAX_DECODED_PIXELS: Pillow decodes a PNG (or
    any format without DCT scaling) whole before it can be reduced. The data sources skip it with this reason."""
    if image.width * image.height > MAX_DECODED_PIXELS:
        raise ValueError(f"{image.width}x{image.height} {image.format or 'image'} is too large to decode "
                         f"({image.width * image.height / 1e6:.0f} MP, limit {MAX_DECODED_PIXELS / 1e6:.0f} MP "
                         "for formats other than JPEG); downscale it")


def decode(image: Image.Image, imgsz: int, config: DataConfig = DEFAULT_DATA_CONFIG) -> Image.Image:
    """Load an opened image; a large one at reduced size, its shorter side still >= resize_size(imgsz)."""
    target = resize_size(imgsz, config)
    if image.width * image.height <= LARGE_IMAGE_PIXELS:
        image.load()
        return image
    image.draft("RGB", (target, target))  # JPEG: decode at 1/2, 1/4 or 1/8 scale; other formats: no-op
    refuse_full_decode(image)
    image.load()
    factor = min(image.size) // (target * REDUCING_GAP)
    if factor < 2:
        return image
    if image.mode in ("1", "P", "I;16"):  # modes reduce() refuses
        image = to_rgb(image)
    return image.reduce(factor)


def preprocess_file(path: str | os.PathLike, imgsz: int, config: DataConfig = DEFAULT_DATA_CONFIG) -> np.ndarray:
    """Decode and preprocess one image file: float32 [3, imgsz, imgsz]."""
    return normalize(pixels_file(path, imgsz, config), config)


def pixels_file(path: str | os.PathLike, imgsz: int, config: DataConfig = DEFAULT_DATA_CONFIG) -> np.ndarray:
    """Decode, resize and crop one image file: uint8 [imgsz, imgsz, 3].

    Pillow's decompression-bomb warning is kept off the user's screen: size is handled by ``decode``,
    and images past Pillow's error limit still raise (the data sources skip them, with the reason).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            return pixels(decode(image, imgsz, config), imgsz, config)
