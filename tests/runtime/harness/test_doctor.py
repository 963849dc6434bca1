"""`eca-deploy doctor`: one line per part, OK / missing / problem with its fix, exit 1 only when something present is broken.

Here (no TensorRT, pycuda or GPU) the real command runs, and a broken onnxruntime is played; a Jetson
with TensorRT, and a TensorRT whose builder cannot start, are in tests/runtime/tensorrt/test_probe.py.
"""

from __future__ import annotations

from eca_deploy.cli.main import main
from eca_deploy.runtime.harness import doctor
from eca_deploy.runtime.tensorrt import env as tensorrt_env

NAMES = ["Python", "eca-deploy", "torch", "onnxruntime", "OpenVINO", "timm", "TensorRT", "Polygraphy", "pycuda", "DLA",
         "GPU", "driver/CUDA", "JetPack/L4T", "power/clocks", "CPU features", "memory", "smoke test"]


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


def test_doctor_names_openvino_and_timm_with_versions_or_the_install_line(capsys):
    import importlib.util

    assert main(["doctor", "--no-smoke-test"]) in (0, 1)
    by_name = {line[9:22].strip(): line for line in capsys.readouterr().out.splitlines()}
    if importlib.util.find_spec("openvino"):
        import openvino

        assert by_name["OpenVINO"].startswith("OK") and openvino.__version__.split("-")[0] in by_name["OpenVINO"]
        assert "devices: CPU" in by_name["OpenVINO"]
    else:
        assert "fix: pip install 'eca-deploy[openvino]'" in by_name["OpenVINO"]
    if importlib.util.find_spec("timm") is None:
        assert by_name["timm"].startswith("missing") and "fix: pip install 'eca-deploy[timm]'" in by_name["timm"]
    assert by_name["memory"].startswith("OK") and "GiB total" in by_name["memory"]


def test_memory_reads_meminfo_and_a_container_limit(tmp_path):
    from eca_deploy.runtime.harness.device import Probe

    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text("MemTotal:       32768000 kB\nMemFree:  1000 kB\n"
                                               "MemAvailable:   16384000 kB\n")
    assert doctor.memory_check(Probe(root=tmp_path)).line() == "OK       memory        31.2 GiB total, 15.6 GiB available"
    (tmp_path / "sys" / "fs" / "cgroup").mkdir(parents=True)
    (tmp_path / "sys" / "fs" / "cgroup" / "memory.max").write_text(f"{8 * 2**30}\n")
    assert doctor.memory_check(Probe(root=tmp_path)).detail.endswith(", container limit 8.0 GiB")
    (tmp_path / "sys" / "fs" / "cgroup" / "memory.max").write_text("max\n")  # no limit set
    assert "limit" not in doctor.memory_check(Probe(root=tmp_path)).detail
    assert doctor.memory_check(Probe(root=tmp_path / "none")).status == "missing"


def test_json_has_every_check_and_the_exit_status(capsys):
    import json

    code = main(["doctor", "--json"])  # the command docs/doctor.md shows
    report = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in report["checks"]] == NAMES
    assert report["exit_code"] == code and report["summary"] in ("everything present works",) or \
        report["summary"].startswith("broken: ")
    assert all(c["fix"] is None for c in report["checks"] if c["status"] == "OK")
