"""The TensorRT build stage and backend where TensorRT is absent: version logic, bad input, trtexec commands.

TensorRT, pycuda and the GPU are reached only through tensorrt_env._import_module; tests replace it
to play each machine. Where a test needs "TensorRT X.Y is installed", the stand-in module carries
only that version number: the code under test must fail on the version before using TensorRT.
"""

from __future__ import annotations

import json
import shlex
import shutil
import types
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eca_deploy.artifacts import write_artifact
from eca_deploy.cli.main import main
from eca_deploy.errors import EngineError, MissingDependencyError, OnnxFileError
from eca_deploy.runtime.tensorrt import env as tensorrt_env
from eca_deploy.graph.session import run_once
from eca_deploy.runtime.tensorrt.backend import TensorRTBackend, check_engine
from eca_deploy.runtime.tensorrt.builder import BuildConfig, build_engine, prepare_build
from eca_deploy.runtime.tensorrt.compat import (BatchProfile, check_builder_version, check_legacy_precision,
                                                engine_mismatch, parse_version, precision_flags, trt_major)
from eca_deploy.runtime.tensorrt.env import GpuInfo
from eca_deploy.runtime.tensorrt.trtexec import trtexec_command

from eca_deploy.testing.exports import IMGSZ  # fp32_onnx's size: the run's shared export
ORIN = GpuInfo(0, "Orin", "8.7")


@pytest.fixture(scope="session")
def fp32_onnx(random_exports, tmp_path_factory):
    """eca_resnet18 exported with a dynamic batch axis, small input: the run's shared export with its manifest,
    copied into a folder of its own (builds write beside it)."""
    out = tmp_path_factory.mktemp("trt_onnx")
    shared = random_exports["eca_resnet18"].onnx
    for path in (shared, shared.with_name(shared.name + ".json")):
        shutil.copy(path, out)
    return out / shared.name


