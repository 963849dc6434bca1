"""The build plan: everything about a TensorRT build that can be worked out without TensorRT.

:func:`prepare_build` checks the config against the ONNX, so bad input fails in a second, before
the builder starts, and :func:`trtexec_command` can describe the same build for a board.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...artifacts import check_outputs, manifest_path
from ...graph.qdq import tensorrt_incompatible_qdq
from ...data.sources import source_files
from ...errors import EngineError
from ...graph.graph import load_onnx, onnx_inputs, summarize
from ...precisions import is_exported, is_quantized, onnx_precision
from .compat import LEGACY_PRECISIONS, BatchProfile

ENGINE_SUFFIXES = (".engine", ".plan")
DEFAULT_DYNAMIC_BATCH = "1:8:32"
MAX_OPT_LEVEL = 5


@dataclass
class BuildConfig:
    onnx: str
    output: str | None = None  # default: beside the ONNX, <name>.engine
    profile: str | None = None  # the batch axis's MIN:OPT:MAX; default 1:8:32, or the ONNX's static batch
    workspace_gib: float | None = None  # None: TensorRT's default (the GPU's memory)
    timing_cache: str | None = None  # read if present, written back after the build
    opt_level: int | None = None  # builder optimization level 0-5; None: TensorRT's default (3)
    dla_core: int | None = None  # Jetson DLA core, with GPU fallback
    version_compatible: bool = False
    legacy_precision: str | None = None  # "fp16" | "int8": TensorRT 8.6 / 10.x weak-typing flags
    calib_data: str | None = None  # legacy int8: images for the implicit calibrator
    calib_count: int | None = 512
    calib_batch: int = 8
    calib_cache: str | None = None  # legacy int8: default <engine>.calib
    calib_method: str = "entropy"
    seed: int = 0
    gpu: int = 0  # the CUDA GPU index it is built on


@dataclass
class BuildPlan:
    """What a build will do, worked out from the config and the ONNX alone."""

    config: BuildConfig
    onnx_path: Path
    engine_path: Path
    input_name: str
    image_shape: tuple[int, ...]  # the input's dims after the batch axis, e.g. (3, 224, 224)
    static_batch: bool
    profile: BatchProfile
    onnx_precision: str  # what the graph carries: fp32 | fp16 | int8
    calib_cache: Path | None
    opset: int = 17

    @property
    def precision(self) -> str:
        return self.config.legacy_precision or self.onnx_precision

    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """The input's (min, opt, max) shapes."""
        p = self.profile
        return tuple((n, *self.image_shape) for n in (p.min, p.opt, p.max))


def _positive(value: float | int | None, flag: str, minimum: float = 1) -> None:
    if value is not None and not value >= minimum:
        raise EngineError(f"{flag} must be at least {minimum:g}, got {value}")


