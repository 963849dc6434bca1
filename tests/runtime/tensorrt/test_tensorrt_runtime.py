"""The TensorRT backend's CUDA context, DLA core, host code and failure paths, with fakes of pycuda and tensorrt.

The fakes (tests/runtime/tensorrt/fake_tensorrt.py) model only documented behaviour, each with its source: pycuda's
static Context.pop() and its abort at exit with a non-empty context stack, TensorRT's Runtime.DLA_core
read while deserializing, engine_host_code_allowed for version-compatible plans, and
create_execution_context() returning None.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
from fake_polygraphy import polygraphy_modules
from fake_tensorrt import OOM_PLAN, VERSION_COMPATIBLE_PLAN, FakeCuda, LogicError, fake_tensorrt

from eca_deploy.artifacts import write_artifact
from eca_deploy.errors import EngineError
from eca_deploy.runtime.tensorrt import env as tensorrt_env
from eca_deploy.cli.main import main
from eca_deploy.runtime.registry import open_backend
from eca_deploy.runtime.tensorrt.backend import TensorRTBackend, fp32_math_of
from eca_deploy.runtime.tensorrt.env import GpuInfo

MANIFEST = {"tensorrt_version": "10.3.0.30", "gpu": {"name": "Orin", "compute_capability": "8.7"}}


@pytest.fixture()
def machine(monkeypatch):
    """A fresh process: fake pycuda + TensorRT, no context pushed yet, atexit hooks collected (not run)."""
    cuda = FakeCuda()
    trt = fake_tensorrt(cuda)
    modules = {"tensorrt": trt, "pycuda.driver": cuda, **polygraphy_modules()}
    monkeypatch.setattr(tensorrt_env, "_import_module", lambda name: modules[name])
    monkeypatch.setattr(tensorrt_env, "_primary", None)
    monkeypatch.setattr(tensorrt_env, "_logger", None)
    exit_hooks = []
    monkeypatch.setattr(tensorrt_env, "_at_exit", exit_hooks.append)

    def interpreter_exit():
        for hook in reversed(exit_hooks):
            hook()
        cuda.module_cleanup()

    return cuda, trt, interpreter_exit


def _engine(tmp_path, name, data=b"plan", **manifest):
    path = tmp_path / name
    if manifest is None:
        path.write_bytes(data)
    else:
        write_artifact(path, data, "build", **{**MANIFEST, **manifest})
    return path


def _images(n=2):
    return np.random.default_rng(n).random((n, 3, 8, 8), dtype=np.float32)


def test_the_fake_pops_as_pycuda_does(machine):
    """Per-backend push/pop (the old code) breaks with two engines closed in opening order."""
    cuda, _, _ = machine
    first, second = (cuda.Device(0).retain_primary_context() for _ in range(2))
    first.push()
    second.push()
    first.pop()  # static: pops `second`
    second.pop()
    with pytest.raises(LogicError, match="cannot pop non-current context"):
        first.pop()


@pytest.mark.parametrize("count", [2, 3])
def test_engines_open_together_close_in_every_order(machine, tmp_path, count):
    cuda, _, interpreter_exit = machine
    paths = [_engine(tmp_path, f"m{i}.engine") for i in range(count)]
    for order in itertools.permutations(range(count)):
        backends = [TensorRTBackend(p) for p in paths]
        assert len(cuda.stack) == 1  # one shared primary context, pushed once per process
        for closed, index in enumerate(order):
            backends[index].close()
            for other in order[closed + 1:]:  # the engines still open keep working
                logits = backends[other].infer(_images())
                np.testing.assert_allclose(logits[:, 1], 2 * _images().reshape(2, -1).mean(1), rtol=1e-5)
        assert len(cuda.stack) == 1
    assert cuda.retained == 1
    interpreter_exit()  # the atexit hook pops it once: pycuda's cleanup finds an empty stack


def test_a_backend_never_closed_does_not_abort_at_exit(machine, tmp_path):
    cuda, _, interpreter_exit = machine
    backend = TensorRTBackend(_engine(tmp_path, "m.engine"))
    assert backend.infer(_images()).shape == (2, 4)
    interpreter_exit()
    assert cuda.stack == []


def test_one_logger_for_every_runtime_and_polygraphys_builders(machine, tmp_path, monkeypatch):
    """Polygraphy's builders log through its get_trt_logger(); runtimes get the same one, else TensorRT warns
    "the logger passed into createInferRuntime differs"."""
    _, trt, _ = machine
    with TensorRTBackend(_engine(tmp_path, "a.engine")), TensorRTBackend(_engine(tmp_path, "b.engine")):
        pass
    polygraphy_logger = tensorrt_env._import_module("polygraphy.backend.trt").logger
    assert trt.loggers == [] and {id(r.logger) for r in trt.runtimes} == {id(polygraphy_logger)}


def test_without_polygraphy_engines_still_run_with_one_logger_of_our_own(machine, tmp_path, monkeypatch):
    cuda, trt, _ = machine

    def no_polygraphy(name):
        if name.startswith("polygraphy"):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return {"tensorrt": trt, "pycuda.driver": cuda}[name]

    monkeypatch.setattr(tensorrt_env, "_import_module", no_polygraphy)
    with TensorRTBackend(_engine(tmp_path, "a.engine")), TensorRTBackend(_engine(tmp_path, "b.engine")):
        pass
    assert len(trt.loggers) == 1 and {id(r.logger) for r in trt.runtimes} == {id(trt.loggers[0])}


def test_dla_core_is_set_from_the_manifest_before_deserializing(machine, tmp_path):
    with TensorRTBackend(_engine(tmp_path, "dla.engine", dla_core=1)) as backend:
        assert backend._engine.dla_core == 1
    with TensorRTBackend(_engine(tmp_path, "gpu.engine", dla_core=None)) as backend:
        assert backend._engine.dla_core == -1


def test_execution_context_none_is_one_line(machine, tmp_path):
    with pytest.raises(EngineError) as err:
        TensorRTBackend(_engine(tmp_path, "big.engine", data=OOM_PLAN))
    assert "could not create an execution context" in str(err.value) and "\n" not in str(err.value)


def test_host_code_runs_only_with_the_explicit_flag(machine, tmp_path):
    """A manifest saying version_compatible must not switch host code on: it is as untrusted as the plan."""
    signed = _engine(tmp_path, "vc.engine", data=VERSION_COMPATIBLE_PLAN, version_compatible=True)
    with pytest.raises(EngineError, match="runs only with --allow-host-code"):
        TensorRTBackend(signed)
    with TensorRTBackend(signed, allow_host_code=True) as backend:
        assert backend.infer(_images()).shape == (2, 4)


def test_manifest_less_engine_is_deserialized_as_polygraphy_does(machine, tmp_path):
    """No manifest (trtexec --versionCompatible): TensorRT's own check decides, with a warning, as Polygraphy."""
    bare = tmp_path / "trtexec.plan"
    bare.write_bytes(VERSION_COMPATIBLE_PLAN)
    with pytest.warns(UserWarning, match="has no manifest"):
        with pytest.raises(EngineError, match="an engine without a manifest .* --allow-host-code"):
            TensorRTBackend(bare)
    with pytest.warns(UserWarning, match="has no manifest"):
        with TensorRTBackend(bare, allow_host_code=True) as backend:
            assert backend.infer(_images(3)).shape == (3, 4)


