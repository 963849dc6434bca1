"""`eca-deploy bench`: the timing loop, statistics, batch checks (static axis, engine profile), real runs."""

import json
import time

import numpy as np
import onnx
import pytest

from eca_deploy.cli.main import main
from eca_deploy.runtime.harness.bench import MIN_TIMED_ITERATIONS, latency_stats, time_loop, timing_notes
from eca_deploy.runtime.harness.report import validate_report
from eca_deploy.runtime.tensorrt.env import tensorrt_unavailable_reason


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_time_loop_runs_the_count_after_the_warmup():
    calls = []
    times = time_loop(lambda: calls.append(1), warmup=3, iterations=7, duration=100.0)
    assert len(calls) == 10 and len(times) == 7 and (times >= 0).all()


def test_time_loop_by_duration_runs_at_least_the_minimum():
    start = time.perf_counter()
    times = time_loop(lambda: time.sleep(0.002), warmup=0, iterations=None, duration=0.05)
    assert time.perf_counter() - start >= 0.05
    assert len(times) >= MIN_TIMED_ITERATIONS and times.min() >= 0.002
    slow = time_loop(lambda: time.sleep(0.02), warmup=0, iterations=None, duration=0.001)
    assert len(slow) == MIN_TIMED_ITERATIONS  # a tiny duration still yields percentiles worth reading


def test_time_loop_with_a_device_clock_takes_the_reported_ms():
    readings = iter([5.0, 7.0, 6.0, 9.0])
    times = time_loop(lambda: next(readings), warmup=1, iterations=3, duration=1.0, own_clock=True)
    assert times.tolist() == [0.007, 0.006, 0.009]


def test_latency_stats_on_a_known_series():
    seconds = np.arange(1, 101) / 1e3  # 1..100 ms
    stats = latency_stats(seconds, batch=4)
    assert stats["min"] == pytest.approx(1.0) and stats["mean"] == pytest.approx(50.5)
    # linear interpolation between order statistics: p50 of 1..100 is 50.5, p90 is 90.1, p99 is 99.01
    assert stats["p50"] == pytest.approx(50.5) and stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01)
    assert stats["fps"] == pytest.approx(4 * 1000 / 50.5) and stats["iterations"] == 100


def test_timing_notes_say_when_a_p99_or_the_whole_run_is_noise():
    steady = latency_stats(np.full(200, 2e-3) + np.arange(200) * 1e-7, batch=1)  # 200 calls within 1%
    assert timing_notes([{"batch": 1, **steady}]) == []
    (few,) = timing_notes([{"batch": 1, **latency_stats(np.full(5, 2e-3), batch=1)}])
    assert few.startswith("p99 from 5 calls")
    spiky = np.where(np.arange(200) % 5 == 0, 6e-3, 2e-3)  # one call in five three times slower
    (noisy,) = timing_notes([{"batch": 8, **steady}, {"batch": 8, **latency_stats(spiky, batch=8)}])
    assert noisy.startswith("calls varied widely at batch 8 ")


def test_bench_onnx_writes_every_batch(digits, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code, stdout, stderr = run(capsys, "bench", str(digits.onnx), "--batch-sizes", "1,3", "--iterations", "4",
                               "--warmup", "1", "--provider", "cpu", "--output", str(out))
    assert code == 0
    assert "note: p99 from 4 calls is about the slowest call, not a stable percentile" in stderr
    report = validate_report(json.loads(out.read_text()))
    (row,) = report["rows"]
    assert row["status"] == "measured" and row["backend"] == "onnxruntime-cpu" and row["bench"]["imgsz"] == digits.imgsz
    entries = row["bench"]["batches"]
    assert [e["batch"] for e in entries] == [1, 3]
    for e in entries:
        assert e["clock"] == "host" and e["iterations"] == 4
        assert e["min"] <= e["p50"] <= e["p90"] <= e["p99"]
        assert e["fps"] == pytest.approx(e["batch"] * 1000 / e["mean"])
    assert "FPS" in stdout and report["devices"][0]["cpu"]["logical_cores"]


def test_bench_torch_reference(digits, tmp_path, capsys):
    code, stdout, _ = run(capsys, "bench", f"torch:{digits.model}:{digits.checkpoint}", "--imgsz", str(digits.imgsz),
                          "--iterations", "2", "--warmup", "0", "--device", "cpu", "--output", str(tmp_path / "b.json"))
    assert code == 0 and "torch-cpu" in stdout


def test_static_batch_model_refuses_other_batches(digits, tmp_path, capsys):
    model = onnx.load(str(digits.onnx))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 2
    static = tmp_path / "static.onnx"
    onnx.save(model, str(static))
    code, _, err = run(capsys, "bench", str(static), "--batch-sizes", "1,2", "--iterations", "1",
                       "--output", str(tmp_path / "b.json"))
    assert code == 2 and "static batch of 2" in err
    assert run(capsys, "bench", str(static), "--batch-sizes", "2", "--iterations", "1", "--warmup", "0",
               "--output", str(tmp_path / "b.json"))[0] == 0


def fake_engine(tmp_path, max_batch):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 64)
    (tmp_path / "model.engine.json").write_text(json.dumps({
        "artifact": "model.engine", "stage": "build", "precision": "fp16",
        "profile": {"batch": f"1:4:{max_batch}", "min": [1, 3, 32, 32], "opt": [4, 3, 32, 32],
                    "max": [max_batch, 3, 32, 32]}}))
    return engine


def test_batch_above_the_engine_profile_is_refused_from_its_manifest(tmp_path, capsys):
    engine = fake_engine(tmp_path, 8)
    code, _, err = run(capsys, "bench", str(engine), "--batch-sizes", "1,16", "--output", str(tmp_path / "b.json"))
    assert code == 2
    assert "batch 16 is above the engine's optimization profile (max batch 8)" in err and len(err.splitlines()) == 1


def test_engine_within_its_profile_needs_tensorrt(tmp_path, capsys):
    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present")
    engine = fake_engine(tmp_path, 8)
    code, _, err = run(capsys, "bench", str(engine), "--batch-sizes", "1,8", "--output", str(tmp_path / "b.json"))
    assert code == 2 and "cannot run the engine model.engine" in err


@pytest.mark.parametrize("batch", ["0", "1,x", ""])
def test_bad_batch_lists(digits, tmp_path, capsys, batch):
    code, _, err = run(capsys, "bench", str(digits.onnx), "--batch-sizes", batch, "--output", str(tmp_path / "b.json"))
    assert code == 2 and "--batch-sizes" in err


def test_missing_model(tmp_path, capsys):
    code, _, err = run(capsys, "bench", str(tmp_path / "nope.onnx"))
    assert code == 2 and "ONNX file not found" in err
