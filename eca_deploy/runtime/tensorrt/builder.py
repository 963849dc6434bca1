"""Build stage: ONNX -> TensorRT engine + manifest, for TensorRT 8.6, 10.x and 11.x.

On 10.x and 11.x the network is strongly typed: the precision is whatever the ONNX carries (FP32,
FP16, or INT8 with Q/DQ). 8.6 has no strong typing, so the builder sets the flag matching the
ONNX's precision. ``legacy_precision`` (8.6 / 10.x only) instead builds a weakly typed network from
an FP32 ONNX with the FP16 / INT8 flags and, for INT8, an implicit calibrator.

Everything that can be checked without TensorRT is checked first (plan.py's :func:`prepare_build`).
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...artifacts import atomic_write, file_lock, package_versions, sha256_file, source_weights, write_artifact
from ...data.sources import load_dataset
from ...errors import EngineError
from ...graph.graph import load_onnx
from .calibrator import attach_implicit_calibrator, cache_source
from .compat import (check_builder_version, check_legacy_precision, check_onnx_opset, precision_flags,
                     strongly_typed, trt_major, version_text)
from .env import gpu_info, import_cuda, import_tensorrt, primary_context, trt_logger
from .plan import BuildConfig, BuildPlan, prepare_build
from .trtexec import trtexec_command


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
        dataset = load_dataset(cfg.calib_data, imgsz=plan.image_shape[-1], count=cfg.calib_count, seed=cfg.seed)
    calib_source = None
    if cfg.legacy_precision == "int8":
        calib_source = cache_source(plan.calib_cache, sha256_file(plan.onnx_path), dataset)
    cuda = import_cuda()
    gpu = gpu_info(cuda, cfg.device)

    start = time.perf_counter()
    primary_context(cuda, cfg.device)
    built = _build(trt, cuda, plan, dataset, calib_source)
    seconds = time.perf_counter() - start

    typing = "strongly typed" if strongly_typed(version, cfg.legacy_precision) else "weakly typed"
    low, opt, high = plan.shapes()
    manifest = write_artifact(
        plan.engine_path, lambda tmp: tmp.write_bytes(built.plan), "build",
        source_onnx=str(plan.onnx_path),
        source_onnx_sha256=sha256_file(plan.onnx_path),
        **source_weights(plan.onnx_path),
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
    nodes = load_onnx(onnx_path, load_weights=False).graph.node
    found = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        index = error.node()
        where = f"node {nodes[index].name or index} ({nodes[index].op_type})" if 0 <= index < len(nodes) else "graph"
        found.append(f"{where}: {error.desc()}")
    more = f" (+{len(found) - 3} more)" if len(found) > 3 else ""
    return f"TensorRT cannot parse {onnx_path.name}: " + "; ".join(found[:3]) + more
