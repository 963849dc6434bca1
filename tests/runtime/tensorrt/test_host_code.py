"""Issue 11, item 2: host code stored in an engine runs only with --allow-host-code, never because a JSON says so.

TensorRT and pycuda are faked (no GPU here): the fake runtime records whether host code was allowed when it
was asked to deserialize, which is the whole decision under test.
"""

import types

import numpy as np
import pytest
from fake_polygraphy import polygraphy_modules

from eca_deploy.artifacts import write_artifact
from eca_deploy.cli.main import main
from eca_deploy.errors import EngineError
from eca_deploy.runtime.tensorrt import env as tensorrt_env
from eca_deploy.runtime.tensorrt.backend import TensorRTBackend


class _Context:
    def push(self): pass

    def pop(self): pass

    def detach(self): pass


class _Cuda:
    """pycuda.driver with one Orin."""

    @staticmethod
    def init(): pass

    class Device:
        def __init__(self, index): pass

        @staticmethod
        def count(): return 1

        def name(self): return "Orin"

        def compute_capability(self): return 8, 7

        def retain_primary_context(self): return _Context()


def _tensorrt(loads: list):
    """A tensorrt module whose Runtime records host_code_allowed at each deserialize (and loads nothing)."""
    class Runtime:
        engine_host_code_allowed = False

        def __init__(self, logger): pass

        def deserialize_cuda_engine(self, data):
            loads.append(self.engine_host_code_allowed)
            return None

    class Logger:
        WARNING = 2

        def __init__(self, level): pass

    return types.SimpleNamespace(__version__="10.3.0.30", Runtime=Runtime, Logger=Logger)


@pytest.fixture
def loads(monkeypatch):
    loads = []
    modules = {"tensorrt": _tensorrt(loads), "pycuda.driver": _Cuda, **polygraphy_modules()}
    monkeypatch.setattr(tensorrt_env, "_import_module", lambda name: modules[name])
    return loads


def _engine(tmp_path, **manifest):
    engine = tmp_path / "m.engine"
    write_artifact(engine, np.random.default_rng(0).bytes(64), "build", tensorrt_version="10.3.0.30",
                   gpu={"name": "Orin", "compute_capability": "8.7"}, **manifest)
    return engine


def test_a_version_compatible_manifest_is_not_consent(tmp_path, loads):
    engine = _engine(tmp_path, version_compatible=True)  # main: host code allowed because of this line
    with pytest.raises(EngineError, match="is version-compatible: loading it runs host code .*--allow-host-code"):
        TensorRTBackend(engine)
    assert loads == []  # refused before TensorRT saw a byte


@pytest.mark.filterwarnings("ignore:m.engine has no manifest")
@pytest.mark.parametrize("manifest", [{"version_compatible": True}, {"version_compatible": False}, None])
def test_the_flag_allows_host_code_and_only_the_flag(tmp_path, loads, manifest):
    engine = _engine(tmp_path, **(manifest or {}))
    if manifest is None:
        engine.with_name("m.engine.json").unlink()
    with pytest.raises(EngineError, match="could not load"):
        TensorRTBackend(engine, allow_host_code=True)
    assert loads == [True]
    if not (manifest or {}).get("version_compatible"):  # without the flag: loaded with host code refused
        with pytest.raises(EngineError, match="also needs --allow-host-code"):
            TensorRTBackend(engine)
        assert loads == [True, False]


@pytest.mark.parametrize("command", ["bench", "parity"])
def test_cli_passes_allow_host_code_to_the_engine(tmp_path, loads, capsys, command):
    engine = _engine(tmp_path, version_compatible=True)
    command = ["bench"] if command == "bench" else ["parity", "--reference", str(engine), "--candidate"]
    out = ["--out", str(tmp_path / "r.json")]
    assert main([*command, str(engine), *out]) == 2
    assert "--allow-host-code" in capsys.readouterr().err and loads == []
    assert main([*command, str(engine), "--allow-host-code", *out]) == 2
    assert "could not load m.engine" in capsys.readouterr().err and loads == [True]
