"""The pipeline hands an INT8 accuracy budget given to parity's flags on to quantize."""

import json

import pytest

from eca_deploy.artifacts import read_manifest
from eca_deploy.cli.main import main
from eca_deploy.graph.compare import given_overrides


def budget(overrides):
    return given_overrides(overrides, "int8", ("max_top1_drop", "min_agreement"))


def test_only_a_budget_given_for_int8_reaches_quantize():
    assert budget({}) == {"max_top1_drop": None, "min_agreement": None}
    assert budget({"max_top1_drop": {"*": 2.0}}) == {"max_top1_drop": 2.0, "min_agreement": None}
    both = {"max_top1_drop": {"*": 2.0, "int8": 0.5}, "min_agreement": {"int8": 0.99}, "atol": {"*": 1e-3}}
    assert budget(both) == {"max_top1_drop": 0.5, "min_agreement": 0.99}
    assert budget({"max_top1_drop": {"*": 2.0, "int8": None}}) == {"max_top1_drop": None, "min_agreement": None}


@pytest.mark.slow
def test_pipeline_passes_the_int8_budget_to_quantize(digits, outliers, tmp_path, capsys):
    """minmax INT8 of the outlier model fails parity alone; with the budget, quantize floats the planted layers.
    Quantize judges on the 100 calibration images it did not draw: on 50, the 1-point budget allowed no flip
    and the model it chose there flipped 2 points of right answers on the 200 validation images."""
    out = tmp_path / "run"
    code = main(["pipeline", "--model", digits.model, "--weights", str(outliers.checkpoint),
                 "--calib-data", str(digits.calib_dir), "--calib-count", "100", "--calib-method", "minmax",
                 "--data", str(digits.val_dir), "--count", "200", "--imgsz", str(digits.imgsz), "--out", str(out),
                 "--precisions", "int8", "--batch", "1", "--iterations", "2", "--warmup", "1", "--provider", "cpu",
                 "--device", "cpu", "--threads", "1", "--max-top1-drop", "int8=1"])
    assert code == 0
    manifest = read_manifest(out / "eca_resnet18.int8.cpu.onnx")
    assert manifest["fallback"]["budget"]["max_top1_drop"] == 1.0
    assert {f["tensor"] for f in manifest["fallback"]["float_layers"]} == set(outliers.tensors)
    assert manifest["evaluation"]["held_out"] and manifest["evaluation"]["images"] == 100
    rows = {r["precision"]: r for r in json.loads((out / "report.json").read_text())["rows"] if r["status"] != "reference"}
    assert rows["int8"]["status"] == "pass"


def test_top1_budget_on_unlabeled_calibration_images_is_refused_before_any_work(digits, photos, tmp_path, capsys):
    """quantize judges the budget on calibration images it did not calibrate on: a folder without classes cannot
    give a top-1 drop, which is said before the export, not after it."""
    out = tmp_path / "run"
    code = main(["pipeline", "--model", digits.model, "--weights", str(digits.checkpoint), "--calib-data",
                 str(photos), "--imgsz", str(digits.imgsz), "--output", str(out), "--precisions", "int8",
                 "--device", "cpu", "--max-top1-drop", "int8=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("eca-deploy: error: --max-top1-drop needs labeled"), err
    assert not any("export" in line for line in err[:-1]), err
    assert not list(out.glob("*.onnx"))
