"""TensorRT backend: a serialized engine run through pycuda buffers with execute_async_v3.

The engine's manifest is read first: an engine from another TensorRT release or another GPU is
refused in one line before TensorRT is asked to deserialize it (which would fail with a page of
log, or crash). I/O goes by tensor name, the API every supported release (8.6, 10.x, 11.x) has.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...artifacts import manifest_path, read_manifest, require_file
from ...errors import EngineError
from ..base import Backend, InputSpec
from .compat import engine_mismatch, refuse_stale_manifest
from .env import GpuInfo, context_scope, gpu_info, import_cuda, import_tensorrt, primary_context, trt_logger


@dataclass
class _Buffers:
    """Page-locked host and device memory for one batch size, allocated once and reused."""

    host: dict[str, np.ndarray]
    device: dict[str, Any]


def check_engine(path: Path, tensorrt_version: Any, gpu: GpuInfo) -> dict | None:
    """The engine's manifest, after refusing an engine that this TensorRT release or GPU cannot run.

    An engine without a manifest (built by trtexec) is let through with a warning: TensorRT's own
    deserialization check is then the only one, as in Polygraphy, which keeps no sidecar and just
    deserializes (tools/Polygraphy/polygraphy/backend/trt/loader.py, EngineFromBytes).
    """
    require_file(path, "TensorRT engine", EngineError)
    manifest = read_manifest(path)
    if manifest is None:
        warnings.warn(f"{path.name} has no manifest ({manifest_path(path).name}): its TensorRT version and GPU "
                      "cannot be checked before loading", stacklevel=3)
        return None
    refuse_stale_manifest(path, manifest)
    problem = engine_mismatch(manifest, tensorrt_version, gpu.name, gpu.compute_capability)
    if problem:
        raise EngineError(f"{path.name}: {problem}")
    return manifest


TF32_FROM = (8, 0)  # TF32 tensor cores arrived with Ampere (compute capability 8.0)


def fp32_math_of(manifest: dict | None, gpu: GpuInfo) -> str:
    """"tf32" where the engine's FP32 layers may compute in TF32: the GPU has it (8.0+) and the build left
    it on (our builds record ``tf32``: Polygraphy clears it; trtexec, whose engines have no manifest,
    keeps it unless --noTF32)."""
    major, minor = (int(part) for part in gpu.compute_capability.split(".")[:2])
    tf32 = (manifest or {}).get("tf32", True)  # absent: built before builds recorded it, TF32 left on
    return "tf32" if tf32 and (major, minor) >= TF32_FROM else "fp32"


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike, device: int = 0, allow_host_code: bool = False):
        """``allow_host_code``: let TensorRT run host code stored in the plan (the lean runtime of a
        version-compatible engine). Only the user's explicit flag sets it, never the manifest: the
        sidecar JSON is as untrusted as the plan beside it. ``device``: the CUDA GPU index (``--gpu``)."""
        path = require_file(engine_path, "TensorRT engine", EngineError)
        self.path = path
        self.allow_host_code = allow_host_code
        trt = import_tensorrt()
        cuda = import_cuda()
        gpu = gpu_info(cuda, device)
        self.manifest = check_engine(path, trt.__version__, gpu)
        self.fp32_math = fp32_math_of(self.manifest, gpu)
        self._cuda = cuda
        self._buffers: dict[int, _Buffers] = {}
        primary_context(cuda, device)  # shared by every backend; popped once at exit, never by close()
        try:
            with context_scope():
                self._load(trt, path)
        except BaseException:
            self.close()
            raise

    def _load(self, trt: Any, path: Path) -> None:
        self._runtime = trt.Runtime(trt_logger(trt))
        dla_core = (self.manifest or {}).get("dla_core")
        if dla_core is not None:
            # IRuntime.DLA_core defaults to -1 and is read while deserializing; trtexec sets it first
            # (sampleEngines.cpp), else an engine built for DLA core 1 runs on core 0.
            self._runtime.DLA_core = int(dla_core)
        if self.allow_host_code:
            self._runtime.engine_host_code_allowed = True  # a version-compatible plan carries its own lean runtime
        elif self.manifest and self.manifest.get("version_compatible"):
            raise EngineError(f"{path.name} is version-compatible: loading it runs host code stored in the engine, "
                              "which runs only with --allow-host-code; pass it if you trust where it came from")
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise EngineError(self._load_failure(trt, path))
        self._context = self._engine.create_execution_context()
        if self._context is None:  # TensorRT returns None when the activation memory cannot be allocated
            raise EngineError(f"TensorRT could not create an execution context for {path.name} (out of GPU "
                              "memory?); close other GPU programs or rebuild with a smaller --batch MAX")
        self._stream = self._cuda.Stream()
        self._inputs, self._outputs = [], []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self._inputs if is_input else self._outputs).append(name)
        if len(self._inputs) != 1 or not self._outputs:
            raise EngineError(f"{path.name} has {len(self._inputs)} inputs and {len(self._outputs)} outputs; "
                              "an image classifier has one input and at least one output")
        self._input = self._inputs[0]
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in self._inputs + self._outputs}
        dims = tuple(self._engine.get_tensor_shape(self._input))
        low, _, high = self._engine.get_tensor_profile_shape(self._input, 0)
        self.batch_range = (int(low[0]), int(high[0]))
        self._spec = InputSpec(self._input, tuple(d if d > 0 else None for d in dims), self._dtypes[self._input].name)
        self._start, self._end = self._cuda.Event(), self._cuda.Event()

    def _load_failure(self, trt: Any, path: Path) -> str:
        """Why deserialization failed, as far as the manifest (or its absence) can tell."""
        compatible = (self.manifest or {}).get("version_compatible")
        if not self.allow_host_code and (self.manifest is None or compatible):
            kind = "a version-compatible engine" if compatible else "an engine without a manifest"
            return (f"TensorRT {trt.__version__} could not load {path.name}; {kind} may carry its own runtime, "
                    "which also needs --allow-host-code (host code from the plan runs only with --allow-host-code: "
                    "use it for plans you trust), else rebuild it here with `eca-deploy build`")
        hint = "" if self.allow_host_code else " (a version-compatible engine also needs --allow-host-code)"
        return (f"TensorRT {trt.__version__} could not load {path.name} (built by another TensorRT version or for "
                f"another GPU?{hint}); rebuild it on this machine with `eca-deploy build`")

    @property
    def input_spec(self) -> InputSpec:
        return self._spec

    def _check(self, batch: np.ndarray) -> np.ndarray:
        expected = self._spec.shape[1:]
        if batch.ndim != len(self._spec.shape) or tuple(batch.shape[1:]) != expected:
            raise EngineError(f"{self.path.name} takes [N, {', '.join(map(str, expected))}] input, got "
                              f"{list(batch.shape)}")
        low, high = self.batch_range
        if not low <= batch.shape[0] <= high:
            raise EngineError(f"batch {batch.shape[0]} is outside the engine's profile {low}..{high}; rebuild with "
                              f"`eca-deploy build --profile MIN:OPT:MAX` covering it")
        return self.as_input(batch, self._dtypes[self._input])

    def _bind(self, n: int) -> _Buffers:
        """Set the input shape and every tensor address for batch ``n``; buffers are allocated on first use."""
        buffers = self._buffers.get(n)
        shape = (n, *self._spec.shape[1:])
        self._context.set_input_shape(self._input, shape)
        if buffers is None:
            shapes = {self._input: shape}
            shapes.update({name: tuple(self._context.get_tensor_shape(name)) for name in self._outputs})
            host = {name: self._cuda.pagelocked_empty(s, self._dtypes[name]) for name, s in shapes.items()}
            device = {name: self._cuda.mem_alloc(max(array.nbytes, 1)) for name, array in host.items()}
            self._cuda.memset_d8(device[self._input], 0, host[self._input].nbytes)
            buffers = self._buffers[n] = _Buffers(host, device)
        for name, memory in buffers.device.items():
            self._context.set_tensor_address(name, int(memory))
        return buffers

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._stream.handle):
            raise EngineError(f"TensorRT failed to run {self.path.name} (its log above says why)")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, 3, H, W] -> float32 logits of the engine's first output (a copy, safe to keep)."""
        with context_scope():
            return self._infer(self._check(batch))

    def _infer(self, images: np.ndarray) -> np.ndarray:
        buffers = self._bind(images.shape[0])
        np.copyto(buffers.host[self._input], images)
        self._cuda.memcpy_htod_async(buffers.device[self._input], buffers.host[self._input], self._stream)
        self._execute()
        out = self._outputs[0]
        self._cuda.memcpy_dtoh_async(buffers.host[out], buffers.device[out], self._stream)
        self._stream.synchronize()
        return buffers.host[out].astype(np.float32, copy=True)

    def device_runner(self, batch: np.ndarray) -> tuple[Callable[[], float], str]:
        """(run, clock): the batch is uploaded once; run() executes on the device alone and returns the
        milliseconds between two CUDA events around execute_async_v3, with no host<->device copies."""
        images = self._check(batch)
        n = images.shape[0]
        with context_scope():
            buffers = self._bind(n)
            self._cuda.memcpy_htod(buffers.device[self._input], images)
        start, end, stream = self._start, self._end, self._stream

        def run() -> float:
            with context_scope():
                self._bind(n)
                start.record(stream)
                self._execute()
                end.record(stream)
                end.synchronize()
                return start.time_till(end)

        return run, "CUDA events, I/O on the GPU"

    def close(self) -> None:
        with context_scope():
            for buffers in self._buffers.values():
                for memory in buffers.device.values():
                    memory.free()
        self._buffers = {}
        for attr in ("_context", "_engine", "_runtime", "_stream", "_start", "_end"):
            self.__dict__.pop(attr, None)  # TensorRT objects go now; the shared CUDA context stays for others
