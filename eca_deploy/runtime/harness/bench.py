"""Latency and throughput per batch size: warm-up, then timed iterations for a count or a duration.

The timed loop calls ``backend.infer`` and one clock read on each side, nothing else, so the
harness measures what a bare ``session.run`` loop would (benchmarks/bench_harness.py checks it).
On a GPU a second pass keeps input and output on the device (``backend.device_runner``) and times
compute alone: with CUDA events where the backend has them. On a Jetson the board's power rails are
sampled during each timed loop (power.py): mean watts, mJ per image and FPS per watt beside the latency.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...data.pixels import INPUT_FORMATS
from ...errors import EcaDeployError, EngineError, warn
from ...progress import progress
from ..base import Backend
from ..backends.registry import Artifact, open_backend, parse_spec
from .device import Probe, int8_cpu_warning
from .power import PowerSampler, power_meter
from .rows import ReportRow

MIN_TIMED_ITERATIONS = 5
STABLE_P99_CALLS = 100  # below this a p99 is the slowest call, or an interpolation next to it
WIDE_SPREAD = 1.5  # calls "vary widely" where p90 is over this times p50: one call in ten is that much slower


@dataclass
class BenchConfig:
    model: str  # backend spec: torch:<model>[:weights], .onnx, openvino:<file.onnx>, .xml, .engine/.plan
    batches: tuple[int, ...] = (1,)
    warmup: int = 10
    iterations: int | None = None  # a fixed count; None: run for ``duration`` seconds
    duration: float = 3.0
    provider: str = "auto"
    device: str = "auto"  # torch backend only: cuda where available
    threads: int | None = None
    allow_host_code: bool = False  # TensorRT engines: run host code stored in the plan (explicit flag only)
    imgsz: int | None = None  # torch backend only (ONNX and engines carry their size)
    precision: str | None = None
    seed: int = 0
    ov_hint: str = "latency"  # OpenVINO's performance hint
    gpu: int = 0  # CUDA GPU index for TensorRT engines (--gpu)
    sysfs_root: str = "/"  # where /sys is read from (power rails); tests point it at a fake tree


def latency_stats(seconds: np.ndarray, batch: int) -> dict:
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    mean = float(ms.mean())
    return {"min": float(ms.min()), "p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "mean": mean, "fps": batch * 1e3 / mean,
            "iterations": int(ms.size)}


def timing_notes(entries: list[dict]) -> list[str]:
    """What a reader should know before trusting the numbers: a p99 from too few calls, calls that varied widely."""
    notes = []
    few = [e["iterations"] for e in entries if e["iterations"] < STABLE_P99_CALLS]
    if few:
        notes.append(f"p99 from {min(few)} calls is about the slowest call, not a stable percentile: time at least "
                     f"{STABLE_P99_CALLS} calls (--iterations, or a longer --duration) before trusting it")
    noisy = [str(e["batch"]) for e in entries if e["p90"] > WIDE_SPREAD * e["p50"]]
    if noisy:
        notes.append(f"calls varied widely at batch {', '.join(dict.fromkeys(noisy))} (p90 over {WIDE_SPREAD:g}x p50): "
                     "other work on this machine? rerun and compare before trusting these numbers")
    return notes


def time_loop(step, warmup: int, iterations: int | None, duration: float, own_clock: bool = False) -> np.ndarray:
    """Seconds per ``step()`` after ``warmup`` calls; with ``own_clock`` the step returns its own ms (CUDA events)."""
    for _ in range(warmup):
        step()
    clock = time.perf_counter
    times: list[float] = []
    append = times.append
    deadline = clock() + duration
    while True:
        start = clock()
        value = step()
        end = clock()
        append(value / 1e3 if own_clock else end - start)
        if iterations is not None:
            if len(times) >= iterations:
                break
        elif end >= deadline and len(times) >= MIN_TIMED_ITERATIONS:
            break
    return np.asarray(times)


def manifest_batch_limit(artifact: Artifact) -> int | None:
    """The largest batch an artifact's manifest records for its profile (an engine's max shape [N, C, H, W])."""
    shape = ((artifact.manifest or {}).get("profile") or {}).get("max")
    return int(shape[0]) if shape else None


def check_batches(artifact: Artifact, batches: tuple[int, ...], backend: Backend | None = None) -> None:
    """Refuse batch sizes the model cannot take: from the engine manifest before TensorRT is even loaded,
    then from the opened backend (a static batch axis, or the engine's own profile)."""
    if not batches or min(batches) < 1:
        raise EcaDeployError(f"batch sizes must be positive integers, got {','.join(map(str, batches))}")
    high = manifest_batch_limit(artifact)
    if high is not None and max(batches) > high:
        raise EngineError(f"batch {max(batches)} is above the engine's optimization profile (max batch {high}); "
                          f"rebuild the engine with a larger --profile MIN:OPT:MAX or bench batches <= {high}")
    if backend is None:
        return
    low, high = backend.batch_limits()
    if low == high and set(batches) != {low}:
        raise EcaDeployError(f"{artifact.label} has a static batch of {low}; bench --batch-sizes {low} or export with "
                             "a dynamic batch axis")
    if min(batches) < low or (high is not None and max(batches) > high):
        raise EngineError(f"{artifact.label} takes batches {low}..{high}; got {','.join(map(str, batches))}")


def bench_backend(backend: Backend, batches: tuple[int, ...], imgsz: int, warmup: int = 10,
                  iterations: int | None = None, duration: float = 3.0, seed: int = 0,
                  label: str | None = None, power: PowerSampler | None = None) -> list[dict]:
    """One entry per batch (and per clock on GPUs): latency stats, throughput, clock and copies; with
    ``power``, the board's mean power over the timed loop, mJ per image and FPS per watt."""
    rng = np.random.default_rng(seed)
    entries = []
    for batch in progress(batches, desc=f"bench {label or backend.name}", unit="batch sizes"):
        images = INPUT_FORMATS[backend.input_format].random_batch(rng, batch, imgsz)
        device = backend.device_runner(images)
        copies = "included" if device else "none (host memory)"
        entries.append({"batch": batch, "clock": "host", "copies": copies,
                        **_measured(lambda: backend.infer(images), batch, warmup, iterations, duration, power)})
        if device:
            run, clock = device
            entries.append({"batch": batch, "clock": clock, "copies": "excluded",
                            **_measured(run, batch, warmup, iterations, duration, power, own_clock=True)})
    return entries


def _measured(step, batch: int, warmup: int, iterations: int | None, duration: float, power: PowerSampler | None,
              own_clock: bool = False) -> dict:
    """Latency stats of the timed loop, and the power fields sampled over it alone (warm-up excluded)."""
    for _ in range(warmup):
        step()
    with power or contextlib.nullcontext():
        stats = latency_stats(time_loop(step, 0, iterations, duration, own_clock), batch)
    return {**stats, **(power.fields(stats["fps"]) if power else {})}


@dataclass
class BenchResult:
    artifact: Artifact
    backend: str
    precision: str
    imgsz: int
    entries: list[dict] = field(default_factory=list)
    power: dict = field(default_factory=dict)  # the rails sampled, or {"unavailable": why}

    def row(self) -> ReportRow:
        return ReportRow.of(self.artifact, self.precision, self.backend, "measured",
                            bench={"imgsz": self.imgsz, "batches": self.entries})


def run_bench(cfg: BenchConfig) -> BenchResult:
    artifact = parse_spec(cfg.model)
    check_batches(artifact, cfg.batches)  # an engine's profile is checked before TensorRT is even needed
    if cfg.iterations is not None and cfg.iterations < 1:
        raise EcaDeployError(f"--iterations must be positive, got {cfg.iterations}")
    if cfg.duration <= 0 or cfg.warmup < 0:
        raise EcaDeployError("--duration must be positive and --warmup not negative")
    backend = open_backend(artifact, provider=cfg.provider, device=cfg.device, imgsz=cfg.imgsz or 224,
                           threads=cfg.threads, ov_hint=cfg.ov_hint, allow_host_code=cfg.allow_host_code,
                           gpu=cfg.gpu)
    try:
        check_batches(artifact, cfg.batches, backend)
        saturation = int8_cpu_warning(artifact.path, backend.name)
        if saturation:
            warn(saturation + " (its speed here is still measured)")
        imgsz = backend.image_size[0] or cfg.imgsz or 224
        sampler, power = power_meter(Probe(root=Path(cfg.sysfs_root)))
        entries = bench_backend(backend, cfg.batches, imgsz, cfg.warmup, cfg.iterations, cfg.duration, cfg.seed,
                                artifact.label, sampler)
        return BenchResult(artifact, backend.name, artifact.precision(cfg.precision)[0], imgsz, entries, power)
    finally:
        backend.close()
