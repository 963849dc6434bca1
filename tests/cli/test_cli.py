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


@pytest.mark.slow
def test_export_with_official_weights_then_inspect(tmp_path, capsys, official_checkpoint):
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, "export", "--model", "eca_resnet18", "--weights", str(official_checkpoint),
                              "--output", str(out), "--imgsz", "64")
    assert code == 0
    assert "8 plain Conv1d" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["eca_resnet18.onnx", "eca_resnet18.onnx.json"]
    manifest = json.loads((out / "eca_resnet18.onnx.json").read_text())
    assert manifest["num_classes"] == 10 and manifest["eca_k_per_stage"] == [3, 5, 5, 7]  # the fixture file is k3557
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


def test_unknown_model_fails_before_exporting_is_printed(capsys, tmp_path):
    code, out, err = run_cli(capsys, "export", "--model", "ECA_ResNet50", "--output", str(tmp_path / "x"))
    assert out == "" and "did you mean eca_resnet50," in err
    assert_one_line_error(code, err, "unknown model")


def test_a_folder_given_as_a_model_says_it_is_a_folder(capsys, tmp_path):
    (tmp_path / "images").mkdir()
    code, _, err = run_cli(capsys, "quantize", "--onnx", str(tmp_path / "images"), "--precision", "fp16")
    assert code == 2 and "images is a directory, not a file" in err.splitlines()[-1]
    code, _, err = run_cli(capsys, "parity", "--reference", "torch:eca_resnet18:w.pth", "--candidate",
                           str(tmp_path / "images"))
    assert_one_line_error(code, err, "images is a directory, not a file")


def test_ctrl_c_during_export_leaves_no_folder_it_created(capsys, tmp_path, monkeypatch):
    from eca_deploy.export import onnx_export

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_export, "to_onnx", interrupted)
    with pytest.raises(KeyboardInterrupt):
        onnx_export.export_model(onnx_export.ExportConfig(model="eca_resnet18", out_dir=str(tmp_path / "a" / "b"),
                                                          imgsz=32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_parity_names_full_paths_when_file_names_clash_and_counts_in_words(capsys, tmp_path):
    import torch

    from eca_deploy.export.onnx_export import ExportConfig, export_model
    from eca_deploy.models import load_model

    loaded = load_model("eca_resnet18")
    torch.save(loaded.model.state_dict(), tmp_path / "w.pth")
    small, large = (export_model(ExportConfig(model="eca_resnet18", out_dir=str(tmp_path / d), imgsz=s, static_batch=1,
                                              simplify=False),  # onnxsim plays no part in what is checked here
                                 loaded=loaded).onnx_path for d, s in (("a", 32), ("b", 48)))
    code, _, err = run_cli(capsys, "parity", "--reference", f"torch:eca_resnet18:{tmp_path / 'w.pth'}",
                           "--candidate", str(small), "--candidate", str(large), "--device", "cpu")
    assert_one_line_error(code, err, f"{large} takes 48x48")
    code, out, _ = run_cli(capsys, "parity", "--reference", f"torch:eca_resnet18:{tmp_path / 'w.pth'}",
                           "--candidate", str(small), "--count", "2", "--device", "cpu",
                           "--output", str(tmp_path / "p.json"))
    assert code == 0 and "the candidate passed" in out and "all 1" not in out
    code, out, _ = run_cli(capsys, "report", str(tmp_path / "p.json"), "--output", str(tmp_path / "r"), "--no-plots")
    assert code == 0 and "2 rows from 1 file," in out
    code, out, _ = run_cli(capsys, "bench", str(small), "--iterations", "3", "--warmup", "1",
                           "--output", str(tmp_path / "b.json"))
    assert code == 0
    row = next(line for line in out.splitlines() if "none (host memory)" in line)
    assert len(row) < 100, row  # was 111 characters: 28 for "host", 20 for the copies


def test_a_mistyped_flag_points_to_the_commands_own_help_and_the_flag_it_meant(capsys):
    assert main(["bench", "m.onnx", "--treads", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["eca-deploy: error: unrecognized arguments: --treads 2; did you mean --threads? "
                   "(see `eca-deploy bench --help`)"]
    assert main(["parity", "--reference", "a.onnx", "--candidate", "b.onnx", "--zzz"]) == 2
    err = capsys.readouterr().err
    assert "see `eca-deploy parity --help`" in err and "did you mean" not in err


def test_help_says_defaults_one_way_and_only_what_the_command_does(capsys):
    import re

    texts = {}
    for command in ("export", "quantize", "build", "parity", "bench", "pipeline", "report"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        texts[command] = " ".join(capsys.readouterr().out.split())
    for command, text in texts.items():
        assert not re.search(r"\(default [^:(]", text), (command, re.findall(r"\(default [^)]*\)", text))
        assert not re.search(r"\(needs [^)]*\) \(", text), command  # one parenthesis per note
    assert "the reference" not in texts["bench"]  # bench has no reference; parity and pipeline do


def test_wording_of_counts_and_missing_data(tmp_path, capsys):
    """'data not found' wherever the data came from; counts as whole numbers, with a singular for one."""
    import numpy as np

    from eca_deploy.data.sources import load_dataset
    from eca_deploy.errors import DataError, plural
    from eca_deploy.graph.compare import judge, tolerance_for

    with pytest.raises(DataError, match=r"^data not found: "):
        load_dataset(tmp_path / "nonexistent")
    reference = np.random.default_rng(0).standard_normal((64, 1000)).astype(np.float32)
    verdict, _ = judge(tolerance_for("fp32", rounding_known=False), reference + 50, reference, None, None)
    (failure,) = [f for f in verdict.failures if f.startswith("elements over")]
    assert failure.endswith(": 64000 (limit 0)") and "e+" not in failure
    assert (plural(1, "artifact"), plural(2, "artifact")) == ("1 artifact", "2 artifacts")
