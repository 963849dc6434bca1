"""TensorRT engines on a real GPU against onnxruntime, on a trained ECA-ResNet-18 and real held-out images.

Run (prints one line per engine, ready to paste into a report):

    python -m pytest -m gpu -rA tests/runtime/tensorrt/test_gpu_tensorrt.py

Skipped, with the reason, where TensorRT, pycuda or a GPU is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import pytest
from eca_deploy.testing.digits import build_digits

from eca_deploy.data.sources import load_dataset
from eca_deploy.cli.main import main
from eca_deploy.errors import EngineError
from eca_deploy.graph.compare import compare_outputs
from eca_deploy.graph.session import run_once
from eca_deploy.precisions import PRECISIONS
from eca_deploy.runtime.tensorrt.builder import BuildConfig, build_engine
from eca_deploy.runtime.tensorrt.compat import trt_major
from eca_deploy.runtime.tensorrt.env import tensorrt_unavailable_reason

pytestmark = pytest.mark.gpu

PROFILE = "1:8:32"
CHUNK = 20  # images per infer call: 96 held-out images give batches of 20 and 16 within one profile


@dataclass(frozen=True)
class Limits:
    top1: float  # agreement of the engine's argmax with onnxruntime's on the same ONNX
    cosine: float
    max_abs: float


# Same ONNX on both sides, so only TensorRT's kernel choices differ (FP16 accumulation, INT8 fusions);
# legacy engines are compared with the FP32 ONNX instead. FP32: builds go through Polygraphy's CreateConfig,
# which clears BuilderFlag.TF32 (polygraphy/backend/trt/config.py), so the limit is FP32's own tolerance.
LIMITS = {"fp32": Limits(0.99, 0.999, PRECISIONS["fp32"].tolerance.atol), "fp16": Limits(0.97, 0.999, 0.25),
          "int8": Limits(0.95, 0.99, 1.0),
          "legacy-fp16": Limits(0.97, 0.999, 0.25), "legacy-int8": Limits(0.90, 0.98, 2.0)}


@pytest.fixture(scope="module")
def gpu():
    reason = tensorrt_unavailable_reason()
    if reason:
        pytest.skip(reason)
    import tensorrt

    return tensorrt.__version__


@pytest.fixture(scope="module")
def digits(gpu, tmp_path_factory):
    return build_digits(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def onnx_models(digits, gpu):
    """FP32 export, and the FP16 / Q/DQ INT8 models `eca-deploy quantize` makes from it."""
    out = digits.onnx.parent
    fp16, int8 = out / "eca_resnet18.fp16.onnx", out / "eca_resnet18.int8.onnx"
    assert main(["quantize", "--onnx", str(digits.onnx), "--precision", "fp16", "--output", str(fp16)]) == 0
    glue = ["--high-precision", "fp32"] if trt_major(gpu) < 10 else []  # 8.x parses opset <= 17 (FP16 via its flag)
    assert main(["quantize", "--onnx", str(digits.onnx), "--precision", "int8", "--target", "tensorrt",
                 "--calib-data", str(digits.calib_dir), "--output", str(int8), *glue]) == 0
    return {"fp32": digits.onnx, "fp16": fp16, "int8": int8}


@pytest.fixture(scope="module")
def held_out(digits):
    dataset = load_dataset(digits.val_dir, imgsz=digits.imgsz, count=96, seed=0)
    images, labels = zip(*dataset.batches(32))
    return np.concatenate(images), np.concatenate(labels)


def _run_engine(engine_path, images):
    from eca_deploy.runtime.tensorrt.backend import TensorRTBackend

    with TensorRTBackend(engine_path) as backend:
        return np.concatenate([backend.infer(images[i:i + CHUNK]) for i in range(0, len(images), CHUNK)])


def _report(label, result, cmp, labels, engine_logits, gpu):
    accuracy = float(np.mean(engine_logits.argmax(1) == labels))
    print(f"TensorRT {gpu} | {result.gpu['name']} | {label:<11} | {result.typing:<14} | top-1 agree "
          f"{cmp.top1_agreement:.4f} | max abs {cmp.max_abs:.2e} | cosine {cmp.cosine:.6f} | "
          f"accuracy {accuracy:.4f} | build {result.build_seconds:.1f} s")


def _assert_within(label, cmp):
    limits = LIMITS[label]
    assert cmp.top1_agreement >= limits.top1, cmp
    assert cmp.cosine >= limits.cosine, cmp
    assert cmp.max_abs <= limits.max_abs, cmp


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_matches_onnxruntime(precision, onnx_models, held_out, gpu, tmp_path):
    images, labels = held_out
    onnx_path = onnx_models[precision]
    result = build_engine(BuildConfig(onnx=str(onnx_path), output=str(tmp_path / f"{precision}.engine"),
                                      profile=PROFILE))
    assert result.precision == precision
    engine_logits = _run_engine(result.engine_path, images)
    cmp = compare_outputs(run_once(onnx_path, images), engine_logits)
    _report(precision, result, cmp, labels, engine_logits, gpu)
    _assert_within(precision, cmp)


@pytest.mark.parametrize("legacy", ["fp16", "int8"])
def test_legacy_precision_engines_on_8_6_and_10(legacy, digits, held_out, gpu, tmp_path):
    if trt_major(gpu) >= 11:
        pytest.skip(f"TensorRT {gpu} has no weak typing: --legacy-precision is refused there")
    images, labels = held_out
    cache = tmp_path / "scales.calib"
    cfg = BuildConfig(onnx=str(digits.onnx), output=str(tmp_path / f"legacy-{legacy}.engine"), profile=PROFILE,
                      legacy_precision=legacy, calib_data=str(digits.calib_dir), calib_cache=str(cache))
    result = build_engine(cfg)
    engine_logits = _run_engine(result.engine_path, images)
    cmp = compare_outputs(run_once(digits.onnx, images), engine_logits)
    _report(f"legacy-{legacy}", result, cmp, labels, engine_logits, gpu)
    _assert_within(f"legacy-{legacy}", cmp)
    if legacy == "int8":
        manifest = json.loads(result.manifest_path.read_text())
        assert manifest["calibration"]["images"] > 0 and cache.stat().st_size > 0
        again = build_engine(replace(cfg, calib_data=None, output=str(tmp_path / "from-cache.engine")))
        assert json.loads(again.manifest_path.read_text())["calibration"]["cache_reused"] is True


def test_timing_cache_is_written_then_reused(onnx_models, tmp_path):
    cache = tmp_path / "timing.cache"
    first = build_engine(BuildConfig(onnx=str(onnx_models["fp32"]), output=str(tmp_path / "a.engine"),
                                     profile="1:1:4", timing_cache=str(cache), opt_level=1, workspace_gib=1))
    assert first.timing_cache == "created" and cache.stat().st_size > 0
    second = build_engine(BuildConfig(onnx=str(onnx_models["fp32"]), output=str(tmp_path / "b.engine"),
                                      profile="1:1:4", timing_cache=str(cache), opt_level=1, workspace_gib=1))
    assert second.timing_cache == "reused"


def test_backend_limits_device_timing_and_foreign_manifests(onnx_models, held_out, tmp_path):
    from eca_deploy.runtime.tensorrt.backend import TensorRTBackend

    images, _ = held_out
    result = build_engine(BuildConfig(onnx=str(onnx_models["fp32"]), output=str(tmp_path / "m.engine"),
                                      profile="1:2:4"))
    with TensorRTBackend(result.engine_path) as backend:
        assert backend.input_spec.shape[0] is None and backend.batch_range == (1, 4)
        with pytest.raises(EngineError, match="outside the engine's profile 1..4"):
            backend.infer(images[:5])
        run, clock = backend.device_runner(images[:4])
        times = [run() for _ in range(5)]
        assert clock.startswith("CUDA events") and all(t > 0 for t in times)
        np.testing.assert_allclose(backend.infer(images[:2]), backend.infer(images[:4])[:2], rtol=1e-3, atol=1e-3)
    manifest = json.loads(result.manifest_path.read_text())
    manifest["gpu"]["name"] = "Some Other GPU"
    result.manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="tuned for Some Other GPU"):
        TensorRTBackend(result.engine_path)


def test_engines_open_together_close_in_every_order_and_parity_keeps_its_results(onnx_models, held_out, digits,
                                                                                  tmp_path):
    """Issue 9: pycuda's static Context.pop() lost parity's results with two or more engines."""
    import itertools

    from eca_deploy.runtime.tensorrt.backend import TensorRTBackend

    images, _ = held_out
    paths = [build_engine(BuildConfig(onnx=str(onnx_models[p]), output=str(tmp_path / f"{p}.engine"),
                                      profile="1:2:4")).engine_path for p in ("fp32", "fp16", "int8")]
    for order in itertools.permutations(range(3)):
        backends = [TensorRTBackend(p) for p in paths]
        for closed, index in enumerate(order):
            backends[index].close()
            for other in order[closed + 1:]:
                assert np.isfinite(backends[other].infer(images[:2])).all()
    out = tmp_path / "parity.json"
    code = main(["parity", "--reference", str(onnx_models["fp32"]), "--candidate", str(paths[0]), "--candidate",
                 str(paths[1]), "--data", str(digits.val_dir), "--count", "16", "--batch-size", "4", "--output", str(out)])
    assert code == 0 and len(json.loads(out.read_text())["rows"]) == 3


def test_doctor_smoke_test_passes_on_this_gpu(gpu, capsys):
    """`eca-deploy doctor` builds the tiny ECA network's FP32 and FP16 engines and matches onnxruntime
    (skipped with the others where TensorRT, pycuda or a GPU is missing: the gpu fixture says which)."""
    code = main(["doctor"])
    out = capsys.readouterr().out
    print(out)
    smoke = next(line for line in out.splitlines() if "smoke test" in line)
    assert code == 0 and smoke.startswith("OK") and "FP32 + FP16 engines match onnxruntime" in smoke
