"""`eca-deploy parity` end to end on the trained digits model, and each bad input in one line (exit 2)."""

import json
import shutil

import pytest
import torch

from eca_deploy.cli.main import main
from eca_deploy.export.onnx_export import ExportConfig, export_model
from eca_deploy.runtime.harness.report import validate_report
from eca_deploy.runtime.tensorrt.env import tensorrt_unavailable_reason


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def reference(digits):
    return f"torch:{digits.model}:{digits.checkpoint}"


def one_line_error(err):
    lines = [line for line in err.splitlines() if line.startswith("eca-deploy: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def other_model(digits, tmp_path_factory):
    """The digits network with its classifier perturbed: same shapes, different predictions."""
    root = tmp_path_factory.mktemp("other")
    checkpoint = torch.load(digits.checkpoint, weights_only=True)
    generator = torch.Generator().manual_seed(1)
    for key, value in checkpoint["state_dict"].items():
        if key.endswith("fc.weight"):
            value += torch.randn(value.shape, generator=generator) * value.std() * 3
    weights = root / "perturbed.pth.tar"
    torch.save(checkpoint, weights)
    return export_model(ExportConfig(model=digits.model, weights=str(weights), out_dir=str(root),
                                     imgsz=digits.imgsz)).onnx_path


@pytest.mark.slow
def test_fp32_export_passes_with_accuracy_on_labeled_images(digits, tmp_path, capsys):
    out = tmp_path / "parity.json"
    threads_before = torch.get_num_threads()
    # one thread: two OpenMP threads on a busy 2-core machine took 11 s here instead of 0.8 s
    code, stdout, _ = run(capsys, "parity", "--reference", reference(digits), "--candidate", str(digits.onnx),
                          "--data", str(digits.val_dir), "--threads", "1", "--output", str(out))
    assert code == 0, stdout
    report = validate_report(json.loads(out.read_text()))
    ref, cand = report["rows"]
    assert ref["status"] == "reference" and cand["status"] == "pass"
    # the reference's top-1 on every held-out image equals what training measured on the same pixels
    assert ref["parity"]["top1"] == pytest.approx(digits.val_accuracy, abs=1e-6)
    assert ref["parity"]["samples"] == sum(1 for _ in digits.val_dir.rglob("*.png"))
    assert cand["parity"]["top1"] == pytest.approx(ref["parity"]["top1"], abs=2e-3)
    assert cand["parity"]["top1_agreement"] >= 0.998
    rounding = next(c for c in cand["parity"]["checks"] if c["check"] == "max error / logit scale")
    assert cand["precision"] == "fp32" and rounding["passed"] and 0 < rounding["gap"] < 1e-5
    assert rounding["value"] <= rounding["limit"] < 1e-4 and "float32-vs-float64 gap" in rounding["limit_from"]
    assert report["data"]["labeled"] and report["data"]["num_classes"] == digits.num_classes
    assert report["devices"][0]["versions"]["onnxruntime"] and report["devices"][0]["threads"]["torch"] == 1
    assert torch.get_num_threads() == threads_before  # the reference gave the process its threads back
    assert "| pass |" in stdout and "the candidate passed" in stdout
    assert f"{digits.onnx.name}: FP32 max error / logit scale " in stdout  # the limit and where it came from
    assert "= 4 x the reference's float32-vs-float64 gap (" in stdout


@pytest.mark.slow
def test_a_different_model_fails_with_exit_1_and_still_writes_the_result(digits, other_model, tmp_path, capsys):
    out = tmp_path / "parity.json"
    code, _, err = run(capsys, "parity", "--reference", reference(digits), "--candidate", str(digits.onnx),
                       "--candidate", str(other_model), "--count", "48", "--output", str(out))
    assert code == 1
    assert "1 of 2 candidates failed parity" in one_line_error(err)
    rows = json.loads(out.read_text())["rows"]
    assert [r["status"] for r in rows] == ["reference", "pass", "fail"]
    failed = [c for c in rows[2]["parity"]["checks"] if not c["passed"]]
    assert [c["check"] for c in failed] == ["max error / logit scale"]


def test_tolerance_flags_change_the_verdict(digits, tmp_path, capsys):
    args = ["parity", "--reference", reference(digits), "--candidate", str(digits.onnx), "--count", "16",
            "--output", str(tmp_path / "p.json")]
    # a zero tolerance leaves no room for onnxruntime's different summation order
    code, _, err = run(capsys, *args, "--atol", "fp32=0", "--rtol", "0")
    assert code == 1 and "elements over atol 0 x logit scale and rtol 0" in err
    code, _, _ = run(capsys, *args, "--precision", "int8")  # judged by agreement instead: passes
    assert code == 0


def test_missing_candidate(digits, tmp_path, capsys):
    code, _, err = run(capsys, "parity", "--reference", reference(digits), "--candidate", str(tmp_path / "x.onnx"))
    assert code == 2 and "ONNX file not found" in one_line_error(err)


def test_missing_reference_weights(digits, tmp_path, capsys):
    code, _, err = run(capsys, "parity", "--reference", f"torch:{digits.model}:{tmp_path / 'none.pth'}",
                       "--candidate", str(digits.onnx), "--output", str(tmp_path / "p.json"))
    assert code == 2 and "none.pth" in one_line_error(err)


def test_reference_without_weights(digits, tmp_path, capsys):
    code, _, err = run(capsys, "parity", "--reference", f"torch:{digits.model}", "--candidate", str(digits.onnx),
                       "--output", str(tmp_path / "p.json"))
    assert code == 2 and "has no weights" in one_line_error(err)


def test_candidate_with_another_input_size(digits, tmp_path, capsys):
    size = digits.imgsz + 16
    code, _, err = run(capsys, "parity", "--reference", reference(digits), "--candidate", str(digits.onnx),
                       "--imgsz", str(size), "--output", str(tmp_path / "p.json"))
    line = one_line_error(err)
    assert code == 2 and f"takes {digits.imgsz}x{digits.imgsz} inputs" in line and f"{size}x{size}" in line


def test_reference_with_another_input_size(digits, tmp_path, capsys):
    """An ONNX reference fixed at one size against a candidate fixed at another."""
    import onnx

    from eca_deploy.export.onnx_export import to_onnx
    from eca_deploy.models import load_model

    # the traced graph alone (no verification, no onnxsim): what this error needs is its input size
    wide = tmp_path / "wide.onnx"
    onnx.save(to_onnx(load_model(digits.model, digits.checkpoint), 17, None, digits.imgsz * 2), str(wide))
    code, _, err = run(capsys, "parity", "--reference", str(wide), "--candidate", str(digits.onnx),
                       "--output", str(tmp_path / "p.json"))
    assert code == 2 and "reference" in one_line_error(err) and "inputs" in err


def test_data_folder_without_images(digits, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    (empty / "cat" / "notes.txt").write_text("no images here")
    code, _, err = run(capsys, "parity", "--reference", reference(digits), "--candidate", str(digits.onnx),
                       "--data", str(empty), "--output", str(tmp_path / "p.json"))
    assert code == 2 and "no images" in one_line_error(err)


def test_labels_that_do_not_match_the_class_count(digits, tmp_path, capsys):
    three = tmp_path / "three"
    for digit in ("0", "1", "2"):
        (three / digit).mkdir(parents=True)
        for image in sorted((digits.val_dir / digit).glob("*.png"))[:3]:
            shutil.copy(image, three / digit / image.name)
    code, _, err = run(capsys, "parity", "--reference", reference(digits), "--candidate", str(digits.onnx),
                       "--data", str(three), "--output", str(tmp_path / "p.json"))
    line = one_line_error(err)
    assert code == 2 and "has 3 classes but the model outputs 10" in line
    # the same images without their labels are fine
    code, _, _ = run(capsys, "parity", "--reference", reference(digits), "--candidate", str(digits.onnx),
                     "--data", str(three), "--no-labels", "--output", str(tmp_path / "p.json"))
    assert code == 0


def test_engine_on_a_machine_without_tensorrt(digits, tmp_path, capsys):
    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 64)
    code, _, err = run(capsys, "parity", "--reference", reference(digits), "--candidate", str(engine),
                       "--output", str(tmp_path / "p.json"))
    line = one_line_error(err)
    assert code == 2 and "cannot run the engine model.engine" in line and "not installed" in line
