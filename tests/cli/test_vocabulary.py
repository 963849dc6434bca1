"""One flag vocabulary: new spellings, deprecated ones (warn and still work), every value checked before any work
(exit 2, one line), help texts without wrong defaults, a closed pipe as a normal end, plain progress off a tty."""

import io
import json
import re
import subprocess
import sys

import pytest

from eca_deploy.cli.main import build_parser, main
from eca_deploy.progress import progress


def parse(capsys, *argv):
    args = build_parser().parse_args(list(argv))
    return args, capsys.readouterr().err


def one_line_error(capsys, argv, pattern):
    code = main(list(argv))
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("eca-deploy: error: "), captured.err
    assert pattern in lines[0], lines[0]
    return captured


def must_not_run(monkeypatch, target):
    def fail(*args, **kwargs):
        raise AssertionError(f"{target} ran although an argument was bad")
    monkeypatch.setattr(target, fail)


# --- deprecated spellings: a line on stderr, and the old meaning ----------------------------------------------

@pytest.mark.parametrize("argv, dest, value, old, new", [
    (["export", "--model", "m", "--out", "d"], "output", "d", "--out", "--output"),
    (["export", "--model", "m", "--batch", "2"], "batch", 2, "--batch", "--static-batch"),
    (["parity", "--reference", "r", "--candidate", "c", "--batch", "4"], "batch", 4, "--batch", "--batch-size"),
    (["parity", "--reference", "r", "--candidate", "c", "--out", "p.json"], "output", "p.json", "--out", "--output"),
    (["bench", "m.onnx", "--batch", "1,8"], "batches", (1, 8), "--batch", "--batch-sizes"),
    (["bench", "m.onnx", "--out", "b.json"], "output", "b.json", "--out", "--output"),
    (["pipeline", "--model", "m", "--batch", "1,4"], "batches", (1, 4), "--batch", "--batch-sizes"),
    (["pipeline", "--model", "m", "--parity-batch", "8"], "batch", 8, "--parity-batch", "--batch-size"),
    (["pipeline", "--model", "m", "--out", "d"], "output", "d", "--out", "--output"),
    (["build", "--onnx", "m.onnx", "--batch", "1:4:8"], "batch", "1:4:8", "--batch", "--profile"),
    (["build", "--onnx", "m.onnx", "--device", "1"], "device", 1, "--device", "--gpu"),
    (["build", "--onnx", "m.onnx", "--calib-batch", "4"], "calib_batch", 4, "--calib-batch", "--batch-size"),
    (["report", "r.json", "--out", "d"], "output", "d", "--out", "--output"),
])
def test_deprecated_spelling_warns_and_keeps_its_meaning(capsys, argv, dest, value, old, new):
    args, err = parse(capsys, *argv)
    assert getattr(args, dest) == value
    assert err.strip() == f"eca-deploy: {old} is deprecated; use {new}"


@pytest.mark.parametrize("argv, dest, value", [
    (["export", "--model", "m", "-o", "d", "--static-batch", "2"], "batch", 2),
    (["parity", "--reference", "r", "--candidate", "c", "--batch-size", "4", "-o", "p.json"], "output", "p.json"),
    (["parity", "--reference", "r", "--candidate", "c", "--count", "all"], "count", None),
    (["bench", "m.onnx", "--batch-sizes", "1,8,8,32"], "batches", (1, 8, 32)),
    (["pipeline", "--model", "m", "--batch-sizes", "2", "--batch-size", "4"], "batch", 4),
    (["pipeline", "--model", "m", "--calib-count", "all", "--count", "all"], "calib_count", None),
    (["quantize", "--onnx", "m.onnx", "--calib-count", "all", "--check-count", "all"], "check_count", None),
    (["build", "--onnx", "m.onnx", "--profile", "1:4:8", "--gpu", "1", "--calib-count", "all"], "device", 1),
    (["report", "r.json", "-o", "d"], "output", "d"),
])
def test_new_spellings_parse_quietly(capsys, argv, dest, value):
    args, err = parse(capsys, *argv)
    assert getattr(args, dest) == value and err == ""


