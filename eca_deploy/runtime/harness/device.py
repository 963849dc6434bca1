"""What machine a result was measured on: CPU, threads, GPU, driver, CUDA, TensorRT, onnxruntime, Jetson.

Every file read and command goes through a :class:`Probe` (a root folder and a command runner), so
tests feed a Jetson's files and tool outputs without owning a Jetson.
"""

from __future__ import annotations

import os
import platform
import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ...artifacts import package_versions
from ...errors import visible_text
from ...graph.cpu import cpu_features, lacks_vnni, saturation_warning, this_cpu_features
from ...graph.session import has_fp16_qdq
from ..tensorrt.env import tensorrt_version_or_none

# L4T release -> JetPack, from NVIDIA's JetPack archive; used only when dpkg has no nvidia-jetpack package.
L4T_TO_JETPACK = {
    "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4", "32.7.5": "4.6.5",
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3",
    "35.6.0": "5.1.4", "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2",
}
UNPINNED_WARNING = ("Jetson clocks are not pinned: timings will vary with DVFS; run `sudo jetson_clocks` "
                    "(and pick the power mode with `sudo nvpmodel -m N`) before benchmarking")


PROBE_TIMEOUT_S = 10.0
PROBE_OUTPUT_CAP = 1 << 20  # bytes: nvidia-smi's full table is ~5 KB; a tool that floods is killed here


def run_command(argv: list[str], timeout: float = PROBE_TIMEOUT_S, cap: int = PROBE_OUTPUT_CAP) -> str | None:
    """stdout of a command, or None where it is missing, fails, hangs or prints more than ``cap`` bytes.

    Read as it comes, so a tool that floods its output is killed at the cap instead of buffered whole;
    decoded with replacement characters, since a probed tool's bytes need not be UTF-8."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except (OSError, ValueError):
        return None
    deadline = time.monotonic() + timeout
    with proc:
        try:
            out = _read_capped(proc, deadline, cap)
            if out is not None:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))  # stdout closed: it is exiting
        except subprocess.TimeoutExpired:
            out = None
        finally:
            if proc.poll() is None:
                proc.kill()
    return out.decode(errors="replace") if out is not None and proc.returncode == 0 else None


def _read_capped(proc: subprocess.Popen, deadline: float, cap: int) -> bytes | None:
    """All of ``proc``'s stdout, or None past ``deadline`` or ``cap`` bytes."""
    chunks, size, fd = [], 0, proc.stdout.fileno()
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)


@dataclass
class Probe:
    root: Path = Path("/")
    run: Callable[[list[str]], str | None] = field(default=run_command)

    def __post_init__(self) -> None:
        # every probed string is shown to the user: a tool or file printing terminal escapes or
        # bidirectional overrides must not rewrite the screen, so they become spaces here, once for all
        raw = self.run
        self.run = lambda argv: _visible(raw(argv))

    def read(self, path: str) -> str | None:
        try:
            with open(self.root / path.lstrip("/"), "rb") as fh:  # capped: a sysfs or /proc file can be endless
                return _visible(fh.read(PROBE_OUTPUT_CAP).decode(errors="replace"))
        except OSError:
            return None

    def listdir(self, path: str) -> list[str]:
        """The names in folder ``path`` (sorted), [] where it cannot be listed."""
        try:
            return sorted(entry.name for entry in (self.root / path.lstrip("/")).iterdir())
        except OSError:
            return []

    def number(self, path: str) -> float | None:
        """The number a sysfs file holds, None where it is absent or not a number."""
        try:
            return float((self.read(path) or "").strip())
        except ValueError:
            return None


def _visible(text: str | None) -> str | None:
    return visible_text(text, keep_newlines=True) if text is not None else None


def _cpu(probe: Probe) -> dict:
    info = probe.read("/proc/cpuinfo") or ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.lower().startswith("model name")), None)
    if model is None:  # ARM kernels often leave "model name" out; lscpu names the core type
        model = next((line.split(":", 1)[1].strip() for line in (probe.run(["lscpu"]) or "").splitlines()
                      if line.startswith("Model name")), None)
    cores = {tuple(re.findall(r"(?:physical id|core id)\s*:\s*(\d+)", block))
             for block in info.split("\n\n") if "core id" in block}
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    governor = probe.read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return {"model": model or platform.processor() or platform.machine(), "arch": platform.machine(),
            "logical_cores": os.cpu_count(), "physical_cores": len(cores) or None, "usable_cores": usable,
            "governor": governor.strip() if governor else None, "features": cpu_features(info)}


