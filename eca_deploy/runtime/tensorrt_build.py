"""Build stage: ONNX -> TensorRT engine + manifest, for TensorRT 8.6, 10.x and 11.x.

On 10.x and 11.x the network is strongly typed: the precision is whatever the ONNX carries (FP32,
FP16, or INT8 with Q/DQ). 8.6 has no strong typing, so the builder sets the flag matching the
ONNX's precision. ``legacy_precision`` (8.6 / 10.x only) instead builds a weakly typed network from
an FP32 ONNX with the FP16 / INT8 flags and, for INT8, an implicit calibrator.

Everything that can be checked without TensorRT is checked first (:func:`prepare_build`), so bad
input fails in a second, and :func:`trtexec_command` can describe the same build for a board.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts import (atomic_write, ensure_not_input, file_lock, package_versions, sha256_file,
                         write_manifest)
from ..errors import EngineError
from .tensorrt_compat import (LEGACY_PRECISIONS, BatchProfile, check_builder_version, check_legacy_precision,
                              check_onnx_opset, precision_flags, strongly_typed, trt_major, version_text)
from .tensorrt_env import gpu_info, import_cuda, import_tensorrt, primary_context, trt_logger

ENGINE_SUFFIXES = (".engine", ".plan")
DEFAULT_DYNAMIC_BATCH = "1:8:32"
MAX_OPT_LEVEL = 5


@dataclass
class BuildConfig:
    onnx: str
    output: str | None = None  # default: beside the ONNX, <name>.engine
    batch: str | None = None  # MIN:OPT:MAX; default 1:8:32, or the ONNX's static batch
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
    device: int = 0


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


@dataclass
class BuildResult:
    engine_path: Path
    manifest_path: Path
    precision: str
    typing: str  # "strongly typed" | "weakly typed"
    tensorrt_version: str
    gpu: dict
    build_seconds: float
    timing_cache: str | None = None  # "created" | "reused" | "replaced (...)"; None without --timing-cache
    notes: list[str] = field(default_factory=list)


def _positive(value: float | int | None, flag: str, minimum: float = 1) -> None:
    if value is not None and not value >= minimum:
        raise EngineError(f"{flag} must be at least {minimum:g}, got {value}")


def prepare_build(cfg: BuildConfig) -> BuildPlan:
    """Validate the config against the ONNX; no TensorRT needed."""
    from ..calibration.qdq import tensorrt_incompatible_qdq
    from ..export.graph import load_onnx, summarize
    from .backends import onnx_precision

    _positive(cfg.workspace_gib, "--workspace", 1 / 1024)
    _positive(cfg.calib_batch, "--calib-batch")
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
        profile = BatchProfile.parse(cfg.batch) if cfg.batch else fixed
        if profile != fixed:
            raise EngineError(f"{onnx_path.name} has a static batch of {dims[0]}, so --batch must be {dims[0]}; "
                              "export with a dynamic batch (eca-deploy export without --batch) for a range")
    else:
        profile = BatchProfile.parse(cfg.batch or DEFAULT_DYNAMIC_BATCH)

    precision = onnx_precision(onnx_path)
    if cfg.legacy_precision and precision != "fp32":
        raise EngineError(f"{onnx_path.name} already carries {precision} precision; --legacy-precision needs an "
                          "FP32 ONNX (drop the flag to build this one as it is)")
    if precision == "int8":
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
    if cfg.legacy_precision == "int8":
        calib_cache = Path(cfg.calib_cache) if cfg.calib_cache else engine_path.with_name(engine_path.name + ".calib")
        if not cfg.calib_data and not calib_cache.is_file():
            raise EngineError("--legacy-precision int8 needs --calib-data (images to calibrate on) or an existing "
                              f"--calib-cache (looked for {calib_cache})")
    ensure_not_input(engine_path, [onnx_path, cfg.timing_cache, calib_cache, cfg.calib_data])
    for written in (cfg.timing_cache, calib_cache):  # the caches are rewritten too
        if written is not None:
            ensure_not_input(written, [onnx_path, cfg.calib_data])
    return BuildPlan(cfg, onnx_path, engine_path, input_name, tuple(dims[1:]), static, profile, precision,
                     calib_cache, summary.opset)


def _check_dla(cfg: BuildConfig, batch: BatchProfile, precision: str) -> None:
    """What DLA cannot do, refused before TensorRT would silently send every layer to the GPU (GPU
    fallback is on): DLA has no dynamic shapes and runs FP16/INT8 layers only (TensorRT developer
    guide, "Working with DLA"); the legacy INT8 path needs the entropy calibrator there."""
    if batch.min != batch.max:
        raise EngineError(f"--dla needs one fixed batch (DLA has no dynamic shapes), got --batch {batch}; "
                          f"pass e.g. --batch {batch.opt}")
    if precision == "fp32":
        raise EngineError("--dla needs an FP16 or INT8 network (DLA runs no FP32 layers): build an FP16/INT8 ONNX "
                          "from `eca-deploy quantize` or add --legacy-precision fp16")
    if cfg.legacy_precision == "int8" and cfg.calib_method != "entropy":
        raise EngineError(f"--dla with --legacy-precision int8 needs --calib-method entropy (the calibrator DLA "
                          f"requires), got {cfg.calib_method}")


def build_engine(cfg: BuildConfig) -> BuildResult:
    """Build the engine, then write it, the timing cache and ``<engine>.json`` atomically."""
    plan = prepare_build(cfg)
    trt = import_tensorrt()
    version = trt.__version__
    check_builder_version(version)
    check_legacy_precision(version, cfg.legacy_precision)
    check_onnx_opset(version, plan.opset)
    dataset = None
    if cfg.legacy_precision == "int8" and cfg.calib_data:
        from ..calibration.sources import load_dataset

        dataset = load_dataset(cfg.calib_data, imgsz=plan.image_shape[-1], count=cfg.calib_count, seed=cfg.seed)
    calib_source = None
    if cfg.legacy_precision == "int8":
        from ..calibration.tensorrt_calibrator import cache_source

        calib_source = cache_source(plan.calib_cache, sha256_file(plan.onnx_path), dataset)
    cuda = import_cuda()
    gpu = gpu_info(cuda, cfg.device)

    start = time.perf_counter()
    primary_context(cuda, cfg.device)
    built = _build(trt, cuda, plan, dataset, calib_source)
    seconds = time.perf_counter() - start
    atomic_write(plan.engine_path, lambda tmp: tmp.write_bytes(built.plan))

    from .tensorrt_trtexec import trtexec_command

    typing = "strongly typed" if strongly_typed(version, cfg.legacy_precision) else "weakly typed"
    low, opt, high = plan.shapes()
    manifest = write_manifest(
        plan.engine_path, "build",
        source_onnx=str(plan.onnx_path),
        source_onnx_sha256=sha256_file(plan.onnx_path),
        tensorrt_version=version,
        gpu=gpu.as_dict(),
        precision=plan.precision,
        precision_source="legacy builder flags" if cfg.legacy_precision else "onnx",
        network=typing,
        builder_flags=list(precision_flags(version, cfg.legacy_precision, plan.onnx_precision)),
        input={"name": plan.input_name, "shape": ["batch" if not plan.static_batch else plan.profile.opt,
                                                   *plan.image_shape], "dtype": "float32"},
        profile={"batch": str(plan.profile), "min": list(low), "opt": list(opt), "max": list(high)},
        workspace_gib=cfg.workspace_gib,
        builder_optimization_level=cfg.opt_level,
        dla_core=cfg.dla_core,
        dla=built.dla,
        version_compatible=cfg.version_compatible,
        timing_cache={"path": cfg.timing_cache, "status": built.timing_status} if cfg.timing_cache else None,
        calibration=built.calibration,
        build_seconds=round(seconds, 2),
        trtexec=shlex.join(trtexec_command(plan, version)),
        versions=package_versions("tensorrt", "pycuda", "onnx"),
    )
    return BuildResult(plan.engine_path, manifest, plan.precision, typing, version, gpu.as_dict(), seconds,
                       built.timing_status, built.notes)


@dataclass
class _Built:
    plan: Any  # trt.IHostMemory: the serialized engine
    timing_status: str | None
    calibration: dict | None
    notes: list[str]
    dla: dict | None = None


def _build(trt: Any, cuda: Any, plan: BuildPlan, dataset: Any, calib_source: Any) -> _Built:
    cfg = plan.config
    version = trt.__version__
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, cfg.legacy_precision))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(plan.onnx_path)):
        raise EngineError(_parser_errors(parser, plan.onnx_path))

    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape(plan.input_name, *plan.shapes())
    config.add_optimization_profile(profile)
    if cfg.workspace_gib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_gib * 2**30))
    if cfg.opt_level is not None:
        config.builder_optimization_level = cfg.opt_level
    notes = []
    dla = None
    if cfg.dla_core is not None:
        if cfg.dla_core >= builder.num_DLA_cores:
            raise EngineError(f"--dla {cfg.dla_core}: this device has {builder.num_DLA_cores} DLA core(s)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = cfg.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        dla = _dla_layers(config, network)
        notes.append(f"DLA core {cfg.dla_core}: {dla['layers_dla_capable']} of {dla['network_layers']} network "
                     "layers can run on DLA, the rest fall back to the GPU")
    if cfg.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    flags = precision_flags(version, cfg.legacy_precision, plan.onnx_precision)
    if trt_major(version) < 11:  # weak-typing flags: gone in 11.x
        if "FP16" in flags:
            config.set_flag(trt.BuilderFlag.FP16)
        if "INT8" in flags:
            config.set_flag(trt.BuilderFlag.INT8)

    calibrator = None
    if cfg.legacy_precision == "int8":
        from ..calibration.tensorrt_calibrator import attach_implicit_calibrator

        shape = (plan.profile.opt if plan.static_batch else cfg.calib_batch, *plan.image_shape)
        calibrator = attach_implicit_calibrator(trt, cuda, builder, config, plan.input_name, shape, dataset,
                                                plan.calib_cache, calib_source, cfg.calib_method)
    timing_status = None
    if cfg.timing_cache:
        timing_status = _attach_timing_cache(config, Path(cfg.timing_cache))

    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if calibrator is not None and calibrator.error is not None:
        raise calibrator.error
    if serialized is None:
        raise EngineError(f"TensorRT {version_text(version)} could not build an engine from {plan.onnx_path.name} "
                          "(its log above says why)")
    calibration = None
    if calibrator is not None:
        read = calibrator.images > 0  # the data is recorded only when its images were read
        calibration = {"method": cfg.calib_method, "cache": str(plan.calib_cache),
                       "cache_reused": calibrator.cache_reused, "images": calibrator.images,
                       "data": cfg.calib_data if read else None, "data_hash": calib_source.data_hash,
                       "source_onnx_sha256": calib_source.onnx_sha256}
    if cfg.timing_cache:
        _save_timing_cache(config, Path(cfg.timing_cache))
    return _Built(serialized, timing_status, calibration, notes, dla)


def _network_flags(trt: Any, legacy_precision: str | None) -> int:
    version = trt.__version__
    if trt_major(version) < 10:  # 8.6: no strong typing; ONNX needs an explicit batch network
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if strongly_typed(version, legacy_precision):
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0  # 10.x legacy mode: weakly typed, because strongly typed networks reject FP16/INT8 flags


def _attach_timing_cache(config: Any, path: Path) -> str:
    """Reuse the timing cache at ``path``; one from another TensorRT or GPU is replaced, not trusted."""
    data = path.read_bytes() if path.is_file() else b""
    timing_cache = config.create_timing_cache(data)
    if timing_cache is not None and config.set_timing_cache(timing_cache, False):
        return "reused" if data else "created"
    config.set_timing_cache(config.create_timing_cache(b""), False)
    return "replaced (it came from another TensorRT version or GPU)"


def _save_timing_cache(config: Any, path: Path) -> None:
    """Merge the cache on disk into this build's, under a file lock, then write it: two builds sharing
    a cache would otherwise each write back only their own entries. As Polygraphy does
    (tools/Polygraphy/polygraphy/backend/trt/loader.py, EngineBytesFromNetwork: LockFile, then
    combine(prev_cache, ignore_mismatch=True), then serialize)."""
    timing_cache = config.get_timing_cache()
    with file_lock(path):
        on_disk = config.create_timing_cache(path.read_bytes()) if path.is_file() else None
        if on_disk is not None:
            timing_cache.combine(on_disk, True)  # ignore_mismatch: entries of another GPU/TensorRT are skipped
        data = timing_cache.serialize()
        atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _dla_layers(config: Any, network: Any) -> dict:
    """How many network layers TensorRT says DLA can run (IBuilderConfig.can_run_on_DLA). The engine
    inspector cannot count what it placed: DLA subgraphs appear as ForeignNode layers, as Myelin's
    GPU subgraphs do (NVIDIA/TensorRT issue 3143: DLA placement is only in the verbose build log)."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    return {"network_layers": len(layers), "layers_dla_capable": sum(1 for layer in layers
                                                                     if config.can_run_on_DLA(layer))}


def _parser_errors(parser: Any, onnx_path: Path) -> str:
    """One line listing the parser's errors with the ONNX node each one names."""
    from ..export.graph import load_onnx

    nodes = load_onnx(onnx_path, load_weights=False).graph.node
    found = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        index = error.node()
        where = f"node {nodes[index].name or index} ({nodes[index].op_type})" if 0 <= index < len(nodes) else "graph"
        found.append(f"{where}: {error.desc()}")
    more = f" (+{len(found) - 3} more)" if len(found) > 3 else ""
    return f"TensorRT cannot parse {onnx_path.name}: " + "; ".join(found[:3]) + more
