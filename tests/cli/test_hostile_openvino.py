"""Hostile OpenVINO inputs and faults: IR weights linked from elsewhere, files that are not what
`openvino:<file.onnx>` expects, a broken .bin, a killed and a disk-starved IR export. Each ends in one line
and exit 2 (or simply works); every hostile file is generated here."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from onnx import TensorProto

from eca_deploy.artifacts import STALE_TEMP_S, write_json
from test_cli import assert_one_line_error, run_cli
from test_hostile_inputs import REPO, small_checkpoint, tiny_onnx

ov = pytest.importorskip("openvino")


def ir(folder: Path, name: str = "model") -> Path:
    """A real IR (.xml + .bin) of a small image classifier."""
    folder.mkdir(parents=True, exist_ok=True)
    xml = folder / f"{name}.xml"
    ov.save_model(ov.convert_model(str(tiny_onnx(folder / f"{name}.onnx"))), str(xml))
    return xml


def _parity_on(capsys, tmp_path, candidate: str):
    return run_cli(capsys, "parity", "--reference", str(tiny_onnx(tmp_path / "ref.onnx")), "--candidate", candidate,
                   "--count", "4", "--threads", "1", "--output", str(tmp_path / "p.json"))


def test_ir_weights_linked_from_outside_the_model_folder_are_refused(tmp_path, capsys):
    """main loaded them: onnxruntime refuses the same for ONNX external data (docs/errors.md)."""
    outside = ir(tmp_path / "elsewhere")
    model = tmp_path / "models" / "model.xml"
    model.parent.mkdir()
    shutil.copy(outside, model)
    (tmp_path / "models" / "model.bin").symlink_to(outside.with_suffix(".bin"))
    code, _, err = _parity_on(capsys, tmp_path, str(model))
    assert_one_line_error(code, err, "the weights file model.bin of")
    assert "resolves outside the model's folder" in err and not (tmp_path / "p.json").exists()


def test_ir_weights_linked_inside_the_folder_still_load(tmp_path, capsys):
    xml = ir(tmp_path / "models", "real")
    shutil.copy(xml, tmp_path / "models" / "alias.xml")
    (tmp_path / "models" / "alias.bin").symlink_to("real.bin")
    code, _, err = _parity_on(capsys, tmp_path, str(tmp_path / "models" / "alias.xml"))
    assert code == 0, err


def test_a_broken_bin_keeps_openvinos_reason(tmp_path, capsys):
    """main cut OpenVINO's message to "Exception from src/inference/src/cpp/core.cpp:84:"."""
    xml = ir(tmp_path / "models")
    xml.with_suffix(".bin").write_bytes(xml.with_suffix(".bin").read_bytes()[:50])
    code, _, err = _parity_on(capsys, tmp_path, str(xml))
    assert_one_line_error(code, err, "Incorrect weights in bin file!")
    assert "core.cpp" not in err


@pytest.mark.parametrize("case, expected", [
    ("random bytes", "is not an ONNX model (DecodeError)"),
    ("one channel", "openvino:gray.onnx takes a float32 ['?', 1, 8, 8] input 'x'"),
    ("int64 input", "openvino:ids.onnx takes a int64 ['?', 3, 8, 8] input 'x'"),
])
def test_openvino_onnx_gets_the_input_checks_of_onnxruntime(tmp_path, capsys, case, expected):
    """main: random bytes were an internal DecodeError, a 1-channel model a RuntimeError mid-run, and an int64-input
    model was benchmarked."""
    if case == "random bytes":
        model = tmp_path / "random.onnx"
        model.write_bytes(os.urandom(4096))
    elif case == "one channel":
        model = tiny_onnx(tmp_path / "gray.onnx", channels=1)
    else:
        model = tiny_onnx(tmp_path / "ids.onnx", elem_type=TensorProto.INT64)
    code, _, err = run_cli(capsys, "bench", f"openvino:{model}", "--batch-sizes", "1", "--iterations", "1",
                           "--warmup", "0", "--output", str(tmp_path / "b.json"))
    assert_one_line_error(code, err, expected)
    assert not (tmp_path / "b.json").exists()


