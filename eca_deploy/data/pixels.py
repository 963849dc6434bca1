"""The two input formats a model can take, and how a batch of each is made from the same decoded pixels.

``float-nchw`` (every export's default): float32 [N, 3, H, W], normalised in Python with the model's mean
and std. ``uint8-nhwc`` (``export --input-format uint8-nhwc``): the decoded, resized, centre-cropped RGB
bytes [N, H, W, 3]; the model does the cast, normalisation and layout change itself. Both start from
``preprocess.pixels`` of one image, so a float reference and a uint8 candidate see the same image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import DataError
from .preprocess import DataConfig, normalize

FLOAT_NCHW = "float-nchw"
UINT8_NHWC = "uint8-nhwc"


@dataclass(frozen=True)
class InputFormat:
    """One row of INPUT_FORMATS: what a model of this format is fed, and how it is made from pixels."""

    name: str
    dtype: str  # numpy dtype name of the batch
    channel_axis: int  # 1 (NCHW) or 3 (NHWC)
    from_pixels: Callable[[np.ndarray, DataConfig], np.ndarray]  # uint8 [H, W, 3] -> one sample
    describe: str  # how messages name what it takes

    def image_size(self, shape: tuple) -> tuple:
        """(height, width) of an input shape of this format."""
        return tuple(d for axis, d in enumerate(shape) if axis not in (0, self.channel_axis))[:2]

    def accepts(self, dtype: str, shape: tuple) -> bool:
        """Whether a model input of ``dtype`` and ``shape`` is one of this format (float16 counts as float)."""
        dtype_ok = dtype == self.dtype or (self.dtype == "float32" and dtype == "float16")
        return dtype_ok and len(shape) == 4 and shape[self.channel_axis] in (None, 3)

    def check_batch(self, batch: np.ndarray, label: str) -> None:
        """Refuse a batch of the other format before it is cast into this one's dtype (floats cast to bytes
        would be garbage, not an error)."""
        if batch.dtype.kind != np.dtype(self.dtype).kind or batch.ndim != 4 or batch.shape[self.channel_axis] != 3:
            raise DataError(f"{label} takes {self.describe}; got a {batch.dtype} {list(batch.shape)} batch")


INPUT_FORMATS: dict[str, InputFormat] = {f.name: f for f in (
    InputFormat(FLOAT_NCHW, "float32", 1, normalize, "float32 [N, 3, H, W] normalised images"),
    InputFormat(UINT8_NHWC, "uint8", 3, lambda sample, config: sample,
                "uint8 [N, H, W, 3] RGB pixels"),
)}


def input_format(name: str) -> InputFormat:
    try:
        return INPUT_FORMATS[name]
    except KeyError:
        raise DataError(f"unknown input format '{name}'; expected one of {', '.join(INPUT_FORMATS)}") from None