def prepare_build(cfg: BuildConfig) -> BuildPlan:
    """Validate the config against the ONNX; no TensorRT needed."""
    _positive(cfg.workspace_gib, "--workspace", 1 / 1024)
    _positive(cfg.calib_batch, "--batch-size")
    _positive(cfg.calib_count, "--calib-count")
    _positive(cfg.dla_core, "--dla", 0)
    if cfg.opt_level is not None and not 0 <= cfg.opt_level <= MAX_OPT_LEVEL:
        raise EngineError(f"--opt-level must be 0 to {MAX_OPT_LEVEL}, got {cfg.opt_level}")
    if cfg.legacy_precision is not None and cfg.legacy_precision not in LEGACY_PRECISIONS:
        raise EngineError(f"--legacy-precision must be one of {', '.join(LEGACY_PRECISIONS)}, "
                          f"got '{cfg.legacy_precision}'")

    onnx_path = Path(cfg.onnx)
    model = load_onnx(onnx_path, load_weights=False)
    summary = summarize(model)
    if len(summary.inputs) != 1:
        raise EngineError(f"{onnx_path.name} has {len(summary.inputs)} inputs; an image classifier has one")
    input_name, dims = summary.inputs[0]
    if len(dims) < 2 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        raise EngineError(f"{onnx_path.name}: input '{input_name}' has shape {dims}; only the batch axis may be "
                          "dynamic")
    static = isinstance(dims[0], int) and dims[0] > 0
    if static:
        fixed = BatchProfile(dims[0], dims[0], dims[0])
        profile = BatchProfile.parse(cfg.profile) if cfg.profile else fixed
        if profile != fixed:
            raise EngineError(f"{onnx_path.name} has a static batch of {dims[0]}, so --profile must be {dims[0]}; "
                              "export with a dynamic batch (eca-deploy export without --static-batch) for a range")
    else:
        profile = BatchProfile.parse(cfg.profile or DEFAULT_DYNAMIC_BATCH)

    precision = onnx_precision(onnx_path)
    if cfg.legacy_precision and not is_exported(precision):
        raise EngineError(f"{onnx_path.name} already carries {precision} precision; --legacy-precision needs an "
                          "FP32 ONNX (drop the flag to build this one as it is)")
    if is_quantized(precision):
        problem = tensorrt_incompatible_qdq(model)
        if problem:
            raise EngineError(f"TensorRT cannot build {onnx_path.name}: {problem} (TensorRT takes symmetric int8 "
                              "Q/DQ only; this is a --target cpu model); make the TensorRT one with `eca-deploy "
                              "quantize --precision int8 --target tensorrt`")
    if cfg.dla_core is not None:
        _check_dla(cfg, profile, cfg.legacy_precision or precision)

    if cfg.output:
        engine_path = Path(cfg.output)
    else:
        stem = onnx_path.name[:-len(".onnx")] if onnx_path.name.endswith(".onnx") else onnx_path.stem
        legacy = f".legacy-{cfg.legacy_precision}" if cfg.legacy_precision else ""
        engine_path = onnx_path.with_name(f"{stem}{legacy}.engine")
    if engine_path.suffix.lower() not in ENGINE_SUFFIXES:
        raise EngineError(f"--output must end in .engine or .plan (how the runtime recognises an engine), "
                          f"got {engine_path.name}")

    calib_cache = None
    if is_quantized(cfg.legacy_precision):
        calib_cache = Path(cfg.calib_cache) if cfg.calib_cache else engine_path.with_name(engine_path.name + ".calib")
        if not cfg.calib_data and not calib_cache.is_file():
            raise EngineError("--legacy-precision int8 needs --calib-data (images to calibrate on) or an existing "
                              f"--calib-cache (looked for {calib_cache})")
    # the caches are read and rewritten: outputs, which no other output may be
    check_outputs([engine_path, manifest_path(engine_path), cfg.timing_cache, calib_cache],
                  [*onnx_inputs(onnx_path), *source_files(cfg.calib_data)])
    return BuildPlan(cfg, onnx_path, engine_path, input_name, tuple(dims[1:]), static, profile, precision,
                     calib_cache, summary.opset)


def _check_dla(cfg: BuildConfig, batch: BatchProfile, precision: str) -> None:
    """What DLA cannot do, refused before TensorRT would silently send every layer to the GPU (GPU
    fallback is on): DLA has no dynamic shapes and runs FP16/INT8 layers only (TensorRT developer
    guide, "Working with DLA"); the legacy INT8 path needs the entropy calibrator there."""
    if batch.min != batch.max:
        raise EngineError(f"--dla needs one fixed batch (DLA has no dynamic shapes), got --batch {batch}; "
                          f"pass e.g. --batch {batch.opt}")
    if is_exported(precision):
        raise EngineError("--dla needs an FP16 or INT8 network (DLA runs no FP32 layers): build an FP16/INT8 ONNX "
                          "from `eca-deploy quantize` or add --legacy-precision fp16")
    if is_quantized(cfg.legacy_precision) and cfg.calib_method != "entropy":
        raise EngineError(f"--dla with --legacy-precision int8 needs --calib-method entropy (the calibrator DLA "
                          f"requires), got {cfg.calib_method}")


