"""``eca-deploy deepstream``: a Gst-nvinfer config (and labels, and an INT8 calibration table) for an artifact."""

from __future__ import annotations

import argparse

from . import args as shared

NAME = "deepstream"
HELP = ("write a DeepStream Gst-nvinfer config for the classifier in an ONNX file or TensorRT engine, with its "
        "labels file and, for INT8 built by nvinfer, a TensorRT calibration table")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact", help="a .onnx file or a TensorRT engine (.engine/.plan) with its manifest")
    shared.OutputArgs("output", "the config file; the labels file and calibration table go beside it, named "
                                "after it", default="config_infer_primary.txt", old_out=False).add(parser)
    parser.add_argument("--batch-size", type=shared.positive_int, default=None, metavar="N",
                        help="nvinfer's batch-size (default: an engine's profile maximum, a static ONNX's batch, "
                             "else 1)")
    parser.add_argument("--classifier-threshold", type=float, default=0.0,
                        help="nvinfer's classifier-threshold (compared with the model's logits)")
    parser.add_argument("--gie-unique-id", type=shared.positive_int, default=1, help="nvinfer's gie-unique-id")
    parser.add_argument("--labels", default=None, metavar="FILE",
                        help="class names, one per line (default: ImageNet's for 1,000 classes, else indices)")
    parser.add_argument("--calib-cache", default=None, metavar="FILE",
                        help="make nvinfer build an FP32 ONNX in INT8 (legacy implicit calibration) with the scales "
                             "of this file: a calibration cache from `quantize` or a TensorRT calibration cache "
                             "from `build --legacy-precision int8`")
    parser.add_argument("--calib-method", default=None, metavar="METHOD",
                        help="the entry of --calib-cache to use, where it holds several for this model: entropy "
                             "(default: the method of nvinfer's own calibrator), minmax, percentile:99.99, ...")
    parser.add_argument("--tensorrt-version", type=shared.trt_version, default=None, metavar="X.Y.Z",
                        help="TensorRT version named in a calibration table made from our ranges (default: 8.6.1, "
                             "the TensorRT of DeepStream 6.3 and 7.0)")


def run(args: argparse.Namespace) -> int:
    from ..errors import warn
    from ..packaging.deepstream import DeepStreamConfig, write_deepstream_config

    result = write_deepstream_config(DeepStreamConfig(
        artifact=args.artifact, output=args.output, batch_size=args.batch_size,
        classifier_threshold=args.classifier_threshold, gie_unique_id=args.gie_unique_id, labels=args.labels,
        calib_cache=args.calib_cache, calib_method=args.calib_method, tensorrt_version=args.tensorrt_version))
    for line in result.warnings:
        warn(line)
    print(result.config.read_text(encoding="utf-8"), end="")
    written = [result.config, result.labels] + ([result.calib_table] if result.calib_table else [])
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
