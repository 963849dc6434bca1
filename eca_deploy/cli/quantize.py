"""``eca-deploy quantize``: FP32 ONNX -> FP16 ONNX, or INT8 ONNX with explicit Q/DQ calibrated on real images."""

from __future__ import annotations

import argparse
import sys

NAME = "quantize"
HELP = ("write an FP16 ONNX (FP32 inputs/outputs) or an INT8 ONNX with explicit Q/DQ calibrated on real images, "
        "checked against the FP32 model first")


def count(text: str) -> int | None:
    """An image count, or 'all' (argparse names this function in its error message)."""
    return None if text == "all" else int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..calibration.calibrators import DEFAULT_PERCENTILE, METHODS
    from ..calibration.placement import QDQ_LAYOUTS, TARGETS
    from ..calibration.quantize import HIGH_PRECISIONS
    from ..precisions import LOW_PRECISIONS

    parser.add_argument("--onnx", required=True, default=argparse.SUPPRESS, help="the FP32 model from `eca-deploy export`")
    parser.add_argument("--precision", choices=LOW_PRECISIONS, default="int8",
                        help="fp16: FP16 weights and math with FP32 inputs/outputs; int8: explicit Q/DQ")
    parser.add_argument("--calib-data", default=argparse.SUPPRESS,
                        help="calibration images: a folder (recursive; jpg/png/bmp/webp), an ImageFolder root "
                             "(one subfolder per class gives labels), a text file of `path label` lines, or a .npy "
                             "of preprocessed float32 NCHW tensors. Required for int8; for fp16 they are the check "
                             "images (default: seeded random inputs)")
    parser.add_argument("--target", choices=TARGETS, default="tensorrt",
                        help="tensorrt: symmetric int8, Q/DQ where TensorRT fuses them; cpu: u8 activations + s8 "
                             "weights, what onnxruntime on x86 runs fastest")
    parser.add_argument("--high-precision", choices=HIGH_PRECISIONS, default=argparse.SUPPRESS,
                        help="int8 --target tensorrt: dtype of the layers left unquantized (ECA path, residual "
                             "Adds, conv outputs feeding them), with FP32 network inputs/outputs either way "
                             "(default fp16, as NVIDIA Model Optimizer's high_precision_dtype; fp16 writes opset 19)")
    parser.add_argument("--qdq-layout", choices=QDQ_LAYOUTS, default="eca-deploy",
                        help="int8 --target tensorrt: where Q/DQ goes: eca-deploy's placement, or NVIDIA Model "
                             "Optimizer's (also the ECA pool and gating Mul, both inputs of identity-block Adds, "
                             "MaxPool and the final pool; classifier left float); build both and let `bench` decide")
    parser.add_argument("--calib-method", choices=METHODS, default="entropy",
                        help="how activation ranges are chosen: max |x|, KL-divergence threshold (TensorRT's "
                             "entropy calibration), or a percentile of |x|")
    parser.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE,
                        help="the percentile of |x| for --calib-method percentile")
    parser.add_argument("--calib-count", type=count, default=512,
                        help="calibration images drawn at random (with --seed) from --calib-data, or 'all'")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image subsets")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images per calibration batch (memory grows with it: one batch's activations)")
    parser.add_argument("--calib-cache", default=argparse.SUPPRESS,
                        help="JSON cache of calibration ranges keyed by model hash + data hash + method "
                             "(default: <model>.calib.json beside the output)")
    parser.add_argument("--no-calib-cache", dest="use_cache", action="store_false", default=argparse.SUPPRESS,
                        help="neither read nor write the calibration cache")
    parser.add_argument("--val-data", default=argparse.SUPPRESS,
                        help="held-out images (same forms as --calib-data) for the parity and accuracy figures "
                             "(default: a subset of the calibration images)")
    parser.add_argument("--check-count", type=count, default=128,
                        help="images used for the parity figures, or 'all'")
    parser.add_argument("--output", default=argparse.SUPPRESS,
                        help="output .onnx (default: beside the input, <name>.fp16.onnx, <name>.int8.onnx, "
                             "<name>.int8.cpu.onnx for --target cpu; --qdq-layout modelopt adds .modelopt and "
                             "--high-precision fp32 adds .fp32-glue)")


