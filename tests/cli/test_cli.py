"""The command line end to end: export/inspect/models, and one-line errors with exit code 2 on bad input."""

import json
import os
import subprocess
import sys

import pytest
import torch

from eca_deploy.cli.main import main
from eca_deploy.models import create_model
from eca_deploy.models.resnet import ECABasicBlock, ResNet


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, pattern):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("eca-deploy: error: ")
    assert pattern in lines[0], lines[0]


def leftovers(folder):
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture
def official_checkpoint(tmp_path):
    model = create_model("eca_resnet18", num_classes=10, k_size=(3, 5, 5, 7))
    path = tmp_path / "eca_resnet18_k3557.pth.tar"
    torch.save({"arch": "eca_resnet18", "epoch": 1, "best_prec1": 90.0,
                "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def test_export_with_official_weights_then_inspect(tmp_path, capsys, official_checkpoint):
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, "export", "--model", "eca_resnet18", "--weights", str(official_checkpoint),
                              "--output", str(out), "--imgsz", "64")
    assert code == 0
    assert "8 plain Conv1d" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["eca_resnet18.onnx", "eca_resnet18.onnx.json"]
    manifest = json.loads((out / "eca_resnet18.onnx.json").read_text())
    assert manifest["num_classes"] == 10 and manifest["eca_k_per_stage"] == [3, 5, 7]
    assert manifest["weights_sha256"] and manifest["parity"]["simplify"]["max_abs"] <= 1e-4

    code, stdout, _ = run_cli(capsys, "inspect", str(out / "eca_resnet18.onnx"))
    assert code == 0
    assert "ECA blocks: 8" in stdout and "every ECA block has the plain shape" in stdout
    assert "channels   256  k 5  plain" in stdout
    assert "output logits ['batch', 10]" in stdout


def test_models_lists_the_zoo(capsys):
    code, stdout, _ = run_cli(capsys, "models", "--json")
    rows = {r["name"]: r for r in json.loads(stdout)}
    assert code == 0
    assert rows["eca_resnet50"]["params"] == 25_557_112 and rows["eca_resnet50"]["k"] == "3557"
    assert rows["eca_mobilenetv2"]["k"] == "13"


def test_console_script_help_and_version():
    exe = [sys.executable, "-m", "eca_deploy.cli.main"]
    assert "eca-deploy 0.1.0" in subprocess.run(exe + ["--version"], capture_output=True, text=True).stdout
    helptext = subprocess.run(exe + ["export", "--help"], capture_output=True, text=True).stdout
    for flag in ("--weights", "--opset", "--static-batch", "--imgsz", "--no-simplify", "--output", "--verbose"):
        assert flag in helptext


def test_missing_weights(tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", "--model", "eca_resnet18", "--weights", str(tmp_path / "no.pth"),
                           "--output", str(tmp_path / "o"))
    assert_one_line_error(code, err, "weights file not found")
    assert leftovers(tmp_path / "o") == []


def test_not_a_checkpoint(tmp_path, capsys):
    bad = tmp_path / "w.pth.tar"
    bad.write_bytes(os.urandom(4096))
    code, _, err = run_cli(capsys, "export", "--model", "eca_resnet18", "--weights", str(bad), "-o", str(tmp_path / "o"))
    assert_one_line_error(code, err, "not a")
    assert leftovers(tmp_path / "o") == []


def test_truncated_checkpoint(tmp_path, capsys, official_checkpoint):
    data = official_checkpoint.read_bytes()
    official_checkpoint.write_bytes(data[: len(data) * 2 // 3])
    code, _, err = run_cli(capsys, "export", "--model", "eca_resnet18", "--weights", str(official_checkpoint),
                           "--output", str(tmp_path / "o"))
    assert_one_line_error(code, err, "corrupt or truncated")
    assert leftovers(tmp_path / "o") == []


def test_weights_for_another_architecture(tmp_path, capsys):
    path = tmp_path / "resnet18.pth"
    torch.save(ResNet(ECABasicBlock, [2, 2, 2, 2], 1000, ()).state_dict(), path)
    code, _, err = run_cli(capsys, "export", "--model", "eca_resnet50", "--weights", str(path), "-o", str(tmp_path / "o"))
    assert_one_line_error(code, err, "do not fit eca_resnet50")
    assert leftovers(tmp_path / "o") == []


def test_pickle_carrying_an_object(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("side effect",))

    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": Evil()}, path)
    code, out, err = run_cli(capsys, "export", "--model", "eca_resnet18", "--weights", str(path), "-o", str(tmp_path / "o"))
    assert_one_line_error(code, err, "refused to load")
    assert "side effect" not in out
    assert leftovers(tmp_path / "o") == []


def test_unknown_model_suggests(tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", "--model", "eca_resnet05", "--output", str(tmp_path / "o"))
    assert_one_line_error(code, err, "did you mean")
    assert "eca_resnet50" in err


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")  # a folder cannot be made under a file, whoever we run as (CI runs as root)
    code, _, err = run_cli(capsys, "export", "--model", "eca_resnet18", "--output", str(blocker / "sub"))
    assert_one_line_error(code, err, "cannot create output folder")


def test_never_writes_over_the_input(tmp_path, capsys, official_checkpoint):
    # A user who names the weights file like the output: it must survive untouched.
    target = tmp_path / "eca_resnet18.onnx"
    official_checkpoint.rename(target)
    before = target.read_bytes()
    code, _, err = run_cli(capsys, "export", "--model", "eca_resnet18", "--weights", str(target), "-o", str(tmp_path))
    assert_one_line_error(code, err, "refusing to overwrite the input")
    assert target.read_bytes() == before


def test_inspect_on_a_file_that_is_not_onnx(tmp_path, capsys):
    path = tmp_path / "model.onnx"
    path.write_text("not a protobuf at all")
    code, _, err = run_cli(capsys, "inspect", str(path))
    assert_one_line_error(code, err, "is not an ONNX model")
    code, _, err = run_cli(capsys, "inspect", str(tmp_path / "missing.onnx"))
    assert_one_line_error(code, err, "ONNX file not found")


def test_verbose_shows_the_traceback(tmp_path, capsys):
    code, _, err = run_cli(capsys, "--verbose", "export", "--model", "eca_resnet18", "--weights", str(tmp_path / "x"))
    assert code == 2 and "Traceback" in err and err.strip().endswith("weights file not found: " + str(tmp_path / "x"))
