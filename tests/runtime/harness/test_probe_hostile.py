"""A lying, garbling or flooding `nvidia-smi` (a small script put first on PATH), and hidden characters in
probed strings: doctor, bench and parity describe the machine without crashing, hanging or printing what
the tool printed raw, and doctor never says "OK GPU" on nvidia-smi's word alone."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from eca_deploy.cli.main import main
from eca_deploy.runtime.harness import device, doctor
from eca_deploy.runtime.harness.device import Probe, run_command

ESCAPES = "\x1b[2J\x1b]0;pwned\x07\x1b[31m"  # clear screen, set the terminal title, red
DRIVER_FILE = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"


def fake_smi(folder: Path, monkeypatch, body: str) -> Path:
    """An executable `nvidia-smi` whose Python ``body`` writes to ``out`` (sys.stdout.buffer), first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!{sys.executable}\nimport sys\nout = sys.stdout.buffer\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return script


def lying_smi(tmp_path, monkeypatch, name: bytes = b"NVIDIA H100 80GB HBM3", driver: bytes = b"550.54.15"):
    query = b"%s, %s, 81559 MiB\n" % (name, driver)
    table = b"| NVIDIA-SMI %s   Driver Version: %s   CUDA Version: 12.4 |\n" % (driver, driver)
    return fake_smi(tmp_path / "bin", monkeypatch,
                    f"out.write({query!r} if any(a.startswith('--query') for a in sys.argv) else {table!r})")


def _doctor_lines(probe: Probe) -> dict[str, str]:
    return {c.name: c.line() for c in doctor.run_doctor(probe, smoke=False)}


def machine_root(tmp_path: Path, kernel_driver: str | None) -> Path:
    root = tmp_path / "root"
    (root / "proc/driver/nvidia").mkdir(parents=True)
    if kernel_driver:
        (root / "proc/driver/nvidia/version").write_text(kernel_driver)
    return root


def test_escape_sequences_and_bidi_controls_from_nvidia_smi_never_reach_the_screen(tmp_path, monkeypatch):
    """main printed nvidia-smi's escape sequences raw in doctor's GPU line."""
    lying_smi(tmp_path, monkeypatch, name=f"H100{ESCAPES}\u202egnp.exe".encode())
    lines = _doctor_lines(Probe(root=machine_root(tmp_path, DRIVER_FILE)))
    assert "H100" in lines["GPU"]
    for line in lines.values():
        assert line.isprintable(), repr(line)  # no ESC, BEL, U+202E: each became a space


@pytest.mark.parametrize("kernel, status, words", [
    (None, "missing", "reported by nvidia-smi only: no NVIDIA kernel module is loaded"),
    (DRIVER_FILE.replace("550.54.15", "535.104.05"), "problem",
     "nvidia-smi reports driver 550.54.15 but the loaded kernel module is 535.104.05"),
    (DRIVER_FILE, "OK", "(kernel module 550.54.15)"),
])
def test_doctor_says_ok_gpu_only_where_the_kernel_module_confirms_nvidia_smi(tmp_path, monkeypatch, kernel,
                                                                             status, words):
    """main said "OK GPU" and "OK driver 550.54.15" on any program named nvidia-smi's word."""
    lying_smi(tmp_path, monkeypatch)
    lines = _doctor_lines(Probe(root=machine_root(tmp_path, kernel)))
    assert lines["GPU"].startswith(status) and lines["driver/CUDA"].startswith(status)
    assert words in lines["driver/CUDA"]


def test_an_implausible_driver_version_is_a_problem(tmp_path, monkeypatch):
    lying_smi(tmp_path, monkeypatch, driver=b"999.99 (trust me)")
    lines = _doctor_lines(Probe(root=machine_root(tmp_path, DRIVER_FILE)))
    assert lines["GPU"].startswith("problem") and "a driver version that is not one" in lines["GPU"]


def test_non_utf8_output_is_decoded_with_replacement(tmp_path, monkeypatch, capsys):
    """main: UnicodeDecodeError out of doctor, bench and parity (an internal error)."""
    lying_smi(tmp_path, monkeypatch, name=b"\xff\xfeGPU\xc3")
    assert main(["doctor", "--no-smoke-test"]) in (0, 1)
    out, err = capsys.readouterr()
    assert "GPU" in out and "Traceback" not in err and "internal error" not in err
    described = device.describe_device()  # what parity, bench and the pipeline record
    assert described["gpus"][0]["name"] == "\ufffd\ufffdGPU\ufffd"


def test_parity_and_bench_survive_a_garbling_nvidia_smi(tmp_path, monkeypatch, capsys):
    lying_smi(tmp_path, monkeypatch, name=b"\xff\xfe\x1b[31mGPU")
    onnx = doctor.tiny_eca_onnx(tmp_path / "tiny.onnx")
    assert main(["parity", "--reference", str(onnx), "--candidate", str(onnx), "--count", "4", "--threads", "1",
                 "--output", str(tmp_path / "parity.json")]) == 0
    assert main(["bench", str(onnx), "--batch-sizes", "1", "--iterations", "2", "--warmup", "1", "--threads", "1",
                 "--output", str(tmp_path / "bench.json")]) == 0
    _, err = capsys.readouterr()
    assert "internal error" not in err


def test_a_flooding_nvidia_smi_is_cut_at_the_cap(tmp_path, monkeypatch):
    """main buffered everything it printed for 10 s (3.8 GB, then MemoryError); this one prints 64 MB and
    exits, which main returned whole."""
    smi = fake_smi(tmp_path / "bin", monkeypatch, "chunk = b'GPU, 1.0, 1 MiB\\n' * 4096\n"
                                                  "for _ in range(1024): out.write(chunk)")
    assert run_command([str(smi)]) is None
    assert device.machine_facts(Probe(root=machine_root(tmp_path, None)))["gpus"] == []


def test_output_under_the_cap_is_read_whole(tmp_path, monkeypatch):
    smi = fake_smi(tmp_path / "bin", monkeypatch, f"out.write(b'x' * {device.PROBE_OUTPUT_CAP - 1})")
    assert run_command([str(smi)]) == "x" * (device.PROBE_OUTPUT_CAP - 1)


def test_a_hanging_probe_times_out(tmp_path, monkeypatch):
    smi = fake_smi(tmp_path / "bin", monkeypatch, "out.write(b'partial'); out.flush(); import time; time.sleep(60)")
    assert run_command([str(smi)], timeout=1.0) is None


def test_probed_files_are_read_capped_and_made_visible(tmp_path):
    root = tmp_path / "root"
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"Jetson \x1b[31m\xff" + b"A" * (2 * device.PROBE_OUTPUT_CAP))
    text = Probe(root=root).read("/proc/device-tree/model")
    assert len(text) <= device.PROBE_OUTPUT_CAP and text.isprintable() and text.startswith("Jetson [31m\ufffd")
