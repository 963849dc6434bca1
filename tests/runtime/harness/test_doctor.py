"""`eca-deploy doctor`: one line per part, OK / missing / problem with its fix, exit 1 only when something present is broken.

Here (no TensorRT, pycuda or GPU) the real command runs, and a broken onnxruntime is played; a Jetson
with TensorRT, and a TensorRT whose builder cannot start, are in tests/runtime/tensorrt/test_probe.py.
"""

from __future__ import annotations

from eca_deploy.cli.main import main
from eca_deploy.runtime.harness import doctor
from eca_deploy.runtime.tensorrt import env as tensorrt_env

NAMES = ["Python", "eca-deploy", "torch", "onnxruntime", "TensorRT", "pycuda", "DLA", "GPU", "driver/CUDA",
         "JetPack/L4T", "power/clocks", "CPU features", "smoke test"]


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

    from eca_deploy.graph.graph import load_onnx, summarize
    from eca_deploy.graph.session import run_once

    path = doctor.tiny_eca_onnx(tmp_path / "tiny.onnx")
    logits = run_once(path, np.zeros((2, 3, doctor.SMOKE_IMGSZ, doctor.SMOKE_IMGSZ), np.float32))
    assert logits.shape == (2, 10) and np.isfinite(logits).all()
    summary = summarize(load_onnx(path))
    assert len(summary.eca_blocks) == 1 and summary.all_plain  # the block the project's ECA pattern check finds