def test_deprecated_spellings_still_run_end_to_end(digits, tmp_path, capsys):
    out = tmp_path / "b.json"
    code = main(["bench", str(digits.onnx), "--batch", "1,2", "--iterations", "2", "--warmup", "0",
                 "--provider", "cpu", "--threads", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0 and "eca-deploy: --batch is deprecated; use --batch-sizes" in err
    assert "eca-deploy: --out is deprecated; use --output" in err
    assert [e["batch"] for e in json.loads(out.read_text())["rows"][0]["bench"]["batches"]] == [1, 2]


# --- every argument checked before any work ------------------------------------------------------------------

def test_pipeline_bad_calibration_method_fails_before_exporting(tmp_path, capsys, monkeypatch):
    must_not_run(monkeypatch, "eca_deploy.pipeline.run_pipeline")
    one_line_error(capsys, ["pipeline", "--model", "eca_resnet18", "--calib-method", "foo", "-o", str(tmp_path / "o")],
                   "argument --calib-method: invalid choice: 'foo'")
    one_line_error(capsys, ["pipeline", "--model", "eca_resnet18", "--precisions", "fp16,fp8"], "fp8")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, pattern", [
    (["parity", "--reference", "r", "--candidate", "c", "--threads", "0"], "argument --threads"),
    (["bench", "m.onnx", "--batch-sizes", "0,8"], "argument --batch-sizes"),
    (["parity", "--reference", "r", "--candidate", "c", "--count", "none"], "'all'"),
    (["parity", "--reference", "r", "--candidate", "c", "--atol", "fp9=1"], "precision must be one of"),
    (["build", "--onnx", "m.onnx", "--print-trtexec", "--trt-version", "9.0"], "--trt-version takes"),
    (["build", "--onnx", "m.onnx", "--print-trtexec", "--trt-version", "7.1"], "--trt-version takes"),
    (["build", "--onnx", "m.onnx", "--profile", "8:4:16"], "MIN (8) is larger than OPT (4)"),
    (["quantize", "--onnx", "m.onnx", "--calib-count", "0"], "argument --calib-count"),
])
def test_bad_values_are_usage_errors(capsys, argv, pattern):
    one_line_error(capsys, argv, pattern)


def test_export_opset_out_of_range_fails_first_with_nothing_on_stdout(tmp_path, capsys):
    captured = one_line_error(capsys, ["export", "--model", "eca_resnet18", "--opset", "25", "-o", str(tmp_path / "o")],
                              "--opset must be 7..20")
    assert captured.out == "" and not (tmp_path / "o").exists()


@pytest.mark.parametrize("command, stage", [
    (["parity", "--reference", "torch:eca_resnet18", "--candidate", "{onnx}"],
     "eca_deploy.runtime.harness.parity.run_parity"),
    (["bench", "{onnx}"], "eca_deploy.runtime.harness.bench.run_bench"),
])
def test_parity_and_bench_check_their_output_place_before_running(digits, tmp_path, capsys, monkeypatch, command,
                                                                  stage):
    must_not_run(monkeypatch, stage)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")  # no folder can be made under a file, even as root
    argv = [part.replace("{onnx}", str(digits.onnx)) for part in command]
    one_line_error(capsys, [*argv, "--output", str(blocker / "ro" / "r.json")], "cannot create output folder")


def test_int8_quantize_checks_its_output_place_before_calibrating(digits, tmp_path, capsys, monkeypatch):
    must_not_run(monkeypatch, "eca_deploy.calibration.quantize.quantize_int8")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code = main(["quantize", "--onnx", str(digits.onnx), "--calib-data", str(digits.calib_dir),
                 "--output", str(blocker / "ro" / "m.int8.onnx")])
    err = capsys.readouterr().err.strip().splitlines()  # after the "quantizing ..." status line
    assert code == 2 and err[-1].startswith("eca-deploy: error: cannot create output folder"), err


# --- help texts ----------------------------------------------------------------------------------------------

COMMANDS = ["models", "export", "inspect", "quantize", "build", "parity", "bench", "report", "pipeline"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_prints_no_empty_or_wrong_defaults(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo line wrapping
    assert exit_info.value.code == 0
    for wrong in ("(default: None)", "(default: [])", "(default: True)", "(default: False)"):
        assert wrong not in text, (command, wrong)
    assert not re.search(r"\(default: [^)]*\) \(default:", text), command  # a default said twice
    if command in ("export", "pipeline"):
        assert "timm:<name>" in text


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "eca_deploy", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "pipeline" in result.stdout


# --- a closed pipe is a normal end ---------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["--help"], ["inspect", "{onnx}"]])
def test_closed_pipe_ends_quietly(digits, argv):
    argv = [part.replace("{onnx}", str(digits.onnx)) for part in argv]
    proc = subprocess.Popen([sys.executable, "-m", "eca_deploy", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head -1` having exited before anything was written
    err = proc.stderr.read().decode()
    assert proc.wait() == 0 and err == ""


# --- progress: plain lines when stderr is not a terminal -----------------------------------------------------

def test_progress_off_a_terminal_prints_a_few_plain_lines():
    stream = io.StringIO()
    assert list(progress(range(100), desc="collect", unit="batches", stream=stream)) == list(range(100))
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 5
    assert lines[0] == "collect: 0/100 batches" and lines[-1] == "collect: 100/100 batches"

    stream = io.StringIO()
    bar = progress(total=3, desc="read", unit="img", stream=stream)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert stream.getvalue().splitlines() == ["read: 0/3 img", "read: 1/3 img", "read: 2/3 img", "read: 3/3 img"]

    stream = io.StringIO()
    list(progress(range(5), desc=None, stream=stream))
    assert stream.getvalue() == ""


def test_parity_progress_in_a_log_has_no_carriage_returns(digits, tmp_path, capsys):
    code = main(["parity", "--reference", f"torch:{digits.model}:{digits.checkpoint}", "--candidate",
                 str(digits.onnx), "--data", str(digits.val_dir), "--count", "32", "--batch-size", "8",
                 "--threads", "1", "--device", "cpu", "--provider", "cpu", "-o", str(tmp_path / "p.json")])
    err = capsys.readouterr().err
    assert code == 0 and "\r" not in err
