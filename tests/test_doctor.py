"""`eca-deploy doctor`: one line per part, OK / missing / problem with its fix, exit 1 only when something present is broken.

Here (no TensorRT, pycuda or GPU) the real command runs; fakes (tests/fake_tensorrt.py) play a Jetson
with TensorRT and a broken install.
"""

from __future__ import annotations

import pytest
from fake_tensorrt import FakeCuda, fake_tensorrt

from eca_deploy.cli.main import main
from eca_deploy.runtime import doctor, tensorrt_env
from eca_deploy.runtime.device import Probe

NAMES = ["Python", "eca-deploy", "torch", "onnxruntime", "TensorRT", "pycuda", "DLA", "GPU", "driver/CUDA",
         "JetPack/L4T", "power/clocks", "smoke test"]


def test_doctor_runs_here_and_says_what_is_missing_in_one_line_each(capsys):
    code = main(["doctor"])
    lines = capsys.readouterr().out.strip().splitlines()
    checks, summary = lines[:-1], lines[-1]
    assert [line[9:22].strip() for line in checks] == NAMES
    assert all(line.split()[0] in ("OK", "missing", "problem") for line in checks)
    by_name = {line[9:22].strip(): line for line in checks}
    assert by_name["Python"].startswith("OK") and by_name["onnxruntime"].startswith("OK")
    if tensorrt_env.tensorrt_unavailable_reason():  # a CPU machine: engines cannot be tried
        assert by_name["smoke test"].startswith("missing")
        assert by_name["TensorRT"].startswith(("missing", "OK"))
        if by_name["TensorRT"].startswith("missing"):
            assert "fix: pip install 'eca-deploy[tensorrt]'" in by_name["TensorRT"]
    assert code == (1 if "broken" in summary else 0)


@pytest.fixture()
def jetson(monkeypatch, tmp_path):
    """A Jetson AGX Orin on JetPack 6.1 with TensorRT 10.3, played by files and fakes."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic\n")
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_text("NVIDIA Jetson AGX Orin Developer Kit\x00")
    outputs = {"nvpmodel": "NV Power Mode: MAXN\n0\n"}
    probe = Probe(root=tmp_path, run=lambda argv: outputs.get(argv[0]))
    monkeypatch.setattr(tensorrt_env, "_primary", None)
    monkeypatch.setattr(tensorrt_env, "_logger", None)
    monkeypatch.setattr(tensorrt_env, "_at_exit", lambda hook: None)

    def install(**trt_settings):
        cuda = FakeCuda()
        modules = {"tensorrt": fake_tensorrt(cuda, **trt_settings), "pycuda.driver": cuda}
        monkeypatch.setattr(tensorrt_env, "_import_module", lambda name: modules[name])
    return probe, install


def _by_name(checks):
    return {c.name: c for c in checks}


def test_a_working_jetson_reports_dla_jetpack_and_power_mode(jetson):
    probe, install = jetson
    install(dla_cores=2)
    checks = _by_name(doctor.run_doctor(probe, smoke=False))
    assert checks["TensorRT"].status == "OK" and "10.3.0.30, builder starts" in checks["TensorRT"].detail
    assert checks["pycuda"].status == "OK" and "driver API 12.6" in checks["pycuda"].detail
    assert checks["DLA"].detail == "2 DLA core(s)"
    assert checks["JetPack/L4T"].detail == "JetPack 6.1 (L4T 36.4.0)"
    assert "power mode MAXN" in checks["power/clocks"].detail
    assert doctor.exit_code(list(checks.values())) == 0


def test_a_tensorrt_whose_builder_cannot_start_is_a_problem_exit_1(jetson):
    probe, install = jetson
    install(builder_error=TypeError("pybind11::init(): factory function returned nullptr"))
    checks = doctor.run_doctor(probe, smoke=False)
    trt = _by_name(checks)["TensorRT"]
    assert trt.status == "problem" and "the builder cannot start" in trt.detail
    assert "sudo apt install python3-libnvinfer" in trt.line()  # the Jetson's fix, not pip's
    assert doctor.exit_code(checks) == 1


def test_a_broken_module_is_a_problem_and_the_cli_exits_1(monkeypatch, capsys):
    real = doctor._import_module

    def broken(name):
        if name == "onnxruntime":
            raise ImportError("libonnxruntime.so.1.32.0: cannot open shared object file")
        return real(name)

    monkeypatch.setattr(doctor, "_import_module", broken)
    code = main(["doctor", "--no-smoke-test"])
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "onnxruntime" in line)
    assert line.startswith("problem") and "cannot open shared object file" in line
    assert "fix: pip install --force-reinstall onnxruntime" in line
    assert code == 1 and out.strip().splitlines()[-1] == "doctor: broken: onnxruntime"


def test_tiny_eca_network_is_a_real_eca_graph(tmp_path):
    import numpy as np

    from eca_deploy.export.graph import load_onnx, summarize
    from eca_deploy.runtime.ort import run_once

    path = doctor.tiny_eca_onnx(tmp_path / "tiny.onnx")
    logits = run_once(path, np.zeros((2, 3, doctor.SMOKE_IMGSZ, doctor.SMOKE_IMGSZ), np.float32))
    assert logits.shape == (2, 10) and np.isfinite(logits).all()
    summary = summarize(load_onnx(path))
    assert len(summary.eca_blocks) == 1 and summary.all_plain  # the block the project's ECA pattern check finds
