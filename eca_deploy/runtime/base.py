"""The one small interface every inference backend implements (Polygraphy's runner idea, trimmed).

A backend is opened on a model, takes float32 NCHW batches and returns logits;
comparators and benchmarks only ever see this interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | None, ...]  # None where the axis is dynamic (usually the batch)
    dtype: str = "float32"

    @property
    def image_size(self) -> tuple[int | None, int | None]:
        return self.shape[-2], self.shape[-1]


@runtime_checkable
class Backend(Protocol):
    name: str  # e.g. "torch-cpu", "onnxruntime-cpu", "tensorrt"

    @property
    def input_spec(self) -> InputSpec: ...

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, 3, H, W] -> float32 [N, classes] logits, on the host."""

    def close(self) -> None: ...
