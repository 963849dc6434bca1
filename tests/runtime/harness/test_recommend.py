"""The recommended artifact: per device, the fastest that passed parity, by latency at batch 1 or by throughput,
with its parity and bench evidence; in report.json (validated as any report field is) and as a report.md line."""

import json

import pytest

from eca_deploy.cli.main import main
from eca_deploy.runtime.harness.recommend import recommend
from eca_deploy.runtime.harness.report import markdown, new_report, validate_report
from eca_deploy.runtime.harness.rows import ReportRow


def row(artifact, status, p50_by_batch, fps_by_batch=None, backend="onnxruntime-cpu", agreement=0.99):
    """A joined parity + bench row, as the pipeline makes it; the timings are given, not measured."""
    entries = [{"batch": b, "clock": "host", "copies": "none (host memory)", "min": p50, "p50": p50, "p90": p50,
                "p99": p50, "mean": p50, "fps": (fps_by_batch or {}).get(b, b * 1e3 / p50), "iterations": 100}
               for b, p50 in p50_by_batch.items()]
    return ReportRow(artifact, f"/x/{artifact}", "ONNX", "fp32", backend, status, spec=f"/x/{artifact}",
                     parity={"top1_agreement": agreement, "max_abs": 1e-3},
                     bench={"imgsz": 32, "batches": entries})


def dict_rows(rows, device="cpu A"):
    return [{"device": device, **r.as_dict()} for r in rows]


ROWS = [row("ref (PyTorch)", "reference", {1: 0.5, 8: 2.0}),  # fastest, but the reference is not a candidate
        row("m.int8.onnx", "fail", {1: 0.8, 8: 3.0}),  # faster than every pass, but failed parity
        row("m.onnx", "pass", {1: 2.0, 8: 8.0}),
        row("m.fp16.onnx", "pass", {1: 1.5, 8: 10.0}, agreement=0.97)]


def test_latency_picks_the_lowest_p50_at_batch_1_among_the_passed():
    [chosen] = recommend(dict_rows(ROWS))
    assert (chosen["artifact"], chosen["by"], chosen["batch"], chosen["value"]) == ("m.fp16.onnx", "latency", 1, 1.5)
    assert chosen["parity"]["top1_agreement"] == 0.97 and len(chosen["bench"]["batches"]) == 2  # the evidence
    assert chosen["spec"] == "/x/m.fp16.onnx" and chosen["device"] == "cpu A"


def test_throughput_picks_the_best_images_per_second_at_any_batch():
    [chosen] = recommend(dict_rows(ROWS), "throughput")
    # m.onnx: 8 images in 8 ms = 1000/s beats m.fp16.onnx's 800/s at batch 8 (and its 667/s at batch 1)
    assert (chosen["artifact"], chosen["batch"], chosen["value"]) == ("m.onnx", 8, 1000.0)


def test_one_recommendation_per_device_and_none_where_nothing_passed():
    rows = dict_rows(ROWS, "cpu A") + dict_rows([ROWS[0], ROWS[1]], "jetson B") + dict_rows(
        [row("m.engine", "pass", {1: 0.3}, backend="tensorrt")], "gpu C")
    assert {c["device"]: c["artifact"] for c in recommend(rows)} == {"cpu A": "m.fp16.onnx", "gpu C": "m.engine"}


def test_an_unknown_measure_is_refused():
    from eca_deploy.errors import UsageError

    with pytest.raises(UsageError, match="latency or throughput, not 'speed'"):
        recommend(dict_rows(ROWS), "speed")


def test_latency_needs_a_batch_1_measurement():
    assert recommend(dict_rows([row("m.onnx", "pass", {8: 4.0})])) == []
    assert recommend(dict_rows([row("m.onnx", "pass", {8: 4.0})]), "throughput")[0]["batch"] == 8


def test_report_carries_it_and_the_markdown_names_it_escaped():
    rows = [row("m.fp16.onnx", "pass", {1: 1.5}), row("<b>*evil*</b>\n# heading.onnx", "pass", {1: 1.0})]
    report = new_report("pipeline", {"label": "cpu A"}, rows)
    report["recommended"] = recommend(report["rows"])
    validate_report(json.loads(json.dumps(report)))
    [line] = [line for line in markdown(report).splitlines() if line.startswith("- **recommended**")]
    assert line == ("- **recommended** on cpu A (the fastest by latency that passed parity): "
                    "&lt;b&gt;\\*evil\\*&lt;/b&gt; # heading.onnx (ONNX fp32, onnxruntime-cpu), p50 1.00 ms at batch 1, top-1 agreement 99.00%")


@pytest.mark.parametrize("entry, message", [
    ({"device": "cpu", "by": "latency", "batch": 1, "value": "fast", "artifact": "m", "format": "ONNX",
      "precision": "fp32", "backend": "b"}, '"value" is a JSON string'),
    ({"device": "cpu", "by": "latency", "batch": 1, "value": 1.0}, 'has no "artifact"'),
    ("m.onnx", "is a JSON string, not an object"),
])
def test_a_hostile_recommended_entry_is_refused_by_report(tmp_path, capsys, entry, message):
    """`eca-deploy report` renders reports from other machines: a recommended entry is checked before use."""
    report = new_report("pipeline", {"label": "cpu A"}, [])
    report["recommended"] = [entry]
    (tmp_path / "r.json").write_text(json.dumps(report))
    assert main(["report", str(tmp_path / "r.json"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "recommended entry 0" in err and len(err.strip().splitlines()) == 1


def test_a_merged_report_keeps_each_devices_recommendation():
    from eca_deploy.runtime.harness.report import combine

    reports = []
    for device, rows in (("cpu A", ROWS), ("gpu C", [row("m.engine", "pass", {1: 0.3}, backend="tensorrt")])):
        report = new_report("pipeline", {"label": device}, rows)
        report["recommended"] = recommend(report["rows"])
        reports.append(report)
    merged = validate_report(combine(reports, ["a.json", "c.json"]))
    assert [(c["device"], c["artifact"]) for c in merged["recommended"]] == [("cpu A", "m.fp16.onnx"),
                                                                           ("gpu C", "m.engine")]
