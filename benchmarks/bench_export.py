"""Export wall time and the ECA overhead on onnxruntime CPU (issue 2).

    python benchmarks/bench_export.py            # prints a table, writes runs/benchmarks/export.json
    python benchmarks/bench_export.py --update-results  # into benchmarks/results/, what docs/performance.md quotes

1. Wall time of the `eca-deploy export --model eca_resnet50` process (median of --runs), and of each
   stage measured in-process.
2. ECA overhead = latency(eca_resnet50) / latency(resnet50) on onnxruntime CPU at batch 1 and 8, with
   the naive export of the official ECA forward (squeeze/transpose/expand_as) alongside for reference.
   Models are timed in interleaved rounds and medians taken, so machine noise hits all of them alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from interleave import interleaved_latency
from output import add_output_args, out_path



def export_wall_times(runs: int, workdir: Path) -> list[float]:
    times = []
    for i in range(runs):
        start = time.perf_counter()
        subprocess.run(["eca-deploy", "export", "--model", "eca_resnet50", "--output", str(workdir / f"cli{i}")],
                       check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def build_models(workdir: Path, imgsz: int) -> dict[str, Path]:
    from eca_deploy.export.onnx_export import ExportConfig, export_model, to_onnx
    from eca_deploy.export.simplify import simplify
    from eca_deploy.models import load_model
    from eca_deploy.testing.official import use_official_eca

    paths = {}
    for name in ("resnet50", "eca_resnet50"):
        paths[name] = export_model(ExportConfig(model=name, out_dir=str(workdir / name), imgsz=imgsz)).onnx_path
    naive = load_model("eca_resnet50")
    use_official_eca(naive.model)
    paths["eca_resnet50 (naive export)"] = workdir / "naive.onnx"
    paths["eca_resnet50 (naive export)"].write_bytes(simplify(to_onnx(naive, 17, None, imgsz)).SerializeToString())
    return paths


def main() -> int:
    from eca_deploy.artifacts import write_json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="export processes to time")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds per batch size")
    parser.add_argument("--iters", type=int, default=5, help="timed runs per model per round")
    parser.add_argument("--imgsz", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime intra-op threads (default: onnxruntime's choice, one per core)")
    add_output_args(parser, "export.json")
    args = parser.parse_args()
    args.out = out_path(args, "export.json")

    from eca_deploy.export.onnx_export import ExportConfig, export_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        walls = export_wall_times(args.runs, work)
        stages = export_model(ExportConfig(model="eca_resnet50", out_dir=str(work / "stages"))).timings
        paths = build_models(work, args.imgsz)
        latency = {b: interleaved_latency(paths, b, args.imgsz, args.rounds, args.iters, args.threads)
                   for b in (1, 8)}

    import onnxruntime

    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_average_at_end": os.getloadavg(), "python": platform.python_version(),
                    "onnxruntime": onnxruntime.__version__},
        "export_process_seconds": {"median": statistics.median(walls), "runs": walls},
        "export_stage_seconds": stages,
        "latency_ms_median": {str(b): v for b, v in latency.items()},
        "eca_overhead": {str(b): v["eca_resnet50"] / v["resnet50"] for b, v in latency.items()},
        "naive_overhead": {str(b): v["eca_resnet50 (naive export)"] / v["resnet50"] for b, v in latency.items()},
        "settings": vars(args),
    }
    print(f"eca-deploy export --model eca_resnet50: {result['export_process_seconds']['median']:.2f} s "
          f"(median of {args.runs} processes)")
    print("stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()))
    print(f"\n{'model (onnxruntime CPU)':<30}{'batch 1 ms':>12}{'batch 8 ms':>12}{'ratio b1':>10}{'ratio b8':>10}")
    for name in latency[1]:
        r1, r8 = latency[1][name] / latency[1]["resnet50"], latency[8][name] / latency[8]["resnet50"]
        print(f"{name:<30}{latency[1][name]:>12.2f}{latency[8][name]:>12.2f}{r1:>10.3f}{r8:>10.3f}")
    write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
