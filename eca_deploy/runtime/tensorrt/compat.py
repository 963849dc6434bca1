"""What each TensorRT version allows, as pure functions of the version (no TensorRT needed).

Every function takes the version as a string ("10.3.0.30"), a tuple, or the imported module,
so tests and ``--print-trtexec`` can ask about 8.6 or 11.1 on a machine without TensorRT.

Version-guard convention (checked by tests/runtime/tensorrt/trt_api_check.py): code that touches a TensorRT name
missing from some supported version sits under ``if trt_major(...) <op> N:`` (or
``trt_version(...) <op> (M, m)``), or after such an ``if`` whose body raises or returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...artifacts import manifest_path, sha256_file
from ...errors import EngineError
from ...precisions import LOW_PRECISIONS, PRECISIONS

# Polygraphy 0.53 imports "tensorrt>=8.5" (polygraphy/mod/trt_importer.py) and guards what 8.5 lacks, so
# the Python builder runs on JetPack 5.1's 8.5 too; --opt-level / --version-compatible arrived in 8.6.
OLDEST_BUILDER = (8, 5)
FIRST_WITH_OPT_LEVEL = (8, 6)  # builder_optimization_level, version compatibility, trtexec --skipInference
# The releases --trt-version (and the README's table) names: 8.5-8.6, 10.0-10.16, 11.0-11.1.
KNOWN_RELEASES = ((8, 5), (8, 6), *((10, minor) for minor in range(17)), (11, 0), (11, 1))
LEGACY_PRECISIONS = LOW_PRECISIONS  # what the weak-typing builder flags can make of an FP32 network


def parse_version(version: Any) -> tuple[int, ...]:
    """"10.3.0.30", (10, 3), or the tensorrt module -> (10, 3, 0, 30)."""
    if hasattr(version, "__version__"):
        version = version.__version__
    if isinstance(version, tuple):
        return tuple(int(part) for part in version)
    match = re.match(r"^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:\.(\d+))?", str(version))
    if not match:
        raise EngineError(f"cannot read a TensorRT version from '{version}' (expected e.g. 10.3)")
    return tuple(int(part) for part in match.groups() if part is not None)


def trt_major(version: Any) -> int:
    return parse_version(version)[0]


def trt_version(version: Any) -> tuple[int, int]:
    """(major, minor), for guards that need the minor release."""
    parts = parse_version(version) + (0,)
    return parts[0], parts[1]


def version_text(version: Any) -> str:
    return ".".join(str(part) for part in parse_version(version))


def strongly_typed(version: Any, legacy_precision: str | None, dla: bool = False) -> bool:
    """10.x and 11.x build strongly typed networks; 8.x cannot; 10.x must not in legacy mode (its flags need
    weak typing) nor for DLA: there trtexec's --useDLACore sets kFP16 and kPREFER_PRECISION_CONSTRAINTS itself
    (samples/common/sampleEngines.cpp, v10.3.0, setupNetworkAndConfig), as Polygraphy's use_dla does below 11.0
    (polygraphy/backend/trt/config.py), and a strongly typed network takes no precision flags
    (sampleOptions.cpp, v10.3.0: "setting fp16 mode is not allowed if graph is strongly typed")."""
    weak_on_10 = bool(legacy_precision) or dla
    return trt_major(version) >= 10 and not (weak_on_10 and trt_major(version) < 11)


def precision_flags(version: Any, legacy_precision: str | None, onnx_precision: str,
                    dla: bool = False) -> tuple[str, ...]:
    """The weak-typing BuilderFlag names a build sets (none on a strongly typed network).

    Legacy int8 also allows FP16, as ``trtexec --int8 --fp16`` does, so layers left unquantized run
    in half precision rather than FP32. On 8.6 (no strong typing) a precision-carrying ONNX needs
    the flag of its own precision: FP16 for an FP16 graph; explicit Q/DQ gets INT8 and FP16, so the
    unquantized glue (ECA path, residual Adds) may run FP16 as it does from an FP16-glue ONNX on 10.x.
    """
    if strongly_typed(version, legacy_precision, dla):
        return ()
    flag = PRECISIONS[legacy_precision or onnx_precision].trt86_flag
    if flag:
        return (flag, "FP16") if flag != "FP16" else (flag,)
    return ()


def check_builder_version(version: Any) -> None:
    """The Python builder supports TensorRT 8.5 (JetPack 5.1) and later, as Polygraphy does."""
    if trt_version(version) < OLDEST_BUILDER:
        raise EngineError(f"TensorRT {version_text(version)} is older than 8.5, which this builder needs; print a "
                          "trtexec command instead: eca-deploy build --onnx FILE --print-trtexec --trt-version X.Y")


def check_new_options(version: Any, opt_level: int | None, version_compatible: bool) -> None:
    """--opt-level and --version-compatible need 8.6; 8.5 has neither (in the builder nor in trtexec)."""
    for wanted, flag in ((opt_level is not None, "--opt-level"), (version_compatible, "--version-compatible")):
        if wanted and trt_version(version) < FIRST_WITH_OPT_LEVEL:
            raise EngineError(f"{flag} needs TensorRT 8.6 or later; TensorRT {version_text(version)} has no such "
                              "option")


def fastest_opt_level(version: Any) -> int | None:
    """Builder optimization level 0 (the quickest build) where the release has levels, else None."""
    return 0 if trt_version(version) >= FIRST_WITH_OPT_LEVEL else None


def check_trtexec_version(version: Any) -> str:
    """The releases ``--print-trtexec`` writes commands for: exactly those the README lists."""
    try:
        known = trt_version(version) in KNOWN_RELEASES
    except EngineError:
        known = False
    if not known:
        raise EngineError(f"--trt-version takes a TensorRT release trtexec commands are written for (8.5-8.6, "
                          f"10.0-10.16, 11.0-11.1), got '{version}'")
    return str(version)


MAX_ONNX_OPSET_8X = 17  # the ONNX parser of TensorRT 8.5/8.6 reads opsets up to 17


def check_onnx_opset(version: Any, opset: int) -> None:
    """8.x cannot parse the opset-19 FP16-glue INT8 ONNX; its Q/DQ builds get FP16 from the builder flag."""
    if trt_major(version) < 10 and opset > MAX_ONNX_OPSET_8X:
        raise EngineError(f"TensorRT {version_text(version)} reads ONNX opset {MAX_ONNX_OPSET_8X} at most, this one "
                          f"is opset {opset}; for an INT8 model run `eca-deploy quantize --high-precision fp32` "
                          "(8.x runs its unquantized layers in FP16 through the FP16 builder flag)")


def check_legacy_precision(version: Any, legacy_precision: str | None) -> None:
    if legacy_precision is None:
        return
    if legacy_precision not in LEGACY_PRECISIONS:
        raise EngineError(f"--legacy-precision must be one of {', '.join(LEGACY_PRECISIONS)}, got '{legacy_precision}'")
    if trt_major(version) >= 11:
        raise EngineError(
            f"--legacy-precision {legacy_precision} needs TensorRT 8.6 or 10.x, but this is TensorRT "
            f"{version_text(version)}: TensorRT 11 builds only strongly typed networks, whose precision comes "
            "from the ONNX; make an FP16 or Q/DQ INT8 ONNX with `eca-deploy quantize` and build it without the flag")


@dataclass(frozen=True)
class BatchProfile:
    """The dynamic-batch optimization profile: TensorRT tunes for ``opt`` and accepts min..max."""

    min: int
    opt: int
    max: int

    @classmethod
    def parse(cls, text: str) -> "BatchProfile":
        """"1:8:32" -> (1, 8, 32); a single "8" means a fixed batch of 8."""
        parts = str(text).split(":")
        if len(parts) == 1:
            parts = parts * 3
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise EngineError(f"--profile must be MIN:OPT:MAX (e.g. 1:8:32) or one number, got '{text}'")
        low, opt, high = (int(p) for p in parts)
        if low < 1:
            raise EngineError(f"--profile {text}: MIN must be at least 1")
        if low > opt:
            raise EngineError(f"--profile {text}: MIN ({low}) is larger than OPT ({opt}); need MIN <= OPT <= MAX")
        if opt > high:
            raise EngineError(f"--profile {text}: OPT ({opt}) is larger than MAX ({high}); need MIN <= OPT <= MAX")
        return cls(low, opt, high)

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


def engine_mismatch(manifest: dict, running_version: Any, gpu_name: str, compute_capability: str) -> str | None:
    """Why an engine described by ``manifest`` cannot run here, or None when it can.

    Engines run only on the TensorRT release that built them (major.minor.patch) unless built
    version-compatible, which TensorRT honours for later runtimes of the same major release and
    from 8.x to 10.x and from 10.x to 11.x; and only on the GPU model they were tuned for.
    """
    built = manifest.get("tensorrt_version")
    gpu = manifest.get("gpu") or {}
    source = manifest.get("source_onnx", "the ONNX")
    rebuild = f"rebuild it here with `eca-deploy build --onnx {source}`"
    if built:
        have, want = parse_version(running_version), parse_version(built)
        if manifest.get("version_compatible"):
            jump = (want[0], have[0])
            ok = have >= want and (jump[0] == jump[1] or jump in ((8, 9), (8, 10), (10, 11)))
            if not ok:
                return (f"engine was built version-compatible with TensorRT {version_text(built)}, which TensorRT "
                        f"{version_text(running_version)} cannot run; {rebuild}")
        elif have[:3] != want[:3]:
            return (f"engine was built with TensorRT {version_text(built)} but this machine has TensorRT "
                    f"{version_text(running_version)}; {rebuild}")
    built_cc = gpu.get("compute_capability")
    if built_cc and str(built_cc) != str(compute_capability):
        return (f"engine was built for {gpu.get('name', 'another GPU')} (compute capability {built_cc}) but this "
                f"GPU is {gpu_name} (compute capability {compute_capability}); {rebuild}")
    if gpu.get("name") and gpu["name"] != gpu_name:
        return (f"engine was tuned for {gpu['name']} but this GPU is {gpu_name}; its kernels may be slow or "
                f"invalid here; {rebuild}")
    return None


def refuse_stale_manifest(path: Path, manifest: dict) -> None:
    """An engine manifest decides batch limits and compatibility before TensorRT reads the engine, so one written
    for other bytes (sha256 differs) refuses the engine rather than being read."""
    if manifest.get("sha256") and manifest["sha256"] != sha256_file(path):
        raise EngineError(f"{manifest_path(path).name} describes another engine than {path.name} (sha256 "
                          "differs); rebuild it with `eca-deploy build` or delete the stale manifest")
