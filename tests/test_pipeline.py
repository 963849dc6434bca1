"""The whole pipeline, test-sized: trained ECA-ResNet-18 on the digits images, 32x32, on this CPU."""

import json
import platform
from pathlib import Path

import pytest
from PIL import Image

from eca_deploy.artifacts import read_manifest
from eca_deploy.cli.main import main
from eca_deploy.packaging.deepstream import pick_artifact
from eca_deploy.runtime.harness.report import validate_report
from eca_deploy.runtime.tensorrt.env import tensorrt_unavailable_reason
from nvinfer import NVINFER_KEYS, read_config

pytestmark = pytest.mark.slow  # the whole pipeline, end to end


@pytest.fixture(scope="module")
def pipeline_run(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    code = main(["pipeline", "--model", digits.model, "--weights", str(digits.checkpoint),
                 "--calib-data", str(digits.calib_dir), "--data", str(digits.val_dir),
                 "--count", "120", "--imgsz", str(digits.imgsz), "--output", str(out), "--batch-sizes", "1,4",
                 "--iterations", "3", "--warmup", "1", "--provider", "cpu", "--device", "cpu", "--threads", "1",
                 "--deepstream", str(out / "deepstream" / "config_infer_primary.txt"), "--triton", str(out / "triton")])
    return code, out


def test_pipeline_makes_every_artifact_and_one_report(pipeline_run, capsys):
    code, out = pipeline_run
    assert code == 0
    report = validate_report(json.loads((out / "report.json").read_text()))
    assert report["kind"] == "pipeline" and report["model"]["name"] == "eca_resnet18"
    rows = {r["precision"] + ("-ref" if r["status"] == "reference" else ""): r for r in report["rows"]
            if not r["backend"].startswith("openvino")}
    assert set(rows) == {"fp32-ref", "fp32", "fp16", "int8"}
    assert rows["fp32-ref"]["format"] == "PyTorch"
    for precision in ("fp32", "fp16", "int8"):
        row = rows[precision]
        assert row["status"] == "pass", row["reason"]
        assert row["format"] == "ONNX" and row["precision_source"] == ("graph" if precision == "fp32" else "manifest")
        assert read_manifest(out / row["artifact"]) is not None  # each artifact sits beside its manifest
        assert [e["batch"] for e in row["bench"]["batches"]] == [1, 4]
        assert row["parity"]["top1"] >= rows["fp32-ref"]["parity"]["top1"] - 0.02
    assert rows["fp32-ref"]["parity"]["samples"] == 120 and rows["fp32-ref"]["parity"]["top1"] > 0.9
    # smaller files as the precision drops
    assert rows["int8"]["size_mb"] < rows["fp16"]["size_mb"] < rows["fp32"]["size_mb"]
    assert report["timings_s"]["total"] > 0 and report["devices"][0]["label"]


def test_pipeline_report_is_readable(pipeline_run):
    _, out = pipeline_run
    text = (out / "report.md").read_text()
    assert "| Artifact | Format | Precision | Status | Size MB | Top-1 | Top-1 agreement | Max abs err | p50 ms" in text
    assert "eca_resnet18.int8.cpu.onnx" in text
    for name in ("report_latency.png", "report_accuracy.png"):
        with Image.open(out / name) as image:
            image.load()
            assert image.format == "PNG"


def _table(markdown: str) -> dict[str, tuple[str, str]]:
    """Artifact -> (format, precision) of each row of the first report table in ``markdown``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Artifact | Format | Precision"))
    rows = []
    for line in lines[start + 2:]:  # past the header and its |---| line
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return {row[0]: (row[1], row[2]) for row in rows}


def test_the_docs_pipeline_sample_names_the_files_and_precisions_the_tool_writes(pipeline_run):
    """The sample run docs/harness.md shows: every file it names is one the pipeline writes (the FP16 file has no target
    suffix), and each table row shows the format and precision the real report.md shows."""
    import re
    from pathlib import Path

    _, out = pipeline_run
    page = (Path(__file__).parents[1] / "docs" / "harness.md").read_text()
    sample = page[page.index("$ eca-deploy pipeline --model eca_resnet18"):]
    sample = sample[:sample.index("```")]
    written = {p.name for p in out.iterdir()}
    named = set(re.findall(r"(eca_resnet18[\w.]*\.(?:onnx|xml))", sample))
    assert "eca_resnet18.fp16.onnx" in named and named <= written, named - written
    real, shown = _table((out / "report.md").read_text()), _table(sample)
    assert shown and all(real[artifact] == row for artifact, row in shown.items()), (shown, real)


def test_pipeline_adds_openvino_rows(pipeline_run):
    """On an x86 CPU with OpenVINO installed: the FP32 IR, and every ONNX variant run on OpenVINO as well."""
    pytest.importorskip("openvino")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("OpenVINO rows are added by default on x86 CPUs")
    _, out = pipeline_run
    report = json.loads((out / "report.json").read_text())
    rows = [r for r in report["rows"] if r["backend"] == "openvino-cpu"]
    onnx = [(r["artifact"], r["precision"]) for r in report["rows"] if r["backend"] == "onnxruntime-cpu"]
    assert [p for _, p in onnx] == ["fp32", "fp16", "int8"]
    assert [(r["artifact"], r["format"], r["precision"]) for r in rows] == [
        ("eca_resnet18.xml", "OpenVINO IR", "fp32"), *((f"openvino:{name}", "ONNX", p) for name, p in onnx)]
    reference = report["rows"][0]["parity"]["top1"]
    for row in rows:
        assert row["status"] == "pass", row["reason"]
        assert row["parity"]["top1"] >= reference - 0.02
        assert [e["batch"] for e in row["bench"]["batches"]] == [1, 4]
    assert read_manifest(out / "eca_resnet18.xml")["parity"]["openvino"]["max_abs"] < 1e-4
    assert f"openvino:{onnx[2][0]}" in (out / "report.md").read_text()
    assert report["devices"][0]["versions"]["openvino"]


def test_pipeline_says_why_engines_were_skipped(pipeline_run):
    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present: engines are built, not skipped")
    _, out = pipeline_run
    report = json.loads((out / "report.json").read_text())
    (skipped,) = [s for s in report["skipped"] if s["step"] == "TensorRT engines"]
    assert "not installed" in skipped["reason"] or "GPU" in skipped["reason"]
    assert "TensorRT engines" in (out / "report.md").read_text()
    assert not list(out.glob("*.engine"))


def test_pipeline_with_an_empty_data_folder_fails_before_any_work(digits, tmp_path, capsys):
    empty = tmp_path / "val"
    empty.mkdir()
    out = tmp_path / "out"
    code = main(["pipeline", "--model", digits.model, "--weights", str(digits.checkpoint), "--data", str(empty),
                 "--imgsz", str(digits.imgsz), "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "no images" in err
    assert not list(out.glob("*.onnx"))


def test_pipeline_judges_against_a_saved_reference_and_prepares_the_tensorrt_int8_model(digits, tmp_path):
    """A CPU box prepares the TensorRT-layout INT8 model (--target tensorrt) and judges it against a reference
    saved elsewhere (parity --save-reference), without running PyTorch for the reference."""
    ref = tmp_path / "ref.npz"
    data = ["--data", str(digits.val_dir), "--count", "40", "--imgsz", str(digits.imgsz)]
    assert main(["parity", "--reference", f"torch:{digits.model}:{digits.checkpoint}", "--save-reference", str(ref),
                 "--threads", "1", *data]) == 0
    out = tmp_path / "out"
    code = main(["pipeline", "--model", digits.model, "--weights", str(digits.checkpoint), "--reference", str(ref),
                 "--target", "tensorrt", "--precisions", "int8", "--calib-data", str(digits.calib_dir), *data,
                 "--output", str(out), "--batch-sizes", "1", "--iterations", "2", "--warmup", "1", "--provider", "cpu",
                 "--threads", "1", "--no-openvino"])  # the subject is the saved reference, not OpenVINO's rows
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    rows = {r["artifact"]: r for r in report["rows"]}
    reference = next(r for r in report["rows"] if r["status"] == "reference")
    assert reference["format"] == "PyTorch" and not reference.get("bench")  # nothing of PyTorch ran here
    int8 = rows["eca_resnet18.int8.onnx"]  # the tensorrt layout, FP16 glue: what a Jetson builds
    assert int8["status"] == "pass" and read_manifest(out / int8["artifact"])["quantization"]["high_precision"] == "fp16"


def test_pipeline_writes_the_deepstream_config_of_the_artifact_it_picks(pipeline_run):
    code, out = pipeline_run
    picked = pick_artifact(json.loads((out / "report.json").read_text()))
    config = out / "deepstream" / "config_infer_primary.txt"
    keys = read_config(config)
    assert code == 0 and set(keys) <= NVINFER_KEYS
    assert (config.parent / keys["onnx-file"]).resolve() == Path(picked).resolve()
    assert (config.parent / keys["labelfile-path"]).read_text().count(";") == 9


def test_pipeline_recommends_the_fastest_passing_artifact_and_packages_it_for_triton(pipeline_run):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    _, out = pipeline_run
    report = validate_report(json.loads((out / "report.json").read_text()))
    [chosen] = report["recommended"]
    passed = [r for r in report["rows"] if r["status"] == "pass"]
    fastest = min(passed, key=lambda r: next(e["p50"] for e in r["bench"]["batches"] if e["batch"] == 1))
    assert (chosen["artifact"], chosen["backend"], chosen["by"], chosen["batch"]) == (
        fastest["artifact"], fastest["backend"], "latency", 1)
    assert chosen["parity"] == fastest["parity"] and chosen["bench"] == fastest["bench"]  # the evidence
    assert "- **recommended** on " in (out / "report.md").read_text()
    entry = out / "triton" / "eca_resnet18"
    config = text_format.Parse((entry / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    serving = {"ONNX": "openvino" if chosen["backend"].startswith("openvino") else "onnxruntime",
               "OpenVINO IR": "openvino"}[chosen["format"]]
    assert (config.name, config.backend, config.max_batch_size) == ("eca_resnet18", serving, 32)
    assert list(config.input[0].dims) == [3, 32, 32] and list(config.output[0].dims) == [10]
    assert (entry / "labels.txt").read_text().split() == [str(i) for i in range(10)]  # the ImageFolder's classes
    assert any(s["step"] == "Triton repository" and s["status"] == "done" for s in report["steps"])