def _tiny_model(path, kind: str):
    """A real, runnable ONNX carrying fp16 weights (kind="fp16") or explicit Q/DQ (kind="int8")."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, 8, 8])
    if kind == "fp16":
        bias = numpy_helper.from_array(np.array([0.5], np.float16), "bias")
        nodes = [helper.make_node("Cast", ["input"], ["x16"], to=TensorProto.FLOAT16),
                 helper.make_node("Add", ["x16", "bias"], ["y16"]),
                 helper.make_node("Cast", ["y16"], ["logits"], to=TensorProto.FLOAT)]
        inits = [bias]
    else:
        inits = [helper.make_tensor("scale", TensorProto.FLOAT, [], [0.05]),
                 helper.make_tensor("zero", TensorProto.INT8, [], [0])]
        nodes = [helper.make_node("QuantizeLinear", ["input", "scale", "zero"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["logits"])]
    model = helper.make_model(helper.make_graph(nodes, "tiny", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def no_tensorrt(monkeypatch):
    """A machine where `import tensorrt` fails as it does without the package."""
    real = tensorrt_env._import_module

    def fake(name):
        if name == "tensorrt":
            raise ModuleNotFoundError("No module named 'tensorrt'", name="tensorrt")
        return real(name)

    monkeypatch.setattr(tensorrt_env, "_import_module", fake)


def _machine(monkeypatch, version: str, cuda):
    """TensorRT ``version`` installed (a module carrying only its version) and ``cuda`` as pycuda.driver."""
    def fake(name):
        if name == "tensorrt":
            return types.SimpleNamespace(__version__=version)
        if name == "pycuda.driver":
            if isinstance(cuda, BaseException):
                raise cuda
            return cuda
        raise AssertionError(f"unexpected import {name}")

    monkeypatch.setattr(tensorrt_env, "_import_module", fake)


class _NoDevice:
    """pycuda.driver as it behaves where the driver finds no GPU: cuInit fails."""

    class Device:
        @staticmethod
        def count():
            return 0

    @staticmethod
    def init():
        raise RuntimeError("cuInit failed: no CUDA-capable device is detected")


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def _cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- versions -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("given, expected", [("10.3.0.30", (10, 3, 0, 30)), ("8.6", (8, 6)), ((11, 1), (11, 1)),
                                             (types.SimpleNamespace(__version__="10.13.3.9"), (10, 13, 3, 9))])
def test_versions_read_from_strings_tuples_and_the_module(given, expected):
    assert parse_version(given) == expected
    assert trt_major(given) == expected[0]


def test_a_version_that_is_not_one_is_an_error():
    with pytest.raises(EngineError, match="cannot read a TensorRT version"):
        parse_version("latest")


@pytest.mark.parametrize("version, legacy, onnx_precision, flags", [
    ("8.6.1", None, "fp32", ()), ("8.6.1", None, "fp16", ("FP16",)), ("8.6.1", None, "int8", ("INT8", "FP16")),
    ("8.6.1", "fp16", "fp32", ("FP16",)), ("8.6.1", "int8", "fp32", ("INT8", "FP16")),
    ("10.3", None, "int8", ()), ("10.3", "fp16", "fp32", ("FP16",)), ("10.13", "int8", "fp32", ("INT8", "FP16")),
    ("11.1", None, "fp16", ()), ("11.1", None, "int8", ()),
])
def test_builder_flags_per_version(version, legacy, onnx_precision, flags):
    assert precision_flags(version, legacy, onnx_precision) == flags


def test_legacy_precision_on_tensorrt_11_is_refused_with_the_reason():
    check_legacy_precision("10.3", "int8")
    check_legacy_precision("8.6.1", "fp16")
    with pytest.raises(EngineError) as err:
        check_legacy_precision("11.1", "fp16")
    message = str(err.value)
    assert "\n" not in message and "strongly typed" in message and "eca-deploy quantize" in message


def test_the_python_builder_takes_8_5_as_polygraphy_does():
    """Polygraphy 0.53 imports "tensorrt>=8.5" (polygraphy/mod/trt_importer.py): JetPack 5.1 builds in Python."""
    check_builder_version("8.5.2")
    check_builder_version("8.6.1")
    with pytest.raises(EngineError, match="--print-trtexec --trt-version X.Y"):
        check_builder_version("8.4.3")


# --- --batch --------------------------------------------------------------------------------------------------

def test_batch_profile_parses_and_a_single_number_is_fixed():
    assert BatchProfile.parse("1:8:32") == BatchProfile(1, 8, 32)
    assert BatchProfile.parse("4") == BatchProfile(4, 4, 4)


@pytest.mark.parametrize("text, message", [
    ("4:2:8", "MIN (4) is larger than OPT (2)"), ("1:16:8", "OPT (16) is larger than MAX (8)"),
    ("0:1:2", "MIN must be at least 1"), ("1:8", "MIN:OPT:MAX"), ("a:b:c", "MIN:OPT:MAX"),
])
def test_bad_batch_profiles(text, message):
    with pytest.raises(EngineError, match=message.replace("(", r"\(").replace(")", r"\)")):
        BatchProfile.parse(text)


@pytest.mark.parametrize("batch, message", [("8:4:16", "MIN (8) is larger than OPT (4)"),
                                            ("1:32:16", "OPT (32) is larger than MAX (16)")])
def test_cli_batch_min_above_opt_and_opt_above_max_exit_2_in_one_line(fp32_onnx, capsys, batch, message):
    before = _files(fp32_onnx.parent)
    code, out, err = _cli(capsys, "build", "--onnx", str(fp32_onnx), "--profile", batch)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert _files(fp32_onnx.parent) == before


# --- prepare_build: the ONNX and the paths --------------------------------------------------------------------

def test_plan_reads_input_and_profile_from_the_onnx(fp32_onnx):
    plan = prepare_build(BuildConfig(onnx=str(fp32_onnx), profile="2:4:16"))
    assert plan.input_name == "input" and plan.image_shape == (3, IMGSZ, IMGSZ) and not plan.static_batch
    assert plan.shapes() == ((2, 3, IMGSZ, IMGSZ), (4, 3, IMGSZ, IMGSZ), (16, 3, IMGSZ, IMGSZ))
    assert plan.onnx_precision == "fp32" and plan.engine_path == fp32_onnx.with_name("eca_resnet18.engine")
    legacy = prepare_build(BuildConfig(onnx=str(fp32_onnx), legacy_precision="fp16"))
    assert legacy.engine_path.name == "eca_resnet18.legacy-fp16.engine" and legacy.precision == "fp16"


def test_static_batch_onnx_takes_only_its_own_batch(fp32_onnx, tmp_path):
    model = onnx.load(str(fp32_onnx))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    static = tmp_path / "static.onnx"
    onnx.save(model, str(static))
    assert prepare_build(BuildConfig(onnx=str(static))).profile == BatchProfile(2, 2, 2)
    with pytest.raises(EngineError, match="static batch of 2, so --profile must be 2"):
        prepare_build(BuildConfig(onnx=str(static), profile="1:8:32"))


def test_missing_onnx_and_a_file_that_is_not_onnx_exit_2_in_one_line(tmp_path, capsys):
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("this is not a protobuf\n")
    with pytest.raises(OnnxFileError, match="not found"):
        prepare_build(BuildConfig(onnx=str(tmp_path / "missing.onnx")))
    for path, message in ((tmp_path / "missing.onnx", "ONNX file not found"), (not_onnx, "is not an ONNX model")):
        code, out, err = _cli(capsys, "build", "--onnx", str(path))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert _files(tmp_path) == ["notes.onnx"]


def test_output_must_be_an_engine_and_never_the_input(fp32_onnx):
    with pytest.raises(EngineError, match=r"must end in \.engine or \.plan"):
        prepare_build(BuildConfig(onnx=str(fp32_onnx), output=str(fp32_onnx.with_suffix(".trt"))))
    with pytest.raises(Exception, match="refusing to overwrite the input"):
        prepare_build(BuildConfig(onnx=str(fp32_onnx), timing_cache=str(fp32_onnx)))


@pytest.mark.parametrize("field, value, message", [
    ("workspace_gib", 0, "--workspace must be at least"), ("opt_level", 6, "--opt-level must be 0 to 5"),
    ("dla_core", -1, "--dla must be at least 0"), ("calib_batch", 0, "--batch-size must be at least 1"),
])
def test_out_of_range_settings(fp32_onnx, field, value, message):
    with pytest.raises(EngineError, match=message):
        prepare_build(BuildConfig(onnx=str(fp32_onnx), **{field: value}))


def test_tiny_precision_models_are_real_onnx(tmp_path):
    batch = np.linspace(-1, 1, 2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8)
    fp16 = run_once(_tiny_model(tmp_path / "a.fp16.onnx", "fp16"), batch)
    int8 = run_once(_tiny_model(tmp_path / "a.int8.onnx", "int8"), batch)
    np.testing.assert_allclose(fp16, batch + 0.5, atol=1e-3)
    np.testing.assert_allclose(int8, np.clip(np.round(batch / 0.05), -128, 127) * 0.05, atol=1e-6)


def test_precision_comes_from_the_onnx_and_legacy_flags_need_fp32(tmp_path):
    fp16 = _tiny_model(tmp_path / "m.fp16.onnx", "fp16")
    int8 = _tiny_model(tmp_path / "m.int8.onnx", "int8")
    assert prepare_build(BuildConfig(onnx=str(fp16))).precision == "fp16"
    assert prepare_build(BuildConfig(onnx=str(int8))).precision == "int8"
    with pytest.raises(EngineError, match="already carries int8 precision; --legacy-precision needs an FP32 ONNX"):
        prepare_build(BuildConfig(onnx=str(int8), legacy_precision="int8", calib_data=str(tmp_path)))


def test_legacy_int8_needs_images_or_a_cache(fp32_onnx, tmp_path):
    with pytest.raises(EngineError, match="needs --calib-data"):
        prepare_build(BuildConfig(onnx=str(fp32_onnx), legacy_precision="int8"))
    cache = tmp_path / "scales.calib"
    cache.write_bytes(b"TRT-8601-EntropyCalibration2\n")
    assert prepare_build(BuildConfig(onnx=str(fp32_onnx), legacy_precision="int8",
                                     calib_cache=str(cache))).calib_cache == cache


# --- trtexec --------------------------------------------------------------------------------------------------

def _trtexec(onnx_path, version, **settings):
    return trtexec_command(prepare_build(BuildConfig(onnx=str(onnx_path), **settings)), version)


def test_trtexec_flags_follow_the_release(fp32_onnx, tmp_path):
    common = dict(profile="1:8:16", workspace_gib=2, timing_cache=str(tmp_path / "t.cache"), opt_level=4)
    v86, v103, v111 = (_trtexec(fp32_onnx, v, **common) for v in ("8.6.1", "10.3", "11.1"))
    shapes = [f"--minShapes=input:1x3x{IMGSZ}x{IMGSZ}", f"--optShapes=input:8x3x{IMGSZ}x{IMGSZ}",
              f"--maxShapes=input:16x3x{IMGSZ}x{IMGSZ}"]
    for args in (v86, v103, v111):
        assert args[0] == "trtexec" and set(shapes) <= set(args) and "--skipInference" in args
        assert f"--timingCacheFile={tmp_path / 't.cache'}" in args and "--builderOptimizationLevel=4" in args
    assert "--memPoolSize=workspace:2048" in v86 and "--memPoolSize=workspace:2048M" in v103
    assert "--stronglyTyped" in v103 and "--stronglyTyped" not in v86 and "--stronglyTyped" not in v111


def test_trtexec_precision_flags_per_release(fp32_onnx, tmp_path):
    int8 = _tiny_model(tmp_path / "m.int8.onnx", "int8")
    assert "--int8" in _trtexec(int8, "8.6.1") and "--int8" not in _trtexec(int8, "10.3")
    legacy = _trtexec(fp32_onnx, "10.3", legacy_precision="int8", calib_data=str(tmp_path))
    assert {"--int8", "--fp16"} <= set(legacy) and "--stronglyTyped" not in legacy
    assert any(a.startswith("--calib=") and a.endswith("eca_resnet18.legacy-int8.engine.calib") for a in legacy)
    dla = _trtexec(int8, "10.3", dla_core=1, version_compatible=True, profile="4")
    assert {"--useDLACore=1", "--allowGPUFallback", "--versionCompatible"} <= set(dla)


def test_trtexec_for_jetpack_5_refuses_what_8_5_lacks(fp32_onnx):
    assert "--builderOptimizationLevel" not in " ".join(_trtexec(fp32_onnx, "8.5.2"))
    with pytest.raises(EngineError, match="--opt-level needs TensorRT 8.6"):
        _trtexec(fp32_onnx, "8.5.2", opt_level=3)


def test_cli_prints_trtexec_without_tensorrt(fp32_onnx, capsys, no_tensorrt):
    code, out, err = _cli(capsys, "build", "--onnx", str(fp32_onnx), "--print-trtexec", "--trt-version", "10.3",
                          "--profile", "1:4:8", "--workspace", "1")
    assert code == 0 and err == ""
    args = shlex.split(out)
    assert args[:2] == ["trtexec", f"--onnx={fp32_onnx}"] and "--memPoolSize=workspace:1024M" in args
    assert not fp32_onnx.with_name("eca_resnet18.engine").exists()


def test_cli_legacy_precision_with_tensorrt_11_exits_2(fp32_onnx, capsys):
    code, out, err = _cli(capsys, "build", "--onnx", str(fp32_onnx), "--print-trtexec", "--trt-version", "11.1",
                          "--legacy-precision", "fp16")
    assert code == 2 and out == "" and "TensorRT 11 builds only strongly typed networks" in err
    assert len(err.strip().splitlines()) == 1


# --- missing TensorRT / pycuda / GPU ---------------------------------------------------------------------------

def test_build_without_tensorrt_says_what_to_install(fp32_onnx, capsys, no_tensorrt):
    before = _files(fp32_onnx.parent)
    with pytest.raises(MissingDependencyError) as err:
        build_engine(BuildConfig(onnx=str(fp32_onnx)))
    assert "pip install 'eca-deploy[tensorrt]'" in str(err.value) and "JetPack" in str(err.value)
    code, out, cli_err = _cli(capsys, "build", "--onnx", str(fp32_onnx))
    # One line: no "building a TensorRT engine ..." before it, and the way on without TensorRT.
    assert code == 2 and cli_err.strip().splitlines() == [
        f"eca-deploy: error: {err.value}; without TensorRT, print the equivalent trtexec command for the target "
        f"machine: eca-deploy build --onnx {fp32_onnx} --print-trtexec --trt-version X.Y"]
    assert _files(fp32_onnx.parent) == before
    assert tensorrt_env.tensorrt_unavailable_reason() == str(err.value)


def test_build_without_pycuda_says_what_to_install(fp32_onnx, monkeypatch):
    _machine(monkeypatch, "10.3.0", ModuleNotFoundError("No module named 'pycuda'", name="pycuda"))
    with pytest.raises(MissingDependencyError, match=r"^pycuda is not installed: run `pip install"):
        build_engine(BuildConfig(onnx=str(fp32_onnx)))


@pytest.mark.parametrize("cuda, message", [
    (_NoDevice, "no CUDA GPU is available (cuInit failed: no CUDA-capable device is detected)"),
    (ImportError("libcuda.so.1: cannot open shared object file"), "no CUDA driver (libcuda.so.1"),
])
def test_build_without_a_gpu_is_one_line(fp32_onnx, monkeypatch, cuda, message):
    _machine(monkeypatch, "10.3.0", cuda)
    with pytest.raises(MissingDependencyError) as err:
        build_engine(BuildConfig(onnx=str(fp32_onnx)))
    assert str(err.value).startswith(message) and "NVIDIA GPU" in str(err.value) and "\n" not in str(err.value)


def test_build_with_tensorrt_11_refuses_legacy_precision_before_any_work(fp32_onnx, monkeypatch, tmp_path):
    _machine(monkeypatch, "11.1.0", AssertionError("pycuda must not be reached"))
    with pytest.raises(EngineError, match="needs TensorRT 8.6 or 10.x, but this is TensorRT 11.1.0"):
        build_engine(BuildConfig(onnx=str(fp32_onnx), legacy_precision="int8", calib_data=str(tmp_path)))


def test_backend_without_pycuda_or_gpu(tmp_path, monkeypatch):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00" * 64)
    _machine(monkeypatch, "10.3.0", ModuleNotFoundError("No module named 'pycuda'", name="pycuda"))
    with pytest.raises(MissingDependencyError, match="pycuda is not installed"):
        TensorRTBackend(engine)
    _machine(monkeypatch, "10.3.0", _NoDevice)
    with pytest.raises(MissingDependencyError, match="no CUDA GPU is available"):
        TensorRTBackend(engine)
    with pytest.raises(EngineError, match="TensorRT engine not found"):
        TensorRTBackend(tmp_path / "other.engine")


# --- engines built elsewhere -------------------------------------------------------------------------------------

def _engine(tmp_path, **manifest):
    engine = tmp_path / "eca_resnet18.engine"
    # the bytes are never deserialized
    write_artifact(engine, np.random.default_rng(0).bytes(256), "build", source_onnx="out/eca_resnet18.onnx",
                   **manifest)
    return engine


@pytest.mark.parametrize("manifest, message", [
    ({"tensorrt_version": "8.6.2", "gpu": {"name": "Orin", "compute_capability": "8.7"}},
     "built with TensorRT 8.6.2 but this machine has TensorRT 10.3.0.30"),
    ({"tensorrt_version": "10.3.0.30", "gpu": {"name": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0"}},
     "built for NVIDIA A100-SXM4-40GB (compute capability 8.0) but this GPU is Orin (compute capability 8.7)"),
    ({"tensorrt_version": "10.3.0.30", "gpu": {"name": "Orin Nano", "compute_capability": "8.7"}},
     "tuned for Orin Nano but this GPU is Orin"),
])
def test_engine_from_another_tensorrt_or_gpu_is_refused_before_loading(tmp_path, manifest, message):
    engine = _engine(tmp_path, **manifest)
    with pytest.raises(EngineError) as err:
        check_engine(engine, "10.3.0.30", ORIN)
    text = str(err.value)
    assert message in text and "rebuild it here with `eca-deploy build --onnx out/eca_resnet18.onnx`" in text
    assert "\n" not in text


def test_engine_that_matches_passes_and_a_stale_manifest_is_caught(tmp_path):
    engine = _engine(tmp_path, tensorrt_version="10.3.0.30", gpu={"name": "Orin", "compute_capability": "8.7"})
    assert check_engine(engine, "10.3.0.30", ORIN)["stage"] == "build"
    engine.write_bytes(b"rebuilt by trtexec")
    with pytest.raises(EngineError, match="describes another engine"):
        check_engine(engine, "10.3.0.30", ORIN)
    bare = tmp_path / "bare.plan"
    bare.write_bytes(b"from trtexec")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert check_engine(bare, "10.3.0.30", ORIN) is None
    assert "has no manifest" in str(caught[0].message)


@pytest.mark.parametrize("built, running, compatible, ok", [
    ("10.3.0", "10.13.3", True, True), ("10.3.0", "11.1.0", True, True), ("8.6.1", "10.3.0", True, True),
    ("8.6.1", "11.1.0", True, False), ("10.13.3", "10.3.0", True, False), ("10.3.0.30", "10.3.0.26", False, True),
    ("10.3.0", "10.3.1", False, False),
])
def test_version_compatible_engines_run_on_later_releases_only(built, running, compatible, ok):
    manifest = {"tensorrt_version": built, "version_compatible": compatible}
    assert (engine_mismatch(manifest, running, "Orin", "8.7") is None) is ok


def test_build_manifest_fields_are_what_the_backend_checks(tmp_path):
    """The backend reads tensorrt_version, gpu.name, gpu.compute_capability, version_compatible and sha256."""
    engine = _engine(tmp_path, tensorrt_version="10.3.0.30", gpu=ORIN.as_dict(), version_compatible=False)
    manifest = json.loads(engine.with_name(engine.name + ".json").read_text())
    assert manifest["gpu"] == {"index": 0, "name": "Orin", "compute_capability": "8.7"}
    assert check_engine(engine, "10.3.0.30", ORIN) == manifest


# --- review fixes (issue 9) -----------------------------------------------------------------------------------

def test_trtexec_8_5_builds_with_build_only_and_8_6_with_skip_inference(fp32_onnx):
    """sampleOptions.cpp: 8.5 has --buildOnly only (--skipInference is an unknown option there); 8.6 added
    --skipInference and deprecated --buildOnly."""
    v85, v86, v103 = (_trtexec(fp32_onnx, v) for v in ("8.5.2", "8.6.1", "10.3"))
    assert "--buildOnly" in v85 and "--skipInference" not in v85
    assert all("--skipInference" in v and "--buildOnly" not in v for v in (v86, v103))


@pytest.mark.parametrize("version", ["7.1", "9.0", "99.0", "8.9", "10.99", "11.9", "8.4", "10.17"])
def test_unknown_trt_version_is_refused_in_one_line(fp32_onnx, capsys, no_tensorrt, version):
    code, out, err = _cli(capsys, "build", "--onnx", str(fp32_onnx), "--print-trtexec", "--trt-version", version)
    assert code == 2 and out == "" and "--trt-version takes a TensorRT release" in err and f"'{version}'" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("version", ["8.5", "8.6.1", "10.0", "10.3", "10.16", "11.0", "11.1"])
def test_every_release_the_readme_lists_is_accepted(version):
    from eca_deploy.runtime.tensorrt.compat import check_trtexec_version

    assert check_trtexec_version(version) == version


def test_trtexec_8_5_legacy_int8_is_refused_for_its_calibrator(fp32_onnx, tmp_path, capsys, no_tensorrt):
    """trtexec 8.5 allocates no calibration buffers when --calib's file exists (samples/common/sampleEngines.cpp
    at 8.5.3, RndInt8Calibrator::RndInt8Calibrator returns early) and would hand TensorRT null pointers if it
    rejected our cache; 8.6 is unaffected."""
    with pytest.raises(EngineError, match="build Q/DQ INT8 instead"):
        _trtexec(fp32_onnx, "8.5.2", legacy_precision="int8", calib_data=str(tmp_path))
    assert "--int8" in _trtexec(fp32_onnx, "8.6.1", legacy_precision="int8", calib_data=str(tmp_path))
    code, out, err = _cli(capsys, "build", "--onnx", str(fp32_onnx), "--print-trtexec", "--trt-version", "8.5",
                          "--legacy-precision", "int8", "--calib-data", str(tmp_path))
    assert code == 2 and out == "" and "--high-precision fp32" in err and len(err.strip().splitlines()) == 1


def test_trtexec_dla_line_on_10x_is_weakly_typed(tmp_path):
    """trtexec 10.3 --useDLACore sets kFP16 (without --int8) and kPREFER_PRECISION_CONSTRAINTS itself
    (samples/common/sampleEngines.cpp at v10.3.0, lines 1123-1146), which a --stronglyTyped network does not
    take (sampleOptions.cpp at v10.3.0, lines 1231-1248 drop precision flags there): the DLA line is weakly
    typed with the ONNX's flags; 11.x types strongly and has no precision flags."""
    fp16 = _tiny_model(tmp_path / "m.fp16.onnx", "fp16")
    int8 = _tiny_model(tmp_path / "m.int8.onnx", "int8")
    for model, flags in ((fp16, {"--fp16"}), (int8, {"--int8", "--fp16"})):
        line = _trtexec(model, "10.3", dla_core=0, profile="4")
        assert "--stronglyTyped" not in line and flags | {"--useDLACore=0", "--allowGPUFallback"} <= set(line)
        assert "--stronglyTyped" in _trtexec(model, "10.3", profile="4")
        v11 = _trtexec(model, "11.1", dla_core=0, profile="4")
        assert not {"--fp16", "--int8", "--stronglyTyped"} & set(v11) and "--useDLACore=0" in v11


