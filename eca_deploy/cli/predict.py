"""``eca-deploy predict``: classify images with any artifact and print each one's top-5 classes."""

from __future__ import annotations

import argparse
import json

from ..runtime.registry import spec_help
from . import args as shared

NAME = "predict"
HELP = ("classify images with a model, ONNX file, TensorRT engine or OpenVINO IR and print each image's top-5 "
        "classes (ImageNet's names for 1,000-class models)")
RUNTIME = shared.RuntimeArgs()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact", metavar="ARTIFACT",
                        help=f"the model to run: {spec_help()}")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files to classify")
    parser.add_argument("--labels", default=None, metavar="FILE",
                        help="class names, one per line in class-index order (default: ImageNet's 1,000 names for "
                             "1,000-class models; other models show class indices)")
    parser.add_argument("--imgsz", type=shared.image_size, default=None,
                        help="input size (default: the artifact's input size, else 224)")
    parser.add_argument("--json", action="store_true", help="print the predictions as JSON instead of a table")
    RUNTIME.add(parser)


def run(args: argparse.Namespace) -> int:
    from ..runtime.harness.predict import predict

    predictions = predict(args.artifact, args.images, labels=args.labels, imgsz=args.imgsz,
                          options=RUNTIME.build(args))
    if args.json:
        print(json.dumps([p.as_dict() for p in predictions], indent=2))
        return 0
    for prediction in predictions:
        print(prediction.image)
        for rank, (index, name, probability) in enumerate(prediction.top, 1):
            print(f"  {rank}. {100 * probability:6.2f}%  {name if name is not None else 'class'} ({index})")
    return 0
