"""bench's concurrency levels (what `bench triton://` runs): exact request counts, errors surface, no hang."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from eca_deploy.errors import EcaDeployError
from eca_deploy.runtime.registry import open_backend
from eca_deploy.runtime.harness.bench import bench_concurrency, time_concurrent
from eca_deploy.runtime.harness.doctor import tiny_eca_onnx


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    with open_backend(str(tiny_eca_onnx(tmp_path_factory.mktemp("conc") / "tiny.onnx")), provider="cpu",
                      threads=1) as opened:
        yield opened  # onnxruntime's run may be called from several threads at once


def test_each_level_times_exactly_the_requests_asked_from_that_many_threads(backend):
    seen: set[int] = set()
    lock = threading.Lock()
    images = np.random.default_rng(0).standard_normal((2, 3, 16, 16), dtype=np.float32)

    def step():
        with lock:
            seen.add(threading.get_ident())
        return backend.infer(images)

    seconds, wall = time_concurrent(step, 4, warmup=1, iterations=37, duration=60.0)
    assert seconds.size == 37 and (seconds > 0).all() and len(seen) == 4
    assert wall >= seconds.max()  # the window holds every timed request


def test_entries_per_batch_and_level_with_throughput_from_the_wall_clock(backend):
    entries = bench_concurrency(backend, (1, 2), (1, 3), 16, warmup=0, iterations=12)
    assert [(e["batch"], e["concurrency"], e["iterations"]) for e in entries] == [
        (1, 1, 12), (1, 3, 12), (2, 1, 12), (2, 3, 12)]
    for e in entries:
        assert e["min"] <= e["p50"] <= e["p90"] <= e["p99"] and e["fps"] > 0 and e["clock"] == "client"


def test_a_duration_bound_level_ends_and_a_failing_request_is_raised(backend):
    seconds, _ = time_concurrent(lambda: None, 2, warmup=0, iterations=None, duration=0.05)
    assert seconds.size >= 5  # at least MIN_TIMED_ITERATIONS, however short the duration
    calls = []

    def failing():
        calls.append(1)
        if len(calls) > 6:
            raise EcaDeployError("Triton server 127.0.0.1:1, model 'm': gone")

    with pytest.raises(EcaDeployError, match="gone"):
        time_concurrent(failing, 3, warmup=1, iterations=1000, duration=60.0)
    with pytest.raises(EcaDeployError, match="gone"):  # a thread failing in warm-up frees the others
        time_concurrent(failing, 3, warmup=5, iterations=10, duration=60.0)