def test_one_process_one_gpu(machine, tmp_path):
    cuda, _, _ = machine
    tensorrt_env.primary_context(cuda, 0)
    with pytest.raises(EngineError, match="already runs on GPU 0"):
        tensorrt_env.primary_context(cuda, 1)


# --- threads: pycuda's context stack is per thread (src/cpp/cuda.hpp) --------------------------------------

def _in_thread(call):
    """call() on a new thread; its result, or its exception raised here."""
    outcome = {}

    def target():
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome["error"] = exc

    worker = threading.Thread(target=target)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_a_backend_opened_on_the_main_thread_runs_on_other_threads(machine, tmp_path):
    """Before: the context was pushed on the main thread only, so a worker's first allocation failed with
    "invalid device context"."""
    cuda, _, interpreter_exit = machine
    backend = TensorRTBackend(_engine(tmp_path, "m.engine"))
    logits = _in_thread(lambda: backend.infer(_images(3)))  # a new batch size: allocates on the worker
    np.testing.assert_allclose(logits[:, 1], 2 * _images(3).reshape(3, -1).mean(1), rtol=1e-5)
    run, _ = _in_thread(lambda: backend.device_runner(_images(4)))
    assert _in_thread(run) == 1.0
    _in_thread(backend.close)
    main = threading.get_ident()
    assert len(cuda.stack) == 1 and all(s == [] for ident, s in cuda.stacks.items() if ident != main)
    interpreter_exit()


