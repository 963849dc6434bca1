"""``eca-deploy doctor``: what this machine has for eca-deploy, and whether what it has works.

Each check says OK, missing (absent: fine, that feature is unavailable here) or problem (present
but broken), with the one command that fixes it. Where TensorRT and a GPU work, a smoke test builds
a tiny ECA network's FP32 and FP16 engines and compares them with onnxruntime.

Inference packages are imported through :func:`_import_module` (torch, onnxruntime) and
tensorrt/env.py's seam (TensorRT, pycuda), and machine facts come from device.Probe, so tests play
a broken install or a Jetson.
"""

from __future__ import annotations

import importlib
import platform
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ... import __version__
from ...errors import first_line
from ..tensorrt.probe import MISSING, OK, PROBLEM, probe_stack

SMOKE_IMGSZ = 16
SMOKE_BATCH = 4


@dataclass
class Check:
    name: str
    status: str  # OK | missing | problem
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "detail": self.detail,
                "fix": self.fix if self.status != OK else None}

    def line(self) -> str:
        fix = f" -> fix: {self.fix}" if self.fix and self.status != OK else ""
        return f"{self.status:<8} {self.name:<13} {self.detail}{fix}"


def _import_module(name: str) -> Any:
    return importlib.import_module(name)


def _module(name: str, install: str, describe: Callable[[Any], str], label: str | None = None) -> tuple[Check, Any]:
    """Import ``name``: missing when absent, problem when present but failing to load."""
    label = label or name
    try:
        module = _import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name in (None, name, name.split(".")[0]):
            return Check(label, MISSING, "not installed", install), None
        return Check(label, PROBLEM, f"installed but cannot load: {first_line(exc)}",
                     f"pip install --force-reinstall {name}"), None
    except Exception as exc:  # a shared library missing or built for something else
        return Check(label, PROBLEM, f"installed but cannot load: {first_line(exc)}",
                     f"pip install --force-reinstall {name}"), None
    try:
        return Check(label, OK, describe(module)), module
    except Exception as exc:
        return Check(label, PROBLEM, f"{getattr(module, '__version__', '')} fails: {first_line(exc)}".strip(),
                     f"pip install --force-reinstall {name}"), None


def _torch(module: Any) -> str:
    cuda = module.cuda.is_available()
    return f"{module.__version__} ({'CUDA ' + str(module.version.cuda) if cuda else 'CPU only'})"


def _onnxruntime(module: Any) -> str:
    return f"{module.__version__}, providers: {', '.join(module.get_available_providers())}"


def _gpu_clock(gpu: dict | None) -> str:
    """", GPU 612 of 1300 MHz, load 3%" from device.jetson_gpu, or "" where sysfs told nothing."""
    gpu = gpu or {}
    parts = []
    if gpu.get("cur_mhz") is not None:
        parts.append(f"{gpu['cur_mhz']} of {gpu.get('max_mhz') or '?'} MHz")
    if gpu.get("load_percent") is not None:
        parts.append(f"load {gpu['load_percent']:.0f}%")
    return f", GPU {', '.join(parts)}" if parts else ""


def _openvino(module: Any) -> str:
    return f"{module.__version__.split('-')[0]}, devices: {', '.join(module.Core().available_devices)}"


def _timm(module: Any) -> str:
    return f"{module.__version__} (timm:<name> models)"


def _meminfo_gib(text: str, key: str) -> float | None:
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 2**20 if match else None


def memory_check(probe: Any = None) -> Check:
    """Total and available RAM (what a large model's calibration or an engine build needs), and a container's
    lower cgroup limit where one is set."""
    from .device import Probe

    probe = probe or Probe()
    info = probe.read("/proc/meminfo") or ""
    total, available = _meminfo_gib(info, "MemTotal"), _meminfo_gib(info, "MemAvailable")
    if total is None:
        return Check("memory", MISSING, "unknown (no /proc/meminfo)")
    detail = f"{total:.1f} GiB total" + (f", {available:.1f} GiB available" if available is not None else "")
    limit = (probe.read("/sys/fs/cgroup/memory.max") or "").strip()
    if limit.isdigit() and int(limit) / 2**30 < total:
        detail += f", container limit {int(limit) / 2**30:.1f} GiB"
    return Check("memory", OK, detail)


