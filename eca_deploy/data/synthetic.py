"""The one maker of synthetic inputs: seeded random images with the statistics of normalised photos.

Models see photos, so every check without images (BatchNorm settling, export verification, the FP16 check,
parity without --data) runs on these. i.i.d. N(0, 1) noise has none of a photo's structure: it settled BN
up to 1000x off, and judges a model on inputs it will never see.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..progress import progress
from .pixels import FLOAT_NCHW, INPUT_FORMATS
from .preprocess import DEFAULT_DATA_CONFIG, DataConfig


def photo_like_batch(count: int = 16, image_size: int = 96, seed: int | list[int] = 0,
                     config: DataConfig = DEFAULT_DATA_CONFIG) -> np.ndarray:
    """Random float32 [count, 3, S, S] images: photo-like pixels in [0, 1], then the model's mean/std."""
    mean, std = np.array(config.mean)[:, None, None], np.array(config.std)[:, None, None]
    return ((_photo_like(count, image_size, seed) - mean) / std).astype(np.float32)


def synthetic_batch(input_format: str, count: int, image_size: int, seed: int | list[int] = 0,
                    config: DataConfig = DEFAULT_DATA_CONFIG) -> np.ndarray:
    """Photo-like images as a model of ``input_format`` takes them: made from bytes, as decoded images are."""
    pixels = np.round(255 * _photo_like(count, image_size, seed)).astype(np.uint8).transpose(0, 2, 3, 1)
    return np.stack([INPUT_FORMATS[input_format].from_pixels(sample, config) for sample in pixels])


def _photo_like(count: int, image_size: int, seed: int | list[int]) -> np.ndarray:
    """float64 [count, 3, S, S] pixels in [0, 1]: a 1/f amplitude spectrum (natural images' scale-free
    structure), colour channels correlated through a shared luminance."""
    rng = np.random.default_rng(seed)
    freq = np.hypot(*np.meshgrid(np.fft.fftfreq(image_size), np.fft.fftfreq(image_size), indexing="ij"))
    amplitude = 1.0 / np.maximum(freq, 1.0 / image_size)

    def field(n: int) -> np.ndarray:
        spectrum = amplitude * np.exp(2j * np.pi * rng.random((n, image_size, image_size)))
        out = np.fft.ifft2(spectrum).real
        return (out - out.mean(axis=(1, 2), keepdims=True)) / out.std(axis=(1, 2), keepdims=True)

    luminance = field(count)[:, None]
    colour = field(count * 3).reshape(count, 3, image_size, image_size)
    pixels = rng.uniform(0.3, 0.6, (count, 3, 1, 1)) + 0.2 * (luminance + 0.4 * colour)
    return np.clip(pixels, 0.0, 1.0)


class SyntheticInputs:
    """Seeded photo-like images as a data source; sample i is the same whatever the batch size (each is drawn
    from its own seed), so backends compared batch by batch see equal inputs."""

    labels = None
    num_classes = None
    class_names = None
    skipped = ()

    def __init__(self, count: int, imgsz: int, seed: int = 0):
        self.count, self.imgsz, self.seed = count, imgsz, seed
        self.data_hash = f"synthetic-photo-like-seed{seed}-n{count}-{imgsz}px"

    def batches(self, batch_size: int, desc: str | None = None,
                input_format: str = FLOAT_NCHW) -> Iterator[tuple[np.ndarray, None]]:
        starts = range(0, self.count, batch_size)
        for start in progress(starts, desc=desc, unit="batches"):
            size = min(batch_size, self.count - start)
            yield np.concatenate([synthetic_batch(input_format, 1, self.imgsz, [self.seed, start + i])
                                  for i in range(size)]), None
