"""The report's PNG plots (matplotlib, imported only to draw): latency per batch, accuracy, energy. Each plot
summarises: one series per (device, format, precision, backend), the median run of each, bounded in size."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import median_low

from ...artifacts import atomic_path

# Plots summarise: one series per (device, format, precision, backend), at most this many, at most MAX_BATCHES
# batch sizes.
MAX_SERIES = 16
MAX_BATCHES = 8


def precision_label(row: dict) -> str:
    """Precision and, for INT8, its layout: 'int8 tensorrt' and 'int8 cpu' are different files and numbers."""
    return f"{row['precision']} {row['layout']}" if row.get("layout") else row["precision"]


def _series_label(row: dict, multi: bool) -> str:
    label = f"{row['format']} {precision_label(row)} ({row['backend']})"
    return f"{row['device']}: {label}" if multi else label


def _group(rows: list[dict], multi: bool) -> dict[str, list[dict]]:
    """Rows by series label: a plot shows one summary per (device, format, precision, backend), never one per row."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[_series_label(row, multi)].append(row)
    return groups


def _named(label: str, rows: int) -> str:
    """A series of several runs is summarised by median_low: a value one of the runs measured, never the mean of two."""
    return label if rows == 1 else f"{label}, median of {rows}"


RUNS_OF = {"pass": "passed runs", "fail": "failed runs", "reference": "as the reference"}


def _verdict(status: str) -> str:
    return "fail" if status in ("fail", "error") else ("reference" if status == "reference" else "pass")


def _left_out(what: str, shown: int, total: int, rule: str) -> str | None:
    return None if shown >= total else f"{what}: {shown} of {total} {rule}; the tables list them all"


def latency_series(report: dict) -> tuple[list[tuple[str, dict[int, tuple[float, float]]]], list[int], list[str]]:
    """([(label, {batch: (median p50, median p99)})], batches, notes on what was left out), bounded in size.

    At most MAX_SERIES series (the fastest at the smallest batch) and MAX_BATCHES batch sizes (the smallest).
    """
    multi = len(report["devices"]) > 1
    per_label: dict[str, dict[int, list[tuple[float, float]]]] = {}
    counts: dict[str, int] = {}
    for label, rows in _group([r for r in report["rows"] if r.get("bench")], multi).items():
        entries: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for row in rows:
            for e in row["bench"]["batches"]:
                if e["clock"] == "host":
                    entries[e["batch"]].append((e["p50"], e["p99"]))
        if entries:
            per_label[label], counts[label] = entries, len(rows)
    all_batches = sorted({b for entries in per_label.values() for b in entries})
    batches = all_batches[:MAX_BATCHES]
    series = []
    for label, entries in per_label.items():
        summary = {b: (median_low(p[0] for p in entries[b]), median_low(p[1] for p in entries[b])) for b in batches
                   if b in entries}
        if summary:
            series.append((_named(label, counts[label]), summary))
    total = len(series)
    series.sort(key=lambda s: next(iter(s[1].values()))[0])  # fastest first, at its smallest batch
    series = series[:MAX_SERIES]
    notes = [n for n in (_left_out("latency plot", len(series), total, "series shown, the fastest"),
                         _left_out("latency plot", len(batches), len(all_batches), "batch sizes shown, the smallest"))
             if n]
    return series, batches, notes


def accuracy_bars(report: dict) -> tuple[list[tuple[str, float, str]], str, list[str]]:
    """([(label, percent, status)], metric name, notes): top-1 accuracy where labels exist, else top-1 agreement
    with the reference; the median per series, at most MAX_SERIES (the lowest first); series that ended only
    in errors get an empty slot with status "error". Runs of one series that passed and failed are two bars
    ("passed runs", "failed runs"): one median over both would be a value no run produced."""
    multi = len(report["devices"]) > 1
    rows = [r for r in report["rows"] if r.get("parity")]
    labeled = any(r["parity"].get("top1") is not None for r in rows)
    key, name = ("top1", "top-1 accuracy") if labeled else ("top1_agreement", "top-1 agreement with the reference")
    bars = []
    measured = set()
    for label, group in _group([r for r in rows if r["parity"].get(key) is not None], multi).items():
        measured.add(label)
        by_verdict: dict[str, list[dict]] = defaultdict(list)
        for row in group:
            by_verdict[_verdict(row["status"])].append(row)
        for verdict, runs in by_verdict.items():
            name = label if len(by_verdict) == 1 else f"{label}, {RUNS_OF[verdict]}"
            bars.append((_named(name, len(runs)), 100 * median_low(r["parity"][key] for r in runs), verdict))
    errors = [(label, 0.0, "error") for label in _group([r for r in report["rows"] if r["status"] == "error"], multi)
              if label not in measured]
    total = len(bars) + len(errors)
    bars = (sorted(bars, key=lambda b: b[1]) + errors)[:MAX_SERIES] if total > MAX_SERIES else bars + errors
    notes = [n for n in (_left_out("accuracy plot", len(bars), total, "series shown, the lowest"),) if n]
    return bars, name, notes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


