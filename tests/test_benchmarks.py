"""The benchmark scripts write their results under runs/ unless asked to update the committed ones."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks").glob("bench_*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_a_benchmark_run_leaves_the_committed_results_alone_by_default(script):
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    text = " ".join(done.stdout.split())
    assert done.returncode == 0, done.stderr
    assert f"(default: runs/benchmarks/{script.stem[len('bench_'):]}.json;" in text and "--update-results" in text


def test_out_paths():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import output
    finally:
        sys.path.pop(0)
    import argparse

    parser = argparse.ArgumentParser()
    output.add_output_args(parser, "x.json")
    paths = [output.out_path(parser.parse_args(argv), "x.json") for argv in ([], ["--update-results"], ["--out", "y"])]
    assert paths == [ROOT / "runs" / "benchmarks" / "x.json", ROOT / "benchmarks" / "results" / "x.json", Path("y")]


def test_runs_and_artifacts_are_not_committed_by_accident():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(["git", "check-ignore", "runs/r50/m.onnx", "artifacts/eca_resnet50/m.onnx"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.stdout.split() == ["runs/r50/m.onnx", "artifacts/eca_resnet50/m.onnx"]
