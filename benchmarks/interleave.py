"""Interleaved latency of several ONNX models on onnxruntime CPU, shared by the benchmarks.

Models take turns round by round (each turn starts with one untimed run), so drift and load from
other jobs hit all of them alike; medians are reported. Worker threads do not spin: with several
sessions alive, an idle session's spinning threads slowed the timed one (INT8: 15 -> 25 ms here).
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
