"""The report schema, merging parity + bench rows and several devices, Markdown and the plots."""

import json

import numpy as np
import pytest
from PIL import Image

from eca_deploy.cli.main import main
from eca_deploy.errors import DataError
from eca_deploy.runtime.harness.bench import latency_stats
from eca_deploy.runtime.harness.device import Probe, describe_device
from eca_deploy.runtime.harness.report import (COLUMNS, SCHEMA_VERSION, combine, load_report, merge_rows, new_report,
                                               summary_table, validate_report, write_report)
from eca_deploy.runtime.harness.rows import ReportRow


def device(tmp_path, name):
    (tmp_path / "proc").mkdir(parents=True, exist_ok=True)
    (tmp_path / "proc" / "cpuinfo").write_text(f"model name\t: {name}\n")
    return describe_device(probe=Probe(tmp_path, lambda argv: None))


def bench_row(artifact, precision, scale):
    rng = np.random.default_rng(int(scale * 10))
    entries = [{"batch": b, "clock": "host", "copies": "none (host memory)",
                **latency_stats(rng.uniform(0.9, 1.3, 50) * scale * b ** 0.7 / 1e3, b)} for b in (1, 8)]
    return ReportRow(artifact, artifact, "ONNX", precision, "onnxruntime-cpu", "measured", size_mb=10.0,
                     bench={"imgsz": 32, "batches": entries})


def parity_row(artifact, precision, status, agreement, top1):
    return ReportRow(artifact, artifact, "ONNX", precision, "onnxruntime-cpu", status,
                     "" if status == "pass" else "top-1 drop 3 (limit 1)", size_mb=10.0,
                     parity={"top1": top1, "top5": 1.0, "top1_agreement": agreement, "max_abs": 0.02})


@pytest.fixture
def report(tmp_path):
    rows = [parity_row("m.onnx", "fp32", "pass", 1.0, 0.9), parity_row("m.int8.onnx", "int8", "fail", 0.93, 0.87),
            bench_row("m.onnx", "fp32", 4.0), bench_row("m.int8.onnx", "int8", 2.0)]
    return new_report("pipeline", device(tmp_path, "CPU A"), rows, model={"name": "eca_resnet18"})


def test_new_report_follows_the_schema_and_merges_parity_with_bench(report):
    assert validate_report(report) is report
    assert report["schema_version"] == SCHEMA_VERSION
    assert len(report["rows"]) == 2  # parity and bench rows of each artifact joined
    int8 = next(r for r in report["rows"] if r["precision"] == "int8")
    assert int8["status"] == "fail" and int8["parity"]["top1"] == 0.87 and len(int8["bench"]["batches"]) == 2
    json.loads(json.dumps(report))  # plain JSON all the way down


def test_table_takes_latency_at_the_smallest_batch_and_the_best_fps(report):
    lines = summary_table(report).splitlines()
    assert lines[0] == "| " + " | ".join(COLUMNS) + " |"
    row = next(r for r in report["rows"] if r["artifact"] == "m.onnx")
    cells = next(line for line in lines if line.startswith("| m.onnx ")).strip("| ").split(" | ")
    batch1 = next(e for e in row["bench"]["batches"] if e["batch"] == 1)
    best = max(e["fps"] for e in row["bench"]["batches"])
    assert cells[COLUMNS.index("p50 ms")] == f"{batch1['p50']:.2f}"
    assert cells[COLUMNS.index("p99 ms")] == f"{batch1['p99']:.2f}"
    assert cells[COLUMNS.index("FPS")] == f"{best:.1f}"
    assert cells[COLUMNS.index("Top-1")] == "90.00%"
    assert cells[COLUMNS.index("Status")] == "pass"
    int8 = next(line for line in lines if line.startswith("| m.int8.onnx "))
    assert "fail: top-1 drop 3 (limit 1)" in int8


@pytest.mark.parametrize("breakage, message", [
    (lambda r: r.update(schema="other"), "not an eca-deploy report"),
    (lambda r: r.update(schema_version=SCHEMA_VERSION + 1), "upgrade eca-deploy"),
    (lambda r: r.pop("rows"), "\"rows\""),
    (lambda r: r["rows"][0].pop("precision"), "row 0 has no \"precision\""),
    (lambda r: r["rows"][0].update(status="great"), "unknown status"),
])
def test_schema_violations_are_one_line_errors(report, breakage, message):
    broken = json.loads(json.dumps(report))
    breakage(broken)
    with pytest.raises(DataError, match=message):
        validate_report(broken)


def test_load_report_rejects_non_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match="not JSON"):
        load_report(path)
    with pytest.raises(DataError, match="not found"):
        load_report(tmp_path / "missing.json")


def test_merge_keeps_a_failure_over_a_measurement():
    rows = merge_rows([{**bench_row("a", "fp16", 1.0).as_dict(), "device": "d"},
                       {**parity_row("a", "fp16", "fail", 0.5, None).as_dict(), "device": "d"}])
    assert len(rows) == 1 and rows[0]["status"] == "fail" and rows[0]["bench"] and rows[0]["parity"]