def _machine_checks(facts: dict) -> list[Check]:
    gpus, cuda, jetson, cpu = facts["gpus"], facts["cuda"], facts["jetson"], facts["cpu"]
    checks = []
    if gpus:
        checks += _gpu_checks(gpus, cuda)
    elif jetson:
        checks.append(Check("GPU", OK, f"{jetson.get('model') or 'Jetson'} integrated GPU"))
        checks.append(Check("driver/CUDA", OK if cuda.get("toolkit") else MISSING,
                            f"CUDA toolkit {cuda.get('toolkit') or 'not found in /usr/local/cuda'}",
                            "sudo apt install nvidia-jetpack"))
    else:
        checks.append(Check("GPU", MISSING, "no NVIDIA GPU (nvidia-smi finds none): engines cannot run here"))
        checks.append(Check("driver/CUDA", MISSING, "no NVIDIA driver"))
    if jetson:
        checks.append(Check("JetPack/L4T", OK, f"JetPack {jetson.get('jetpack') or '?'} (L4T {jetson.get('l4t')})"))
        mode = (jetson.get("power_mode") or {}).get("name") or "unknown (nvpmodel -q failed)"
        pinned = {True: "clocks pinned", False: "clocks NOT pinned: run `sudo jetson_clocks` before bench",
                  None: "clock pinning unknown (`jetson_clocks --show` needs root)"}[jetson.get("clocks_pinned")]
        checks.append(Check("power/clocks", OK, f"power mode {mode}, {pinned}{_gpu_clock(jetson.get('gpu'))}"))
    else:
        checks.append(Check("JetPack/L4T", MISSING, "not a Jetson"))
        checks.append(Check("power/clocks", OK, f"CPU governor {cpu.get('governor') or 'unknown'}"))
    checks.append(_cpu_features_check(cpu.get("features") or {}))
    return checks


DRIVER_VERSION = re.compile(r"^\d{2,4}\.\d{1,3}(\.\d{1,3})?$")


def _gpu_checks(gpus: list[dict], cuda: dict) -> list[Check]:
    """GPU and driver lines from nvidia-smi, OK only where the loaded kernel module confirms its driver
    version: nvidia-smi is whatever program is first on PATH, and its word alone proves no GPU."""
    names = "; ".join(f"{g['name']} ({g['memory']})" for g in gpus)
    driver, kernel = gpus[0]["driver"], cuda.get("kernel_driver")
    detail = (f"driver {driver}, supports CUDA {cuda.get('driver_supports') or '?'}, toolkit "
              f"{cuda.get('toolkit') or 'not found'}")
    fix = "reinstall the NVIDIA driver (nvidia-smi and the kernel module must come from one driver release)"
    if not DRIVER_VERSION.match(driver):
        problem = f"nvidia-smi reports a driver version that is not one: '{driver[:40]}'"
    elif kernel is None:
        unconfirmed = "reported by nvidia-smi only: no NVIDIA kernel module is loaded (/proc/driver/nvidia/version)"
        return [Check("GPU", MISSING, f"{names}, {unconfirmed}", fix),
                Check("driver/CUDA", MISSING, f"{detail}; {unconfirmed}", fix)]
    elif kernel != driver:
        problem = f"nvidia-smi reports driver {driver} but the loaded kernel module is {kernel}"
    else:
        return [Check("GPU", OK, names), Check("driver/CUDA", OK, f"{detail} (kernel module {kernel})")]
    return [Check("GPU", PROBLEM, f"{names}; {problem}", fix), Check("driver/CUDA", PROBLEM, problem, fix)]



def _cpu_features_check(features: dict) -> Check:
    """The CPU's vector features, and what they mean for INT8 run on this CPU (onnxruntime, OpenVINO)."""
    from ...graph.cpu import describe_features, lacks_vnni

    detail = describe_features(features)
    if lacks_vnni(features):
        detail += ("; no VNNI: INT8 with 8-bit weights saturates in onnxruntime/OpenVINO here, so deploy "
                   "quantize --target cpu files made without --cpu-vnni (7-bit weights)")
    return Check("CPU features", OK, detail)


