"""Where a benchmark writes: runs/benchmarks/ by default, so a trial run never replaces the committed numbers in
benchmarks/results/ that docs/performance.md quotes; --update-results writes those (an explicit --out wins over both)."""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "benchmarks" / "results"
SCRATCH = ROOT / "runs" / "benchmarks"


def add_output_args(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--out", default=None,
                        help=f"result JSON (default: runs/benchmarks/{name}; benchmarks/results/{name} with "
                             "--update-results)")
    parser.add_argument("--update-results", action="store_true",
                        help="write into benchmarks/results/, the committed numbers docs/performance.md quotes")


def results_dir(args: argparse.Namespace) -> Path:
    return COMMITTED if args.update_results else SCRATCH


def out_path(args: argparse.Namespace, name: str) -> Path:
    return Path(args.out) if args.out else results_dir(args) / name