def _export_ir(tmp_path: Path, out: Path, kill_after_save: bool = False) -> subprocess.CompletedProcess:
    """`eca-deploy export --format openvino` in a child; optionally kill -9 once the IR is staged."""
    weights = small_checkpoint(tmp_path / "w.pth")
    code = ("import os, signal, sys, openvino as ov\n"
            "real = ov.save_model\n"
            "def save_then_die(*a, **k):\n"
            "    real(*a, **k); os.kill(os.getpid(), signal.SIGKILL)\n"
            f"ov.save_model = save_then_die if {kill_after_save} else real\n"
            "from eca_deploy.cli.main import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, "export", "--model", "eca_resnet18", "--weights", str(weights),
                           "--imgsz", "32", "--format", "openvino", "--output", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_a_staging_folder_left_by_kill_9_during_ir_export_is_swept_once_stale(tmp_path):
    """main: every killed `export --format openvino` left its .openvino-XXXXXXXX/ folder (43 MB at 224 px) for
    good; the stale-temp sweep covered files only."""
    out = tmp_path / "out"
    assert _export_ir(tmp_path, out, kill_after_save=True).returncode == -9
    (staging,) = [p for p in out.iterdir() if p.name.startswith(".openvino-")]
    assert (staging / "model.bin").is_file()
    write_json(out / "fresh.json", {})  # too fresh to be judged dead: kept
    assert staging.is_dir()
    old = staging.stat().st_mtime - STALE_TEMP_S - 1
    os.utime(staging, (old, old))
    write_json(out / "later.json", {})
    assert not staging.exists()


def test_sweep_keeps_a_live_staging_folder_a_link_and_folders_not_ours(tmp_path):
    old = os.stat(tmp_path).st_mtime - STALE_TEMP_S - 60
    names = {"live": ".openvino-live1234", "not ours": ".openvino-mine", "user's": "openvino-abcdefgh",
             "link": ".openvino-link5678"}
    target = tmp_path / "precious"
    target.mkdir()
    (target / "keep.bin").write_bytes(b"x")
    for key, name in names.items():
        if key == "link":
            (tmp_path / name).symlink_to(target, target_is_directory=True)
        else:
            (tmp_path / name).mkdir()
            (tmp_path / name / "model.bin").write_bytes(b"staged")
        os.utime(tmp_path / name, (old, old), follow_symlinks=False)
    fd = os.open(tmp_path / names["live"], os.O_RDONLY | os.O_DIRECTORY)  # a run still writing holds this lock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        write_json(tmp_path / "result.json", {})
    finally:
        os.close(fd)
    assert all((tmp_path / name).exists() for name in names.values()) and (target / "keep.bin").exists()


@pytest.mark.slow
def test_a_full_disk_during_ir_export_names_the_folder_and_the_space(tmp_path, capsys, monkeypatch):
    """main said only OpenVINO's `basic_ios::clear: iostream error`. OpenVINO writes the IR from C++, so the full
    disk is played where Python sees it: save_model fails as it does on ENOSPC, and the disk reports 1 KB free."""
    def full(*args, **kwargs):
        raise RuntimeError("Exception from src/core/src/pass/serialize.cpp:1228:\nbasic_ios::clear: iostream error\n")

    real_usage = shutil.disk_usage
    out = tmp_path / "out"
    monkeypatch.setattr(ov, "save_model", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=1024) if Path(p) == out
                        else real_usage(p))
    code, _, err = run_cli(capsys, "export", "--model", "eca_resnet18", "--weights",
                           str(small_checkpoint(tmp_path / "w.pth")), "--imgsz", "32", "--format", "openvino",
                           "--output", str(out))
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith(f"eca-deploy: error: no space left in {out} to write eca_resnet18.bin "
                                         "(needs "), err
    assert "MB, 0.0 MB free)" in last and "iostream" not in err
    assert not [p for p in out.iterdir() if p.name.startswith(".openvino-")]