def _cpu_int8_model(path):
    """What `quantize --target cpu` writes for activations: uint8 Q/DQ with a non-zero zero point."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, 8, 8])
    inits = [helper.make_tensor("scale", TensorProto.FLOAT, [], [0.01]),
             helper.make_tensor("zero", TensorProto.UINT8, [], [128])]
    nodes = [helper.make_node("QuantizeLinear", ["input", "scale", "zero"], ["q"], name="q_input"),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["logits"], name="dq_input")]
    model = helper.make_model(helper.make_graph(nodes, "cpu_int8", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_build_refuses_the_cpu_target_int8_model_also_for_trtexec(tmp_path, capsys, no_tensorrt):
    cpu = _cpu_int8_model(tmp_path / "m.cpu.int8.onnx")
    assert run_once(cpu, np.zeros((1, 3, 8, 8), np.float32)).shape == (1, 3, 8, 8)  # a real, runnable model
    for extra in ([], ["--print-trtexec", "--trt-version", "10.3"]):
        code, out, err = _cli(capsys, "build", "--onnx", str(cpu), *extra)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
        assert "has a uint8 zero point" in err and "--target tensorrt" in err
    assert prepare_build(BuildConfig(onnx=str(_tiny_model(tmp_path / "t.int8.onnx", "int8")))).precision == "int8"


@pytest.mark.parametrize("settings, message", [
    (dict(profile="1:8:32"), "--dla needs one fixed batch (DLA has no dynamic shapes)"),
    (dict(profile="8"), "--dla needs an FP16 or INT8 network"),
    (dict(profile="8", legacy_precision="int8", calib_method="minmax"), "needs --calib-method entropy"),
])
def test_dla_refuses_what_it_cannot_run(fp32_onnx, tmp_path, settings, message):
    with pytest.raises(EngineError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare_build(BuildConfig(onnx=str(fp32_onnx), dla_core=0, calib_data=str(tmp_path), **settings))


def test_dla_refusal_also_under_print_trtexec_and_fp16_fixed_batch_passes(fp32_onnx, tmp_path, capsys, no_tensorrt):
    code, out, err = _cli(capsys, "build", "--onnx", str(fp32_onnx), "--dla", "0", "--print-trtexec",
                          "--trt-version", "10.3")
    assert code == 2 and "--dla needs one fixed batch" in err
    fp16 = _tiny_model(tmp_path / "m.fp16.onnx", "fp16")
    args = _trtexec(fp16, "10.3", dla_core=1, profile="4")
    assert {"--useDLACore=1", "--allowGPUFallback"} <= set(args)


class _FakeTimingCache:
    """ITimingCache as documented: combine(other, ignore_mismatch) merges entries; serialize() -> bytes."""

    def __init__(self, entries):
        self.entries = set(entries)
        self.ignore_mismatch = []

    def combine(self, other, ignore_mismatch):
        self.ignore_mismatch.append(ignore_mismatch)
        self.entries |= other.entries
        return True

    def serialize(self):
        return "\n".join(sorted(self.entries)).encode()


class _FakeConfig:
    def __init__(self, entries, on_serialize=None):
        self.cache = _FakeTimingCache(entries)
        self.cache.serialize = self._serialize(self.cache.serialize, on_serialize)

    @staticmethod
    def _serialize(real, hook):
        def serialize():
            if hook:
                hook()
            return real()
        return serialize

    def get_timing_cache(self):
        return self.cache

    def create_timing_cache(self, data):
        return _FakeTimingCache(data.decode().split("\n") if data else [])


def test_timing_cache_merges_what_is_on_disk_under_a_lock(tmp_path):
    import fcntl

    from eca_deploy.runtime.tensorrt.builder import _save_timing_cache

    path = tmp_path / "timing.cache"
    path.write_bytes(b"conv1:tactic7")  # written by another build since this one read the cache
    held = []

    def another_build_tries_to_lock():
        with open(path.with_name("timing.cache.lock"), "a+b") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append(False)
            except BlockingIOError:
                held.append(True)

    config = _FakeConfig({"conv2:tactic3"}, on_serialize=another_build_tries_to_lock)
    _save_timing_cache(config, path)
    assert held == [True] and config.cache.ignore_mismatch == [False]
    assert path.read_bytes().decode().split("\n") == ["conv1:tactic7", "conv2:tactic3"]


def test_dla_layer_count_comes_from_can_run_on_dla():
    from eca_deploy.runtime.tensorrt.builder import _dla_layers

    layers = ["conv", "relu", "topk", "conv2"]
    network = types.SimpleNamespace(num_layers=4, get_layer=lambda i: layers[i])
    config = types.SimpleNamespace(can_run_on_DLA=lambda layer: layer != "topk")
    assert _dla_layers(config, network) == {"network_layers": 4, "layers_dla_capable": 3}
