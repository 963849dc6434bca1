"""The TensorRT API check: our TensorRT code against the real API of 8.6, 10.3, 10.13 and 11.1 (no TensorRT needed)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import trt_api_check as check

BUILD = check.ROOT / "eca_deploy/runtime/tensorrt/builder.py"
SHARED = check.ROOT.parent / "shared" / "tensorrt_api"


@pytest.fixture(scope="module")
def api():
    return check.load_api()


@pytest.fixture(scope="module")
def checked(api):
    return check.check_files(check.SOURCES, api)


def _reach(uses, name):
    found = {use.versions for use in uses if use.name == name}
    assert found, f"the check never saw {name}"
    return set().union(*found)


def test_every_tensorrt_name_exists_in_every_version_that_reaches_it(checked):
    uses, problems = checked
    assert [str(p) for p in problems] == []


def test_check_sees_the_calls_builder_backend_and_calibrator_make(checked):
    """What stays hand-written around Polygraphy's loaders: DLA core and layer count, the timing cache, the
    workspace pool, the calibrator base classes, and the runtime."""
    uses, _ = checked
    names = {use.name for use in uses}
    expected = {
        "trt.Builder", "Builder.num_DLA_cores", "INetworkDefinition.num_layers", "INetworkDefinition.get_layer",
        "IBuilderConfig.DLA_core", "IBuilderConfig.can_run_on_DLA", "IBuilderConfig.create_timing_cache",
        "IBuilderConfig.set_timing_cache", "IBuilderConfig.get_timing_cache", "ITimingCache.combine",
        "ITimingCache.serialize", "MemoryPoolType.WORKSPACE", "trt.IInt8EntropyCalibrator2",
        "trt.IInt8MinMaxCalibrator", "Runtime.deserialize_cuda_engine", "ICudaEngine.num_io_tensors",
        "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode", "ICudaEngine.get_tensor_shape",
        "ICudaEngine.get_tensor_dtype", "IExecutionContext.set_input_shape", "IExecutionContext.set_tensor_address",
        "IExecutionContext.execute_async_v3", "Logger.WARNING",
    }
    assert expected - names == set()


def test_version_guards_keep_each_name_to_the_releases_that_have_it(checked):
    uses, _ = checked
    assert _reach(uses, "trt.IInt8EntropyCalibrator2") == {"8.6", "10.3", "10.13"}
    assert _reach(uses, "trt.IInt8MinMaxCalibrator") == {"8.6", "10.3", "10.13"}
    assert _reach(uses, "IExecutionContext.execute_async_v3") == set(check.VERSIONS)


def _plant(source: str, anchor: str, lines: str) -> str:
    """Insert ``lines`` right after the line containing ``anchor``, at that line's indentation."""
    out = []
    for line in source.splitlines(keepends=True):
        out.append(line)
        if anchor in line:
            indent = line[:len(line) - len(line.lstrip())]
            out.append(textwrap.indent(textwrap.dedent(lines), indent))
    assert len(out) > len(source.splitlines()), f"anchor {anchor!r} not found"
    return "".join(out)


def test_planted_fp16_flag_on_the_11x_path_fails_the_check(api):
    planted = _plant(BUILD.read_text(), "config.DLA_core = cfg.dla_core",
                     "config.set_flag(trt.BuilderFlag.FP16)\n")
    _, problems = check.check_source(planted, "tensorrt_build.py", api)
    assert len(problems) == 1
    assert "BuilderFlag.FP16 does not exist in TensorRT 11.1" in str(problems[0])


def test_planted_flag_behind_a_version_guard_passes(api):
    planted = _plant(BUILD.read_text(), "config.DLA_core = cfg.dla_core",
                     "if trt_major(version) < 11:\n    config.set_flag(trt.BuilderFlag.FP16)\n")
    _, problems = check.check_source(planted, "tensorrt_build.py", api)
    assert problems == []


def test_an_early_exit_guards_what_follows_and_a_plain_condition_guards_nothing(api):
    guarded = """
        def attach(trt, config, calibrator, legacy):
            if trt_major(trt.__version__) >= 11:
                raise RuntimeError("no implicit calibration")
            config.int8_calibrator = calibrator
    """
    unguarded = """
        def attach(trt, config, calibrator, legacy):
            if legacy:
                config.int8_calibrator = calibrator
    """
    assert check.check_source(textwrap.dedent(guarded), "a.py", api)[1] == []
    problems = check.check_source(textwrap.dedent(unguarded), "b.py", api)[1]
    assert [p.line for p in problems] == [4] and "int8_calibrator does not exist in TensorRT 11.1" in str(problems[0])


