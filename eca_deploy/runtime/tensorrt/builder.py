"""Build stage: ONNX -> TensorRT engine + manifest, for TensorRT 8.5, 8.6, 10.x and 11.x, through Polygraphy.

NVIDIA's Polygraphy loaders (NetworkFromOnnxPath, CreateConfig, Profile, Calibrator,
EngineBytesFromNetwork; polygraphy/backend/trt/) parse, configure and build: NVIDIA tests them against
every TensorRT release, and CreateConfig clears TF32, so an FP32 engine computes in FP32. What stays ours:
compat.py's rules (network typing and builder flags per release, DLA), the refusals before any work
(plan.py), the DLA core and layer count, the timing cache's status and merge, the calibration data and
cache identity, and the manifest. Not used, and why: SaveEngine and EngineBytesFromNetwork's
save_timing_cache write in place with polygraphy's util.save_file (loader.py), where the engine and its
manifest must be written atomically as a pair (artifacts.write_artifact) and the timing cache merged
without another GPU's entries (:func:`_save_timing_cache`).

On 10.x and 11.x the network is strongly typed: the precision is whatever the ONNX carries (FP32, FP16,
or INT8 with Q/DQ). 8.x has no strong typing, so the flag matching the ONNX's precision is set.
``legacy_precision`` (8.x / 10.x only) instead builds a weakly typed network from an FP32 ONNX with the
FP16 / INT8 flags and, for INT8, an implicit calibrator.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...artifacts import (atomic_write, ensure_output_dir, file_lock, package_versions, sha256_file, source_weights,
                          write_artifact)
from ...data.pixels import FLOAT_NCHW, INPUT_FORMATS
from ...data.sources import load_dataset
from ...errors import EngineError, first_line
from ...graph.graph import io_tensors, load_onnx
from ...precisions import is_quantized
from ...graph.input_format import read_input_format
from .calibrator import CalibrationData, cache_source, calibration_base, record_calibration_cache
from .compat import (check_builder_version, check_legacy_precision, check_new_options, check_onnx_opset,
                     precision_flags, strongly_typed, version_text)
from .env import gpu_info, import_cuda, import_polygraphy, import_tensorrt, primary_context
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
    check_new_options(version, cfg.opt_level, cfg.version_compatible)
    check_legacy_precision(version, cfg.legacy_precision)
    check_onnx_opset(version, plan.opset)
    input_format = read_input_format(plan.onnx_path)  # copied into the manifest: the engine's runner reads it
    if is_quantized(cfg.legacy_precision) and input_format != FLOAT_NCHW:
        raise EngineError(f"{plan.onnx_path.name} takes uint8 pixels; legacy INT8 calibration feeds float images: "
                          "build it from the float-nchw export")
    dataset = None
    if is_quantized(cfg.legacy_precision) and cfg.calib_data:
        dataset = load_dataset(cfg.calib_data, imgsz=plan.image_shape[-1], count=cfg.calib_count, seed=cfg.seed)
    calib_source = None
    if is_quantized(cfg.legacy_precision):
        calib_source = cache_source(plan.calib_cache, sha256_file(plan.onnx_path), dataset, cfg.calib_method)
    cuda = import_cuda()
    gpu = gpu_info(cuda, cfg.gpu)

    start = time.perf_counter()
    primary_context(cuda, cfg.gpu)
    built = _build(trt, plan, dataset, calib_source)
    seconds = time.perf_counter() - start

    dla = cfg.dla_core is not None
    typing = "strongly typed" if strongly_typed(version, cfg.legacy_precision, dla) else "weakly typed"
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
        builder_flags=list(precision_flags(version, cfg.legacy_precision, plan.onnx_precision, dla)),
        tf32=False,  # Polygraphy's CreateConfig clears BuilderFlag.TF32 unless asked (tf32=True)
        input={"name": plan.input_name, "shape": ["batch" if not plan.static_batch else plan.profile.opt,
                                                   *plan.image_shape], "dtype": INPUT_FORMATS[input_format].dtype},
        input_format=input_format,
        # what a Triton model config declares for the engine, where the ONNX may be absent (packaging/triton.py)
        outputs=io_tensors(load_onnx(plan.onnx_path, load_weights=False))[1],
        profile={"batch": str(plan.profile), "min": list(low), "opt": list(opt), "max": list(high)},
        workspace_gib=cfg.workspace_gib,
        builder_optimization_level=cfg.opt_level,
        dla_core=cfg.dla_core,
        dla=built.dla,
        version_compatible=cfg.version_compatible,
        timing_cache={"path": cfg.timing_cache, "status": built.timing_status} if cfg.timing_cache else None,
        calibration=built.calibration,
        build_seconds=round(seconds, 2),
        trtexec=_trtexec_line(plan, version),
        versions=package_versions("tensorrt", "pycuda", "onnx", "polygraphy"),
    )
    return BuildResult(plan.engine_path, manifest, plan.precision, typing, version, gpu.as_dict(), seconds,
                       built.timing_status, built.notes)


def _trtexec_line(plan: BuildPlan, version: str) -> str | None:
    """The trtexec command repeating this build, or None where trtexec cannot (8.5 and our calibration cache)."""
    try:
        return shlex.join(trtexec_command(plan, version))
    except EngineError:
        return None


@dataclass
class _Built:
    plan: Any  # the serialized engine (trt.IHostMemory)
    timing_status: str | None = None
    calibration: dict | None = None
    notes: list[str] = field(default_factory=list)
    dla: dict | None = None
    config: Any = None  # the trt.IBuilderConfig the engine was built with


def _build(trt: Any, plan: BuildPlan, dataset: Any, calib_source: Any) -> _Built:
    cfg = plan.config
    if not is_quantized(cfg.legacy_precision):
        return _run_build(trt, plan, None)
    # Polygraphy's Calibrator reads and writes the cache file itself, and only logs a failed write
    # (polygraphy/backend/trt/calibrator.py, write_calibration_cache): it works on a copy, and the copy
    # becomes the cache (with its record) only after the build, once it parses.
    with tempfile.TemporaryDirectory(prefix=".calib-", dir=ensure_output_dir(plan.calib_cache.parent)) as scratch:
        working = Path(scratch) / plan.calib_cache.name
        if calib_source.reuse:
            shutil.copyfile(plan.calib_cache, working)
        fixed = plan.profile.min == plan.profile.max  # a static ONNX or a one-batch profile (DLA): calibrate at it
        data = CalibrationData(dataset, plan.input_name, plan.profile.opt if fixed else cfg.calib_batch,
                               plan.calib_cache)
        built = _run_build(trt, plan, (data, working))
        if data.error is not None:
            raise data.error
        built.calibration = _calibration(plan, calib_source, data, working, built.notes)
    return built


def _calibration(plan: BuildPlan, source: Any, data: CalibrationData, working: Path, notes: list[str]) -> dict:
    cfg = plan.config
    reused = source.reuse and data.images == 0
    kept = True if reused else record_calibration_cache(working, plan.calib_cache, source, data.images)
    if not kept:
        notes.append(f"TensorRT wrote no calibration cache (its log above says why): {plan.calib_cache} was not "
                     "written, so the next build calibrates again")
    return {"method": cfg.calib_method, "cache": str(plan.calib_cache) if kept else None, "cache_reused": reused,
            "images": data.images, "data": cfg.calib_data if data.images else None, "data_hash": source.data_hash,
            "source_onnx_sha256": source.onnx_sha256}


def _run_build(trt: Any, plan: BuildPlan, calibration: tuple[CalibrationData, Path] | None) -> _Built:
    """Parse, configure and build through Polygraphy's loaders; our settings go in through their arguments
    and one config callback (:func:`_finish_config`)."""
    poly, polygraphy_error = import_polygraphy()
    cfg = plan.config
    version = trt.__version__
    dla = cfg.dla_core is not None
    flags = precision_flags(version, cfg.legacy_precision, plan.onnx_precision, dla)
    network = poly.NetworkFromOnnxPath(str(plan.onnx_path),
                                       strongly_typed=strongly_typed(version, cfg.legacy_precision, dla))
    profiles = [poly.Profile().add(plan.input_name, *plan.shapes())]
    calibrator = None
    if calibration is not None:
        data, working = calibration
        # CreateConfig calibrates with the last profile (polygraphy/backend/trt/config.py): one fixed shape,
        # added only where the build's own profile is a range
        shape = (data.batch, *plan.image_shape)
        if plan.shapes()[0] != plan.shapes()[2]:
            profiles.append(poly.Profile().add(plan.input_name, shape, shape, shape))
        calibrator = poly.Calibrator(data, cache=str(working), BaseClass=calibration_base(trt, cfg.calib_method))
    create = poly.CreateConfig(
        fp16="FP16" in flags, int8="INT8" in flags, profiles=profiles, calibrator=calibrator,
        use_dla=dla, allow_gpu_fallback=dla, version_compatible=cfg.version_compatible,
        builder_optimization_level=cfg.opt_level,
        memory_pool_limits=None if cfg.workspace_gib is None else
        {trt.MemoryPoolType.WORKSPACE: int(cfg.workspace_gib * 2**30)})
    built = _Built(None)

    def config(builder: Any, network: Any) -> Any:
        built.config = create(builder, network)
        _finish_config(builder, network, built.config, cfg, built)
        return built.config

    try:
        built.plan = poly.EngineBytesFromNetwork(network, config=config)()
    except polygraphy_error as exc:  # Polygraphy logged TensorRT's errors; its exception is the summary
        raise EngineError(f"TensorRT {version_text(version)} could not build an engine from {plan.onnx_path.name}: "
                          f"{first_line(exc)} (the log above says why)") from exc
    finally:
        if calibrator is not None:
            calibrator.free()
    if cfg.timing_cache:
        _save_timing_cache(built.config, Path(cfg.timing_cache))
    return built


def _finish_config(builder: Any, network: Any, config: Any, cfg: BuildConfig, built: _Built) -> None:
    """What CreateConfig does not do as we need: it always places DLA work on core 0 and ignores the result of
    set_timing_cache, which we report (polygraphy/backend/trt/config.py, _configure_flags and call_impl)."""
    if cfg.dla_core is not None:
        if cfg.dla_core >= builder.num_DLA_cores:
            raise EngineError(f"--dla {cfg.dla_core}: this device has {builder.num_DLA_cores} DLA core(s)")
        config.DLA_core = cfg.dla_core
        built.dla = _dla_layers(config, network)
        built.notes.append(f"DLA core {cfg.dla_core}: {built.dla['layers_dla_capable']} of "
                           f"{built.dla['network_layers']} network layers can run on DLA, the rest fall back to "
                           "the GPU")
    if cfg.timing_cache:
        built.timing_status = _attach_timing_cache(config, Path(cfg.timing_cache))


def _attach_timing_cache(config: Any, path: Path) -> str:
    """Reuse the timing cache at ``path``; one from another TensorRT or GPU is replaced, not trusted."""
    data = path.read_bytes() if path.is_file() else b""
    timing_cache = config.create_timing_cache(data)
    if timing_cache is not None and config.set_timing_cache(timing_cache, False):
        return "reused" if data else "created"
    config.set_timing_cache(config.create_timing_cache(b""), False)
    return "replaced (it came from another TensorRT version or GPU)"


def _save_timing_cache(config: Any, path: Path) -> None:
    """Merge the cache on disk into this build's, under a file lock, then write it: two builds sharing a
    cache would otherwise each write back only their own entries. Polygraphy's EngineBytesFromNetwork
    (polygraphy/backend/trt/loader.py, save_timing_cache) locks the same ``<cache>.lock`` but combines with
    ignore_mismatch=True, which merges another GPU's entries (NvInfer.h 10.3, ITimingCache::combine): the
    very cache :func:`_attach_timing_cache` replaced. Hence ``False``: such a cache on disk is replaced."""
    timing_cache = config.get_timing_cache()
    with file_lock(path, path.with_name(path.name + ".lock")):
        on_disk = config.create_timing_cache(path.read_bytes()) if path.is_file() else None
        if on_disk is not None:
            timing_cache.combine(on_disk, False)  # False: a mismatched cache is not merged
        data = timing_cache.serialize()
        atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _dla_layers(config: Any, network: Any) -> dict:
    """How many network layers TensorRT says DLA can run (IBuilderConfig.can_run_on_DLA). The engine
    inspector cannot count what it placed: DLA subgraphs appear as ForeignNode layers, as Myelin's
    GPU subgraphs do (NVIDIA/TensorRT issue 3143: DLA placement is only in the verbose build log)."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    return {"network_layers": len(layers), "layers_dla_capable": sum(1 for layer in layers
                                                                     if config.can_run_on_DLA(layer))}
