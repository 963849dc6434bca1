"""Classify image files with any artifact: the quickest check that an engine on a new board is right.

The images go through the evaluation transform the artifact's manifest records (the export's data
config), a torch model's own, or ImageNet's; the logits become softmax probabilities and the top-k
classes, named from a labels file, ImageNet's names for 1,000-class models, or left as indices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ...artifacts import require_file
from ...data.labels import class_names, read_labels
from ...data.pixels import FLOAT_NCHW, input_format as input_format_named
from ...data.preprocess import DEFAULT_DATA_CONFIG, INTERPOLATIONS, DataConfig, pixels_file
from ...data.sources import not_regular
from ...errors import DataError, first_line, warn
from ..base import OpenOptions
from ..registry import Artifact, open_backend, parse_spec
from ..base import Backend
from .parity import collect_logits, resolve_imgsz

TOP_K = 5
BATCH = 8


@dataclass(frozen=True)
class Prediction:
    image: str
    top: list[tuple[int, str | None, float]]  # (class index, name or None, probability), best first

    def as_dict(self) -> dict:
        return {"image": self.image, "top5": [{"index": i, "label": name, "probability": round(p, 6)}
                                              for i, name, p in self.top]}


class _Images:
    """Decoded images in memory, in the order given: what ``collect_logits`` iterates, in the input format
    the backend asks for."""

    def __init__(self, pixels: list[np.ndarray], config: DataConfig):
        self.pixels, self.config = pixels, config

    def batches(self, batch_size: int, desc: str | None = None, input_format: str = FLOAT_NCHW):
        fmt = input_format_named(input_format)
        for start in range(0, len(self.pixels), batch_size):
            yield np.stack([fmt.from_pixels(p, self.config) for p in self.pixels[start:start + batch_size]]), None


def check_images(images: list[str]) -> list[Path]:
    """Every image exists and is a regular file: checked before a model is opened."""
    paths = [Path(image) for image in images]
    for path in paths:
        if not_regular(path):  # a FIFO would block, a folder is no image
            raise DataError(f"image {path} is {not_regular(path)}")
        require_file(path, "image", DataError)
    return paths


def data_config(artifact: Artifact, backend: Backend) -> DataConfig:
    """The preprocessing the model was exported with (its manifest), a torch model's own, else ImageNet's."""
    recorded = (artifact.manifest or {}).get("data_config")
    if isinstance(recorded, dict):
        try:
            config = DataConfig(input_size=int(recorded["input_size"]), mean=tuple(map(float, recorded["mean"])),
                                std=tuple(map(float, recorded["std"])), resize_ratio=float(recorded["resize_ratio"]),
                                interpolation=str(recorded["interpolation"]))
            if config.interpolation not in INTERPOLATIONS or len(config.mean) != 3 or len(config.std) != 3 \
                    or not (min(config.std) > 0 and config.resize_ratio > 0):
                raise ValueError("out of range")
            return config
        except (KeyError, TypeError, ValueError):  # a hand-edited manifest: as for an artifact without one
            warn(f"the manifest of {artifact.label} has an unusable data_config; ImageNet's preprocessing is used")
    loaded = getattr(backend, "loaded", None)
    return loaded.data_config if loaded is not None else DEFAULT_DATA_CONFIG


def load_images(paths: list[Path], imgsz: int, config: DataConfig) -> _Images:
    arrays = []
    for path in paths:
        try:
            arrays.append(pixels_file(path, imgsz, config))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot read image {path}: {first_line(exc)}") from None
    return _Images(arrays, config)


def top_k(logits: np.ndarray, names: list[str] | None, k: int = TOP_K) -> list[tuple[int, str | None, float]]:
    """The k most probable classes of one logit row (softmax in float64: no overflow on large logits)."""
    shifted = logits.astype(np.float64) - logits.max()
    probs = np.exp(shifted) / np.exp(shifted).sum()
    order = np.argsort(-probs, kind="stable")[:k]
    return [(int(i), names[i] if names else None, float(probs[i])) for i in order]


def predict(spec: str, images: list[str | os.PathLike], labels: str | None = None, imgsz: int | None = None,
            options: OpenOptions | None = None) -> list[Prediction]:
    """Top-5 of every image through ``spec`` (any artifact the table of kinds opens), opened with ``options``."""
    paths = check_images([str(image) for image in images])
    names = read_labels(labels) if labels is not None else None  # a bad labels file fails before the model opens
    artifact = parse_spec(spec)
    with open_backend(artifact, options, imgsz=imgsz or DEFAULT_DATA_CONFIG.input_size) as backend:
        size = resolve_imgsz(imgsz, [(artifact.label, backend)])
        images = load_images(paths, size, data_config(artifact, backend))
        logits, _ = collect_logits(backend, images, BATCH, desc=None)
    names = class_names(logits.shape[1], names, f"labels file {labels}")
    return [Prediction(str(path), top_k(row, names)) for path, row in zip(paths, logits)]
