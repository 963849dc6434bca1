"""Issue 11, items 1 and 8: report.md escapes every field from data; plots summarise and stay bounded."""

import json
import re
from dataclasses import replace

from PIL import Image

from eca_deploy.cli.main import main
from eca_deploy.runtime.harness.plots import MAX_BATCHES, MAX_SERIES, accuracy_bars, latency_series
from eca_deploy.runtime.harness.report import md_escape, new_report, write_report
from eca_deploy.runtime.harness.rows import ReportRow
from hostile import INJECTIONS
from test_report import bench_row, device, parity_row


def _hostile_report(tmp_path):
    dev = device(tmp_path, "CPU A")
    dev["label"] = INJECTIONS[1]
    dev["warnings"] = [INJECTIONS[3]]
    rows = [parity_row(INJECTIONS[0], "fp32", "pass", 1.0, 0.9), bench_row(INJECTIONS[0], "fp32", 4.0),
            replace(parity_row(INJECTIONS[2], "int8", "fail", 0.5, 0.4), reason=INJECTIONS[3])]
    return new_report("pipeline", dev, rows, model={"name": INJECTIONS[0], "weights": INJECTIONS[1]},
                      data=INJECTIONS[2], reference=INJECTIONS[3],
                      skipped=[{"step": INJECTIONS[1], "reason": INJECTIONS[0]}])


def _assert_inert(text: str) -> None:
    for tag in ("<img", "<script", "</script"):
        assert tag not in text
    assert not re.search(r"(?<!\\)\[[^\]]*(?<!\\)\]\(javascript:", text)  # no live [text](javascript:...) link
    assert not re.search(r"(?<!\\)!(?<!\\)\[", text.replace("![latency]", "").replace("![accuracy]", ""))
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert all(not h.startswith("# Injected") for h in headings)
    assert not any(line.startswith("- item") for line in text.splitlines())


def test_md_escape_neutralises_html_newlines_links_and_cells():
    for text in INJECTIONS:
        escaped = md_escape(text)
        assert "\n" not in escaped and "\r" not in escaped and "<" not in escaped and ">" not in escaped
        assert "|" not in escaped.replace("\\|", "")
        assert "[" not in escaped.replace("\\[", "")
    assert md_escape("eca_resnet50.int8.onnx") == "eca_resnet50.int8.onnx"  # ordinary names stay readable


def test_report_md_from_hostile_fields_is_inert(tmp_path):
    report = _hostile_report(tmp_path)
    written = write_report(report, tmp_path / "out", plots=False)
    text = written["markdown"].read_text()
    _assert_inert(text)
    assert "x&lt;img src=x onerror=alert(1)&gt;.onnx" in text  # still there, readable, just not HTML
    # every table row keeps its column count: no cell split by an injected "|"
    tables = [block.splitlines() for block in text.split("\n\n") if block.startswith("| ")]
    assert len(tables) == 2
    for table in tables:
        assert len({len(re.findall(r"(?<!\\)\|", line)) for line in table}) == 1


def test_report_command_merging_hostile_files_writes_inert_markdown(tmp_path):
    path = tmp_path / "in.json"
    path.write_text(json.dumps(_hostile_report(tmp_path)))
    assert main(["report", str(path), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    _assert_inert((tmp_path / "out" / "report.md").read_text())


def _many_rows(n, series):
    """n rows over ``series`` distinct (format, precision, backend) series, sharing their bench entries."""
    bench = bench_row("x", "fp32", 3.0).bench
    parity = parity_row("x", "int8", "pass", 0.95, 0.9).parity
    return [ReportRow(f"m{i}.onnx", f"m{i}.onnx", "ONNX", "int8", f"b{i % series}", "pass", size_mb=1.0,
                      bench=bench, parity=parity) for i in range(n)]


def test_plots_of_20000_rows_are_summarised_and_say_what_was_left_out(tmp_path):
    """Hundreds of times more series than a plot can show (more rows only make the run slower: each is a copy)."""
    report = new_report("comparison", device(tmp_path, "CPU A"), _many_rows(20_000, 20_000))
    series, batches, notes = latency_series(report)
    assert len(series) == MAX_SERIES and len(batches) <= MAX_BATCHES
    assert notes == [f"latency plot: {MAX_SERIES} of 20000 series shown, the fastest; the tables list them all"]
    bars, _, notes = accuracy_bars(report)
    assert len(bars) == MAX_SERIES and "of 20000 series shown" in notes[0]


def test_rows_of_one_series_become_one_median_bar(tmp_path):
    report = new_report("comparison", device(tmp_path, "CPU A"), _many_rows(5_000, 3))
    series, _, notes = latency_series(report)
    assert [label.endswith("median of 1667") or label.endswith("median of 1666") for label, _ in series] == [True] * 3
    assert notes == []


def test_report_of_2000_series_writes_bounded_plots_and_notes(tmp_path):
    report = new_report("comparison", device(tmp_path, "CPU A"), _many_rows(2_000, 2_000))
    written = write_report(report, tmp_path / "out")
    for name in ("latency", "accuracy"):
        with Image.open(written[name]) as image:
            assert image.width < 3000  # one bar per row made it 220,000 inches wide
    text = written["markdown"].read_text()
    assert f"latency plot: {MAX_SERIES} of 2000 series shown" in text
    assert f"accuracy plot: {MAX_SERIES} of 2000 series shown" in text


# Bidirectional embeddings, overrides, isolates and marks, zero-width and other format characters, and a
# lone surrogate (an undecodable file name's byte): none prints as itself, each can make a name read otherwise.
HIDDEN = ("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c\u200b\u200d\u2060\ufeff"
          "\u00ad\U000e0041\udcff\x1b\x7f\x85\u2028\u2029")


def test_bidi_and_format_characters_in_names_become_spaces_in_report_md(tmp_path):
    """main wrote U+202E (right-to-left override) and the other bidirectional controls into report.md as they
    were: `evil\u202egnp.onnx` showed as "evilxnno.png"."""
    rows = [parity_row(f"evil{c}gnp.onnx", "fp32", "pass", 1.0, 0.9) for c in HIDDEN]
    report = new_report("parity", device(tmp_path, "CPU\u202eA"), rows, data="val\u2067/")
    text = write_report(report, tmp_path / "out", plots=False)["markdown"].read_text()
    assert not set(HIDDEN) & set(text)
    assert text.count("evil gnp.onnx") == len(HIDDEN)


def test_every_control_and_format_character_of_unicode_becomes_a_space():
    import sys
    import unicodedata

    hidden = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) in ("Cc", "Cf", "Zl", "Zp")]
    assert md_escape("a" + "b".join(hidden) + "c") == "a" + "b".join(" " * len(hidden)) + "c"
