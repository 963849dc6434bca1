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
from .compat import (check_legacy_precision, check_onnx_opset, precision_flags, strongly_typed, trt_major,
                     trt_version, version_text)
from .plan import BuildPlan

FIRST_WITH_OPT_LEVEL = (8, 6)  # --builderOptimizationLevel and --versionCompatible arrived in 8.6
# 8.6 added --skipInference and deprecated --buildOnly; 8.5's trtexec (JetPack 5.1) knows only --buildOnly
# and rejects --skipInference as an unknown option (samples/common/sampleOptions.cpp at 8.5.3 vs 8.6.1).
FIRST_WITH_SKIP_INFERENCE = (8, 6)


def trtexec_command(plan: BuildPlan, version: Any) -> list[str]:
    """argv of the trtexec run that builds what ``plan`` describes with TensorRT ``version``."""
    cfg = plan.config
    check_legacy_precision(version, cfg.legacy_precision)
    check_onnx_opset(version, plan.opset)
    too_old = trt_version(version) < FIRST_WITH_OPT_LEVEL
    for wanted, flag in ((cfg.opt_level is not None, "--opt-level"), (cfg.version_compatible, "--version-compatible")):
        if wanted and too_old:
            raise EngineError(f"{flag} needs TensorRT 8.6 or later; trtexec {version_text(version)} has no such option")

    args = ["trtexec", f"--onnx={plan.onnx_path}", f"--saveEngine={plan.engine_path}"]
    if not plan.static_batch:
        for flag, shape in zip(("--minShapes", "--optShapes", "--maxShapes"), plan.shapes()):
            args.append(f"{flag}={plan.input_name}:{'x'.join(str(d) for d in shape)}")
    if strongly_typed(version, cfg.legacy_precision) and trt_major(version) < 11:
        args.append("--stronglyTyped")
    flags = precision_flags(version, cfg.legacy_precision, plan.onnx_precision)
    args += [f"--{flag.lower()}" for flag in flags]
    if cfg.legacy_precision == "int8":
        args.append(f"--calib={plan.calib_cache}")  # trtexec cannot calibrate from images, only read a cache
    if cfg.workspace_gib is not None:
        mib = int(cfg.workspace_gib * 1024)
        args.append(f"--memPoolSize=workspace:{mib}" + ("M" if trt_major(version) >= 10 else ""))
    if cfg.timing_cache:
        args.append(f"--timingCacheFile={cfg.timing_cache}")
    if cfg.opt_level is not None:
        args.append(f"--builderOptimizationLevel={cfg.opt_level}")
    if cfg.dla_core is not None:
        args += [f"--useDLACore={cfg.dla_core}", "--allowGPUFallback"]
    if cfg.version_compatible:
        args.append("--versionCompatible")
    args.append("--skipInference" if trt_version(version) >= FIRST_WITH_SKIP_INFERENCE else "--buildOnly")
    return args
