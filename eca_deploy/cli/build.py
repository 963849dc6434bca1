"""``eca-deploy build``: ONNX -> TensorRT engine + manifest (or the equivalent trtexec command)."""

from __future__ import annotations

import argparse
import shlex
import sys

from ..precisions import LOW_PRECISIONS, is_quantized
from . import args as shared

NAME = "build"
HELP = "build a TensorRT engine (8.5, 8.6, 10.x, 11.x) from an FP32, FP16 or Q/DQ INT8 ONNX, with a manifest"


GROUPS = (
    shared.OutputArgs("output", "engine file, .engine or .plan (default: beside the ONNX, <name>.engine)",
                      old_out=False),
    shared.CalibrationArgs(
        ("entropy", "minmax"), method="entropy", count=512, prefix="--legacy-precision int8: ",
        data_help="calibration images (folder, ImageFolder, `path label` list, or .npy)",
        method_help="TensorRT's entropy (IInt8EntropyCalibrator2) or minmax calibrator",
        cache_help="calibration cache, reused when present (default: <engine>.calib)"),
    shared.SeedArgs("the calibration subset"),
)


def profile(text: str) -> str:
    from ..runtime.tensorrt.compat import BatchProfile

    shared.stage_rule(BatchProfile.parse, text)
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", required=True,
                        help="the ONNX to build; its precision (FP32, FP16, INT8 Q/DQ) becomes the engine's on "
                             "TensorRT 10.x/11.x strongly typed networks")
    parser.add_argument("--profile", type=profile, default=None, metavar="MIN:OPT:MAX",
                        help="optimization profile of the batch axis, MIN <= OPT <= MAX, TensorRT tunes for OPT "
                             "(default: 1:8:32, or a static-batch ONNX's own batch)")
    shared.deprecated(parser, "--batch", "--profile", "profile", profile)
    parser.add_argument("--workspace", type=shared.positive_float, default=None, metavar="GIB",
                        help="builder workspace limit in GiB (default: TensorRT's, all GPU memory)")
    parser.add_argument("--timing-cache", default=None, metavar="FILE",
                        help="timing cache read before the build and written back after it, so rebuilds are "
                             "faster; one from another TensorRT or GPU is replaced")
    parser.add_argument("--opt-level", type=int, default=None, choices=range(6), metavar="0-5",
                        help="builder optimization level, TensorRT 8.6+ (default: TensorRT's 3; 5 searches longest)")
    parser.add_argument("--dla", type=shared.non_negative_int, default=None, metavar="N",
                        help="Jetson: run on DLA core N, layers DLA cannot run fall back to the GPU")
    parser.add_argument("--version-compatible", action="store_true",
                        help="build an engine later TensorRT releases can also run (may be slower)")
    parser.add_argument("--legacy-precision", choices=LOW_PRECISIONS, default=None,
                        help="TensorRT 8.x/10.x only: build an FP32 ONNX with the weak-typing FP16/INT8 builder "
                             "flags (int8 calibrates implicitly); TensorRT 11 refuses it")
    parser.add_argument("--batch-size", dest="calib_batch", type=shared.positive_int, default=8, metavar="N",
                        help="--legacy-precision int8: images per calibration batch")
    shared.deprecated(parser, "--calib-batch", "--batch-size", "calib_batch", shared.positive_int)
    parser.add_argument("--gpu", type=shared.non_negative_int, default=0, help="CUDA GPU index")
    shared.deprecated(parser, "--device", "--gpu", "gpu", shared.non_negative_int)
    parser.add_argument("--print-trtexec", action="store_true",
                        help="print the equivalent trtexec command and exit without building (needs no TensorRT "
                             "with --trt-version)")
    parser.add_argument("--trt-version", type=shared.trt_version, default=None, metavar="X.Y",
                        help="with --print-trtexec: the TensorRT of the machine that runs trtexec, e.g. 8.6 "
                             "(JetPack 6.0), 10.3 (JetPack 6.1/6.2); default: the installed one")
    shared.add_groups(parser, GROUPS)


def run(args: argparse.Namespace) -> int:
    from ..errors import MissingDependencyError, UsageError
    from ..runtime.tensorrt.builder import BuildConfig, build_engine, prepare_build
    from ..runtime.tensorrt.env import build_unavailable_reason

    if args.trt_version and not args.print_trtexec:
        raise UsageError("--trt-version only applies to --print-trtexec; a build uses the installed TensorRT")
    cfg = BuildConfig(onnx=args.onnx, profile=args.profile, workspace_gib=args.workspace,
                      timing_cache=args.timing_cache,
                      opt_level=args.opt_level, dla_core=args.dla, version_compatible=args.version_compatible,
                      legacy_precision=args.legacy_precision, calib_batch=args.calib_batch, gpu=args.gpu,
                      **shared.fields(GROUPS, args))
    if args.print_trtexec:
        from ..runtime.tensorrt.trtexec import trtexec_command

        plan = prepare_build(cfg)
        if args.trt_version:
            version = args.trt_version
        else:
            from ..runtime.tensorrt.env import installed_tensorrt_version

            version = installed_tensorrt_version()
        print(shlex.join(trtexec_command(plan, version)))
        if is_quantized(cfg.legacy_precision):
            print(f"note: trtexec cannot calibrate; it reads the cache {plan.calib_cache}, which an eca-deploy "
                  "build with --calib-data writes", file=sys.stderr)
        return 0
    prepare_build(cfg)  # bad input fails here, before the wait
    missing = build_unavailable_reason()
    if missing:
        raise MissingDependencyError(f"{missing}; without TensorRT, print the equivalent trtexec command for the "
                                     f"target machine: eca-deploy build --onnx {shlex.quote(cfg.onnx)} "
                                     "--print-trtexec --trt-version X.Y")
    print(f"building a TensorRT engine from {cfg.onnx} (TensorRT tunes kernels: a minute or more) ...",
          file=sys.stderr)
    result = build_engine(cfg)
    size = result.engine_path.stat().st_size / 2**20
    print(f"wrote {result.engine_path} ({size:.1f} MB) and {result.manifest_path.name}")
    print(f"  TensorRT {result.tensorrt_version} on {result.gpu['name']} (compute capability "
          f"{result.gpu['compute_capability']}), {result.precision}, {result.typing} network")
    if result.timing_cache:
        print(f"  timing cache {cfg.timing_cache}: {result.timing_cache}")
    for note in result.notes:
        print(f"  note: {note}")
    print(f"  build time: {result.build_seconds:.1f} s")
    return 0
