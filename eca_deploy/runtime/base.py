"""The one small interface every inference backend implements (Polygraphy's runner idea, trimmed).

A backend is opened on a model, takes batches in its input format (float32 NCHW, or uint8 NHWC pixels for a
model exported with ``--input-format uint8-nhwc``) and returns logits; comparators and
benchmarks only ever see this interface, so nothing above a backend asks what kind it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..data.pixels import FLOAT_NCHW, INPUT_FORMATS
from ..errors import OnnxFileError


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | None, ...]  # None where the axis is dynamic (usually the batch)
    dtype: str = "float32"


def require_image_input(label: str, spec: InputSpec, input_format: str = FLOAT_NCHW) -> None:
    """Refuse, when a model is opened rather than mid-run, one whose input is not an image batch of the input
    format its metadata records (token ids, one channel, or metadata that does not match the graph): every
    backend's spec goes through here (registry.open_backend)."""
    if not INPUT_FORMATS[input_format].accepts(spec.dtype, spec.shape):
        shape = [d if isinstance(d, int) else "?" for d in spec.shape]
        expected = ("one float32 or float16 [N, 3, H, W] input" if input_format == FLOAT_NCHW
                    else f"one input of {INPUT_FORMATS[input_format].describe}, as its metadata records")
        raise OnnxFileError(f"{label} takes a {spec.dtype} {shape} input '{spec.name}'; eca-deploy runs image "
                            f"classifiers with {expected}")


DeviceRunner = tuple[Callable[[], float], str]  # (run() -> milliseconds, which clock measured them)


class Backend(ABC):
    """Open in the constructor, ``infer`` any number of times, ``close`` (or use it as a context manager)."""

    name: str  # e.g. "torch-cpu", "onnxruntime-cpu", "tensorrt"
    fp32_math: str = "fp32"  # "tf32" where FP32 convolutions run in TF32 (TensorRT on Ampere and newer)
    batch_range: tuple[int, int] | None = None  # an engine profile's (min, max) batch; None: any batch
    # what infer() is fed (data.pixels): set by registry.open_backend from the artifact's recorded format
    input_format: str = FLOAT_NCHW

    @property
    @abstractmethod
    def input_spec(self) -> InputSpec: ...

    @property
    def image_size(self) -> tuple[int | None, int | None]:
        """(height, width) of the input, read in the axes of its input format."""
        return INPUT_FORMATS[self.input_format].image_size(self.input_spec.shape)

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """A batch in ``input_format`` (float32 [N, 3, H, W] by default) -> float32 [N, classes] logits, on the
        host."""

    @abstractmethod
    def close(self) -> None: ...

    def batch_limits(self) -> tuple[int, int | None]:
        """(smallest, largest) batch this backend takes: a static batch axis, a profile, or (1, None)."""
        fixed = self.input_spec.shape[0]
        if isinstance(fixed, int):
            return fixed, fixed
        if self.batch_range:
            return int(self.batch_range[0]), int(self.batch_range[1])
        return 1, None

    def as_input(self, batch: np.ndarray, dtype) -> np.ndarray:
        """``batch`` as the C-contiguous ``dtype`` array the runtime takes, after refusing a batch of the other
        input format in one line (normalised floats cast to bytes would be garbage, not an error)."""
        INPUT_FORMATS[self.input_format].check_batch(batch, self.name)
        return np.ascontiguousarray(batch, dtype=dtype)

    def float64_logits(self, batch: np.ndarray) -> np.ndarray | None:
        """The same model's logits computed in float64, where this backend can (the PyTorch reference): the
        measure of FP32's own error on these inputs. None elsewhere."""
        return None

    def device_runner(self, batch: np.ndarray) -> DeviceRunner | None:
        """A runner that keeps ``batch`` and the outputs on the device, for device-side timing; None on a CPU."""
        return None

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
