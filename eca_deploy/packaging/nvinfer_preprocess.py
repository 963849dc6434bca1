"""Our preprocessing as Gst-nvinfer's settings, and what nvinfer cannot do of it, said with its size.

nvinfer computes y = net-scale-factor * (x - offsets[c]) on pixel values (one factor for all channels) and
scales the whole frame or object to the network size (no centre crop); scaling-filter is
NvBufSurfTransform_Inter (nvbufsurftransform.h: 0 nearest, 1 bilinear, 2 GPU-cubic).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..data.preprocess import DataConfig, resize_size

SCALING_FILTERS = {"nearest": 0, "bilinear": 1, "bicubic": 2}  # NvBufSurfTransform_Inter: Algo1 is GPU-cubic


@dataclass(frozen=True)
class Normalization:
    """nvinfer's y = net-scale-factor * (x - offsets[c]) standing for ours, y = (x / 255 - mean[c]) / std[c]."""

    scale: float
    offsets: tuple[float, float, float]
    max_error: float  # largest |nvinfer's y - ours| over pixel values 0..255, in units of the normalised input
    max_relative: float  # largest |scale / ours - 1| over the channels


def normalization(mean: tuple[float, ...], std: tuple[float, ...]) -> Normalization:
    """The offsets are exact (255 * mean); the one scale factor is the value that minimises the largest error
    over the channels and pixel values. That error, |s - 1/(255 std_c)| * |x - offset_c|, is largest at x = 0
    or 255, so the best s lies where two channels' error lines cross, or on one channel's exact value."""
    offsets = tuple(255.0 * m for m in mean)
    wanted = [1.0 / (255.0 * s) for s in std]
    reach = [max(o, 255.0 - o) for o in offsets]  # how far a pixel value can lie from the offset

    def error(scale: float) -> float:
        return max(abs(scale - w) * r for w, r in zip(wanted, reach))

    crossings = [(wanted[i] * reach[i] + wanted[j] * reach[j]) / (reach[i] + reach[j])
                 for i, j in itertools.combinations(range(len(wanted)), 2)]
    best = min(wanted + crossings, key=error)
    return Normalization(best, offsets, error(best), max(abs(best / w - 1.0) for w in wanted))


RAW_PIXELS = Normalization(1.0, (0.0, 0.0, 0.0), 0.0, 0.0)  # a uint8-input model normalises inside its graph


def normalization_warning(norm: Normalization, std: tuple[float, ...]) -> str | None:
    if norm.max_error == 0.0:
        return None
    return (f"nvinfer has one net-scale-factor for all channels and the model's std differs per channel "
            f"({', '.join(f'{s:g}' for s in std)}): net-scale-factor={norm.scale:.8g} minimises the error, which "
            f"is at most {norm.max_error:.4f} in normalised units ({norm.max_relative:.2%} of a channel's scale); "
            "`eca-deploy export --input-format uint8-nhwc` bakes the exact normalisation into the graph instead")


def resize_warning(config: DataConfig, imgsz: int) -> str:
    """nvinfer scales the whole frame (or object) to the network size; ours resizes, then centre-crops."""
    short = resize_size(imgsz, config)
    return (f"nvinfer has no centre crop: it scales the whole frame or object into {imgsz}x{imgsz}, keeping its "
            f"aspect ratio and padding both sides (maintain-aspect-ratio=1, symmetric-padding=1), where our "
            f"preprocessing resizes the shorter side to {short} and crops the central {imgsz}x{imgsz} "
            f"({imgsz / short:.1%} of it); to match, crop each frame to its central square of side "
            f"{imgsz / short:.4g} x its shorter side upstream (nvvideoconvert src-crop, or a Gst-nvdspreprocess ROI)"
            + ("; Pillow's filter also antialiases a downscale, nvinfer's does not"
               if config.interpolation != "nearest" else ""))


LOGITS_WARNING = ("the model outputs logits, not probabilities: nvinfer's classifier parser attaches the top class "
                  "only where its value exceeds both classifier-threshold and 0 (parseAttributesFromSoftmaxLayers)")


def uint8_hook() -> str:
    """A uint8-input model (export --input-format uint8-nhwc) does its own normalisation: net-scale-factor=1,
    offsets 0. What nvinfer's own preprocessing cannot do for it is said here."""
    return ("the model takes uint8 NHWC pixels and normalises them itself (net-scale-factor=1, offsets 0); "
            "nvinfer's own preprocessing writes float32 tensors (nvdsinfer_context_impl.cpp), so feed it uint8 "
            "tensors from Gst-nvdspreprocess (input-tensor-from-meta=1) or use the float model")