def test_report_command_merges_two_devices_with_plots(tmp_path, report):
    other = new_report("bench", device(tmp_path / "b", "CPU B"), [bench_row("m.onnx", "fp32", 8.0)])
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(report))
    b.write_text(json.dumps(other))
    out = tmp_path / "out"
    assert main(["report", str(a), str(b), "--output", str(out)]) == 0
    merged = load_report(out / "report.json")
    assert merged["kind"] == "comparison" and len(merged["devices"]) == 2
    assert {r["device"] for r in merged["rows"]} == {report["devices"][0]["label"], other["devices"][0]["label"]}
    text = (out / "report.md").read_text()
    assert "| Device | Artifact |" in text and "report_latency.png" in text
    for name in ("report_latency.png", "report_accuracy.png"):
        with Image.open(out / name) as image:
            image.load()
            assert image.format == "PNG" and image.size[0] > 300


def test_report_command_refuses_a_foreign_file(tmp_path, capsys):
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps({"hello": 1}))
    assert main(["report", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("eca-deploy: error:") and "not an eca-deploy report" in err and "\n" not in err


def test_combine_then_write_without_plots(tmp_path, report):
    written = write_report(combine([report]), tmp_path, plots=False)
    assert set(written) == {"json", "markdown"}


def test_merged_rows_name_their_source_and_both_int8_layouts_and_errors_are_plotted(tmp_path):
    from eca_deploy.runtime.harness.plots import accuracy_bars

    from dataclasses import replace

    trt = replace(parity_row("m.int8.onnx", "int8", "pass", 0.99, None), layout="tensorrt")
    cpu = replace(parity_row("m.int8.cpu.onnx", "int8", "pass", 0.95, None), layout="cpu")
    fp32 = parity_row("m.onnx", "fp32", "fail", 1.0, None)
    error = ReportRow("m.fp16.onnx", "m.fp16.onnx", "ONNX", "fp16", "-", "error", "FP16 output drifts")
    first = new_report("parity", device(tmp_path / "a", "CPU A"), [fp32, trt])
    second = new_report("pipeline", device(tmp_path / "a", "CPU A"), [cpu, error, bench_row("m.onnx", "fp32", 4.0)])
    merged = combine([first, second], sources=["runs/parity.json", "runs/pipeline.json"])
    table = summary_table(merged)
    assert table.splitlines()[0].endswith("| Source |")
    assert "| runs/parity.json + runs/pipeline.json |" in next(l for l in table.splitlines() if "| m.onnx |" in l)
    assert "| int8 tensorrt |" in table and "| int8 cpu |" in table
    bars, _, _ = accuracy_bars(merged)
    labels = [label for label, _, _ in bars]
    assert "ONNX int8 tensorrt (onnxruntime-cpu)" in labels and "ONNX int8 cpu (onnxruntime-cpu)" in labels
    assert ("ONNX fp16 (-)", 0.0, "error") in bars and ("ONNX fp32 (onnxruntime-cpu)", 100.0, "fail") in bars
    assert write_report(merged, tmp_path / "out")["accuracy"].is_file()
    single = combine([first], sources=["runs/parity.json"])
    assert "Source" not in summary_table(single)  # one file: nothing to tell apart


def test_plots_show_what_was_measured_and_the_legend_hides_no_bar(tmp_path, monkeypatch):
    """Two runs of one series, a pass (98.3%) and a fail (0%), are two bars, never one at 49.2%; a median of
    several runs is a value one of them measured; neither plot's legend overlaps a bar."""
    from eca_deploy.runtime.harness import plots as module

    passed, failed = parity_row("a/m.int8.onnx", "int8", "pass", 0.983, None), parity_row("b/m.int8.onnx", "int8",
                                                                                            "fail", 0.0, None)
    runs = [parity_row(f"{run}/m.onnx", "fp32", "pass", a, None) for run, a in (("a", 0.90), ("b", 0.96))]
    rows = [passed, failed, *runs, *(bench_row(f"m{i}.onnx", "fp32", 1.0 + i) for i in range(4))]
    merged = new_report("parity", device(tmp_path, "CPU A"), rows)
    bars = {label: (round(value, 1), status) for label, value, status in module.accuracy_bars(merged)[0]}
    assert bars["ONNX int8 (onnxruntime-cpu), passed runs"] == (98.3, "pass")
    assert bars["ONNX int8 (onnxruntime-cpu), failed runs"] == (0.0, "fail")
    assert bars["ONNX fp32 (onnxruntime-cpu), median of 2"] == (90.0, "pass")  # measured, not 93.0

    overlaps = []

    def inspect(fig, path):
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            legend = ax.get_legend().get_window_extent(renderer)
            overlaps.extend(p for p in ax.patches if p.get_height() and legend.overlaps(p.get_window_extent(renderer)))
        inspect.saved += 1

    inspect.saved = 0
    monkeypatch.setattr(module, "_save", inspect)
    module.plot_latency(merged, tmp_path / "latency.png")
    module.plot_accuracy(merged, tmp_path / "accuracy.png")
    assert inspect.saved == 2 and not overlaps
