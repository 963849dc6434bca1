"""``eca-deploy bench``: latency percentiles and throughput of one model per batch size."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..precisions import PRECISION_NAMES
from ..runtime.registry import Artifact, spec_help
from . import args as shared

NAME = "bench"
HELP = "measure latency (min/p50/p90/p99/mean) and throughput of a model per batch size on this device"
GROUPS = (shared.TimingArgs(sizes="1"), shared.RuntimeArgs(),
          shared.SeedArgs("the random input batch"))
OUTPUT = shared.OutputArgs("output", "where to write the JSON result (default: bench-<name>.json beside the model)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help=f"the model to time: {spec_help()}")
    parser.add_argument("--imgsz", type=shared.image_size, default=None,
                        help="input size for torch:<model> (default: 224)")
    parser.add_argument("--precision", default=None, choices=PRECISION_NAMES,
                        help="label for the report (default: the manifest, else what the ONNX graph holds)")
    parser.add_argument("--concurrency", type=shared.batch_sizes, default=None, metavar="N[,N...]",
                        help="triton:// only: requests kept in flight at once, one level after another, as "
                             "perf_analyzer's concurrency range (default: 1)")
    shared.add_groups(parser, (*GROUPS, OUTPUT))


def default_output(artifact: Artifact) -> Path:
    """Beside the model's file, named apart from the result of another runtime on the same stem (an IR sits
    beside the ONNX it came from; openvino:<file.onnx> runs that very file)."""
    return artifact.folder / f"bench-{artifact.stem}.json"


def run(args: argparse.Namespace) -> int:
    from ..artifacts import check_outputs, ensure_output_dir, write_json
    from ..runtime.registry import parse_spec
    from ..runtime.harness.bench import BenchConfig, run_bench, timing_notes
    from ..runtime.harness.device import describe_device
    from ..runtime.harness.report import new_report

    cfg = BenchConfig(model=args.model, imgsz=args.imgsz, precision=args.precision, concurrency=args.concurrency,
                      **shared.fields(GROUPS, args))
    artifact = parse_spec(args.model)
    out = Path(args.output) if args.output else default_output(artifact)
    check_outputs([out], artifact.inputs)
    ensure_output_dir(out.parent)  # before the timing runs, not after
    result = run_bench(cfg)
    device = {**describe_device(args.threads), "power": result.power}
    report = new_report("bench", device, [result.row()], imgsz=result.imgsz)
    write_json(out, report)
    print(f"{result.artifact.label} on {result.backend}, {device['label']}, {result.imgsz}x{result.imgsz}")
    if result.server:
        model = result.server["model"]
        print(f"server: {result.server['name']} {result.server['version']}, model backend {model['backend']}, "
              f"max batch {model['max_batch_size']}, dynamic batching {'on' if model['dynamic_batching'] else 'off'}")
    levels = any("concurrency" in e for e in result.entries)
    # Clock and copies columns as wide as what they hold ("host", "none (host memory)" on a CPU).
    clock_w, copies_w = (max(len(name), *(len(e[name]) for e in result.entries)) + 2 for name in ("clock", "copies"))
    energy = any("power_w" in e for e in result.entries)
    print(f"{'batch':>5}" + (f"{'conc':>5}" if levels else "")
          + f"  {'clock':<{clock_w}}{'copies':<{copies_w}}{'min':>8}{'p50':>8}{'p90':>8}{'p99':>8}"
          f"{'mean':>8}{'FPS':>9}{'iters':>7}" + (f"{'W':>8}{'mJ/img':>9}{'FPS/W':>8}" if energy else ""))
    for e in result.entries:
        print(f"{e['batch']:>5}" + (f"{e['concurrency']:>5}" if levels else "")
              + f"  {e['clock']:<{clock_w}}{e['copies']:<{copies_w}}" + "".join(
            f"{e[k]:>8.2f}" for k in ("min", "p50", "p90", "p99", "mean")) + f"{e['fps']:>9.1f}{e['iterations']:>7}"
            + (f"{e.get('power_w', 0):>8.2f}{e.get('mj_per_image', 0):>9.1f}{e.get('fps_per_w', 0):>8.1f}"
               if energy else ""))
    print("latency in ms per call" + ("; conc = requests in flight at once" if levels else "")
          + "; FPS = images per second"
          + (f"; W = mean board power ({result.power['total']}), mJ/img = energy per image" if energy else ""))
    if "unavailable" in result.power:
        print(f"power: not measured: {result.power['unavailable']}")
    for note in timing_notes(result.entries):
        print(f"note: {note}", file=sys.stderr)
    for warning in device["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {out}")
    return 0