LEGEND_OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0}


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:  # bbox "tight": the image grows to hold a legend beside the axes
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def plot_latency(report: dict, path: Path) -> list[str] | None:
    """Grouped bars: p50 latency per batch size, one bar per series, whiskers up to p99.

    Returns the notes on what was left out ([] when nothing was), or None when there was nothing to plot.
    """
    series, batches, notes = latency_series(report)
    if not series:
        return None
    _grouped_bars(path, batches, [(label, {b: p50 for b, (p50, _) in entries.items()}) for label, entries in series],
                  "latency per call, ms (bar p50, whisker p99)", "Latency per precision and batch",
                  whiskers=[{b: max(p99 - p50, 0.0) for b, (p50, p99) in entries.items()} for _, entries in series])
    return notes


def _grouped_bars(path: Path, batches: list[int], series: list[tuple[str, dict[int, float]]], ylabel: str,
                  title: str, whiskers: list[dict[int, float]] | None = None) -> None:
    """One group of bars per batch size, one bar per series (with optional upward whiskers), saved to ``path``."""
    plt = _pyplot()
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(batches) + 0.4 * len(series)), 4.5))
    try:
        for i, (label, values) in enumerate(series):
            shown = [b for b in batches if b in values]
            up = [whiskers[i][b] for b in shown] if whiskers else None
            ax.bar([batches.index(b) + i * width for b in shown], [values[b] for b in shown], width, label=label,
                   **({"yerr": [[0] * len(up), up], "capsize": 3} if up else {}))
        ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(batches))], [str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=7, **LEGEND_OUTSIDE)  # beside the axes: inside, it hid a bar
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)


def plot_accuracy(report: dict, path: Path) -> list[str] | None:
    """Bars of :func:`accuracy_bars`, coloured by parity status, on an axis from 0 (as plot_latency returns)."""
    bars, name, notes = accuracy_bars(report)
    if not bars:
        return None
    plt = _pyplot()
    from matplotlib.patches import Patch

    colors = {"pass": "tab:blue", "fail": "tab:red", "reference": "tab:gray", "error": "white"}
    names = {"pass": "passed parity", "fail": "failed parity", "reference": "reference", "error": "error (no result)"}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(bars)), 4.5))
    try:
        ax.bar(range(len(bars)), [v for _, v, _ in bars], color=[colors.get(s, "tab:blue") for _, _, s in bars],
               edgecolor="black", linewidth=0.5)
        for i, (_, value, status) in enumerate(bars):
            ax.text(i, value + 1, "error" if status == "error" else f"{value:.1f}", ha="center", va="bottom",
                    fontsize=8)
        ax.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=20, ha="right", fontsize=7)
        ax.set_ylim(0, 112)  # from zero, with room above 100 for the value labels
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel(f"{name}, %")
        ax.set_title("Accuracy per precision and layout")
        shown = dict.fromkeys(status if status in colors else "pass" for _, _, status in bars)
        ax.legend(handles=[Patch(facecolor=colors[s], edgecolor="black", label=names[s]) for s in shown],
                  fontsize=7, **LEGEND_OUTSIDE)
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)
    return notes


def energy_series(report: dict) -> tuple[list[tuple[str, dict[int, float]]], list[int]]:
    """([(label, {batch: median FPS/W})], batches) of the host-clock entries that carry power, bounded as the
    latency plot is (MAX_SERIES series, the most efficient first; MAX_BATCHES batch sizes, the smallest)."""
    multi = len(report["devices"]) > 1
    series = []
    for label, rows in _group([r for r in report["rows"] if r.get("bench")], multi).items():
        values: dict[int, list[float]] = defaultdict(list)
        for row in rows:
            for e in row["bench"]["batches"]:
                if e["clock"] == "host" and e.get("fps_per_w") is not None:
                    values[e["batch"]].append(e["fps_per_w"])
        if values:
            series.append((_named(label, len(rows)), {b: median_low(v) for b, v in values.items()}))
    batches = sorted({b for _, values in series for b in values})[:MAX_BATCHES]
    series = [(label, {b: v for b, v in values.items() if b in batches}) for label, values in series]
    series.sort(key=lambda s: -max(s[1].values(), default=0))
    return series[:MAX_SERIES], batches


def plot_energy(report: dict, path: Path) -> list[str] | None:
    """Grouped bars: images per second per watt, per batch size and series (as plot_latency returns)."""
    series, batches = energy_series(report)
    if not series or not batches:
        return None
    _grouped_bars(path, batches, series, "images per second per watt (board power)",
                  "Energy efficiency per precision and batch")
    return []