def _threads(threads: int | None) -> dict:
    # torch's threads only where a torch: reference loaded it: describing the machine must not import
    # torch (parity against a saved reference runs where PyTorch is not installed)
    torch = sys.modules.get("torch")
    return {"onnxruntime_intra_op": threads or "default (one per physical core)",
            "torch": threads or (torch.get_num_threads() if torch is not None else "not loaded"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def _gpus(probe: Probe) -> list[dict]:
    out = probe.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    gpus = []
    for line in (out or "").strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            gpus.append({"name": parts[0][:100], "driver": parts[1][:40], "memory": parts[2][:40]})
    return gpus


def _cuda(probe: Probe) -> dict:
    smi = probe.run(["nvidia-smi"]) or ""
    driver_cuda = re.search(r"CUDA Version:\s*([\d.]+)", smi)
    toolkit = probe.read("/usr/local/cuda/version.json")
    toolkit_version = re.search(r'"cuda"\s*:\s*\{[^}]*"version"\s*:\s*"([\d.]+)"', toolkit or "")
    if toolkit_version is None:
        toolkit_version = re.search(r"CUDA Version\s+([\d.]+)", probe.read("/usr/local/cuda/version.txt") or "")
    return {"driver_supports": driver_cuda.group(1) if driver_cuda else None,
            "toolkit": toolkit_version.group(1) if toolkit_version else None,
            "kernel_driver": kernel_driver_version(probe)}


def kernel_driver_version(probe: Probe) -> str | None:
    """The loaded NVIDIA kernel module's version ("NVRM version: ... Kernel Module  550.54.15  ..."): what
    nvidia-smi's word is checked against, since any program named nvidia-smi on PATH can print anything."""
    match = re.search(r"NVRM version:.*?\s(\d+\.\d+(?:\.\d+)?)\s", probe.read("/proc/driver/nvidia/version") or "")
    return match.group(1) if match else None


def parse_l4t(text: str | None) -> str | None:
    """'# R36 (release), REVISION: 3.0, ...' -> '36.3.0'."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text or "")
    return f"{match.group(1)}.{match.group(2)}" if match else None


def parse_nvpmodel(text: str | None) -> dict | None:
    match = re.search(r"NV Power Mode:\s*(\S+)(?:\s*\n\s*(\d+))?", text or "")
    if not match:
        return None
    return {"name": match.group(1), "id": int(match.group(2)) if match.group(2) else None}


def parse_jetson_clocks(text: str | None) -> dict | None:
    """Pinned when every online CPU and the GPU run with MinFreq == MaxFreq (what `jetson_clocks` sets)."""
    if not text:
        return None
    domains = {}
    for line in text.splitlines():
        name = re.match(r"\s*(cpu\d+|GPU|EMC)\b", line)
        fields = dict(re.findall(r"(\w+)=(\S+)", line))
        if name and "MinFreq" in fields and "MaxFreq" in fields and fields.get("Online", "1") == "1":
            domains[name.group(1)] = fields["MinFreq"] == fields["MaxFreq"]
    if not domains:
        return None
    unpinned = sorted(d for d, pinned in domains.items() if not pinned and d != "EMC")
    return {"pinned": not unpinned, "unpinned": unpinned}


GPU_LOAD = "/sys/devices/gpu.0/load"  # per mille; jetson-stats divides by 10 (jtop/core/gpu.py, igpu_read_status)
DEVFREQ = "/sys/class/devfreq"


def jetson_gpu(probe: Probe) -> dict:
    """The integrated GPU's load (%) and devfreq clocks (MHz), None where unreadable. As jetson-stats finds it
    (jtop/core/gpu.py, find_igpu): the devfreq node whose device/of_node/name names a GPU (gpu, gv11b,
    ga10b, ...); its cur_freq/min_freq/max_freq are in Hz, its device's ``load`` in per mille."""
    node = next((f"{DEVFREQ}/{name}" for name in probe.listdir(DEVFREQ)
                 if _is_gpu((probe.read(f"{DEVFREQ}/{name}/device/of_node/name") or "").strip("\x00 \n"))), None)
    load = probe.number(GPU_LOAD)
    if load is None and node:
        load = probe.number(f"{node}/device/load")
    freq = {key: probe.number(f"{node}/{key}_freq") if node else None for key in ("cur", "min", "max")}
    return {"load_percent": None if load is None else load / 10,
            **{f"{key}_mhz": None if hz is None else round(hz / 1e6) for key, hz in freq.items()}}


def _is_gpu(name: str) -> bool:
    return "gpu" in name.lower() or name.lower() in ("gv11b", "ga10b", "gp10b", "gm20b", "gb10b")


def _jetson(probe: Probe) -> dict | None:
    model = probe.read("/proc/device-tree/model")
    release = probe.read("/etc/nv_tegra_release")
    if release is None and not (model and "jetson" in model.lower()):
        return None
    l4t = parse_l4t(release)
    jetpack = (probe.run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"]) or "").strip()
    clocks = parse_jetson_clocks(probe.run(["jetson_clocks", "--show"]))
    return {
        "model": model.strip("\x00 \n") if model else None,
        "l4t": l4t,
        "jetpack": jetpack.split("+")[0].split("-")[0] if jetpack else L4T_TO_JETPACK.get(l4t or ""),
        "power_mode": parse_nvpmodel(probe.run(["nvpmodel", "-q"])),
        # jetson_clocks --show needs root; None means we could not tell.
        "clocks_pinned": clocks["pinned"] if clocks else None,
        "clocks_unpinned_domains": clocks["unpinned"] if clocks else None,
        "gpu": jetson_gpu(probe),
    }


def _providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def machine_facts(probe: Probe | None = None) -> dict:
    """CPU, GPUs, CUDA and Jetson facts from files and tools alone, importing no inference package."""
    probe = probe or Probe()
    return {"cpu": _cpu(probe), "gpus": _gpus(probe), "cuda": _cuda(probe), "jetson": _jetson(probe)}


def describe_device(threads: int | None = None, probe: Probe | None = None) -> dict:
    """The device record saved with every parity, benchmark and pipeline result."""
    facts = machine_facts(probe)
    jetson, gpus = facts["jetson"], facts["gpus"]
    warnings = []
    if jetson and jetson["clocks_pinned"] is False:
        warnings.append(UNPINNED_WARNING)
    elif jetson and jetson["clocks_pinned"] is None:
        warnings.append("could not read `jetson_clocks --show` (run as root) to check that clocks are pinned")
    description = {
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": facts["cpu"],
        "threads": _threads(threads),
        "gpus": gpus,
        "cuda": facts["cuda"],
        "jetson": jetson,
        "versions": {**package_versions("onnxruntime", "openvino", "torch", "onnx", "numpy"),
                     "tensorrt": tensorrt_version_or_none()},
        "onnxruntime_providers": _providers(),
        "warnings": warnings,
    }
    description["label"] = device_label(description)
    return description


def device_label(description: dict) -> str:
    """A short name for tables: the Jetson board and power mode, else the GPU, else the CPU."""
    jetson = description.get("jetson")
    if jetson:
        mode = (jetson.get("power_mode") or {}).get("name")
        return f"{jetson.get('model') or 'Jetson'}" + (f" ({mode})" if mode else "")
    if description.get("gpus"):
        return description["gpus"][0]["name"]
    cpu = description.get("cpu", {})
    return f"{cpu.get('model')} ({cpu.get('usable_cores')} cores)"


CPU_RUNTIMES = {"onnxruntime-cpu": "onnxruntime", "openvino-cpu": "OpenVINO"}


def int8_cpu_warning(path: Path | None, backend: str, features: dict | None = None) -> str | None:
    """The warning parity, bench and pipeline print where ``backend`` runs the ONNX at ``path`` with 8-bit INT8
    weights on a u8s8 path that saturates on this CPU (no VNNI); None elsewhere. onnxruntime runs FP16-glue
    Q/DQ models unoptimized (graph/session.py), in float: those cannot saturate there."""
    features = this_cpu_features() if features is None else features
    runtime = next((name for prefix, name in CPU_RUNTIMES.items() if backend.startswith(prefix)), None)
    if runtime is None or path is None or path.suffix.lower() != ".onnx" or not lacks_vnni(features):
        return None  # checked before the file is read: on VNNI CPUs and GPUs nothing is loaded
    import onnx

    model = onnx.load(str(path))
    if runtime == "onnxruntime" and has_fp16_qdq(model):
        return None
    return saturation_warning(model, features, runtime, path.name)
