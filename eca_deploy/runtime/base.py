"""The one small interface every inference backend implements (Polygraphy's runner idea, trimmed).

A backend is opened on a model, takes float32 NCHW batches and returns logits; comparators and
benchmarks only ever see this interface, so nothing above a backend asks what kind it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import OnnxFileError


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | None, ...]  # None where the axis is dynamic (usually the batch)
    dtype: str = "float32"

    @property
    def image_size(self) -> tuple[int | None, int | None]:
        return self.shape[-2], self.shape[-1]


IMAGE_DTYPES = ("float32", "float16")


def require_image_input(label: str, spec: InputSpec) -> None:
    """Refuse, when a model is opened rather than mid-run, one whose input is not a float [N, 3, H, W] image
    batch (token ids, one channel): every backend's spec goes through here (registry.open_backend)."""
    if spec.dtype not in IMAGE_DTYPES or len(spec.shape) != 4 or spec.shape[1] not in (None, 3):
        shape = [d if isinstance(d, int) else "?" for d in spec.shape]
        raise OnnxFileError(f"{label} takes a {spec.dtype} {shape} input '{spec.name}'; eca-deploy runs image "
                            "classifiers with one float32 or float16 [N, 3, H, W] input")


DeviceRunner = tuple[Callable[[], float], str]  # (run() -> milliseconds, which clock measured them)


class Backend(ABC):
    """Open in the constructor, ``infer`` any number of times, ``close`` (or use it as a context manager)."""

    name: str  # e.g. "torch-cpu", "onnxruntime-cpu", "tensorrt"
    fp32_math: str = "fp32"  # "tf32" where FP32 convolutions run in TF32 (TensorRT on Ampere and newer)
    batch_range: tuple[int, int] | None = None  # an engine profile's (min, max) batch; None: any batch

    @property
    @abstractmethod
    def input_spec(self) -> InputSpec: ...

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, 3, H, W] -> float32 [N, classes] logits, on the host."""

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
