"""The TensorRT backend's CUDA context, DLA core, host code and failure paths, with fakes of pycuda and tensorrt.

The fakes (tests/runtime/tensorrt/fake_tensorrt.py) model only documented behaviour, each with its source: pycuda's
static Context.pop() and its abort at exit with a non-empty context stack, TensorRT's Runtime.DLA_core
read while deserializing, engine_host_code_allowed for version-compatible plans, and
create_execution_context() returning None.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from fake_tensorrt import OOM_PLAN, VERSION_COMPATIBLE_PLAN, FakeCuda, LogicError, fake_tensorrt

from eca_deploy.artifacts import write_artifact
from eca_deploy.errors import EngineError
from eca_deploy.runtime.tensorrt import env as tensorrt_env
from eca_deploy.runtime.tensorrt.backend import TensorRTBackend

MANIFEST = {"tensorrt_version": "10.3.0.30", "gpu": {"name": "Orin", "compute_capability": "8.7"}}


@pytest.fixture()
def machine(monkeypatch):
    """A fresh process: fake pycuda + TensorRT, no context pushed yet, atexit hooks collected (not run)."""
    cuda = FakeCuda()
    trt = fake_tensorrt(cuda)
    modules = {"tensorrt": trt, "pycuda.driver": cuda}
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


def test_one_logger_for_every_runtime(machine, tmp_path):
    _, trt, _ = machine
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
