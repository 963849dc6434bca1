"""``eca-deploy quantize``: FP32 ONNX -> FP16 ONNX, or INT8 ONNX with explicit Q/DQ calibrated on real images."""

from __future__ import annotations

import argparse
import sys

from ..errors import plural
from . import args as shared

NAME = "quantize"
HELP = ("write an FP16 ONNX (FP32 inputs/outputs) or an INT8 ONNX with explicit Q/DQ calibrated on real images, "
        "checked against the FP32 model first")


def groups() -> tuple[shared.Group, ...]:
    from ..calibration.int8.calibrators import CALIB_METHODS

    return (
        shared.CalibrationArgs(
            CALIB_METHODS, method=CALIB_METHODS[0], count=512,
            data_help="calibration images: a folder (recursive; jpg/png/bmp/webp), an ImageFolder root (one "
                      "subfolder per class gives labels), a text file of `path label` lines, or a .npy of "
                      "preprocessed float32 NCHW tensors. Required for int8; for fp16 they are the check images "
                      "(default: seeded random inputs)",
            method_help="how activation ranges are chosen: auto builds a model with each of the others from one "
                        "histogram pass and keeps the one closest to FP32 on the check images (fewest flipped "
                        "top-1 answers, then worst-sample cosine, then mean cosine; it says when the choice is "
                        "within noise); or max |x|, KL-divergence threshold (TensorRT's entropy calibration), a "
                        "percentile of |x|",
            cache_help="JSON cache of calibration ranges keyed by model hash + data hash + method (default: "
                       "<model>.calib.json beside the output)"),
        shared.QdqArgs(),
        shared.SeedArgs("the image subsets"),
        shared.ToleranceArgs(),
        shared.OutputArgs("output", "output .onnx (default: beside the input, <name>.fp16.onnx, <name>.int8.onnx, "
                                    "<name>.int8.cpu.onnx for --target cpu; --qdq-layout modelopt adds "
                                    ".modelopt, --high-precision fp32 .fp32-glue)", old_out=False),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..calibration.int8.calibrators import DEFAULT_PERCENTILE
    from ..calibration.qdq.placement import TARGETS
    from ..precisions import LOW_PRECISIONS

    parser.add_argument("--onnx", required=True, help="the FP32 model from `eca-deploy export`")
    parser.add_argument("--precision", choices=LOW_PRECISIONS, default="int8",
                        help="fp16: FP16 weights and math with FP32 inputs/outputs; int8: explicit Q/DQ")
    parser.add_argument("--target", choices=TARGETS, default="tensorrt",
                        help="tensorrt: symmetric int8, Q/DQ where TensorRT fuses them; cpu: u8 activations + s8 "
                             "weights, what onnxruntime on x86 runs fastest")
    parser.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE,
                        help="the percentile of |x| for --calib-method percentile")
    parser.add_argument("--batch-size", type=shared.positive_int, default=8, metavar="N",
                        help="images per calibration batch (memory grows with it: one batch's activations)")
    parser.add_argument("--no-calib-cache", dest="use_cache", action="store_false",
                        help="neither read nor write the calibration cache")
    parser.add_argument("--val-data", default=None,
                        help="held-out images (same forms as --calib-data) for the parity and accuracy figures "
                             "(default: a subset of the calibration images)")
    parser.add_argument("--check-count", type=shared.count, default=128, metavar="N|all",
                        help="check images for the parity figures, --calib-method auto, the sensitivity and "
                             "the budget (held out from calibration where possible: --val-data or the calibration "
                             "images --calib-count leaves), or 'all'")
    parser.add_argument("--max-float-layers", type=shared.positive_int, default=None, metavar="N",
                        help="with an INT8 budget (--max-top1-drop / --min-agreement, as for `parity`: the most "
                             "sensitive layers stay in float, fewest first, until it holds on the check images; "
                             "nothing is written if it cannot be met): give up (exit 1) rather than leave more than "
                             "N layers in float (default: no limit)")
    parser.add_argument("--sensitivity", action="store_true",
                        help="measure per-layer sensitivity without a budget (always measured with one): a ranked "
                             "table in the manifest and <output>.sensitivity.png")
    shared.add_groups(parser, groups())


