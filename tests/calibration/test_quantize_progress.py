"""Long INT8 steps show progress, and a step whose answer is already known does not run."""

import json

import pytest

from eca_deploy.cli.main import main


@pytest.mark.slow
def test_sensitivity_pass_shows_progress_and_is_skipped_when_int8_meets_the_budget(digits, tmp_path, capsys):
    base = ["quantize", "--onnx", str(digits.onnx), "--calib-data", str(digits.calib_dir), "--calib-method",
            "minmax", "--calib-count", "48", "--check-count", "16", "--target", "cpu", "--no-calib-cache"]
    assert main([*base, "--sensitivity", "--output", str(tmp_path / "s.onnx")]) == 0
    out, err = capsys.readouterr()
    groups = json.loads((tmp_path / "s.onnx.json").read_text())["sensitivity"]["groups"]
    assert f"sensitivity: 0/{groups} layers" in err and f"sensitivity: {groups}/{groups} layers" in err
    assert main([*base, "--min-agreement", "0.5", "--output", str(tmp_path / "b.onnx")]) == 0
    out, err = capsys.readouterr()
    manifest = json.loads((tmp_path / "b.onnx.json").read_text())
    assert manifest["fallback"]["float_layers"] == [] and manifest["sensitivity"] is None
    assert "met with every layer in INT8" in out and "sensitivity" not in err
