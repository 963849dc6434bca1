"""Results for machines (one versioned JSON schema) and for people (a Markdown table; the PNG plots are
plots.py's).

parity, bench and pipeline all write the same schema; ``eca-deploy report`` merges any number of
them, from any number of devices, into one comparison.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from pathlib import Path

from ...artifacts import atomic_write, ensure_output_dir, read_json, write_json
from ...errors import DataError, first_line, visible_text
from .plots import plot_accuracy, plot_energy, plot_latency, precision_label
from .recommend import describe_recommended, headline
from .rows import STATUSES, ReportRow

SCHEMA = "eca-deploy/report"
SCHEMA_VERSION = 1
KINDS = ("parity", "bench", "pipeline", "comparison")
# The whole schema, checked before anything is written: key -> (accepted types, required). A report can
# come from another machine, so every field the Markdown, the plots or a merge reads is checked.
NUM = (int, float)
OPT_NUM = (int, float, type(None))
REPORT_FIELDS = {"kind": (str, True), "created": (str, True), "devices": (list, True), "rows": (list, True),
                 "skipped": (list, True), "sources": (list, False), "model": ((dict, str, type(None)), False),
                 "data": ((dict, str, type(None)), False), "reference": ((dict, str, type(None)), False),
                 "recommended": (list, False)}
DEVICE_FIELDS = {"label": (str, True), "cpu": ((dict, type(None)), False), "versions": ((dict, type(None)), False),
                 "gpus": (list, False), "jetson": ((dict, type(None)), False), "warnings": (list, False),
                 "power": (dict, False)}
POWER_FIELDS = {"rails": (list, False), "total": (str, False), "unavailable": (str, False)}
GPU_FIELDS = {"name": (str, True), "driver": ((str, type(None)), True)}
ROW_FIELDS = {"device": (str, True), "artifact": (str, True), "format": (str, True), "precision": (str, True),
              "backend": (str, True), "status": (str, True), "reason": (str, False), "identity": (str, False),
              "spec": (str, False), "size_mb": (OPT_NUM, False), "parity": ((dict, type(None)), False),
              "bench": ((dict, type(None)), False)}
PARITY_FIELDS = {key: (OPT_NUM, False) for key in ("top1", "top5", "top1_agreement", "max_abs", "cosine",
                                                    "min_cosine")}
BENCH_FIELDS = {"imgsz": ((int, type(None)), False), "batches": (list, True),
                "server": (dict, False)}  # a Triton server's metadata (bench triton://)
ENTRY_FIELDS = {"batch": (int, True), "clock": (str, True), "copies": (str, True), "iterations": (int, True),
                "concurrency": (int, False),  # requests in flight at once (bench triton://)
                **{key: (NUM, True) for key in ("min", "p50", "p90", "p99", "mean", "fps")},
                # on a Jetson with INA3221 rails (power.py); absent elsewhere
                **{key: (NUM, False) for key in ("power_w", "mj_per_image", "fps_per_w")}, "rails_w": (dict, False)}
SKIPPED_FIELDS = {"step": (str, True), "reason": (str, True)}
RECOMMENDED_FIELDS = {"device": (str, True), "by": (str, True), "batch": (int, True), "value": (NUM, True),
                      "artifact": (str, True), "format": (str, True), "precision": (str, True),
                      "backend": (str, True), "spec": ((str, type(None)), False), "parity": ((dict, type(None)), False),
                      "bench": ((dict, type(None)), False)}
JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
              type(None): "null"}
COLUMNS = ("Artifact", "Format", "Precision", "Status", "Size MB", "Top-1", "Top-1 agreement", "Max abs err",
           "p50 ms", "p99 ms", "FPS")


def new_report(kind: str, device: dict, rows: list[ReportRow], **sections) -> dict:
    """A report of one device; ``sections``: model, data, reference, tolerances, skipped, timings_s, ..."""
    label = device["label"]
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "kind": kind,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "devices": [device], "rows": merge_rows([{"device": label, **row.as_dict()} for row in rows]),
            "skipped": sections.pop("skipped", []), **sections}


def merge_rows(rows: list[dict]) -> list[dict]:
    """One row per (device, artifact, backend): a parity row and a bench row of the same artifact join."""
    merged: dict[tuple, dict] = {}
    for row in rows:
        key = (row["device"], row.get("identity") or row["artifact"], row["backend"])
        if key not in merged:
            merged[key] = dict(row)
            continue
        into = merged[key]
        if row.get("source") and row["source"] not in (into.get("source") or "").split(" + "):
            into["source"] = f"{into['source']} + {row['source']}" if into.get("source") else row["source"]
        for section in ("parity", "bench"):
            if row.get(section) is not None:
                into[section] = row[section]
        if into.get("status") in ("measured", None) or row.get("status") in ("fail", "error"):
            into["status"], into["reason"] = row["status"], row.get("reason", "")
    return list(merged.values())


def _json_type(value) -> str:
    return JSON_TYPES.get(type(value), type(value).__name__)


def _check(obj, fields: dict, where: str) -> None:
    """Raise DataError unless ``obj`` is an object whose ``fields`` have their types (bool is not a number)."""
    if not isinstance(obj, dict):
        raise DataError(f"{where} is a JSON {_json_type(obj)}, not an object")
    for key, (kinds, required) in fields.items():
        if key not in obj:
            if required:
                raise DataError(f"{where} has no \"{key}\"")
            continue
        value, kinds = obj[key], kinds if isinstance(kinds, tuple) else (kinds,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            expected = " or ".join(dict.fromkeys(JSON_TYPES[k] for k in kinds))
            raise DataError(f"{where}: \"{key}\" is a JSON {_json_type(value)}, expected {expected}")


def validate_report(report, source: str = "report") -> dict:
    """Raise DataError (one line) unless ``report`` follows this schema, all the way down, at a version we
    can read: rendering and merging then cannot fail half-way."""
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise DataError(f"{source} is not an eca-deploy report (no \"schema\": \"{SCHEMA}\")")
    if "schema_version" not in report:
        raise DataError(f"{source} has no \"schema_version\"; eca-deploy writes {SCHEMA_VERSION}")
    version = report["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DataError(f"{source} has an invalid \"schema_version\" {json.dumps(version)[:20]}; expected an "
                        f"integer from 1 to {SCHEMA_VERSION}")
    if version > SCHEMA_VERSION:
        raise DataError(f"{source} has schema version {version}; this eca-deploy reads versions up to "
                        f"{SCHEMA_VERSION} (upgrade eca-deploy)")
    _check(report, REPORT_FIELDS, source)
    if report["kind"] not in KINDS:
        raise DataError(f"{source}: unknown kind \"{report['kind']}\"")
    for i, device in enumerate(report["devices"]):
        where = f"{source}: device {i}"
        _check(device, DEVICE_FIELDS, where)
        for j, gpu in enumerate(device.get("gpus") or []):
            _check(gpu, GPU_FIELDS, f"{where} gpu {j}")
        if "power" in device:
            _check(device["power"], POWER_FIELDS, f"{where} power")
        if not all(isinstance(w, str) for w in device.get("warnings", [])):
            raise DataError(f"{where}: \"warnings\" holds something other than strings")
    for i, row in enumerate(report["rows"]):
        where = f"{source}: row {i}"
        _check(row, ROW_FIELDS, where)
        if row["status"] not in STATUSES:
            raise DataError(f"{where} has unknown status \"{row['status']}\"")
        if row.get("parity") is not None:
            _check(row["parity"], PARITY_FIELDS, f"{where} parity")
        if row.get("bench") is not None:
            _check(row["bench"], BENCH_FIELDS, f"{where} bench")
            for j, entry in enumerate(row["bench"]["batches"]):
                _check(entry, ENTRY_FIELDS, f"{where} bench entry {j}")
    for i, skipped in enumerate(report["skipped"]):
        _check(skipped, SKIPPED_FIELDS, f"{source}: skipped entry {i}")
    for i, chosen in enumerate(report.get("recommended", [])):
        _check(chosen, RECOMMENDED_FIELDS, f"{source}: recommended entry {i}")
    return report


def load_report(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"report not found: {path}")
    try:
        report = read_json(path)
    except (ValueError, RecursionError) as exc:  # ValueError covers bad UTF-8; RecursionError: absurd nesting
        raise DataError(f"{path} is not JSON: {first_line(exc)}") from exc
    return validate_report(report, str(path))


def combine(reports: list[dict], sources: list[str] | None = None) -> dict:
    """Many reports (several devices, or parity + bench of one) -> one comparison report."""
    devices: dict[str, dict] = {}
    for report in reports:
        for device in report["devices"]:
            devices.setdefault(device["label"], device)
    # Each row remembers the file it came from (an earlier merged report keeps its rows' own sources).
    sources = sources or []
    rows = merge_rows([{**row, "source": row.get("source") or (sources[i] if i < len(sources) else None)}
                       for i, report in enumerate(reports) for row in report["rows"]])
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "kind": "comparison",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "devices": list(devices.values()), "rows": rows,
            "skipped": [s for report in reports for s in report["skipped"]], "sources": sources,
            "recommended": [entry for report in reports for entry in report.get("recommended", [])]}


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _num(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


_MARKDOWN = re.compile(r"([\\`*\[\]|])")


def md_escape(value) -> str:
    """Any value from a report as inert Markdown text on one line.

    Reports come from other machines and are rendered: control and format characters (newlines would
    start headings or list items; bidirectional overrides would show a name reversed) become one space,
    HTML-significant characters become entities, and the characters of links, images, code and table
    cells are backslash-escaped.
    """
    text = visible_text(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    return _MARKDOWN.sub(r"\\\1", text)


def _status(row: dict) -> str:
    if row["status"] in ("fail", "skipped", "error") and row.get("reason"):
        return f"{row['status']}: {row['reason']}"
    return row["status"]


def _with_sources(report: dict) -> bool:
    """A Source column where the rows came from more than one file."""
    return len({row.get("source") for row in report["rows"]}) > 1


def table_rows(report: dict) -> list[list[str]]:
    multi = len(report["devices"]) > 1
    sources = _with_sources(report)
    lines = []
    for row in report["rows"]:
        parity = row.get("parity") or {}
        latency, best = headline(row)
        agreement = "—" if row["status"] == "reference" else _pct(parity.get("top1_agreement"))
        cells = [row["artifact"], row["format"], precision_label(row), _status(row), _num(row.get("size_mb"), ".1f"),
                 _pct(parity.get("top1")), agreement, _num(parity.get("max_abs"), ".2e"),
                 _num(latency and latency["p50"], ".2f"), _num(latency and latency["p99"], ".2f"),
                 _num(best and best["fps"], ".1f")]
        lines.append(([row["device"]] if multi else []) + cells + ([row.get("source") or "—"] if sources else []))
    return lines


def _md_table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(md_escape(c) for c in line) + " |" for line in lines]
    return "\n".join(out)


def _device_line(device: dict) -> str:
    versions = device.get("versions", {})
    parts = [device["label"], f"CPU {device.get('cpu', {}).get('model')}",
             f"onnxruntime {versions.get('onnxruntime')}", f"torch {versions.get('torch')}"]
    if versions.get("tensorrt"):
        parts.append(f"TensorRT {versions['tensorrt']}")
    for gpu in device.get("gpus", []):
        parts.append(f"GPU {gpu['name']} (driver {gpu['driver']})")
    jetson = device.get("jetson")
    if jetson:
        parts.append(f"L4T {jetson.get('l4t')} / JetPack {jetson.get('jetpack')}, clocks pinned: "
                     f"{jetson.get('clocks_pinned')}")
    return "; ".join(md_escape(p) for p in parts)


def _power_line(device: dict) -> str | None:
    """What the power columns measure on ``device``, or why they are empty; None where bench did not say."""
    power = device.get("power")
    if not power:
        return None
    if power.get("unavailable"):
        return f"power not measured on {device['label']}: {power['unavailable']}"
    return (f"power on {device['label']}: mean over each timed loop of the INA3221 rails "
            f"{', '.join(map(str, power.get('rails', [])))}; W is {power.get('total')}")


def _energy(entry: dict) -> list[str]:
    """The W, mJ/img and FPS/W cells of a latency-table entry ("-" where not measured)."""
    return [_num(entry.get("power_w"), ".2f"), _num(entry.get("mj_per_image"), ".1f"),
            _num(entry.get("fps_per_w"), ".1f")]


def summary_table(report: dict) -> str:
    """The one table a person reads first (Markdown)."""
    header = (["Device"] if len(report["devices"]) > 1 else []) + list(COLUMNS) + \
        (["Source"] if _with_sources(report) else [])
    return _md_table(header, table_rows(report))


def markdown(report: dict, plots: dict[str, str] | None = None, plot_notes: list[str] | None = None) -> str:
    multi = len(report["devices"]) > 1
    parts = [f"# eca-deploy {report['kind']} report", ""]
    for key in ("model", "data", "reference"):
        if report.get(key):
            value = report[key]
            parts.append(f"- **{key}**: " + md_escape(", ".join(f"{k} {v}" for k, v in value.items() if v is not None)
                                                       if isinstance(value, dict) else value))
    parts += [f"- **device**: {_device_line(d)}" for d in report["devices"]]
    parts += [f"- **recommended** {md_escape(describe_recommended(e))}" for e in report.get("recommended", [])]
    parts += ["", summary_table(report), ""]
    batches = sorted({e["batch"] for r in report["rows"] for e in (r.get("bench") or {}).get("batches", [])})
    measured = any("power_w" in e for r in report["rows"] for e in (r.get("bench") or {}).get("batches", []))
    in_flight = any("concurrency" in e for r in report["rows"] for e in (r.get("bench") or {}).get("batches", []))
    if batches:
        parts.append(f"p50/p99: latency per call at the smallest batch measured; FPS: images per second at the "
                     f"best of batches {md_escape(', '.join(map(str, batches)))}; host clock, host<->device copies "
                     "included" + ("; a Triton server: the client's clock, network included, at the fewest "
                                   "requests in flight" if in_flight else "") + ". "
                     "Top-1 agreement: share of inputs whose top class matches the reference's.")
        parts += ["", "## Latency per batch", "", _md_table(
            (["Device"] if multi else []) + ["Artifact", "Backend", "Batch"] + (["In flight"] if in_flight else [])
            + ["Clock", "Copies", "min ms", "p50 ms", "p90 ms", "p99 ms", "mean ms", "FPS", "Iterations"]
            + (["W", "mJ/img", "FPS/W"] if measured else []),
            [([r["device"]] if multi else []) + [r["artifact"], r["backend"], str(e["batch"])]
             + ([str(e.get("concurrency", "—"))] if in_flight else [])
             + [e["clock"], e["copies"], *(f"{e[k]:.2f}" for k in ("min", "p50", "p90", "p99", "mean")),
                f"{e['fps']:.1f}", str(e["iterations"])]
             + (_energy(e) if measured else [])
             for r in report["rows"] for e in (r.get("bench") or {}).get("batches", [])]), ""]
        parts += [f"- {md_escape(line)}" for line in map(_power_line, report["devices"]) if line]
        parts += [""] if any(map(_power_line, report["devices"])) else []
    if report["skipped"]:
        parts += ["## Skipped", ""] + [f"- {md_escape(s['step'])}: {md_escape(s['reason'])}"
                                       for s in report["skipped"]] + [""]
    warnings = [w for d in report["devices"] for w in d.get("warnings", [])]
    if warnings:
        parts += ["## Warnings", ""] + [f"- {md_escape(w)}" for w in warnings] + [""]
    if plots:
        parts += ["## Plots", ""] + [f"![{md_escape(name)}]({path})" for name, path in plots.items()] + [""]
        parts += [f"- {md_escape(note)}" for note in plot_notes or []] + ([""] if plot_notes else [])
    return "\n".join(parts)


def report_paths(out_dir: str | os.PathLike, stem: str = "report") -> dict[str, Path]:
    """Every file write_report may write, by name."""
    out = Path(out_dir)
    return {"json": out / f"{stem}.json", "latency": out / f"{stem}_latency.png",
            "accuracy": out / f"{stem}_accuracy.png", "energy": out / f"{stem}_energy.png",
            "markdown": out / f"{stem}.md"}


def write_report(report: dict, out_dir: str | os.PathLike, stem: str = "report", plots: bool = True) -> dict:
    """Write <stem>.json, <stem>.md and the plots; returns {name: path}."""
    validate_report(report)
    ensure_output_dir(out_dir)
    paths = report_paths(out_dir, stem)
    written: dict[str, Path] = {"json": write_json(paths["json"], report)}
    images, notes = {}, []
    if plots:
        for name, plot in (("latency", plot_latency), ("accuracy", plot_accuracy), ("energy", plot_energy)):
            target = paths[name]
            left_out = plot(report, target)
            if left_out is not None:
                written[name], images[name] = target, target.name
                notes += left_out
    written["markdown"] = atomic_write(paths["markdown"], markdown(report, images, notes))
    return written
