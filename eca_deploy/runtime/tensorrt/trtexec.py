"""The trtexec command line equivalent to a build, with the flag names of the TensorRT release that runs it.

For JetPack users who build on the board with /usr/src/tensorrt/bin/trtexec. Flag names checked
against trtexec's own help (samples/common/sampleOptions.cpp) for 8.6, 10.x and 11.x:
8.x reads ``--memPoolSize=workspace:N`` in MiB and has no ``--stronglyTyped``; 10.x accepts unit
suffixes and ``--stronglyTyped``; 11.x removed ``--fp16``/``--int8``/``--calib`` and types every
network strongly, so ``--stronglyTyped`` is no longer needed.
"""

from __future__ import annotations

from typing import Any

from ...errors import EngineError
from ...precisions import is_quantized
from .compat import (FIRST_WITH_OPT_LEVEL, check_legacy_precision, check_new_options, check_onnx_opset,
                     precision_flags, strongly_typed, trt_major, trt_version, version_text)
from .plan import BuildPlan

# 8.6 added --skipInference and deprecated --buildOnly; 8.5's trtexec (JetPack 5.1) knows only --buildOnly
# and rejects --skipInference as an unknown option (samples/common/sampleOptions.cpp at 8.5.3 vs 8.6.1).
FIRST_WITH_SKIP_INFERENCE = FIRST_WITH_OPT_LEVEL


def check_trtexec_calibration(version: Any, legacy_precision: str | None) -> None:
    """trtexec 8.5 allocates no calibration buffers when --calib names a file (samples/common/sampleEngines.cpp
    at 8.5.3, RndInt8Calibrator's constructor returns before its cudaMalloc when the cache file opens) and
    hands TensorRT null pointers if TensorRT rejects the cache; ours comes from an eca-deploy build, whose
    TensorRT need not be 8.5's."""
    if is_quantized(legacy_precision) and trt_version(version) < FIRST_WITH_OPT_LEVEL:
        raise EngineError(f"--legacy-precision int8 through trtexec {version_text(version)} is refused: it cannot "
                          "read a calibration cache made by a newer TensorRT; build Q/DQ INT8 instead (`eca-deploy "
                          "quantize --precision int8 --high-precision fp32` writes an opset-17 ONNX 8.5 builds)")


def trtexec_command(plan: BuildPlan, version: Any) -> list[str]:
    """argv of the trtexec run that builds what ``plan`` describes with TensorRT ``version``."""
    cfg = plan.config
    check_legacy_precision(version, cfg.legacy_precision)
    check_onnx_opset(version, plan.opset)
    check_new_options(version, cfg.opt_level, cfg.version_compatible)
    check_trtexec_calibration(version, cfg.legacy_precision)
    dla = cfg.dla_core is not None

    args = ["trtexec", f"--onnx={plan.onnx_path}", f"--saveEngine={plan.engine_path}"]
    if not plan.static_batch:
        for flag, shape in zip(("--minShapes", "--optShapes", "--maxShapes"), plan.shapes()):
            args.append(f"{flag}={plan.input_name}:{'x'.join(str(d) for d in shape)}")
    if strongly_typed(version, cfg.legacy_precision, dla) and trt_major(version) < 11:
        args.append("--stronglyTyped")
    flags = precision_flags(version, cfg.legacy_precision, plan.onnx_precision, dla)
    args += [f"--{flag.lower()}" for flag in flags]
    if is_quantized(cfg.legacy_precision):
        args.append(f"--calib={plan.calib_cache}")  # trtexec cannot calibrate from images, only read a cache
    if cfg.workspace_gib is not None:
        mib = int(cfg.workspace_gib * 1024)
        args.append(f"--memPoolSize=workspace:{mib}" + ("M" if trt_major(version) >= 10 else ""))
    if cfg.timing_cache:
        args.append(f"--timingCacheFile={cfg.timing_cache}")
    if cfg.opt_level is not None:
        args.append(f"--builderOptimizationLevel={cfg.opt_level}")
    if dla:
        args += [f"--useDLACore={cfg.dla_core}", "--allowGPUFallback"]
    if cfg.version_compatible:
        args.append("--versionCompatible")
    args.append("--skipInference" if trt_version(version) >= FIRST_WITH_SKIP_INFERENCE else "--buildOnly")
    return args
