"""``export --input-format uint8-nhwc``: the model takes the decoded RGB bytes and preprocesses them itself.

Traced, the graph starts Cast(uint8 -> float) -> Transpose(NHWC -> NCHW) -> Sub(255 * mean) ->
Mul(1 / (255 * std)) in front of the unchanged network; onnxsim then folds the per-channel Mul into the
first convolution's weights (exact: a scale commutes with the zero padding). The per-channel shift (Sub)
is deliberately NOT folded into that convolution's bias: the convolution zero-pads its input, and a zero in
normalised space is the mean colour in pixel space, so a folded bias is wrong along the image border
(measured in docs/uint8-input.md). The Sub stays one elementwise op ahead of the first convolution.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.pixels import FLOAT_NCHW, INPUT_FORMATS, UINT8_NHWC
from ..data.preprocess import DataConfig, normalize


class PixelInput(torch.nn.Module):
    """uint8 [N, H, W, 3] RGB -> the float [N, 3, H, W] normalised batch ``model`` was trained on."""

    def __init__(self, model: torch.nn.Module, config: DataConfig):
        super().__init__()
        self.model = model
        mean = torch.tensor(config.mean, dtype=torch.float32).reshape(1, 3, 1, 1)
        std = torch.tensor(config.std, dtype=torch.float32).reshape(1, 3, 1, 1)
        # (x / 255 - mean) / std, as two constants TensorRT can fold: (x - 255 mean) * 1 / (255 std)
        self.register_buffer("shift", mean * 255.0)
        self.register_buffer("scale", 1.0 / (std * 255.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x.float().permute(0, 3, 1, 2) - self.shift) * self.scale)


def exported_module(model: torch.nn.Module, name: str, config: DataConfig) -> torch.nn.Module:
    """What torch.onnx.export traces for input format ``name``."""
    return PixelInput(model, config).eval() if name == UINT8_NHWC else model


def example_input(name: str, batch: int, imgsz: int) -> torch.Tensor:
    shape = (batch, imgsz, imgsz, 3) if name == UINT8_NHWC else (batch, 3, imgsz, imgsz)
    return torch.zeros(shape, dtype=getattr(torch, INPUT_FORMATS[name].dtype))


def input_shape(name: str, batch: int | str, imgsz: int) -> list:
    """The manifest's input shape for format ``name``."""
    return [batch, imgsz, imgsz, 3] if name == UINT8_NHWC else [batch, 3, imgsz, imgsz]


def as_pixels(batch: np.ndarray, config: DataConfig) -> np.ndarray:
    """Float NCHW images normalised with ``config`` -> the nearest uint8 NHWC pixels (the export's seeded
    verification images, made as floats, turned into the bytes a uint8-nhwc model is fed)."""
    mean, std = (np.asarray(v, dtype=np.float32).reshape(1, 3, 1, 1) for v in (config.mean, config.std))
    values = np.rint((batch * std + mean) * 255.0).clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(values.transpose(0, 2, 3, 1))


def verification_inputs(name: str, batch: np.ndarray, config: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """(what the ONNX is fed, what PyTorch is fed) for one seeded verification batch: for uint8-nhwc the pixels,
    and those pixels normalised in Python, the harness's own float path."""
    if name == FLOAT_NCHW:
        return batch, batch
    pixels = as_pixels(batch, config)
    return pixels, np.stack([normalize(sample, config) for sample in pixels])
