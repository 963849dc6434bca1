"""`build` through Polygraphy's loaders, end to end on real ONNX files, with fakes for TensorRT, pycuda and
polygraphy.backend.trt (fake_polygraphy.py binds every argument to the installed Polygraphy's signatures).

What is tested is ours: the arguments compat.py decides per TensorRT release, the DLA core, the timing
cache merge, the calibration data, the cache identity (ONNX, data, method) and its check after the build,
and the manifest.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from eca_deploy.calibration.fp16 import convert_to_fp16
from eca_deploy.data.sources import load_dataset
from eca_deploy.errors import EngineError
from eca_deploy.runtime.harness.doctor import SMOKE_IMGSZ, tiny_eca_onnx
from eca_deploy.runtime.tensorrt import env as tensorrt_env
from eca_deploy.runtime.tensorrt.builder import BuildConfig, build_engine
from fake_polygraphy import (CACHE, OTHER_GPU_TIMING_CACHE, FakePolygraphy, check_arguments,
                             polygraphy_modules)
from fake_tensorrt import FakeCuda, fake_tensorrt


@pytest.fixture()
def machine(monkeypatch):
    """make(version, **fake_polygraphy_options) -> the FakePolygraphy the next build goes through."""
    def make(version="10.3.0.30", **options):
        cuda = FakeCuda()
        poly = FakePolygraphy(**options)
        modules = {"tensorrt": fake_tensorrt(cuda, version), "pycuda.driver": cuda, **polygraphy_modules(poly)}
        monkeypatch.setattr(tensorrt_env, "_import_module", lambda name: modules[name])
        monkeypatch.setattr(tensorrt_env, "_primary", None)
        monkeypatch.setattr(tensorrt_env, "_at_exit", lambda hook: None)
        return poly
    return make


@pytest.fixture()
def models(tmp_path):
    fp32 = tiny_eca_onnx(tmp_path / "tiny.onnx")
    fp16 = tmp_path / "tiny.fp16.onnx"
    onnx.save(convert_to_fp16(onnx.load(str(fp32)))[0], str(fp16))
    return fp32, fp16


def _manifest(result):
    return json.loads(result.manifest_path.read_text())


@pytest.mark.parametrize("version, model, typed, fp16", [
    ("10.3.0.30", 0, True, False), ("10.13.3.9", 1, True, False), ("11.1.0", 1, True, False),
    ("8.6.1", 1, False, True), ("8.5.3", 1, False, True)])
def test_the_build_hands_polygraphy_what_compat_decides(machine, models, version, model, typed, fp16):
    poly = machine(version)
    result = build_engine(BuildConfig(onnx=str(models[model]), profile="1:4:8", workspace_gib=0.5))
    assert poly.calls["NetworkFromOnnxPath"] == {"_args": (str(models[model]),), "strongly_typed": typed}
    config = poly.calls["CreateConfig"]
    assert (config["fp16"], config["int8"], config["use_dla"], config["calibrator"]) == (fp16, False, False, None)
    assert config["memory_pool_limits"] == {"WORKSPACE": 2**29}
    assert dict(config["profiles"][0]) == {"input": ((1, 3, 16, 16), (4, 3, 16, 16), (8, 3, 16, 16))}
    assert "tf32" not in config  # Polygraphy's default: TF32 off, so an FP32 engine computes in FP32
    assert result.engine_path.read_bytes() == b"ONNX:" + str(models[model]).encode()
    manifest = _manifest(result)
    assert manifest["tf32"] is False and manifest["tensorrt_version"] == version
    assert manifest["network"] == ("strongly typed" if typed else "weakly typed")


def test_tensorrt_8_5_builds_but_refuses_what_it_lacks(machine, models):
    """JetPack 5.1: Polygraphy imports tensorrt>=8.5 (polygraphy/mod/trt_importer.py), so the Python path
    builds there; --opt-level and --version-compatible arrived in 8.6."""
    machine("8.5.3")
    for setting in ({"opt_level": 0}, {"version_compatible": True}):
        with pytest.raises(EngineError, match="needs TensorRT 8.6 or later"):
            build_engine(BuildConfig(onnx=str(models[1]), **setting))
    assert build_engine(BuildConfig(onnx=str(models[1]))).typing == "weakly typed"


def test_dla_runs_on_the_asked_core_weakly_typed_on_10x(machine, models):
    """CreateConfig(use_dla=True) always picks core 0 (polygraphy/backend/trt/config.py); ours sets --dla N."""
    poly = machine("10.3.0.30", dla_cores=2)
    result = build_engine(BuildConfig(onnx=str(models[1]), profile="4", dla_core=1))
    assert poly.config.DLA_core == 1
    config = poly.calls["CreateConfig"]
    assert (config["use_dla"], config["allow_gpu_fallback"], config["fp16"]) == (True, True, True)
    assert poly.calls["NetworkFromOnnxPath"]["strongly_typed"] is False
    assert _manifest(result)["dla"] == {"network_layers": 3, "layers_dla_capable": 2}
    poly = machine("10.3.0.30", dla_cores=1)
    with pytest.raises(EngineError, match="--dla 1: this device has 1 DLA core"):
        build_engine(BuildConfig(onnx=str(models[1]), profile="4", dla_core=1))


def test_a_polygraphy_failure_is_one_line(machine, models):
    machine(fail="Failed to parse ONNX model. Does the model file exist and contain a valid ONNX model?")
    with pytest.raises(EngineError) as err:
        build_engine(BuildConfig(onnx=str(models[0])))
    assert "\n" not in str(err.value) and "Failed to parse ONNX model" in str(err.value)


def test_timing_cache_of_another_gpu_is_replaced_not_merged(machine, models, tmp_path):
    """combine(on_disk, ignore_mismatch=True) (Polygraphy's, and ours before) merged another GPU's entries
    into the cache the build had just replaced (NvInfer.h 10.3, ITimingCache::combine)."""
    cache = tmp_path / "trt.cache"
    cache.write_bytes(OTHER_GPU_TIMING_CACHE)
    poly = machine()
    result = build_engine(BuildConfig(onnx=str(models[0]), timing_cache=str(cache)))
    assert result.timing_cache.startswith("replaced")
    assert poly.config.timing_cache.combined_with == [False]
    assert cache.read_bytes() == b"conv:tactic-built-now"
    machine()
    assert build_engine(BuildConfig(onnx=str(models[0]), timing_cache=str(cache))).timing_cache == "reused"


def _legacy(models, tmp_path, method="entropy", data=None, cache="tiny.calib"):
    return BuildConfig(onnx=str(models[0]), profile="1:4:8", legacy_precision="int8", calib_data=data,
                       calib_batch=4, calib_method=method, calib_cache=str(tmp_path / cache))


def test_legacy_int8_calibrates_on_real_images_through_polygraphys_calibrator(machine, models, tmp_path,
                                                                              digit_folder):
    poly = machine()
    result = build_engine(_legacy(models, tmp_path, data=str(digit_folder)))
    calibrator = poly.calls["Calibrator"]
    assert calibrator["BaseClass"].__name__ == "IInt8EntropyCalibrator2"
    assert [dict(p) for p in poly.calls["CreateConfig"]["profiles"]][1] == {"input": ((4, 3, 16, 16),) * 3}
    assert [b.shape for b in poly.batches] == [(4, 3, 16, 16)] * 5  # 20 images, full batches only
    expected = load_dataset(str(digit_folder), imgsz=SMOKE_IMGSZ, count=512, seed=0).batches(4)
    for got, (images, _) in zip(poly.batches, expected, strict=True):  # the same images, in order
        assert got.dtype == np.float32 and np.array_equal(got, images)
    cache = tmp_path / "tiny.calib"
    assert cache.read_bytes() == CACHE
    record = json.loads((tmp_path / "tiny.calib.json").read_text())
    assert record["method"] == "entropy" and record["images"] == 20
    calibration = _manifest(result)["calibration"]
    assert calibration["cache"] == str(cache) and calibration["images"] == 20 and not calibration["cache_reused"]
    machine()
    build_engine(_legacy(models, tmp_path, data=str(digit_folder), cache="new/folder/tiny.calib"))
    assert (tmp_path / "new/folder/tiny.calib").read_bytes() == CACHE


def test_a_one_batch_profile_calibrates_at_its_batch_without_a_second_profile(machine, models, tmp_path,
                                                                             digit_folder):
    """DLA needs one fixed batch; an extra calibration profile there would be a second optimization profile."""
    poly = machine(dla_cores=1)
    config = _legacy(models, tmp_path, data=str(digit_folder))
    config.profile, config.dla_core = "5", 0
    build_engine(config)
    assert [dict(p) for p in poly.calls["CreateConfig"]["profiles"]] == [{"input": ((5, 3, 16, 16),) * 3}]
    assert [b.shape[0] for b in poly.batches] == [5] * 4 and poly.config.DLA_core == 0


def test_the_method_is_part_of_the_cache_identity(machine, models, tmp_path, digit_folder):
    """A minmax cache must not feed an entropy build (nor one whose manifest then says entropy)."""
    machine()
    build_engine(_legacy(models, tmp_path, method="minmax", data=str(digit_folder)))
    poly = machine()
    result = build_engine(_legacy(models, tmp_path, method="entropy", data=str(digit_folder)))
    assert len(poly.batches) == 5  # recalibrated, not read from the minmax cache
    assert _manifest(result)["calibration"]["method"] == "entropy"
    assert json.loads((tmp_path / "tiny.calib.json").read_text())["method"] == "entropy"
    poly = machine()
    reused = build_engine(_legacy(models, tmp_path, method="entropy"))  # no images: the cache is read
    assert poly.batches == [] and _manifest(reused)["calibration"]["cache_reused"]
    machine()
    with pytest.raises(EngineError, match="holds entropy scales, not minmax; pass --calib-data"):
        build_engine(_legacy(models, tmp_path, method="minmax"))


def test_a_cache_tensorrt_failed_to_write_is_not_recorded(machine, models, tmp_path, digit_folder):
    """pyInt8.cpp (10.3) only prints an exception from write_calibration_cache: the build succeeds."""
    machine(write_cache=False)
    result = build_engine(_legacy(models, tmp_path, data=str(digit_folder)))
    assert not (tmp_path / "tiny.calib").exists() and not (tmp_path / "tiny.calib.json").exists()
    assert _manifest(result)["calibration"]["cache"] is None
    assert any("wrote no calibration cache" in note for note in result.notes)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".calib-")] == []


def test_calibration_data_errors_surface_after_the_build(machine, models, tmp_path, digit_folder):
    machine()
    with pytest.raises(Exception, match="fewer images than one batch of 32"):
        build_engine(BuildConfig(onnx=str(models[0]), profile="1:4:8", legacy_precision="int8",
                                 calib_data=str(digit_folder), calib_batch=32,
                                 calib_cache=str(tmp_path / "tiny.calib")))


def test_the_fake_refuses_arguments_polygraphy_does_not_take():
    check_arguments("CreateConfig", fp16=True, memory_pool_limits={}, builder_optimization_level=3)
    with pytest.raises(TypeError):
        check_arguments("CreateConfig", dla_core=1)
    with pytest.raises(TypeError):
        check_arguments("NetworkFromOnnxPath", "m.onnx", stronglyTyped=True)


def test_build_without_polygraphy_says_what_to_install(models, monkeypatch, capsys):
    from eca_deploy.cli.main import main

    cuda = FakeCuda()
    modules = {"tensorrt": fake_tensorrt(cuda), "pycuda.driver": cuda}

    def importer(name):
        if name.startswith("polygraphy"):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return modules[name]

    monkeypatch.setattr(tensorrt_env, "_import_module", importer)
    code = main(["build", "--onnx", str(models[0])])
    err = capsys.readouterr().err
    assert code == 2 and "Polygraphy" in err and "pip install 'eca-deploy[tensorrt]'" in err
    assert len(err.strip().splitlines()) == 1 and not models[0].with_suffix(".engine").exists()