def tiny_eca_onnx(path: Path, seed: int = 0) -> Path:
    """A tiny runnable ECA network (conv, ECA block, pool, classifier) written with onnx.helper, so the
    smoke test needs no torch: Conv -> Relu -> [GlobalAveragePool -> Reshape -> Conv1d -> Reshape ->
    Sigmoid -> Mul] -> GlobalAveragePool -> Flatten -> Gemm, the block as eca-deploy exports it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    channels, classes = 8, 10

    def const(name, array):
        return numpy_helper.from_array(np.asarray(array), name)

    inits = [const("conv_w", rng.normal(0, 0.3, (channels, 3, 3, 3)).astype(np.float32)),
             const("conv_b", rng.normal(0, 0.1, channels).astype(np.float32)),
             const("eca_w", rng.normal(0, 0.5, (1, 1, 3)).astype(np.float32)),
             const("to_1d", np.array([-1, 1, channels], np.int64)),
             const("to_4d", np.array([-1, channels, 1, 1], np.int64)),
             const("fc_w", rng.normal(0, 0.3, (classes, channels)).astype(np.float32)),
             const("fc_b", rng.normal(0, 0.1, classes).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Reshape", ["p", "to_1d"], ["p1"]),
             helper.make_node("Conv", ["p1", "eca_w"], ["e"], pads=[1, 1]),
             helper.make_node("Reshape", ["e", "to_4d"], ["e4"]),
             helper.make_node("Sigmoid", ["e4"], ["g"]),
             helper.make_node("Mul", ["r", "g"], ["m"]),
             helper.make_node("GlobalAveragePool", ["m"], ["q"]),
             helper.make_node("Flatten", ["q"], ["f"]),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "tiny_eca", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                          ["batch", 3, SMOKE_IMGSZ, SMOKE_IMGSZ])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def smoke_test(folder: Path, device: int = 0) -> Check:
    """Build the tiny ECA network's FP32 and FP16 engines and compare them with onnxruntime on the same
    inputs, with parity's default tolerances (TF32's for the FP32 engine)."""
    import onnx

    from ...calibration.fp16 import convert_to_fp16
    from ...data.synthetic import photo_like_batch
    from ...graph.compare import check_elements
    from ...graph.session import run_once
    from ..tensorrt.backend import TensorRTBackend
    from ..tensorrt.builder import BuildConfig, build_engine
    from ..tensorrt.compat import fastest_opt_level
    from ..tensorrt.env import installed_tensorrt_version
    from .parity import tolerance_for

    fp32 = tiny_eca_onnx(folder / "tiny_eca.onnx")
    fp16 = folder / "tiny_eca.fp16.onnx"
    onnx.save(convert_to_fp16(onnx.load(str(fp32)))[0], str(fp16))
    images = photo_like_batch(SMOKE_BATCH, SMOKE_IMGSZ)  # the inputs every other check without images uses
    reference = run_once(fp32, images)
    start, results = time.perf_counter(), []
    opt_level = fastest_opt_level(installed_tensorrt_version())  # None on 8.5, which has no levels
    for precision, path in (("fp32", fp32), ("fp16", fp16)):
        built = build_engine(BuildConfig(onnx=str(path), profile=f"1:{SMOKE_BATCH}:{SMOKE_BATCH}",
                                         workspace_gib=0.25, opt_level=opt_level, gpu=device))
        with TensorRTBackend(built.engine_path, device=device) as backend:
            logits = backend.infer(images)
            # against onnxruntime, which has no float64 run: FP32's fixed check
            tol = tolerance_for(precision, fp32_math=backend.fp32_math, rounding_known=False)
        check = check_elements(reference, logits, tol.atol, tol.rtol)
        results.append((precision, float(np.abs(logits - reference).max()), check.passed))
    seconds = time.perf_counter() - start
    text = ", ".join(f"{p} max abs {m:.1e}" for p, m, _ in results)
    if all(ok for *_, ok in results):
        return Check("smoke test", OK, f"tiny ECA FP32 + FP16 engines match onnxruntime ({text}; {seconds:.1f} s)")
    failed = [p for p, _, ok in results if not ok]
    return Check("smoke test", PROBLEM, f"{'/'.join(failed)} engine(s) differ from onnxruntime beyond parity's "
                                        f"tolerance ({text})", "eca-deploy doctor --verbose, and report what it prints")


def run_doctor(probe: Any = None, smoke: bool = True, verbose: bool = False) -> list[Check]:
    from .device import machine_facts

    facts = machine_facts(probe)
    python_ok = sys.version_info >= (3, 9)
    checks = [Check("Python", OK if python_ok else PROBLEM, f"{platform.python_version()} ({sys.executable})",
                    "install Python 3.9 or newer"),
              Check("eca-deploy", OK, f"{__version__} ({Path(__file__).resolve().parents[2]})")]
    checks.append(_module("torch", "pip install torch (optional: only torch: references and export need it)",
                          _torch)[0])
    checks.append(_module("onnxruntime", "pip install onnxruntime", _onnxruntime)[0])
    checks.append(_module("openvino", "pip install 'eca-deploy[openvino]' (optional: IR export and x86 CPU runs)",
                          _openvino, label="OpenVINO")[0])
    checks.append(_module("timm", "pip install 'eca-deploy[timm]' with a torchvision matching your torch (optional: "
                                  "timm:<name> models)", _timm)[0])
    findings, engines_work = probe_stack(jetson=facts.get("jetson") is not None)
    checks += [Check(*finding) for finding in findings]
    checks += _machine_checks(facts)
    checks.append(memory_check(probe))
    if not smoke:
        checks.append(Check("smoke test", MISSING, "skipped (--no-smoke-test)"))
    elif not engines_work:
        checks.append(Check("smoke test", MISSING, "needs TensorRT and a CUDA GPU"))
    else:
        try:
            with tempfile.TemporaryDirectory(prefix="eca-doctor-") as tmp:
                checks.append(smoke_test(Path(tmp)))
        except Exception as exc:  # one line whatever failed: this line goes into bug reports
            if verbose:
                import traceback

                traceback.print_exc()
            checks.append(Check("smoke test", PROBLEM, f"failed: {first_line(exc)}",
                                "eca-deploy doctor --verbose, and report what it prints"))
    return checks


def exit_code(checks: list[Check]) -> int:
    """0 when everything present works, 1 when something present is broken (missing is not broken)."""
    return 1 if any(c.status == PROBLEM for c in checks) else 0
