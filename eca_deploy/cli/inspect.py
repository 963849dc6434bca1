"""``eca-deploy inspect``: what is in an ONNX file, and whether its ECA blocks have the plain shape."""

from __future__ import annotations

import argparse

NAME = "inspect"
HELP = "show an ONNX model's op histogram, inputs/outputs and every ECA block found"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("onnx", help="path of the .onnx file to inspect")


def run(args: argparse.Namespace) -> int:
    from ..graph.graph import load_onnx, summarize

    summary = summarize(load_onnx(args.onnx))
    print(f"{args.onnx}: opset {summary.opset}, {sum(summary.ops.values())} nodes")
    for label, items in (("input", summary.inputs), ("output", summary.outputs)):
        for name, dims in items:
            print(f"  {label} {name} {dims}")
    print("ops: " + ", ".join(f"{op} {n}" for op, n in summary.ops.most_common()))
    print(f"ECA blocks: {len(summary.eca_blocks)}")
    for i, b in enumerate(summary.eca_blocks):
        status = "plain" if b.plain else f"NOT plain: {b.problem}"
        print(f"  [{i:2d}] channels {b.channels if b.channels is not None else '?':>5}  k {b.k}  {status}")
    if summary.eca_blocks:
        verdict = "every ECA block has the plain shape" if summary.all_plain else "some ECA blocks are not plain"
        print(f"verdict: {verdict} (pool -> reshape -> Conv1d -> reshape -> Sigmoid -> Mul)")
    return 0
