"""A precision is a plug-in: a row added to PRECISIONS at run time, with its own converter and recogniser, is
taken by the CLI's choices, quantize's dispatch and output names, detection, the graph summary and parity's
tolerance, with no other edit. The toy row is FP16 weights under another name (a "bf16"-like newcomer)."""

import json

import onnx
import pytest

from eca_deploy.artifacts import read_manifest, write_artifact
from eca_deploy.calibration.fp16 import convert_to_fp16
from eca_deploy.calibration.quantize import QuantizeResult, default_output
from eca_deploy.cli.main import main
from eca_deploy.data.synthetic import photo_like_batch
from eca_deploy.graph.compare import compare_outputs, tolerance_for
from eca_deploy.graph.graph import summarize
from eca_deploy.graph.session import run_once
from eca_deploy.precisions import LOW_PRECISIONS, PRECISIONS, Precision, graph_layout, onnx_precision

TOY = "toy16"
MARK = "eca_deploy.test_precision"


def recognise_toy(model: onnx.ModelProto) -> str | None:
    return TOY if any(p.key == MARK and p.value == TOY for p in model.metadata_props) else None


def convert_toy(cfg, job) -> QuantizeResult:
    """The whole converter: FP16 weights, marked so the recogniser knows them, checked on photo-like inputs."""
    half, _ = convert_to_fp16(job.model)
    half.metadata_props.add(key=MARK, value=TOY)
    manifest = write_artifact(job.output, half.SerializeToString(), "quantize", precision=cfg.precision, target=None)
    batch = photo_like_batch(4, job.imgsz, cfg.seed)
    parity = compare_outputs(run_once(job.model, batch), run_once(half, batch)).as_dict()
    return QuantizeResult(job.output, manifest, cfg.precision, None, parity, None, "4 photo-like inputs")


@pytest.fixture
def toy(monkeypatch) -> Precision:
    row = Precision(TOY, TOY, PRECISIONS["fp16"].tolerance, "FP16", "toy: FP16 weights, marked",
                    recognise_toy, convert_toy, detect_rank=2)  # asked before fp16, which claims any FP16 weights
    monkeypatch.setitem(PRECISIONS, TOY, row)
    return row


def test_an_unknown_precision_is_refused_by_the_cli(digits, tmp_path, capsys):
    assert TOY not in LOW_PRECISIONS
    code = main(["quantize", "--onnx", str(digits.onnx), "--precision", TOY, "--output", str(tmp_path / "m.onnx")])
    assert code == 2 and f"invalid choice: '{TOY}'" in capsys.readouterr().err


def test_a_row_added_at_run_time_is_quantized_detected_and_judged(toy, digits, tmp_path, capsys):
    assert TOY in LOW_PRECISIONS and default_output(digits.onnx, TOY, "tensorrt").name == f"{digits.onnx.stem}.{TOY}.onnx"
    out = tmp_path / f"m.{TOY}.onnx"
    assert main(["quantize", "--onnx", str(digits.onnx), "--precision", TOY, "--output", str(out)]) == 0
    assert f"to {TOY.upper()} ..." in capsys.readouterr().err
    model = onnx.load(str(out))
    assert read_manifest(out)["precision"] == TOY and onnx_precision(out) == TOY
    assert graph_layout(model) == TOY and summarize(model).layout == TOY  # the ECA judgement has no table to miss
    assert all(b.plain for b in summarize(model).eca_blocks)
    assert tolerance_for(TOY) == toy.tolerance

    report = tmp_path / "parity.json"
    code = main(["parity", "--reference", str(digits.onnx), "--candidate", str(out), "--data", str(digits.val_dir),
                 "--count", "16", "--output", str(report)])
    assert code == 0, capsys.readouterr().err
    row = json.loads(report.read_text())["rows"][-1]
    assert (row["precision"], row["status"]) == (TOY, "pass") and row["precision_source"] == "manifest"
    assert row["parity"]["tolerance"] == {**vars(toy.tolerance)}  # judged by the row's tolerance
