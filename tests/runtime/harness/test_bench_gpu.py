"""Device-side timing and engines on a real GPU (`python -m pytest -m gpu tests/runtime/harness/test_bench_gpu.py`).

Each test skips, with the reason, where its GPU stack (onnxruntime-gpu, CUDA torch, TensorRT) is missing.
"""

import json

import onnxruntime
import pytest
import torch

from eca_deploy.cli.main import main
from eca_deploy.runtime.tensorrt.env import tensorrt_unavailable_reason

pytestmark = pytest.mark.gpu
# Decided at collection, so a machine without the stack skips before the digits model is trained.
NO_ORT_CUDA = "CUDAExecutionProvider" not in onnxruntime.get_available_providers()
NO_TENSORRT = tensorrt_unavailable_reason()


def bench(tmp_path, capsys, *argv):
    out = tmp_path / "bench.json"
    code = main(["bench", *argv, "--iterations", "5", "--warmup", "2", "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    return json.loads(out.read_text())["rows"][0]["bench"]["batches"]


def assert_two_clocks(entries, device_clock):
    for batch in {e["batch"] for e in entries}:
        pair = [e for e in entries if e["batch"] == batch]
        assert [e["copies"] for e in pair] == ["included", "excluded"]
        assert pair[0]["clock"] == "host" and pair[1]["clock"] == device_clock
        assert 0 < pair[1]["min"] and pair[1]["fps"] > 0


@pytest.mark.skipif(NO_ORT_CUDA, reason="onnxruntime has no CUDA provider here (pip install onnxruntime-gpu)")
def test_onnxruntime_cuda_times_with_and_without_copies(digits, tmp_path, capsys):
    entries = bench(tmp_path, capsys, str(digits.onnx), "--provider", "cuda", "--batch-sizes", "1,4")
    assert_two_clocks(entries, "host clock, I/O bound on the GPU")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch has no CUDA device here")
def test_torch_cuda_times_with_cuda_events(digits, tmp_path, capsys):
    entries = bench(tmp_path, capsys, f"torch:{digits.model}:{digits.checkpoint}", "--device", "cuda",
                    "--imgsz", str(digits.imgsz), "--batch-sizes", "1,4")
    assert_two_clocks(entries, "cuda-events")


@pytest.mark.skipif(bool(NO_TENSORRT), reason=str(NO_TENSORRT))
def test_tensorrt_engine_bench_profile_and_parity(digits, tmp_path, capsys):
    from eca_deploy.runtime.tensorrt.builder import BuildConfig, build_engine

    engine = build_engine(BuildConfig(onnx=str(digits.onnx), output=str(tmp_path / "digits.engine"),
                                      profile="1:4:16")).engine_path
    assert_two_clocks(bench(tmp_path, capsys, str(engine), "--batch-sizes", "1,4"), "CUDA events, I/O on the GPU")
    assert main(["bench", str(engine), "--batch-sizes", "32", "--output", str(tmp_path / "b.json")]) == 2
    assert "max batch 16" in capsys.readouterr().err
    out = tmp_path / "parity.json"
    code = main(["parity", "--reference", f"torch:{digits.model}:{digits.checkpoint}", "--candidate", str(engine),
                 "--data", str(digits.val_dir), "--output", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert code == 0, rows[1]["reason"]
    assert rows[1]["backend"] == "tensorrt" and rows[1]["parity"]["top1_agreement"] >= 0.99
