"""TensorRT, pycuda and the GPU, imported lazily: the rest of eca-deploy works where they are absent.

Everything goes through :func:`_import_module`, the one seam tests replace to play a machine
without TensorRT, without pycuda, or without a GPU.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import threading
from dataclasses import dataclass
from typing import Any

from ...artifacts import package_versions
from ...errors import EngineError, MissingDependencyError, first_line, missing_dependency

TENSORRT_INSTALL = ("on a desktop GPU run `pip install 'eca-deploy[tensorrt]'`; on Jetson it ships with JetPack "
                    "(`sudo apt install python3-libnvinfer`; make your venv with --system-site-packages)")
PYCUDA_INSTALL = ("run `pip install 'eca-deploy[tensorrt]'` (on Jetson: `pip install pycuda` with JetPack's "
                  "/usr/local/cuda/bin on PATH)")
POLYGRAPHY_INSTALL = "run `pip install 'eca-deploy[tensorrt]'` (or `pip install polygraphy`)"
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


def import_polygraphy() -> tuple[Any, type]:
    """(polygraphy.backend.trt, PolygraphyException): NVIDIA's loaders the builder goes through. Polygraphy
    imports TensorRT lazily (polygraphy/mod/trt_importer.py), so this works where TensorRT is absent."""
    try:
        poly = _import_module("polygraphy.backend.trt")
        error = _import_module("polygraphy.exception").PolygraphyException
        logger = _import_module("polygraphy.logger").G_LOGGER
    except ModuleNotFoundError as exc:
        raise missing_dependency("Polygraphy (the `polygraphy` Python package)", POLYGRAPHY_INSTALL) from exc
    logger.module_severity = logger.WARNING  # its INFO lines ("Configuring with profiles ...") would fill stdout
    return poly, error


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


# The process's one pycuda context and one TensorRT logger, shared by every builder and backend.
_primary: tuple[int, Any, int | None] | None = None  # (device, its primary context, the thread it stays pushed on)
_logger: tuple[Any, Any] | None = None  # (the tensorrt module, its Logger)
_at_exit = atexit.register  # tests replace it to play the interpreter's exit


def primary_context(cuda: Any, device: int = 0) -> Any:
    """The device's primary context, retained and pushed once per process and popped once at exit.

    This is what NVIDIA's TensorRT 8.5 python samples did with ``import pycuda.autoprimaryctx``
    (inducer/pycuda pycuda/autoprimaryctx.py): per-backend push/pop cannot work, because
    ``Context.pop()`` is static and pops whatever is on top of the thread's stack (src/cpp/cuda.hpp:
    closing two backends in the order they were opened pops the wrong entry, then raises
    "cannot pop non-current context"), and a push left at exit makes pycuda abort the interpreter
    ("context stack was not empty upon module cleanup"). The primary context is also the one
    TensorRT's runtime API and onnxruntime use, so all of them share the device's memory.

    pycuda's context stack is per thread (src/cpp/cuda.hpp, context_stack is thread-specific): the push
    stays only on the main thread, whose stack atexit pops; any other thread gets the context pushed and
    popped around each call by :func:`context_scope`.
    """
    global _primary
    if _primary is None:
        context = cuda.Device(device).retain_primary_context()
        main = threading.current_thread() is threading.main_thread()
        if main:
            context.push()
            _at_exit(release_primary_context)
        _primary = (device, context, threading.get_ident() if main else None)
    elif _primary[0] != device:
        raise EngineError(f"this process already runs on GPU {_primary[0]}; use one process per GPU "
                          f"(--device {device} in another run)")
    return _primary[1]


def release_primary_context() -> None:
    """Pop the shared context (registered with atexit, as autoprimaryctx does); never detached, because
    detach() of a retained primary context leaves its push on the stack."""
    global _primary
    if _primary is not None:
        if _primary[2] is not None:
            _primary[1].pop()
        _primary = None


@contextlib.contextmanager
def context_scope():
    """The shared context current on this thread for the ``with`` body: a no-op on the thread that keeps it
    pushed, a push and a pop around the body on any other (strictly nested, so pycuda's static pop,
    which pops the top of this thread's stack, pops exactly this push)."""
    if _primary is None or _primary[2] == threading.get_ident():
        yield
        return
    _primary[1].push()
    try:
        yield
    finally:
        _primary[1].pop()


def trt_logger(trt: Any) -> Any:
    """The process's one TensorRT logger: TensorRT warns "the logger passed into createInferRuntime
    differs" when builders and runtimes get different ones, and Polygraphy's builders use its own
    (polygraphy/backend/trt/util.py, get_trt_logger), so runtimes get that one too; our own
    ``trt.Logger`` only where Polygraphy is not installed (running engines does not need it)."""
    global _logger
    if _logger is None or _logger[0] is not trt:
        try:
            poly, _ = import_polygraphy()
            logger = poly.get_trt_logger()
        except MissingDependencyError:
            logger = trt.Logger(trt.Logger.WARNING)
        _logger = (trt, logger)
    return _logger[1]


def start_builder(trt: Any) -> int:
    """Start a TensorRT builder (where TensorRT loads its kernels and meets the GPU) and return its DLA
    core count; raises EngineError when it cannot start."""
    builder = trt.Builder(trt_logger(trt))
    if builder is None:
        raise EngineError(f"TensorRT {trt.__version__} could not create a builder (its log above says why)")
    return int(builder.num_DLA_cores)


def tensorrt_unavailable_reason() -> str | None:
    """None where engines can be built and run here; else the one-line reason (for skipping a stage)."""
    try:
        import_tensorrt()
        import_cuda()
    except MissingDependencyError as exc:
        return str(exc)
    return None


def build_unavailable_reason() -> str | None:
    """None where engines can be built here; else the one-line reason: no TensorRT, no GPU, or no Polygraphy."""
    reason = tensorrt_unavailable_reason()
    if reason is None:
        try:
            import_polygraphy()
        except MissingDependencyError as exc:
            reason = str(exc)
    return reason


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
