"""``eca-deploy bench``: latency percentiles and throughput of one model per batch size."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..precisions import PRECISION_NAMES
from . import args as shared

NAME = "bench"
HELP = "measure latency (min/p50/p90/p99/mean) and throughput of a model per batch size on this device"
GROUPS = (shared.TimingArgs(sizes="1"), shared.RuntimeArgs(), shared.HostCodeArgs(),
          shared.SeedArgs("the random input batch"))
OUTPUT = shared.OutputArgs("output", "where to write the JSON result (default: bench-<name>.json beside the model)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="a .onnx file, a TensorRT .engine/.plan, or torch:<model>[:weights]")
    parser.add_argument("--imgsz", type=shared.image_size, default=None,
                        help="input size for torch:<model> (default 224)")
    parser.add_argument("--precision", default=None, choices=PRECISION_NAMES,
                        help="label for the report (default: the manifest, else what the ONNX graph holds)")
    shared.add_groups(parser, (*GROUPS, OUTPUT))


def default_output(model: str) -> Path:
    if model.startswith("torch:"):
        return Path(f"bench-{model.split(':')[1]}.json")
    path = Path(model)
    return path.parent / f"bench-{path.stem}.json"


def run(args: argparse.Namespace) -> int:
    from ..artifacts import ensure_not_input, ensure_output_dir, write_json
    from ..runtime.harness.bench import BenchConfig, run_bench
    from ..runtime.harness.device import describe_device
    from ..runtime.harness.report import new_report

    cfg = BenchConfig(model=args.model, imgsz=args.imgsz, precision=args.precision, **shared.fields(GROUPS, args))
    out = Path(args.output) if args.output else default_output(args.model)
    ensure_not_input(out, [args.model])
    ensure_output_dir(out.parent)  # before the timing runs, not after
    result = run_bench(cfg)
    device = describe_device(args.threads)
    report = new_report("bench", device, [result.row()], imgsz=result.imgsz)
    write_json(out, report)
    print(f"{result.artifact.label} on {result.backend}, {device['label']}, {result.imgsz}x{result.imgsz}")
    print(f"{'batch':>5}  {'clock':<28}{'copies':<20}{'min':>8}{'p50':>8}{'p90':>8}{'p99':>8}{'mean':>8}"
          f"{'FPS':>9}{'iters':>7}")
    for e in result.entries:
        print(f"{e['batch']:>5}  {e['clock']:<28}{e['copies']:<20}" + "".join(
            f"{e[k]:>8.2f}" for k in ("min", "p50", "p90", "p99", "mean")) + f"{e['fps']:>9.1f}{e['iterations']:>7}")
    print("latency in ms per call; FPS = images per second")
    for warning in device["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {out}")
    return 0
