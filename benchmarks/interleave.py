"""Interleaved latency, shared by the benchmarks: models take turns round by round, so drift and load
from other jobs hit all of them alike; medians are reported.

interleaved_latency: several ONNX models on onnxruntime CPU, all sessions alive (each turn starts with
one untimed run). Worker threads do not spin: with several sessions alive, an idle session's spinning
threads slowed the timed one (INT8: 15 -> 25 ms here).
side_by_side: any backends, one alive at a time, through the harness's own timing loop.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np


def interleaved_latency(paths: dict[str, Path], batch: int, imgsz: int, rounds: int, iters: int,
                        threads: int | None = None) -> dict[str, float]:
    """Median milliseconds per call, per model name."""
    from eca_deploy.graph.session import make_session

    sessions = {name: make_session(path, threads=threads, spinning=False) for name, path in paths.items()}
    return interleaved_sessions(sessions, batch, imgsz, rounds, iters)


def interleaved_sessions(sessions: dict, batch: int, imgsz: int, rounds: int, iters: int) -> dict[str, float]:
    """interleaved_latency over onnxruntime sessions made by the caller (other session options)."""
    x = np.random.default_rng(0).standard_normal((batch, 3, imgsz, imgsz), dtype=np.float32)
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, sess in sessions.items():
            sess.run(None, {"input": x})
            for _ in range(iters):
                start = time.perf_counter()
                sess.run(None, {"input": x})
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}


def side_by_side(factories: dict, batches: tuple[int, ...], rounds: int, iterations: int, imgsz: int = 224) -> dict:
    """Median over rounds of each backend's p50 latency; every round visits every backend once.

    ``factories`` map a name to a function that opens a Backend (eca_deploy.runtime.backend).

    A backend is open only for its own block: an idle onnxruntime session's spinning threads would
    otherwise slow the one being timed (quantize's benchmark saw 15 -> 25 ms), as in the pipeline.
    """
    from eca_deploy.runtime.harness.bench import latency_stats, time_loop

    rng = np.random.default_rng(0)
    inputs = {b: rng.standard_normal((b, 3, imgsz, imgsz), dtype=np.float32) for b in batches}
    p50: dict = {(name, b): [] for name in factories for b in batches}
    for _ in range(rounds):
        for name, factory in factories.items():
            backend = factory()
            for b in batches:
                seconds = time_loop(lambda: backend.infer(inputs[b]), warmup=2, iterations=iterations, duration=0)
                p50[(name, b)].append(latency_stats(seconds, b)["p50"])
            backend.close()
    return {name: {str(b): {"p50_ms": statistics.median(p50[(name, b)]),  # str keys: the same after JSON
                            "fps": b * 1e3 / statistics.median(p50[(name, b)])} for b in batches}
            for name in factories}
