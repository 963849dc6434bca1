"""``eca-deploy build``: ONNX -> TensorRT engine + manifest (or the equivalent trtexec command)."""

from __future__ import annotations

import argparse
import shlex
import sys

from ..precisions import LOW_PRECISIONS

NAME = "build"
HELP = "build a TensorRT engine (8.6, 10.x, 11.x) from an FP32, FP16 or Q/DQ INT8 ONNX, with a manifest"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", required=True,
                        help="the ONNX to build; its precision (FP32, FP16, INT8 Q/DQ) becomes the engine's on "
                             "TensorRT 10.x/11.x strongly typed networks")
    parser.add_argument("--output", default=None,
                        help="engine file, .engine or .plan (omitted: beside the ONNX, <name>.engine)")
    parser.add_argument("--batch", default=None, metavar="MIN:OPT:MAX",
                        help="optimization profile of the batch axis, MIN <= OPT <= MAX, TensorRT tunes for OPT "
                             "(omitted: 1:8:32, or a static-batch ONNX's own batch)")
    parser.add_argument("--workspace", type=float, default=None, metavar="GIB",
                        help="builder workspace limit in GiB (omitted: TensorRT's, all GPU memory)")
    parser.add_argument("--timing-cache", default=None, metavar="FILE",
                        help="timing cache read before the build and written back after it, so rebuilds are "
                             "faster; one from another TensorRT or GPU is replaced")
    parser.add_argument("--opt-level", type=int, default=None, choices=range(6), metavar="0-5",
                        help="builder optimization level (omitted: TensorRT's 3; 5 searches longest)")
    parser.add_argument("--dla", type=int, default=None, metavar="N",
                        help="Jetson: run on DLA core N, layers DLA cannot run fall back to the GPU")
    parser.add_argument("--version-compatible", action="store_true",
                        help="build an engine later TensorRT releases can also run (may be slower)")
    parser.add_argument("--legacy-precision", choices=LOW_PRECISIONS, default=None,
                        help="TensorRT 8.6/10.x only: build an FP32 ONNX with the weak-typing FP16/INT8 builder "
                             "flags (int8 calibrates implicitly); TensorRT 11 refuses it")
    parser.add_argument("--calib-data", default=None, metavar="SOURCE",
                        help="--legacy-precision int8: calibration images (folder, ImageFolder, `path label` "
                             "list, or .npy)")
    parser.add_argument("--calib-count", type=int, default=512, help="--legacy-precision int8: images to use")
    parser.add_argument("--calib-batch", type=int, default=8, help="--legacy-precision int8: calibration batch")
    parser.add_argument("--calib-cache", default=None, metavar="FILE",
                        help="--legacy-precision int8: calibration cache, reused when present "
                             "(omitted: <engine>.calib)")
    parser.add_argument("--calib-method", choices=("entropy", "minmax"), default="entropy",
                        help="--legacy-precision int8: TensorRT's entropy (IInt8EntropyCalibrator2) or minmax "
                             "calibrator")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration subset")
    parser.add_argument("--device", type=int, default=0, help="CUDA GPU index")
    parser.add_argument("--print-trtexec", action="store_true",
                        help="print the equivalent trtexec command and exit without building (needs no TensorRT "
                             "with --trt-version)")
    parser.add_argument("--trt-version", default=None, metavar="X.Y",
                        help="with --print-trtexec: the TensorRT of the machine that runs trtexec, e.g. 8.6 "
                             "(JetPack 6.0), 10.3 (JetPack 6.1/6.2); omitted: the installed one")


def run(args: argparse.Namespace) -> int:
    from ..errors import EngineError
    from ..runtime.tensorrt.builder import BuildConfig, build_engine, prepare_build

    cfg = BuildConfig(onnx=args.onnx, output=args.output, batch=args.batch, workspace_gib=args.workspace,
                      timing_cache=args.timing_cache, opt_level=args.opt_level, dla_core=args.dla,
                      version_compatible=args.version_compatible, legacy_precision=args.legacy_precision,
                      calib_data=args.calib_data, calib_count=args.calib_count, calib_batch=args.calib_batch,
                      calib_cache=args.calib_cache, calib_method=args.calib_method, seed=args.seed,
                      device=args.device)
    if args.print_trtexec:
        from ..runtime.tensorrt.trtexec import trtexec_command

        plan = prepare_build(cfg)
        if args.trt_version:
            from ..runtime.tensorrt.compat import check_known_release

            check_known_release(args.trt_version)  # a typo must not print flags of a release that does not exist
            version = args.trt_version
        else:
            from ..runtime.tensorrt.env import installed_tensorrt_version

            version = installed_tensorrt_version()
        print(shlex.join(trtexec_command(plan, version)))
        if cfg.legacy_precision == "int8":
            print(f"note: trtexec cannot calibrate; it reads the cache {plan.calib_cache}, which an eca-deploy "
                  "build with --calib-data writes", file=sys.stderr)
        return 0
    if args.trt_version:
        raise EngineError("--trt-version only applies to --print-trtexec; a build uses the installed TensorRT")

    prepare_build(cfg)  # bad input fails here, before the wait
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
