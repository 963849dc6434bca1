"""What ``eca-deploy doctor`` asks of TensorRT and pycuda: the version, whether the builder starts, the
CUDA context, DLA cores. Lives here because only this package touches TensorRT and pycuda; each
finding is (name, status, detail, fix) with status OK / missing / problem."""

from __future__ import annotations

from typing import Any

from ...errors import MissingDependencyError, first_line
from .env import import_cuda, import_polygraphy, import_tensorrt, primary_context, start_builder

OK, MISSING, PROBLEM = "OK", "missing", "problem"
Finding = tuple[str, str, str, "str | None"]


def probe_stack(jetson: bool) -> tuple[list[Finding], bool]:
    """Findings for TensorRT, Polygraphy, pycuda and DLA, and whether engines can be built and run here."""
    install_trt = ("sudo apt install python3-libnvinfer (in a venv made with --system-site-packages)"
                   if jetson else "pip install 'eca-deploy[tensorrt]'")
    trt = cuda = None
    try:
        trt = import_tensorrt()
        trt_finding = ["TensorRT", OK, trt.__version__, install_trt]
    except MissingDependencyError as exc:
        absent = "is not installed" in str(exc)
        trt_finding = ["TensorRT", MISSING if absent else PROBLEM, "not installed" if absent else str(exc),
                       install_trt]
    try:
        cuda = import_cuda()
        primary_context(cuda, 0)
        cuda_finding = ("pycuda", OK, f"{_version('pycuda')}, CUDA context on GPU 0 of {cuda.Device.count()}, "
                                      f"driver API {_cuda_version(cuda)}", None)
    except MissingDependencyError as exc:
        message = str(exc)
        if "pycuda is not installed" in message:
            cuda_finding = ("pycuda", MISSING, "not installed", "pip install pycuda")
        elif message.startswith(("no CUDA", "GPU ")):
            cuda_finding = ("pycuda", MISSING, f"installed; {message.split(':')[0]}", None)
        else:
            cuda_finding = ("pycuda", PROBLEM, message, "pip install --force-reinstall pycuda")
        cuda = None
    except Exception as exc:  # pycuda's own driver errors while making the context
        cuda_finding = ("pycuda", PROBLEM, f"cannot make a CUDA context: {first_line(exc)}",
                        "pip install --force-reinstall pycuda")
        cuda = None
    dla_finding = ("DLA", MISSING, "unknown without TensorRT and a working CUDA GPU", None)
    ready = trt is not None and cuda is not None
    if ready:
        try:
            cores = start_builder(trt)
            trt_finding[2] += ", builder starts"
            dla_finding = ("DLA", OK, f"{cores} DLA core(s)", None) if cores else \
                ("DLA", MISSING, "no DLA cores (only Jetson AGX/NX modules have them)", None)
        except Exception as exc:
            trt_finding = ["TensorRT", PROBLEM, f"{trt.__version__}: the builder cannot start ({first_line(exc)})",
                           install_trt]
            ready = False
    elif trt is not None:
        trt_finding[2] += " (builder not started: no working CUDA GPU)"
    return [tuple(trt_finding), _polygraphy_finding(), cuda_finding, dla_finding], ready


def _polygraphy_finding() -> Finding:
    """Builds go through Polygraphy's loaders; running engines does not need it."""
    try:
        import_polygraphy()
    except MissingDependencyError:
        return ("Polygraphy", MISSING, "not installed: engines run, `eca-deploy build` needs it",
                "pip install polygraphy")
    return ("Polygraphy", OK, _version("polygraphy"), None)


def _version(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "?"


def _cuda_version(cuda: Any) -> str:
    version = int(cuda.get_driver_version())  # e.g. 12020
    return f"{version // 1000}.{version % 1000 // 10}"