def test_objects_are_typed_through_chains_and_annotations(api):
    source = """
        def load(trt, data, plan: "trt.ICudaEngine"):
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            engine = runtime.deserialize_cuda_engine(data)
            engine.get_binding_index("input")
            plan.num_bindings
            runtime.deserialize_cuda_engine(data).create_execution_context().execute_async_v2([], 0)
    """
    problems = check.check_source(textwrap.dedent(source), "c.py", api)[1]
    assert {p.message.split(" does not")[0] for p in problems} == {
        "ICudaEngine.get_binding_index", "ICudaEngine.num_bindings", "IExecutionContext.execute_async_v2"}
    assert all("10.3, 10.13, 11.1" in p.message for p in problems)  # 8.6 still had the binding API


def test_dynamic_attribute_access_cannot_hide_a_name(api):
    source = "def f(trt, config):\n    if hasattr(trt.BuilderFlag, 'FP16'):\n        pass\n    getattr(config, 'int8_calibrator')\n"
    problems = check.check_source(source, "e.py", api)[1]
    assert [p.line for p in problems] == [2, 4] and all("escapes this check" in p.message for p in problems)


def test_the_module_must_be_bound_to_trt(api):
    source = "def f():\n    tensorrt = import_tensorrt()\n    return tensorrt.BuilderFlag.FP16\n"
    problems = check.check_source(source, "d.py", api)[1]
    assert [p.message for p in problems] == ["bind import_tensorrt() to the name `trt`"]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/tensorrt_api is not beside this checkout")
@pytest.mark.parametrize("version", check.VERSIONS)
def test_vendored_api_surfaces_match_the_shared_ones(version):
    vendored = json.loads((check.API_DIR / f"tensorrt-{version}.json").read_text())
    assert vendored == json.loads(Path(SHARED / f"tensorrt-{version}.json").read_text())


def test_only_the_tensorrt_package_imports_or_calls_tensorrt_and_pycuda():
    """The check scans runtime/tensorrt/ alone, so a TensorRT call anywhere else would go unchecked."""
    pattern = re.compile(r"\b(import_tensorrt|import_cuda)\(|\bimport (tensorrt|pycuda)\b|\bfrom (tensorrt|pycuda)\b"
                         r"|\btrt\.\w")
    outside = [str(path.relative_to(check.ROOT)) for path in sorted((check.ROOT / "eca_deploy").rglob("*.py"))
               if check.TENSORRT_PACKAGE not in path.parents and pattern.search(path.read_text())]
    assert outside == []
    assert {p.name for p in check.SOURCES} >= {"builder.py", "backend.py", "calibrator.py", "env.py"}


# --- Polygraphy: the names and keywords the builder passes exist in the installed release -----------------

def test_every_polygraphy_name_and_keyword_the_builder_uses_exists():
    uses, problems = check.polygraphy_problems()
    assert [str(p) for p in problems] == []
    assert {name for name, _ in uses} >= {"NetworkFromOnnxPath", "CreateConfig", "Profile", "Calibrator",
                                          "EngineBytesFromNetwork"}
    keywords = set().union(*(kw for name, kw in uses if name == "CreateConfig"))
    assert keywords >= {"fp16", "int8", "profiles", "calibrator", "use_dla", "allow_gpu_fallback",
                        "version_compatible", "builder_optimization_level", "memory_pool_limits"}


def test_a_misspelt_polygraphy_name_or_keyword_fails_the_check(tmp_path):
    source = tmp_path / "planted.py"
    source.write_text("def build(path):\n    poly, error = import_polygraphy()\n"
                      "    poly.NetworkFromOnnx(path)\n    poly.CreateConfig(fp16=True, dla_core=1)\n"
                      "    polygraphy = import_polygraphy()\n")
    _, problems = check.polygraphy_problems([source])
    messages = sorted(p.message for p in problems)
    assert len(messages) == 3
    assert "CreateConfig takes no argument(s) ['dla_core']" in messages[0]
    assert "bind import_polygraphy()" in messages[1] and "NetworkFromOnnx does not exist" in messages[2]


def test_polygraphy_is_in_the_tensorrt_extra():
    import tomllib

    extras = tomllib.loads((check.ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("polygraphy") for dep in extras["tensorrt"])
