"""``eca-deploy inspect``: what is in an ONNX file, and whether its ECA blocks have the plain shape."""

from __future__ import annotations

import argparse

NAME = "inspect"
HELP = ("show an ONNX model's precision and layout (fp32 / fp16 / int8 tensorrt / int8 cpu), op histogram, "
        "inputs/outputs and every ECA block found, judged for that layout")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("onnx", help="path of the .onnx file to inspect")


def weights_line(model, path: str) -> str | None:
    """Which CPUs an INT8 file's weights assume: 7-bit ones are exact on any x86 CPU, 8-bit ones need VNNI;
    with what its manifest (if any) says quantize was told."""
    from ..artifacts import read_manifest
    from ..graph.cpu import int8_weight_max, weight_bits

    bits = weight_bits(model)
    if bits is None:
        return None
    recorded = ((read_manifest(path) or {}).get("quantization") or {}).get("cpu_vnni")
    said = {True: " (quantized with --cpu-vnni)", False: " (quantized without --cpu-vnni)"}.get(recorded, "")
    if bits == 7:
        return (f"INT8 weights: 7-bit (|q| <= {int8_weight_max(model)}), VNNI not assumed: exact in onnxruntime and "
                f"OpenVINO on any x86 CPU{said}")
    return (f"INT8 weights: 8-bit (|q| up to {int8_weight_max(model)}), VNNI assumed{said}: for TensorRT or x86 CPUs "
            "with VNNI/AMX; onnxruntime and OpenVINO saturate them on x86 CPUs without VNNI")


def run(args: argparse.Namespace) -> int:
    from ..graph.graph import load_onnx, summarize
    from ..graph.input_format import read_input_format

    model = load_onnx(args.onnx)
    summary = summarize(model)
    print(f"{args.onnx}: opset {summary.opset}, {sum(summary.ops.values())} nodes, {summary.layout}")
    weights = weights_line(model, args.onnx)
    if weights:
        print(weights)
    for label, items in (("input", summary.inputs), ("output", summary.outputs)):
        for name, dims in items:
            print(f"  {label} {name} {dims}")
    print(f"  input format: {read_input_format(model)} (ONNX metadata)")
    print("ops: " + ", ".join(f"{op} {n}" for op, n in summary.ops.most_common()))
    print(f"ECA blocks: {len(summary.eca_blocks)}")
    for i, b in enumerate(summary.eca_blocks):
        through = f" (Q/DQ at {', '.join(b.crossings)}, as {summary.layout} places them)" if b.crossings else ""
        status = f"plain{through}" if b.plain else f"NOT plain: {b.problem}"
        print(f"  [{i:2d}] channels {b.channels if b.channels is not None else '?':>5}  k {b.k}  {status}")
    if summary.eca_blocks:
        verdict = "every ECA block has the plain shape" if summary.all_plain else "some ECA blocks are not plain"
        print(f"verdict: {verdict} (pool -> reshape -> Conv1d -> reshape -> Sigmoid -> Mul), judged for "
              f"{summary.layout}")
    return 0