def _print_float_nodes(float_nodes: dict[str, list[str]]) -> None:
    shown = {op: names for op, names in float_nodes.items() if op not in {"Reshape", "Flatten", "Relu"}}
    if not shown:
        return
    print("  left in float: " + ", ".join(f"{len(names)} {op}" for op, names in sorted(shown.items())))
    for op, names in sorted(shown.items()):
        more = f" ... (+{len(names) - 3}, all in the manifest)" if len(names) > 3 else ""
        print(f"    {op}: {', '.join(names[:3])}{more}")


def _print_skipped(skipped: list[dict]) -> None:
    if skipped:
        first = skipped[0]
        print(f"  skipped {plural(len(skipped), 'unreadable file')} (first: {first['path']}: {first['reason']})")


def _figures(row: dict) -> str:
    drop = f"{row['top1_drop']:.2f}" if row["top1_drop"] is not None else "-"
    return (f"{row['flips']:>6} {100 * row['top1_agreement']:>10.2f}% {drop:>10} {row['min_cosine']:>10.4f} "
            f"{row['cosine']:>10.4f}")


def _print_methods(selection: dict) -> None:
    print("  calibration methods, judged on the check images (top-1 drop: right-to-wrong flips):")
    print(f"    {'method':<12} {'flips':>6} {'agreement':>11} {'top-1 drop':>10} {'worst cos':>10} {'mean cos':>10}")
    for row in selection["candidates"]:
        mark = "*" if row["method"] == selection["chosen"] else " "
        print(f"  {mark} {row['method']:<12} {_figures(row)}")
    print(f"  chose {selection['chosen']}: {selection['reason']}")


def _print_sensitivity(sensitivity: dict, shown: int = 5) -> None:
    print(f"  per-layer sensitivity ({sensitivity['groups']} Q/DQ groups, {sensitivity['measure']}); most sensitive:")
    for row in sensitivity["ranked"][:shown]:
        print(f"    {row['rank']:>3}. {row['tensor']:<50} {row['sensitivity']:.3g}")
    if "plot" in sensitivity:
        print(f"  plot: {sensitivity['plot']}")


def _print_fallback(fallback: dict) -> None:
    floated = fallback["float_layers"]
    if not floated:
        print(f"  budget ({fallback['budget']['judged_by']}) met with every layer in INT8")
        return
    print(f"  budget ({fallback['budget']['judged_by']}) met with {len(floated)} layers left in float:")
    for layer in floated:
        print(f"    {layer['tensor']} (read by {', '.join(layer['nodes'])})")
    tried = ", ".join(f"{s['float_layers']} in float: {_budget_figure(s)}" for s in fallback["steps"])
    print(f"  tried: {tried}")


def _budget_figure(step: dict) -> str:
    drop = f", drop {step['top1_drop']:.2f}" if step["top1_drop"] is not None else ""
    return f"agreement {100 * step['top1_agreement']:.2f}%{drop}"


def _print_verdict(verdict: dict) -> None:
    """Parity's verdict on this file (the same function and defaults `eca-deploy parity` applies)."""
    checks = [c for c in verdict["checks"] if c["check"] != "non-finite outputs"]
    text = ", ".join(f"{c['check']} {c['value']:.4g} ({'>=' if 'agreement' in c['check'] else '<='} "
                     f"{c['limit']:g})" for c in checks)
    print(f"  parity's verdict on {verdict['data']}: {'pass' if verdict['passed'] else 'FAIL'}: {text}")


