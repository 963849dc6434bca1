"""PyTorch eager backend: the reference every other artifact is compared with (CPU or CUDA)."""

from __future__ import annotations

import contextlib

import numpy as np

from ...errors import missing_dependency
from ...models import LoadedModel, float64_logits, load_model
from ..base import Backend, InputSpec


@contextlib.contextmanager
def full_fp32(torch):
    """FP32 convolutions and matmuls in FP32, not TF32 (torch's default for cuDNN convolutions on Ampere and
    newer): the reference's own error is what FP32 candidates are judged by. The flags are process-wide, so
    they are restored after each call."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


class TorchBackend(Backend):
    def __init__(self, model: str, weights: str | None = None, device: str = "cpu", imgsz: int = 224,
                 loaded: LoadedModel | None = None, threads: int | None = None):
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise missing_dependency("a CUDA build of torch with a visible GPU",
                                     "install torch with CUDA, or use --device cpu")
        self.loaded = loaded or load_model(model, weights)
        self.device = torch.device(device)
        self.model = self.loaded.model.to(self.device).eval()
        self.num_classes = self.loaded.num_classes
        self.name = f"torch-{self.device.type}"
        self._spec = InputSpec("input", (None, 3, imgsz, imgsz))
        self._torch = torch
        # torch's thread count is process-wide: set while this backend is open, restored by close()
        self._threads_before = torch.get_num_threads() if threads else None
        if threads:
            torch.set_num_threads(threads)

    @property
    def input_spec(self) -> InputSpec:
        return self._spec

    def infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode(), full_fp32(torch):
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            return self.model(x).float().cpu().numpy()

    def float64_logits(self, batch: np.ndarray) -> np.ndarray:
        return float64_logits(self.model, batch)

    def device_runner(self, batch: np.ndarray):
        """(run, clock): run() does one inference on a GPU-resident batch and returns its CUDA-event time in ms.

        None on the CPU, where there are no copies to leave out.
        """
        if self.device.type != "cuda":
            return None
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def run() -> float:
            with torch.inference_mode():
                start.record()
                self.model(x)
                end.record()
            end.synchronize()
            return start.elapsed_time(end)

        return run, "cuda-events"

    def close(self) -> None:
        self.model = None
        if self._threads_before:
            self._torch.set_num_threads(self._threads_before)
            self._threads_before = None
