"""``eca-deploy pipeline``: checkpoint -> ONNX -> FP16/INT8 -> engines -> parity -> bench -> report."""

from __future__ import annotations

import argparse

from . import args as shared

NAME = "pipeline"
HELP = ("export, quantize (FP16, INT8), build TensorRT engines where present, check every artifact against "
        "PyTorch, benchmark it, and write one report")
SEED = shared.SeedArgs("subsets, synthetic inputs and benchmarks")
EXPORT = (shared.ModelArgs(), shared.OutputArgs("out_dir", "output folder for every artifact and report "
                                                           "(default: artifacts/<model>/)"), SEED)
# The PipelineConfig fields the rest of the groups give.
GROUPS = (shared.DataArgs("labeled validation images (ImageFolder root) for accuracy (default: seeded synthetic "
                          "inputs, agreement only)"),
          shared.ToleranceArgs(), shared.RuntimeArgs(host_code=False),  # it runs only the engines it builds
          shared.TimingArgs(sizes="1,8"), SEED)
QDQ = shared.QdqArgs()


def calibration() -> shared.CalibrationArgs:
    from ..calibration.int8.calibrators import CALIB_METHODS

    return shared.CalibrationArgs(
        CALIB_METHODS, method=CALIB_METHODS[0], count=None,
        data_help="images to calibrate INT8 on (folder, ImageFolder, list or .npy); without them INT8 is skipped",
        method_help="INT8 calibration method (see `eca-deploy quantize --help`). A --max-top1-drop / "
                    "--min-agreement given for int8 (or for every precision) is also quantize's budget: it leaves "
                    "the most sensitive layers in float until the budget holds on calibration images it did not "
                    "calibrate on")


def precisions(text: str) -> tuple[str, ...]:
    from ..precisions import LOW_PRECISIONS

    chosen = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = sorted(set(chosen) - set(LOW_PRECISIONS))
    if unknown:
        raise argparse.ArgumentTypeError(f"takes {', '.join(LOW_PRECISIONS)} separated by commas, got "
                                         f"{', '.join(unknown)}")
    return chosen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    shared.add_groups(parser, dict.fromkeys((*EXPORT, calibration(), *GROUPS)))
    parser.add_argument("--imgsz", type=shared.image_size, default=224, help="input height and width")
    parser.add_argument("--opset", type=shared.opset, default=17, help="ONNX opset")
    shared.add_input_format(parser)
    parser.add_argument("--precisions", type=precisions, default="fp16,int8",
                        help="quantized variants to make, comma-separated")
    parser.add_argument("--batch-size", dest="batch_size", type=shared.positive_int, default=16, metavar="N",
                        help="images per inference batch of the accuracy runs")
    shared.deprecated(parser, "--parity-batch", "--batch-size", "batch_size", shared.positive_int)
    parser.add_argument("--openvino", action=argparse.BooleanOptionalAction, default=None,
                        help="also convert the FP32 model to OpenVINO IR and run the IR and every ONNX variant on "
                             "OpenVINO (extra rows); default: where OpenVINO is installed and the CPU is x86. "
                             "--openvino without OpenVINO installed is an error%(default).0s")
    parser.add_argument("--target", choices=("tensorrt", "cpu"), default=None,
                        help="Q/DQ layout of the INT8 ONNX checked here: tensorrt (what a Jetson builds; a CPU box "
                             "can prepare it) or cpu (onnxruntime's integer kernels); default: cpu with the cpu "
                             "provider, else tensorrt")
    QDQ.add(parser)
    from ..runtime.harness.recommend import RECOMMEND_BY

    parser.add_argument("--recommend-by", choices=RECOMMEND_BY, default=RECOMMEND_BY[0],
                        help="how the report's recommended artifact (the fastest that passed parity) is chosen: p50 "
                             "latency at batch 1, or the best images/s over --batch-sizes")
    parser.add_argument("--triton", default=None, metavar="DIR",
                        help="write the recommended artifact into this Triton model repository as <DIR>/<model> "
                             "(see `eca-deploy triton`); an existing <DIR>/<model> is refused before any work")
    parser.add_argument("--reference", dest="saved_reference", default=None, metavar="REF.npz",
                        help="judge every artifact against this reference saved by `parity --save-reference` "
                             "(same model, weights, --data, --count, --seed and --imgsz, else refused) instead of "
                             "running PyTorch here")
    parser.add_argument("--deepstream", default=None, metavar="FILE",
                        help="also write a DeepStream Gst-nvinfer config (see `eca-deploy deepstream`) for the "
                             "fastest ONNX file or engine that passed")


def run(args: argparse.Namespace) -> int:
    from ..errors import EcaDeployError, ParityError, plural, visible_text
    from ..export.onnx_export import ExportConfig
    from ..models.download import resolve_weights
    from ..pipeline import PACKAGERS, PipelineConfig, run_pipeline
    from ..runtime.harness.recommend import describe_recommended
    from ..runtime.harness.report import summary_table

    model = shared.fields(EXPORT, args)
    model["weights"] = resolve_weights(model["weights"])  # a missing file fails here; a URL is downloaded first
    cfg = PipelineConfig(
        export=ExportConfig(**model, imgsz=args.imgsz, opset=args.opset, input_format=args.input_format), **calibration().fields(args),
        **shared.fields((*GROUPS, QDQ), args), batch_size=args.batch_size, precisions=args.precisions,
        openvino=args.openvino, target=args.target, reference=args.saved_reference,
        deepstream=args.deepstream, recommend_by=args.recommend_by, triton=args.triton)
    result = run_pipeline(cfg)
    report = result.report
    print(summary_table(report))
    for entry in report["recommended"]:
        print(f"recommended {visible_text(describe_recommended(entry))}")
    for skipped in report["skipped"]:
        print(f"skipped {skipped['step']}: {skipped['reason']}")
    for warning in report["devices"][0]["warnings"]:
        print(f"warning: {warning}")
    print(f"total {report['timings_s']['total']:.1f} s; wrote " + ", ".join(str(p) for p in result.written.values()))
    unpackaged = [s for s in result.steps if s.name in PACKAGERS and s.status == "error"]
    if result.failed:
        raise ParityError(f"{plural(len(result.failed), 'artifact')} failed: " + "; ".join(
            f"{r['artifact']}: {r['reason']}" for r in result.failed))
    if unpackaged:
        raise EcaDeployError("; ".join(f"{s.name}: {s.detail}" for s in unpackaged))
    return 0
