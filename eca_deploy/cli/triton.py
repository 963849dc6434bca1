"""``eca-deploy triton``: a Triton Inference Server model repository entry for each artifact."""

from __future__ import annotations

import argparse

from . import args as shared

NAME = "triton"
HELP = ("write a Triton model repository: <DIR>/<name>/config.pbtxt and <DIR>/<name>/1/<model> for each TensorRT "
        "engine, ONNX file (onnxruntime) or OpenVINO IR, with inputs, outputs and batch limits read from it")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifacts", nargs="+", metavar="ARTIFACT",
                        help="a TensorRT .engine/.plan (with the manifest `eca-deploy build` wrote beside it), a "
                             ".onnx file or an OpenVINO IR .xml")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="the model repository folder")
    parser.add_argument("--name", default=None,
                        help="the model's name in the repository, for one ARTIFACT (default: its file name without "
                             "the suffix, characters other than letters, digits, '_' and '-' made '_')")
    parser.add_argument("--max-batch-size", type=shared.non_negative_int, default=None, metavar="N",
                        help="Triton's max_batch_size (default: the engine profile's largest batch, or 32 for an "
                             "ONNX / IR with a dynamic batch axis; always 0 for a static batch axis)")
    parser.add_argument("--instances", type=shared.positive_int, default=1, metavar="N",
                        help="model instances Triton runs (instance_group count; KIND_GPU for engines, else KIND_CPU)")
    parser.add_argument("--bench", default=None, metavar="FILE",
                        help="a bench, parity or pipeline report JSON that measured the artifact: its smallest batch "
                             "within 10%% of the best throughput becomes dynamic batching's preferred batch size")
    parser.add_argument("--labels", default=None, metavar="FILE",
                        help="class names, one per line in class-index order, written as the output's "
                             "label_filename (default: ImageNet's names for 1,000-class models; none otherwise)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing <DIR>/<name> (by default an existing model folder is never touched)")


def run(args: argparse.Namespace) -> int:
    from ..data.labels import read_labels
    from ..packaging.triton import TritonOptions, write_repository
    from ..runtime.registry import parse_spec

    artifacts = [parse_spec(spec) for spec in args.artifacts]
    labels = read_labels(args.labels) if args.labels is not None else None
    options = TritonOptions(name=args.name, max_batch_size=args.max_batch_size, instances=args.instances,
                            labels=labels, force=args.force)
    for entry in write_repository(artifacts, args.output, options, bench=args.bench):
        preferred = f", preferred batch {', '.join(map(str, entry.preferred))}" if entry.preferred else ""
        labelled = f", {len(entry.labels)} class names" if entry.labels else ""
        print(f"wrote {entry.path}: {entry.serving}, max_batch_size {entry.max_batch_size}{preferred}, "
              f"{entry.instances} x {entry.kind}{labelled}")
    return 0
