"""TensorRT, pycuda and the GPU, imported lazily: the rest of eca-deploy works where they are absent.

Everything goes through :func:`_import_module`, the one seam tests replace to play a machine
without TensorRT, without pycuda, or without a GPU.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from ...artifacts import package_versions
from ...errors import MissingDependencyError, first_line, missing_dependency

TENSORRT_INSTALL = ("on a desktop GPU run `pip install 'eca-deploy[tensorrt]'`; on Jetson it ships with JetPack "
                    "(`sudo apt install python3-libnvinfer`; make your venv with --system-site-packages)")
PYCUDA_INSTALL = ("run `pip install 'eca-deploy[tensorrt]'` (on Jetson: `pip install pycuda` with JetPack's "
                  "/usr/local/cuda/bin on PATH)")
NO_GPU_ADVICE = "TensorRT engines need an NVIDIA GPU and driver; on this machine use the onnxruntime backend"


def _import_module(name: str) -> Any:
    return importlib.import_module(name)


def import_tensorrt() -> Any:
    try:
        return _import_module("tensorrt")
    except ModuleNotFoundError as exc:
        if exc.name not in (None, "tensorrt"):  # the package is there but one of its own imports is not
            raise MissingDependencyError(f"tensorrt is installed but cannot load: {first_line(exc)}") from exc
        raise missing_dependency("TensorRT (the `tensorrt` Python module)", TENSORRT_INSTALL) from exc
    except ImportError as exc:  # libnvinfer or a CUDA library missing: no usable driver/toolkit
        raise MissingDependencyError(f"tensorrt is installed but cannot load its libraries ({first_line(exc)}); "
                                     "install the tensorrt wheel built for this machine's CUDA") from exc


def import_cuda() -> Any:
    """``pycuda.driver``, initialised, on a machine with at least one CUDA GPU."""
    try:
        cuda = _import_module("pycuda.driver")
    except ModuleNotFoundError as exc:
        if exc.name not in (None, "pycuda", "pycuda.driver"):
            raise MissingDependencyError(f"pycuda is installed but cannot load: {first_line(exc)}") from exc
        raise missing_dependency("pycuda", PYCUDA_INSTALL) from exc
    except ImportError as exc:  # pycuda._driver cannot find libcuda.so: no NVIDIA driver here
        raise MissingDependencyError(f"no CUDA driver ({first_line(exc)}): {NO_GPU_ADVICE}") from exc
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:  # pycuda raises its own _driver.Error types, e.g. "cuInit failed: no CUDA-capable device"
        raise MissingDependencyError(f"no CUDA GPU is available ({first_line(exc)}): {NO_GPU_ADVICE}") from exc
    if count == 0:
        raise MissingDependencyError(f"no CUDA GPU is available (the driver sees 0 devices): {NO_GPU_ADVICE}")
    return cuda


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: str  # "8.6"

    def as_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "compute_capability": self.compute_capability}


def gpu_info(cuda: Any, device: int = 0) -> GpuInfo:
    count = cuda.Device.count()
    if not 0 <= device < count:
        raise MissingDependencyError(f"GPU {device} does not exist: this machine has {count} CUDA GPU(s)")
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return GpuInfo(device, dev.name(), f"{major}.{minor}")


class CudaContext:
    """The device's primary context, made current for pycuda; the one TensorRT and onnxruntime use too."""

    def __init__(self, cuda: Any, device: int = 0):
        self._context = cuda.Device(device).retain_primary_context()
        self._context.push()

    def close(self) -> None:
        if self._context is not None:
            self._context.pop()
            self._context.detach()
            self._context = None

    def __enter__(self) -> "CudaContext":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tensorrt_unavailable_reason() -> str | None:
    """None where engines can be built and run here; else the one-line reason (for skipping a stage)."""
    try:
        import_tensorrt()
        import_cuda()
    except MissingDependencyError as exc:
        return str(exc)
    return None


def installed_tensorrt_version() -> str:
    """The TensorRT version on this machine (a one-line error where none is installed)."""
    return import_tensorrt().__version__


def tensorrt_version_or_none() -> str | None:
    """For describing a machine: pip's record of TensorRT, else the module's own (JetPack installs the
    bindings from apt, without pip metadata), else None."""
    version = package_versions("tensorrt")["tensorrt"]
    if version:
        return version
    try:
        return _import_module("tensorrt").__version__
    except Exception:
        return None
