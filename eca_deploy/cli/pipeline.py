"""``eca-deploy pipeline``: checkpoint -> ONNX -> FP16/INT8 -> engines -> parity -> bench -> report."""

from __future__ import annotations

import argparse

from . import args as shared

NAME = "pipeline"
HELP = ("export, quantize (FP16, INT8), build TensorRT engines where present, check every artifact against "
        "PyTorch, benchmark it, and write one report")
SEED = shared.SeedArgs("subsets, synthetic inputs and benchmarks")
RUNTIME = shared.RuntimeArgs()
# Which stage config each group feeds.
EXPORT = (shared.ModelArgs(), shared.OutputArgs("out_dir", "output folder for every artifact and report "
                                                           "(default: artifacts/<model>/)"), SEED)
PARITY = (shared.DataArgs("labeled validation images (ImageFolder root) for accuracy (default: seeded synthetic "
                          "inputs, agreement only)"),
          shared.ToleranceArgs(), RUNTIME, SEED)
BENCH = (shared.TimingArgs(sizes="1,8"), RUNTIME, SEED)


def calibration() -> shared.CalibrationArgs:
    from ..calibration.calibrators import CALIB_METHODS

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
    shared.add_groups(parser, dict.fromkeys((*EXPORT, calibration(), *PARITY, *BENCH)))
    parser.add_argument("--imgsz", type=shared.image_size, default=224, help="input height and width")
    parser.add_argument("--opset", type=shared.opset, default=17, help="ONNX opset")
    shared.add_input_format(parser)
    parser.add_argument("--precisions", type=precisions, default="fp16,int8",
                        help="quantized variants to make, comma-separated")
    parser.add_argument("--batch-size", dest="batch", type=shared.positive_int, default=16, metavar="N",
                        help="images per inference batch of the accuracy runs")
    shared.deprecated(parser, "--parity-batch", "--batch-size", "batch", shared.positive_int)
    parser.add_argument("--openvino", action=argparse.BooleanOptionalAction, default=None,
                        help="also convert the FP32 model to OpenVINO IR and run the IR and every ONNX variant on "
                             "OpenVINO (extra rows); default: where OpenVINO is installed and the CPU is x86. "
                             "--openvino without OpenVINO installed is an error%(default).0s")
    parser.add_argument("--target", choices=("tensorrt", "cpu"), default=None,
                        help="Q/DQ layout of the INT8 ONNX checked here: tensorrt (what a Jetson builds; a CPU box "
                             "can prepare it) or cpu (onnxruntime's integer kernels); default: cpu with the cpu "
                             "provider, else tensorrt")
    shared.QdqArgs().add(parser)
    parser.add_argument("--reference", dest="saved_reference", default=None, metavar="REF.npz",
                        help="judge every artifact against this reference saved by `parity --save-reference` "
                             "(same model, weights, --data, --count, --seed and --imgsz, else refused) instead of "
                             "running PyTorch here")


def run(args: argparse.Namespace) -> int:
    from ..calibration.quantize import QuantizeConfig
    from ..errors import ParityError, plural
    from ..export.onnx_export import ExportConfig
    from ..models.download import resolve_weights
    from ..pipeline import PipelineConfig, run_pipeline
    from ..runtime.harness.bench import BenchConfig
    from ..runtime.harness.parity import ParityConfig
    from ..runtime.harness.report import summary_table

    model = shared.fields(EXPORT, args)
    model["weights"] = resolve_weights(model["weights"])  # a missing file fails here; a URL is downloaded first
    reference = f"torch:{model['model']}" + (f":{model['weights']}" if model["weights"] else "")
    cfg = PipelineConfig(
        export=ExportConfig(**model, imgsz=args.imgsz, opset=args.opset, input_format=args.input_format),
        # the ONNX to quantize, its precision and layout, the candidates: each step fills its own
        quantize=QuantizeConfig(onnx="", seed=args.seed, **calibration().fields(args),
                                **shared.QdqArgs().fields(args)),
        parity=ParityConfig(reference=reference, candidates=[], imgsz=args.imgsz, batch=args.batch,
                            **shared.fields(PARITY, args)),
        bench=BenchConfig(model=reference, imgsz=args.imgsz, **shared.fields(BENCH, args)),
        precisions=args.precisions, openvino=args.openvino, target=args.target, reference=args.saved_reference)
    result = run_pipeline(cfg)
    report = result.report
    print(summary_table(report))
    for skipped in report["skipped"]:
        print(f"skipped {skipped['step']}: {skipped['reason']}")
    for warning in report["devices"][0]["warnings"]:
        print(f"warning: {warning}")
    print(f"total {report['timings_s']['total']:.1f} s; wrote " + ", ".join(str(p) for p in result.written.values()))
    if result.failed:
        raise ParityError(f"{plural(len(result.failed), 'artifact')} failed: " + "; ".join(
            f"{r['artifact']}: {r['reason']}" for r in result.failed))
    return 0