def run(args: argparse.Namespace) -> int:
    from ..calibration.quantize import QuantizeConfig, quantize
    from ..graph.compare import given_overrides
    from ..precisions import is_quantized

    fields = shared.fields(groups(), args)
    # the budget given for this precision (or every one); quantize applies it where the precision quantizes
    budget = given_overrides(fields["overrides"], args.precision, ("max_top1_drop", "min_agreement"))
    cfg = QuantizeConfig(onnx=args.onnx, precision=args.precision, target=args.target, use_cache=args.use_cache,
                         batch_size=args.batch_size, percentile=args.percentile, val_data=args.val_data,
                         check_count=args.check_count, max_float_layers=args.max_float_layers,
                         sensitivity=args.sensitivity, **budget, **fields)
    quantizes = is_quantized(cfg.precision)
    what = cfg.precision.upper() + (f" for {cfg.target} ({cfg.calib_method} calibration)" if quantizes else "")
    if quantizes and cfg.target == "cpu":
        what += ", 8-bit weights (--cpu-vnni)" if cfg.cpu_vnni else ", 7-bit weights (exact without VNNI)"
    fp16_glue = False
    if quantizes and cfg.target == "tensorrt":
        from ..calibration.fp16 import FP16_GLUE
        from ..calibration.quantize import high_precision_of

        what += f", {cfg.qdq_layout} Q/DQ layout, {high_precision_of(cfg).upper()} glue"
        fp16_glue = high_precision_of(cfg) == FP16_GLUE
    print(f"quantizing {cfg.onnx} to {what} ...", file=sys.stderr)
    result = quantize(cfg)
    print(f"wrote {result.path} ({result.path.stat().st_size / 2**20:.1f} MB) and {result.manifest_path.name}")
    if result.calibration is not None:
        cal = result.calibration
        origin = (f"from the histograms cached in {cal['cache']}" if cal.get("from_histograms")
                  else f"cached in {cal['cache']}" if cal["cached"]
                  else f"{cal['recomputed']} from {cal['images']} images, the others cached in {cal['cache']}"
                  if cal.get("recomputed") else f"from {cal['images']} images")
        print(f"  calibration: {cal['method']} ranges for {cal['tensors']} tensors, {origin}")
        _print_skipped(cal["skipped"])
    _print_skipped(result.skipped)
    if result.method_selection is not None:
        _print_methods(result.method_selection)
    if result.sensitivity is not None:
        _print_sensitivity(result.sensitivity)
    if result.fallback is not None:
        _print_fallback(result.fallback)
    if result.qdq is not None:
        q = result.qdq
        bias = f", {q['bias_dq']} int32 bias DQ" if q["bias_dq"] else ", bias in float"
        print(f"  Q/DQ: {q['activation_qdq_pairs']} activation pairs, {q['weight_dq']} per-channel weight DQ{bias}")
        _print_float_nodes(q["float_nodes"])
    fp16 = result.fp16
    if fp16 is not None and (fp16["values_clamped"] or fp16["values_flushed_to_zero"] or fp16["scales_raised"]):
        print(f"  FP16: {fp16['values_clamped']} weights clamped to +-65504, {fp16['values_flushed_to_zero']} "
              f"flushed to zero, {fp16['scales_raised']} Q/DQ scales raised to float16's smallest normal (6.1e-05)")
    p = result.parity
    print(f"  vs FP32 on {result.check_data}: cosine {p['cosine']:.6f} (worst {p['min_cosine']:.6f}), "
          f"top-1 agreement {100 * p['top1_agreement']:.2f}%, max abs {p['max_abs']:.3g}")
    if result.accuracy is not None:
        a = result.accuracy
        print(f"  top-1 accuracy: FP32 {100 * a['fp32']:.2f}%, {result.precision.upper()} "
              f"{100 * a['candidate']:.2f}% on {a['images']} labeled images")
    if result.runtime is not None:
        from ..calibration.search.evaluate import describe_runtime

        print("  judged on the model's math (onnxruntime without its Q/DQ fusion)")
        differs = describe_runtime(result.runtime, p["samples"])
        if differs:
            print(f"  {differs}")
    if result.verdict is not None:
        _print_verdict(result.verdict)
    if fp16_glue:
        from ..calibration.quantize import FP16_GLUE_NOTE

        print(f"  note: {FP16_GLUE_NOTE}")
    print(f"  time: {result.timings['total']:.1f} s")
    if result.verdict is not None and not result.verdict["passed"]:
        from ..errors import ParityError

        failures = "; ".join(f"{c['check']} {c['value']:.4g} (limit {c['limit']:.4g})"
                             for c in result.verdict["checks"] if not c["passed"])
        raise ParityError(f"{result.path.name} fails parity's INT8 verdict on {result.verdict['data']}: {failures}; "
                          "a budget (--max-top1-drop / --min-agreement) keeps the most sensitive layers in float "
                          "until it holds")
    return 0
