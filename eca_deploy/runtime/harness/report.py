"""Results for machines (one versioned JSON schema) and for people (a Markdown table and PNG plots).

parity, bench and pipeline all write the same schema; ``eca-deploy report`` merges any number of
them, from any number of devices, into one comparison.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from ...artifacts import atomic_path, atomic_write, ensure_output_dir, read_json, write_json
from ...errors import DataError, first_line
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
                 "data": ((dict, str, type(None)), False), "reference": ((dict, str, type(None)), False)}
DEVICE_FIELDS = {"label": (str, True), "cpu": ((dict, type(None)), False), "versions": ((dict, type(None)), False),
                 "gpus": (list, False), "jetson": ((dict, type(None)), False), "warnings": (list, False)}
GPU_FIELDS = {"name": (str, True), "driver": ((str, type(None)), True)}
ROW_FIELDS = {"device": (str, True), "artifact": (str, True), "format": (str, True), "precision": (str, True),
              "backend": (str, True), "status": (str, True), "reason": (str, False), "identity": (str, False),
              "spec": (str, False), "size_mb": (OPT_NUM, False), "parity": ((dict, type(None)), False),
              "bench": ((dict, type(None)), False)}
PARITY_FIELDS = {key: (OPT_NUM, False) for key in ("top1", "top5", "top1_agreement", "max_abs", "cosine",
                                                    "min_cosine")}
BENCH_FIELDS = {"imgsz": ((int, type(None)), False), "batches": (list, True)}
ENTRY_FIELDS = {"batch": (int, True), "clock": (str, True), "copies": (str, True), "iterations": (int, True),
                **{key: (NUM, True) for key in ("min", "p50", "p90", "p99", "mean", "fps")}}
SKIPPED_FIELDS = {"step": (str, True), "reason": (str, True)}
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
    rows = merge_rows([row for report in reports for row in report["rows"]])
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "kind": "comparison",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "devices": list(devices.values()), "rows": rows,
            "skipped": [s for report in reports for s in report["skipped"]], "sources": sources or []}


def headline(row: dict) -> tuple[dict | None, dict | None]:
    """(latency entry at the smallest batch, entry with the best throughput): host clock, as a user sees it."""
    entries = [e for e in (row.get("bench") or {}).get("batches", []) if e.get("clock") == "host"]
    if not entries:
        return None, None
    return min(entries, key=lambda e: e["batch"]), max(entries, key=lambda e: e["fps"])


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _num(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _status(row: dict) -> str:
    if row["status"] in ("fail", "skipped", "error") and row.get("reason"):
        return f"{row['status']}: {row['reason']}"
    return row["status"]


def table_rows(report: dict) -> list[list[str]]:
    multi = len(report["devices"]) > 1
    lines = []
    for row in report["rows"]:
        parity = row.get("parity") or {}
        latency, best = headline(row)
        agreement = "—" if row["status"] == "reference" else _pct(parity.get("top1_agreement"))
        cells = [row["artifact"], row["format"], row["precision"], _status(row), _num(row.get("size_mb"), ".1f"),
                 _pct(parity.get("top1")), agreement, _num(parity.get("max_abs"), ".2e"),
                 _num(latency and latency["p50"], ".2f"), _num(latency and latency["p99"], ".2f"),
                 _num(best and best["fps"], ".1f")]
        lines.append(([row["device"]] if multi else []) + cells)
    return lines


def _md_table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(c.replace("|", "/") for c in line) + " |" for line in lines]
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
    return "; ".join(str(p) for p in parts)


def summary_table(report: dict) -> str:
    """The one table a person reads first (Markdown)."""
    header = (["Device"] if len(report["devices"]) > 1 else []) + list(COLUMNS)
    return _md_table(header, table_rows(report))


def markdown(report: dict, plots: dict[str, str] | None = None) -> str:
    multi = len(report["devices"]) > 1
    parts = [f"# eca-deploy {report['kind']} report", ""]
    for key in ("model", "data", "reference"):
        if report.get(key):
            value = report[key]
            parts.append(f"- **{key}**: " + (", ".join(f"{k} {v}" for k, v in value.items() if v is not None)
                                            if isinstance(value, dict) else str(value)))
    parts += [f"- **device**: {_device_line(d)}" for d in report["devices"]]
    parts += ["", summary_table(report), ""]
    batches = sorted({e["batch"] for r in report["rows"] for e in (r.get("bench") or {}).get("batches", [])})
    if batches:
        parts.append(f"p50/p99: latency per call at the smallest batch measured; FPS: images per second at the "
                     f"best of batches {', '.join(map(str, batches))}; host clock, host<->device copies included. "
                     "Top-1 agreement: share of inputs whose top class matches the reference's.")
        parts += ["", "## Latency per batch", "", _md_table(
            (["Device"] if multi else []) + ["Artifact", "Backend", "Batch", "Clock", "Copies", "min ms", "p50 ms",
                                              "p90 ms", "p99 ms", "mean ms", "FPS", "Iterations"],
            [([r["device"]] if multi else []) + [r["artifact"], r["backend"], str(e["batch"]), e["clock"], e["copies"],
                                                 *(f"{e[k]:.2f}" for k in ("min", "p50", "p90", "p99", "mean")),
                                                 f"{e['fps']:.1f}", str(e["iterations"])]
             for r in report["rows"] for e in (r.get("bench") or {}).get("batches", [])]), ""]
    if report["skipped"]:
        parts += ["## Skipped", ""] + [f"- {s['step']}: {s['reason']}" for s in report["skipped"]] + [""]
    warnings = [w for d in report["devices"] for w in d.get("warnings", [])]
    if warnings:
        parts += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    if plots:
        parts += ["## Plots", ""] + [f"![{name}]({path})" for name, path in plots.items()] + [""]
    return "\n".join(parts)


def _series_label(row: dict, multi: bool) -> str:
    label = f"{row['format']} {row['precision']} ({row['backend']})"
    return f"{row['device']}: {label}" if multi else label


def plot_latency(report: dict, path: Path) -> bool:
    """Grouped bars: p50 latency per batch size, one bar per artifact, whiskers up to p99."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    multi = len(report["devices"]) > 1
    series = [(_series_label(r, multi), {e["batch"]: e for e in r["bench"]["batches"] if e["clock"] == "host"})
              for r in report["rows"] if r.get("bench")]
    series = [(label, entries) for label, entries in series if entries]
    if not series:
        return False
    batches = sorted({b for _, entries in series for b in entries})
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(batches) + 0.4 * len(series)), 4.5))
    for i, (label, entries) in enumerate(series):
        xs = [j + i * width for j, b in enumerate(batches) if b in entries]
        p50 = [entries[b]["p50"] for b in batches if b in entries]
        p99 = [entries[b]["p99"] - entries[b]["p50"] for b in batches if b in entries]
        ax.bar(xs, p50, width, label=label, yerr=[[0] * len(p99), p99], capsize=3)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(batches))], [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("latency per call, ms (bar p50, whisker p99)")
    ax.set_title("Latency per precision and batch")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return True


def plot_accuracy(report: dict, path: Path) -> bool:
    """Top-1 accuracy per artifact where labels exist, else top-1 agreement with the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    multi = len(report["devices"]) > 1
    rows = [r for r in report["rows"] if r.get("parity")]
    labeled = any(r["parity"].get("top1") is not None for r in rows)
    key, name = ("top1", "top-1 accuracy") if labeled else ("top1_agreement", "top-1 agreement with the reference")
    bars = [(_series_label(r, multi), 100 * r["parity"][key], r["status"]) for r in rows
            if r["parity"].get(key) is not None]
    if not bars:
        return False
    colors = {"fail": "tab:red", "reference": "tab:gray"}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(bars)), 4.5))
    ax.bar(range(len(bars)), [v for _, v, _ in bars], color=[colors.get(s, "tab:blue") for _, _, s in bars])
    for i, (_, value, _) in enumerate(bars):
        ax.text(i, value, f"{value:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=20, ha="right", fontsize=7)
    low = min(v for _, v, _ in bars)
    ax.set_ylim(max(0.0, low - 10), 101)
    ax.set_ylabel(f"{name}, %")
    ax.set_title("Accuracy per precision (red: failed parity)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return True


def write_report(report: dict, out_dir: str | os.PathLike, stem: str = "report", plots: bool = True) -> dict:
    """Write <stem>.json, <stem>.md and the plots; returns {name: path}."""
    validate_report(report)
    out = ensure_output_dir(out_dir)
    written: dict[str, Path] = {"json": write_json(out / f"{stem}.json", report)}
    images = {}
    if plots:
        for name, plot in (("latency", plot_latency), ("accuracy", plot_accuracy)):
            target = out / f"{stem}_{name}.png"
            if plot(report, target):
                written[name], images[name] = target, target.name
    written["markdown"] = atomic_write(out / f"{stem}.md", markdown(report, images))
    return written
