"""``eca-deploy parity``: run the same inputs through a reference and candidates, judge each candidate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..precisions import PRECISION_NAMES

NAME = "parity"
HELP = "check exported / quantized models and engines against a PyTorch reference (accuracy and logits)"
TOLERANCE_FLAGS = {
    "atol": "absolute tolerance of the element check",
    "rtol": "relative tolerance of the element check (an element fails only when over atol AND rtol)",
    "max_top1_drop": "largest allowed top-1 accuracy drop, in percentage points (where labels exist)",
    "min_agreement": "smallest allowed top-1 agreement with the reference, 0..1 (used where the drop cannot be)",
}


def add_tolerance_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "tolerances", "defaults per precision: fp32 atol=rtol=1e-3 (a TensorRT fp32 engine, computed in TF32: "
                      "as fp16); fp16 atol=1e-1, rtol=5e-2; int8 top-1 drop <= 1 "
                      "point with labels, else top-1 agreement >= 0.9. Each flag takes VALUE (every precision), "
                      "PRECISION=VALUE, or PRECISION=off; repeat it for several precisions")
    for name, text in TOLERANCE_FLAGS.items():
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, action="append", default=[], metavar="[P=]X",
                           help=text)


def tolerance_overrides(args: argparse.Namespace) -> dict:
    from ..runtime.harness.parity import parse_override

    overrides: dict[str, dict] = {}
    for name in TOLERANCE_FLAGS:
        for text in getattr(args, name):
            precision, value = parse_override(text)
            overrides.setdefault(name, {})[precision] = value
    return overrides


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda", "tensorrt"],
                        help="onnxruntime execution provider for .onnx files (auto: cuda where installed, else cpu)")
    parser.add_argument("--device", default="auto",
                        help="torch device for torch:<model>: auto (cuda where available), cpu, cuda, cuda:1")
    parser.add_argument("--threads", type=int, default=None,
                        help="inference threads: onnxruntime's intra-op pool, and torch's while the reference "
                             "runs (default: onnxruntime one per physical core, torch its own default)")


def add_host_code_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-host-code", action="store_true",
                        help="let TensorRT run host code stored in an engine (the lean runtime of a "
                             "--versionCompatible plan, e.g. one trtexec built): only for engines you trust; never "
                             "switched on by a manifest, which is as untrusted as the engine beside it")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", required=True, metavar="SPEC",
                        help="the reference: torch:<model>:<weights> (or a .onnx / engine), or a .npz saved "
                             "with --save-reference on another machine (then no PyTorch is needed here, and "
                             "--data/--count/--seed must select the data it saw)")
    parser.add_argument("--candidate", dest="candidates", action="append", default=[], metavar="FILE",
                        help="a .onnx file or TensorRT .engine/.plan to check; repeat for several")
    parser.add_argument("--save-reference", default=None, metavar="FILE.npz",
                        help="also write the reference's outputs and what identifies them (model and weights "
                             "hashes, data hash, image size, count, seed) to FILE.npz, for judging candidates "
                             "on another machine with --reference FILE.npz; candidates are then optional")
    parser.add_argument("--data", default=None,
                        help="images to compare on: an ImageFolder root (class folders give labels and "
                             "top-1/top-5 accuracy), an image folder, a `path label` list or a .npy "
                             "(default: seeded synthetic inputs, no labels)")
    parser.add_argument("--count", type=int, default=None,
                        help="use this many images, picked with --seed (default: all; synthetic: 32)")
    parser.add_argument("--imgsz", type=int, default=None,
                        help="input size (default: the candidates' input size, else 224)")
    parser.add_argument("--batch", type=int, default=16, help="batch size for inference")
    parser.add_argument("--seed", type=int, default=0, help="seed for the image subset and synthetic inputs")
    parser.add_argument("--no-labels", dest="use_labels", action="store_false",
                        # %(default).0s prints nothing: it keeps the formatter from adding "(default: True)"
                        help="ignore the data's labels (judge INT8 by agreement instead of accuracy drop)"
                             "%(default).0s")
    parser.add_argument("--precision", default=None, choices=PRECISION_NAMES,
                        help="precision of every candidate, for the tolerances (default: each candidate's "
                             "manifest, else what its ONNX graph holds)")
    add_tolerance_arguments(parser)
    add_runtime_arguments(parser)
    add_host_code_argument(parser)
    parser.add_argument("--out", default=None,
                        help="where to write the JSON result (default: parity.json beside the first candidate)")


def run(args: argparse.Namespace) -> int:
    from ..artifacts import ensure_not_input, write_json
    from ..errors import EcaDeployError
    from ..runtime.harness.device import describe_device
    from ..runtime.harness.parity import ParityConfig, raise_on_failure, run_parity
    from ..runtime.harness.report import new_report, summary_table

    cfg = ParityConfig(reference=args.reference, candidates=args.candidates, data=args.data, count=args.count,
                       imgsz=args.imgsz, batch=args.batch, seed=args.seed, use_labels=args.use_labels,
                       precision=args.precision, overrides=tolerance_overrides(args), provider=args.provider,
                       device=args.device, threads=args.threads, allow_host_code=args.allow_host_code,
                       save_reference=args.save_reference)
    first = args.candidates[0] if args.candidates else args.save_reference
    out = Path(args.out) if args.out else Path(first).parent / "parity.json"
    ensure_not_input(out, [args.reference, *args.candidates, args.data])
    if args.save_reference:
        if not args.save_reference.lower().endswith(".npz"):
            raise EcaDeployError(f"--save-reference must end in .npz, got {args.save_reference}")
        ensure_not_input(args.save_reference, [args.reference, *args.candidates, args.data, out])
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
    print(f"wrote {out}" + (f" and {args.save_reference}" if args.save_reference else ""))
    raise_on_failure(comparison)
    if comparison.candidates:
        print(f"all {len(comparison.candidates)} candidates passed")
    return 0
