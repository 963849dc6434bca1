"""``eca-deploy parity``: run the same inputs through a reference and candidates, judge each candidate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..precisions import PRECISION_NAMES
from ..runtime.registry import spec_help
from . import args as shared

NAME = "parity"
HELP = "check exported / quantized models and engines against a PyTorch reference (accuracy and logits)"
GROUPS = (
    shared.DataArgs("images to compare on: an ImageFolder root (class folders give labels and top-1/top-5 "
                    "accuracy), an image folder, a `path label` list or a .npy (default: seeded synthetic inputs, "
                    "no labels)"),
    shared.SeedArgs("the image subset and synthetic inputs"),
    shared.ToleranceArgs(),
    shared.RuntimeArgs(),
)
# The JSON result is the command's, not the stage's: the output stays out of ParityConfig.
OUTPUT = shared.OutputArgs("output", "where to write the JSON result (default: parity.json beside the first candidate)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", required=True, metavar="SPEC",
                        help="the reference: torch:<model>:<weights> (or a .onnx / engine), or a .npz saved "
                             "with --save-reference on another machine (then no PyTorch is needed here, and "
                             "--data/--count/--seed must select the data it saw)")
    parser.add_argument("--candidate", dest="candidates", action="append", default=[], metavar="FILE",
                        help=f"a model to check: {spec_help()}; repeat for several")
    parser.add_argument("--save-reference", default=None, metavar="FILE.npz",
                        help="also write the reference's outputs and what identifies them (model and weights "
                             "hashes, data hash, image size, count, seed) to FILE.npz, for judging candidates "
                             "on another machine with --reference FILE.npz; candidates are then optional")
    parser.add_argument("--imgsz", type=shared.image_size, default=None,
                        help="input size (default: the candidates' input size, else 224)")
    parser.add_argument("--batch-size", dest="batch_size", type=shared.positive_int, default=16, metavar="N",
                        help="images per inference batch")
    shared.deprecated(parser, "--batch", "--batch-size", "batch_size", shared.positive_int)
    parser.add_argument("--precision", default=None, choices=PRECISION_NAMES,
                        help="precision of every candidate, for the tolerances (default: each candidate's "
                             "manifest, else what its ONNX graph holds)")
    shared.add_groups(parser, (*GROUPS, OUTPUT))


def _print_limits(comparison) -> None:
    """Where each FP32 limit came from, and what an INT8 budget cannot resolve on this many images."""
    from ..errors import warn

    for candidate in comparison.candidates:
        for check in candidate.verdict.checks:
            if "limit_from" in check:
                print(f"{candidate.artifact.label}: FP32 {check['check']} {check['value']:.3g}, limit "
                      f"{check['limit']:.3g} = {check['limit_from']}")
        for note in candidate.verdict.notes:
            warn(note)


def run(args: argparse.Namespace) -> int:
    from ..artifacts import check_outputs, ensure_output_dir, write_json
    from ..data.sources import source_files
    from ..errors import EcaDeployError
    from ..runtime.registry import parse_spec
    from ..runtime.harness.parity import SAVED_REFERENCE_SUFFIX
    from ..runtime.harness.device import describe_device
    from ..runtime.harness.parity import ParityConfig, raise_on_failure, run_parity
    from ..runtime.harness.report import new_report, summary_table

    cfg = ParityConfig(reference=args.reference, candidates=args.candidates, imgsz=args.imgsz,
                       batch_size=args.batch_size, precision=args.precision, save_reference=args.save_reference,
                       **shared.fields(GROUPS, args))
    # beside the first candidate's file (its spec may carry a prefix: openvino:<file.onnx>), else the saved reference
    folder = parse_spec(args.candidates[0]).folder if args.candidates else Path(args.save_reference).parent
    out = Path(args.output) if args.output else folder / "parity.json"
    if args.save_reference and not args.save_reference.lower().endswith(".npz"):
        raise EcaDeployError(f"--save-reference must end in .npz, got {args.save_reference}")
    saved = args.reference.lower().endswith(SAVED_REFERENCE_SUFFIX)  # a file of logits, not a model
    specs = args.candidates if saved else (args.reference, *args.candidates)
    check_outputs([out, args.save_reference],
                  [*([args.reference] if saved else []), *(f for spec in specs for f in parse_spec(spec).inputs),
                   *source_files(args.data)])
    ensure_output_dir(out.parent)  # before minutes of inference, not after
    comparison = run_parity(cfg)
    device = describe_device(args.threads)
    data = comparison.reference.data
    report = new_report("parity", device, comparison.rows(), data=data, reference=args.reference,
                        imgsz=comparison.imgsz)
    write_json(out, report)
    print(f"{data['samples']} inputs from {data['source']} at "
          f"{comparison.imgsz}x{comparison.imgsz}" + (", labeled" if data["labeled"] else ""))
    print(summary_table(report))
    for warning in device["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    _print_limits(comparison)
    print(f"wrote {out}" + (f" and {args.save_reference}" if args.save_reference else ""))
    raise_on_failure(comparison)
    count = len(comparison.candidates)
    if count:
        print("the candidate passed" if count == 1 else f"all {count} candidates passed")
    return 0
