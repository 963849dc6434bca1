"""Latency and throughput per batch size: warm-up, then timed iterations for a count or a duration.

The timed loop calls ``backend.infer`` and one clock read on each side, nothing else, so the
harness measures what a bare ``session.run`` loop would (benchmarks/bench_harness.py checks it).
On a GPU a second pass keeps input and output on the device (``backend.device_runner``) and times
compute alone: with CUDA events where the backend has them. On a Jetson the board's power rails are
sampled during each timed loop (power.py): mean watts, mJ per image and FPS per watt beside the latency.
A Triton server (triton://HOST:PORT/MODEL) is timed from the client at concurrency levels, as perf_analyzer's
concurrency mode does: N threads, each keeping one request of the batch size in flight.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...data.synthetic import synthetic_batch
from ...errors import EcaDeployError, EngineError, UsageError, warn
from ...progress import progress
from ..base import Backend, OpenOptions
from ..registry import Artifact, open_backend, parse_spec
from .device import Probe, int8_cpu_warning
from .power import PowerSampler, power_meter
from .rows import ReportRow

MIN_TIMED_ITERATIONS = 5
STABLE_P99_CALLS = 100  # below this a p99 is the slowest call, or an interpolation next to it
WIDE_SPREAD = 1.5  # calls "vary widely" where p90 is over this times p50: one call in ten is that much slower


@dataclass(frozen=True)
class Timing:
    """How long each batch size is timed (--batch-sizes, --warmup, --iterations, --duration)."""

    batches: tuple[int, ...] = (1,)
    warmup: int = 10
    iterations: int | None = None  # a fixed count; None: run for ``duration`` seconds
    duration: float = 3.0

    def check(self) -> None:
        if not self.batches or min(self.batches) < 1:
            raise EcaDeployError("batch sizes must be positive integers")
        if self.iterations is not None and self.iterations < 1:
            raise EcaDeployError(f"--iterations must be positive, got {self.iterations}")
        if self.duration <= 0 or self.warmup < 0:
            raise EcaDeployError("--duration must be positive and --warmup not negative")


@dataclass
class BenchConfig:
    model: str  # backend spec: torch:<model>[:weights], .onnx, openvino:<file.onnx>, .xml, .engine/.plan
    timing: Timing = field(default_factory=Timing)
    options: OpenOptions = field(default_factory=OpenOptions)  # how the model is opened (--provider, --threads, ...)
    imgsz: int | None = None  # torch backend only (ONNX and engines carry their size)
    precision: str | None = None
    seed: int = 0
    sysfs_root: str = "/"  # where /sys is read from (power rails); tests point it at a fake tree
    concurrency: tuple[int, ...] | None = None  # requests in flight per level (a Triton server); None: 1


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
    entries = []
    for batch in progress(batches, desc=f"bench {label or backend.name}", unit="batch sizes"):
        images = synthetic_batch(backend.input_format, batch, imgsz, [seed, batch])
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


MAX_CONCURRENCY = 256
CLIENT_COPIES = "included (network)"  # request and response cross the network: part of every call
BARRIER_TIMEOUT_S = 600.0  # every thread's warm-up done by then, or the level fails instead of hanging


def bench_concurrency(backend: Backend, batches: tuple[int, ...], levels: tuple[int, ...], imgsz: int,
                      warmup: int = 10, iterations: int | None = None, duration: float = 3.0, seed: int = 0,
                      label: str | None = None) -> list[dict]:
    """One entry per (batch, concurrency level): latency of every request as the client saw it, and the
    throughput the server gave all in-flight requests together."""
    entries = []
    for batch in progress(batches, desc=f"bench {label or backend.name}", unit="batch sizes"):
        images = synthetic_batch(backend.input_format, batch, imgsz, [seed, batch])
        for level in levels:
            seconds, wall = time_concurrent(lambda: backend.infer(images), level, warmup, iterations, duration)
            stats = latency_stats(seconds, batch)
            entries.append({"batch": batch, "concurrency": level, "clock": "client", "copies": CLIENT_COPIES,
                            **stats, "fps": batch * stats["iterations"] / wall})
    return entries


def time_concurrent(step, level: int, warmup: int, iterations: int | None, duration: float) -> tuple[np.ndarray, float]:
    """``level`` threads calling ``step`` back to back after ``warmup`` calls each: the seconds of every timed
    call, and the wall time from the first timed call to the last answer. Ends after ``iterations`` calls in
    all, or at ``duration`` seconds (with at least MIN_TIMED_ITERATIONS calls)."""
    clock = time.perf_counter
    times: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    window = {"claimed": 0}
    started = threading.Barrier(level, action=lambda: window.update(start=clock(), deadline=clock() + duration))

    def claim() -> bool:
        """Whether one more timed request may be sent (counted when it is claimed, so none overshoots)."""
        with lock:
            if iterations is not None:
                more = window["claimed"] < iterations
            else:
                more = clock() < window["deadline"] or window["claimed"] < MIN_TIMED_ITERATIONS
            more = more and not errors
            window["claimed"] += more
            return more

    def worker() -> None:
        try:
            for _ in range(max(warmup, 1)):  # at least one: each thread opens its connection untimed
                step()
            started.wait(BARRIER_TIMEOUT_S)
            while claim():
                begin = clock()
                step()
                end = clock()
                with lock:
                    times.append(end - begin)
                    window["end"] = max(window.get("end", end), end)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread below
            with lock:
                errors.append(exc)
            started.abort()  # the others stop waiting at the barrier

    threads = [threading.Thread(target=worker, name=f"bench-client-{i}", daemon=True) for i in range(level)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:  # the cause, not the broken barrier it left the other threads
        raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])
    return np.asarray(times), window["end"] - window["start"]


@dataclass
class BenchResult:
    artifact: Artifact
    backend: str
    precision: str
    imgsz: int
    entries: list[dict] = field(default_factory=list)
    power: dict = field(default_factory=dict)  # the rails sampled, or {"unavailable": why}
    server: dict | None = None  # a Triton server's metadata: what the client-side timings measured

    def row(self) -> ReportRow:
        server = {"server": self.server} if self.server else {}
        return ReportRow.of(self.artifact, self.precision, self.backend, "measured",
                            bench={"imgsz": self.imgsz, "batches": self.entries, **server})


def run_bench(cfg: BenchConfig) -> BenchResult:
    artifact = parse_spec(cfg.model)
    timing = cfg.timing
    timing.check()
    check_batches(artifact, timing.batches)  # an engine's profile is checked before TensorRT is even needed
    if cfg.concurrency is not None and not artifact.row.remote:
        raise UsageError("--concurrency measures a Triton server: bench triton://HOST:PORT/MODEL")
    if cfg.concurrency and max(cfg.concurrency) > MAX_CONCURRENCY:
        raise UsageError(f"--concurrency {max(cfg.concurrency)}: at most {MAX_CONCURRENCY} requests in flight "
                         "(one client thread each)")
    backend = open_backend(artifact, cfg.options, imgsz=cfg.imgsz or 224)
    try:
        check_batches(artifact, timing.batches, backend)
        saturation = int8_cpu_warning(artifact.path, backend.name)
        if saturation:
            warn(saturation + " (its speed here is still measured)")
        imgsz = backend.image_size[0] or cfg.imgsz or 224
        if artifact.row.remote:  # the server's power is not this machine's to sample
            entries = bench_concurrency(backend, timing.batches, cfg.concurrency or (1,), imgsz, timing.warmup,
                                        timing.iterations, timing.duration, cfg.seed, artifact.label)
            return BenchResult(artifact, backend.name, artifact.precision(cfg.precision)[0], imgsz, entries,
                               server=backend.server)
        sampler, power = power_meter(Probe(root=Path(cfg.sysfs_root)))
        entries = bench_backend(backend, timing.batches, imgsz, timing.warmup, timing.iterations, timing.duration,
                                cfg.seed, artifact.label, sampler)
        return BenchResult(artifact, backend.name, artifact.precision(cfg.precision)[0], imgsz, entries, power)
    finally:
        backend.close()
