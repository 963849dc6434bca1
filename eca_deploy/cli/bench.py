"""``eca-deploy bench``: latency percentiles and throughput of one model per batch size."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import EcaDeployError
from ..precisions import PRECISION_NAMES
from .parity import add_host_code_argument, add_runtime_arguments

NAME = "bench"
HELP = "measure latency (min/p50/p90/p99/mean) and throughput of a model per batch size on this device"


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise EcaDeployError(f"--batch takes comma-separated integers like 1,8,32, got '{text}'") from None
    if not batches or min(batches) < 1:
        raise EcaDeployError(f"--batch takes positive integers like 1,8,32, got '{text}'")
    return tuple(dict.fromkeys(batches))


def add_timing_arguments(parser: argparse.ArgumentParser, duration: float) -> None:
    parser.add_argument("--batch", default="1", help="batch sizes, comma-separated, e.g. 1,8,32")
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations before each batch size")
    parser.add_argument("--iterations", type=int, default=None,
                        help="timed iterations per batch size (default: run for --duration seconds)")
    parser.add_argument("--duration", type=float, default=duration,
                        help="seconds of timed iterations per batch size when --iterations is not given")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="a .onnx file, a TensorRT .engine/.plan, or torch:<model>[:weights]")
    add_timing_arguments(parser, duration=3.0)
    parser.add_argument("--imgsz", type=int, default=None, help="input size for torch:<model> (default 224)")
    parser.add_argument("--precision", default=None, choices=PRECISION_NAMES,
                        help="label for the report (default: the manifest, else what the ONNX graph holds)")
    add_runtime_arguments(parser)
    add_host_code_argument(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random input batch")
    parser.add_argument("--out", default=None,
                        help="where to write the JSON result (default: bench-<name>.json beside the model)")


def default_output(model: str) -> Path:
    if model.startswith("torch:"):
        return Path(f"bench-{model.split(':')[1]}.json")
    path = Path(model)
    return path.parent / f"bench-{path.stem}.json"


def run(args: argparse.Namespace) -> int:
    from ..artifacts import ensure_not_input, write_json
    from ..runtime.harness.bench import BenchConfig, run_bench
    from ..runtime.harness.device import describe_device
    from ..runtime.harness.report import new_report

    cfg = BenchConfig(model=args.model, batches=parse_batches(args.batch), warmup=args.warmup,
                      iterations=args.iterations, duration=args.duration, provider=args.provider,
                      device=args.device, threads=args.threads, allow_host_code=args.allow_host_code,
                      imgsz=args.imgsz, precision=args.precision,
                      seed=args.seed)
    out = Path(args.out) if args.out else default_output(args.model)
    ensure_not_input(out, [args.model])
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
