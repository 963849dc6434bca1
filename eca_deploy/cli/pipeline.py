"""``eca-deploy pipeline``: checkpoint -> ONNX -> FP16/INT8 -> engines -> parity -> bench -> report."""

from __future__ import annotations

import argparse

from .bench import add_timing_arguments, parse_batches
from .parity import add_runtime_arguments, add_tolerance_arguments, tolerance_overrides

NAME = "pipeline"
HELP = ("export, quantize (FP16, INT8), build TensorRT engines where present, check every artifact against "
        "PyTorch, benchmark it, and write one report")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registered model name (see `eca-deploy models`)")
    parser.add_argument("--weights", default=None,
                        help="checkpoint (.pth.tar, state_dict or .safetensors); default: random init, which "
                             "gives real timings but no meaningful accuracy")
    parser.add_argument("--calib-data", default=None,
                        help="images to calibrate INT8 on (folder, ImageFolder, list or .npy); "
                             "without it INT8 is skipped")
    parser.add_argument("--data", default=None,
                        help="labeled validation images (ImageFolder root) for accuracy; "
                             "default: seeded synthetic inputs (agreement only)")
    parser.add_argument("--no-labels", dest="use_labels", action="store_false",
                        help="ignore --data's labels (when its classes are not the model's): agreement only"
                             "%(default).0s")  # no "(default: True)" on a flag that turns labels off
    parser.add_argument("--out", default=None, help="output folder for every artifact and report "
                                                    "(default: artifacts/<model>/)")
    parser.add_argument("--imgsz", type=int, default=224, help="input height and width")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset")
    parser.add_argument("--precisions", default="fp16,int8", help="quantized variants to make, comma-separated")
    parser.add_argument("--calib-method", default=None,
                        help="INT8 calibration method (see `eca-deploy quantize --help`; default: its default)")
    parser.add_argument("--calib-count", type=int, default=None, help="calibration images to use (default: all)")
    parser.add_argument("--target", choices=("tensorrt", "cpu"), default=None,
                        help="Q/DQ layout of the INT8 ONNX checked here: tensorrt (what a Jetson builds; a CPU box "
                             "can prepare it) or cpu (onnxruntime's integer kernels); default: cpu with the cpu "
                             "provider, else tensorrt")
    parser.add_argument("--high-precision", choices=("fp16", "fp32"), default=None,
                        help="INT8 for TensorRT: dtype of the unquantized layers (default: fp16; fp32 where the "
                             "installed TensorRT is 8.x, whose parser stops at opset 17)")
    parser.add_argument("--qdq-layout", choices=("eca-deploy", "modelopt"), default="eca-deploy",
                        help="INT8 for TensorRT: eca-deploy's Q/DQ placement or NVIDIA Model Optimizer's")
    parser.add_argument("--reference", default=None, metavar="REF.npz",
                        help="judge every artifact against this reference saved by `parity --save-reference` "
                             "(same model, weights, --data, --count, --seed and --imgsz, else refused) instead of "
                             "running PyTorch here")
    parser.add_argument("--count", type=int, default=None, help="validation images to use (default: all)")
    parser.add_argument("--parity-batch", type=int, default=16, help="batch size for the accuracy runs")
    add_timing_arguments(parser, duration=3.0)
    parser.set_defaults(batch="1,8")
    add_tolerance_arguments(parser)
    add_runtime_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed for subsets, synthetic inputs and benchmarks")


def run(args: argparse.Namespace) -> int:
    from ..errors import ParityError
    from ..pipeline import PipelineConfig, run_pipeline
    from ..runtime.harness.report import summary_table

    cfg = PipelineConfig(
        model=args.model, weights=args.weights, calib_data=args.calib_data, data=args.data,
        use_labels=args.use_labels, out_dir=args.out,
        imgsz=args.imgsz, opset=args.opset,
        precisions=tuple(p.strip() for p in args.precisions.split(",") if p.strip()),
        calib_method=args.calib_method, calib_count=args.calib_count, count=args.count, target=args.target,
        high_precision=args.high_precision, qdq_layout=args.qdq_layout, reference=args.reference,
        batches=parse_batches(args.batch), parity_batch=args.parity_batch, warmup=args.warmup,
        iterations=args.iterations, duration=args.duration, provider=args.provider, device=args.device,
        threads=args.threads, overrides=tolerance_overrides(args), seed=args.seed)
    result = run_pipeline(cfg)
    report = result.report
    print(summary_table(report))
    for skipped in report["skipped"]:
        print(f"skipped {skipped['step']}: {skipped['reason']}")
    for warning in report["devices"][0]["warnings"]:
        print(f"warning: {warning}")
    print(f"total {report['timings_s']['total']:.1f} s; wrote " + ", ".join(str(p) for p in result.written.values()))
    if result.failed:
        raise ParityError(f"{len(result.failed)} artifacts failed: " + "; ".join(
            f"{r['artifact']}: {r['reason']}" for r in result.failed))
    return 0
