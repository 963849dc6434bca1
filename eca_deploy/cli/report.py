"""``eca-deploy report``: merge parity / bench / pipeline results, from one or many devices, into one report."""

from __future__ import annotations

import argparse

from . import args as shared

NAME = "report"
HELP = "merge result JSON files (parity, bench, pipeline; any devices) into one Markdown table, JSON and plots"
OUTPUT = shared.OutputArgs("output", "output folder for report.md, report.json and the plots", default="report")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULT.json",
                        help="JSON results written by parity, bench or pipeline (or an earlier report)")
    OUTPUT.add(parser)
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..artifacts import ensure_not_input
    from ..runtime.harness.report import combine, load_report, summary_table, write_report

    reports = [load_report(path) for path in args.results]
    out = Path(args.output)
    for name in ("report.json", "report.md"):
        ensure_not_input(out / name, args.results)
    merged = combine(reports, sources=[str(p) for p in args.results])
    written = write_report(merged, out, plots=args.plots)
    devices = ", ".join(d["label"] for d in merged["devices"])
    print(f"{len(merged['rows'])} rows from {len(reports)} files, devices: {devices}")
    print(summary_table(merged))
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0