def test_a_worker_thread_that_touches_the_gpu_first_leaves_nothing_to_pop_at_exit(machine, tmp_path):
    """Before: the worker pushed the context for good, and the exit hook's pop on the main thread raised
    "cannot pop non-current context"."""
    cuda, _, interpreter_exit = machine
    backend = _in_thread(lambda: TensorRTBackend(_engine(tmp_path, "m.engine")))
    assert _in_thread(lambda: backend.infer(_images())).shape == (2, 4)
    assert backend.infer(_images()).shape == (2, 4)  # and on the main thread
    backend.close()
    interpreter_exit()
    assert all(stack == [] for stack in cuda.stacks.values())


# --- TF32 and the GPU an engine runs on ------------------------------------------------------------------------

@pytest.mark.parametrize("capability, manifest, math", [
    ("7.2", {"tf32": True}, "fp32"),  # Xavier: no TF32 at all
    ("7.5", None, "fp32"),  # T4
    ("8.7", {"tf32": False}, "fp32"),  # our builds: Polygraphy clears TF32
    ("8.6", None, "tf32"),  # a trtexec engine without manifest: trtexec leaves TF32 on
    ("8.0", {}, "tf32"),  # a manifest from before builds recorded tf32
])
def test_the_tf32_tolerance_applies_only_where_tf32_can_run(capability, manifest, math):
    assert fp32_math_of(manifest, GpuInfo(0, "gpu", capability)) == math


def test_an_fp32_engine_on_xavier_is_judged_by_fp32s_tolerance(machine, tmp_path, monkeypatch):
    from eca_deploy.runtime.harness.parity import tolerance_for

    monkeypatch.setitem(MANIFEST["gpu"], "compute_capability", "7.2")
    cuda = FakeCuda("Xavier", (7, 2))
    trt = fake_tensorrt(cuda)
    modules = {"tensorrt": trt, "pycuda.driver": cuda, **polygraphy_modules()}
    monkeypatch.setattr(tensorrt_env, "_import_module", modules.__getitem__)
    with TensorRTBackend(_engine(tmp_path, "x.engine", gpu={"name": "Xavier", "compute_capability": "7.2"})) as b:
        assert tolerance_for("fp32", fp32_math=b.fp32_math) == tolerance_for("fp32")


def _two_gpus(monkeypatch, second):
    cuda = FakeCuda(gpus=[("Orin", (8, 7)), second])
    modules = {"tensorrt": fake_tensorrt(cuda), "pycuda.driver": cuda, **polygraphy_modules()}
    monkeypatch.setattr(tensorrt_env, "_import_module", modules.__getitem__)
    return cuda


def test_an_engine_opens_on_the_gpu_asked_for(machine, tmp_path, monkeypatch):
    """Before: open_backend passed no device, so an engine built with --gpu 1 ran on GPU 0."""
    _two_gpus(monkeypatch, ("Orin", (8, 7)))
    engine = _engine(tmp_path, "m.engine")
    with open_backend(str(engine), gpu=1) as backend:
        assert backend.infer(_images()).shape == (2, 4)
    assert tensorrt_env._primary[0] == 1


def test_an_engine_for_another_gpu_model_is_refused_by_bench_gpu_n(machine, tmp_path, monkeypatch, capsys):
    _two_gpus(monkeypatch, ("RTX 4090", (8, 9)))
    engine = _engine(tmp_path, "m.engine")
    code = main(["bench", str(engine), "--gpu", "1", "--iterations", "1", "--warmup", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "built for Orin (compute capability 8.7)" in err and "RTX 4090" in err
    assert len(err.strip().splitlines()) == 1