def _print_float_nodes(float_nodes: dict[str, list[str]]) -> None:
    shown = {op: names for op, names in float_nodes.items() if op not in {"Reshape", "Flatten", "Relu"}}
    if not shown:
        return
    print("  left in float: " + ", ".join(f"{len(names)} {op}" for op, names in sorted(shown.items())))
    for op, names in sorted(shown.items()):
        more = f" ... (+{len(names) - 3}, all in the manifest)" if len(names) > 3 else ""
        print(f"    {op}: {', '.join(names[:3])}{more}")


def run(args: argparse.Namespace) -> int:
    from ..calibration.quantize import QuantizeConfig, quantize

    # Options whose default is described in words are SUPPRESSed so --help does not add "(default: None)".
    cfg = QuantizeConfig(onnx=args.onnx, precision=args.precision, calib_data=getattr(args, "calib_data", None),
                         target=args.target, high_precision=getattr(args, "high_precision", None),
                         qdq_layout=args.qdq_layout, calib_method=args.calib_method, calib_count=args.calib_count,
                         seed=args.seed, calib_cache=getattr(args, "calib_cache", None),
                         use_cache=getattr(args, "use_cache", True), output=getattr(args, "output", None),
                         batch_size=args.batch_size, percentile=args.percentile,
                         val_data=getattr(args, "val_data", None), check_count=args.check_count)
    what = "FP16" if cfg.precision == "fp16" else f"INT8 for {cfg.target} ({cfg.calib_method} calibration)"
    if cfg.precision == "int8" and cfg.target == "tensorrt":
        from ..calibration.quantize import high_precision_of

        what += f", {cfg.qdq_layout} Q/DQ layout, {high_precision_of(cfg).upper()} glue"
    print(f"quantizing {cfg.onnx} to {what} ...", file=sys.stderr)
    result = quantize(cfg)
    print(f"wrote {result.path} ({result.path.stat().st_size / 2**20:.1f} MB) and {result.manifest_path.name}")
    if result.calibration is not None:
        cal = result.calibration
        origin = f"cached in {cal['cache']}" if cal["cached"] else f"from {cal['images']} images"
        print(f"  calibration: {cal['method']} ranges for {cal['tensors']} tensors, {origin}")
        if cal["skipped"]:
            first = cal["skipped"][0]
            print(f"  skipped {len(cal['skipped'])} unreadable files (first: {first['path']}: {first['reason']})")
    if result.qdq is not None:
        q = result.qdq
        bias = f", {q['bias_dq']} int32 bias DQ" if q["bias_dq"] else ", bias in float"
        print(f"  Q/DQ: {q['activation_qdq_pairs']} activation pairs, {q['weight_dq']} per-channel weight DQ{bias}")
        _print_float_nodes(q["float_nodes"])
    if result.fp16 is not None and (result.fp16["values_clamped"] or result.fp16["values_flushed_to_zero"]):
        print(f"  FP16: {result.fp16['values_clamped']} weights clamped to +-65504, "
              f"{result.fp16['values_flushed_to_zero']} flushed to zero")
    p = result.parity
    print(f"  vs FP32 on {result.check_data}: cosine {p['cosine']:.6f} (worst {p['min_cosine']:.6f}), "
          f"top-1 agreement {100 * p['top1_agreement']:.2f}%, max abs {p['max_abs']:.3g}")
    if result.accuracy is not None:
        a = result.accuracy
        print(f"  top-1 accuracy: FP32 {100 * a['fp32']:.2f}%, {result.precision.upper()} "
              f"{100 * a['candidate']:.2f}% on {a['images']} labeled images")
    print(f"  time: {result.timings['total']:.1f} s")
    return 0
