"""Class names for predictions: ImageNet's 1,000 (shipped with the package) or a file of one name per line."""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources

from ..artifacts import require_file
from ..errors import DataError

IMAGENET_CLASSES = "imagenet_classes.txt"  # index order of ILSVRC-2012 (torchvision, timm, the ECANet release)


def _names(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """ImageNet-1k's class names, index 0 ("tench") to 999 ("toilet tissue")."""
    return tuple(_names(resources.files(__package__).joinpath(IMAGENET_CLASSES).read_text(encoding="utf-8")))


def read_labels(path: str | os.PathLike) -> list[str]:
    """A labels file: one class name per line, in class-index order; blank lines are ignored."""
    path = require_file(path, "labels file", DataError)
    try:
        names = _names(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read labels file {path}: {exc}") from None
    if not names:
        raise DataError(f"labels file {path} holds no names (expected one class name per line)")
    return names


def class_names(num_classes: int, labels: list[str] | None = None, source: str = "the labels file") -> list[str] | None:
    """The names for a model with ``num_classes`` outputs: ``labels`` (read from ``source``), ImageNet's for
    1,000 classes without them, else None (predictions then show class indices)."""
    if labels is not None:
        if len(labels) != num_classes:
            raise DataError(f"{source} names {len(labels)} classes but the model has {num_classes} outputs "
                            "(expected one name per line, in class-index order)")
        return labels
    if num_classes == len(imagenet_classes()):
        return list(imagenet_classes())
    return None
