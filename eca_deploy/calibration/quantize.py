"""The precision stage: FP32 ONNX -> FP16 ONNX, or -> INT8 ONNX with explicit Q/DQ from calibrated ranges.

Precision lives in the ONNX because TensorRT 11 dropped the FP16/INT8 builder
flags and calibrators. Each result is checked against the FP32 model on
onnxruntime CPU before it is written, then written atomically with a manifest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from ..artifacts import (atomic_write, ensure_not_input, ensure_output_dir, package_versions, sha256_file,
                         write_manifest)
from ..errors import DataError, ParityError, QuantizationError, first_line, warn
from ..graph.compare import compare_outputs
from ..graph.graph import load_onnx, opset_of, summarize
from ..graph.session import make_session
from ..precisions import LOW_PRECISIONS, QUANTIZED_OPS, variant_suffix
from .fp16 import convert_to_fp16, qdq_glue_to_fp16
from .cache import cache_key, load_ranges, store_ranges
from .calibrators import DEFAULT_PERCENTILE, METHODS, TensorRange
from .collect import collect_stats
from .placement import QDQ_LAYOUTS, TARGETS, make_plan, name_nodes
from .qdq import insert_qdq
from ..data.sources import Dataset, label_problem, load_dataset

HIGH_PRECISIONS = ("fp16", "fp32")  # the dtype of an INT8 model's non-quantized glue (tensorrt target)
FP16_MIN_COSINE = 0.9999
LOW_PRECISION_TYPES = {TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16", TensorProto.INT8: "INT8",
                       TensorProto.UINT8: "UINT8"}
FP16_CHECK_BATCH = 8  # random inputs for the FP16 check when no images are given


@dataclass
class QuantizeConfig:
    onnx: str | Path
    precision: str = "int8"
    calib_data: str | Path | None = None  # images for calibration (int8, required) or for the FP16 check
    target: str = "tensorrt"
    high_precision: str | None = None  # int8 tensorrt: glue dtype, fp16 (default) or fp32; cpu: fp32 only
    qdq_layout: str = "eca-deploy"  # int8 tensorrt: eca-deploy's Q/DQ placement or Model Optimizer's
    calib_method: str = "entropy"
    calib_count: int | None = 512
    seed: int = 0
    calib_cache: str | Path | None = None  # default: <model stem>.calib.json beside the output
    use_cache: bool = True
    output: str | Path | None = None  # default: beside the input, <stem>.fp16.onnx / .int8.onnx / .int8.cpu.onnx
    batch_size: int = 8
    percentile: float = DEFAULT_PERCENTILE
    val_data: str | Path | None = None  # held-out images for the parity figures (default: the calibration images)
    check_count: int | None = 128  # images for the parity figures (None: all of them)


@dataclass
class QuantizeResult:
    path: Path
    manifest_path: Path
    precision: str
    target: str | None
    parity: dict  # compare_outputs figures vs FP32 on the check images
    accuracy: dict | None  # {"fp32": top-1, "candidate": top-1, "images": n} where the check images have labels
    check_data: str  # what the parity figures were computed on
    qdq: dict | None = None  # Q/DQ counts and nodes left in float (int8)
    calibration: dict | None = None  # images, data hash, method, cache use, skipped files (int8)
    fp16: dict | None = None  # clamped/flushed weight counts (fp16)
    timings: dict = field(default_factory=dict)


def default_output(onnx_path: Path, precision: str, target: str, high_precision: str = "fp16",
                   layout: str = "eca-deploy") -> Path:
    """<stem>.<variant suffix>.onnx; a tensorrt INT8 file other than the default (FP16 glue, eca-deploy
    layout) adds .modelopt / .fp32-glue, so the engines of a comparison can sit side by side."""
    suffix = variant_suffix(precision, target)
    if precision == "int8" and target == "tensorrt":
        suffix += (".modelopt" if layout == "modelopt" else "") + (".fp32-glue" if high_precision == "fp32" else "")
    return onnx_path.with_name(f"{onnx_path.stem}.{suffix}.onnx")


def high_precision_of(cfg: QuantizeConfig) -> str:
    """The INT8 glue dtype: fp16 by default on the tensorrt target (Model Optimizer's default for
    TensorRT), fp32 on the cpu target, whose integer kernels onnxruntime fuses from FP32 Q/DQ."""
    return cfg.high_precision or ("fp16" if cfg.target == "tensorrt" else "fp32")


def check_input_model(model: onnx.ModelProto, path: Path) -> int:
    """Refuse quantized or non-image models; return the square input size."""
    ops = [n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OPS]
    if ops:
        raise QuantizationError(f"{path} is already quantized ({len(ops)} {ops[0]}/... nodes); "
                                "give the FP32 model from eca-deploy export")
    low = [LOW_PRECISION_TYPES[i.data_type] for i in model.graph.initializer if i.data_type in LOW_PRECISION_TYPES]
    if low:
        raise QuantizationError(f"{path} already holds {low[0]} weights; give the FP32 model from eca-deploy export")
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    expected = "one float32 image input [N, 3, S, S]"
    if len(inputs) != 1:
        raise QuantizationError(f"{path} has {len(inputs)} inputs; expected {expected}")
    tensor_type = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    if tensor_type.elem_type != TensorProto.FLOAT or len(dims) != 4 or dims[1] != 3 or not dims[2] \
            or dims[2] != dims[3]:
        shape = [d if d is not None else "?" for d in dims]
        kind = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name if tensor_type.elem_type else "?"
        raise QuantizationError(f"{path} input '{inputs[0].name}' is {kind} {shape}; expected {expected}")
    return int(dims[2])


def _validate(cfg: QuantizeConfig) -> None:
    if cfg.precision not in LOW_PRECISIONS:
        raise QuantizationError(f"unknown precision {cfg.precision!r}; choose from {', '.join(LOW_PRECISIONS)}")
    if cfg.target not in TARGETS:
        raise QuantizationError(f"unknown target {cfg.target!r}; choose from {', '.join(TARGETS)}")
    if cfg.calib_method not in METHODS:
        raise QuantizationError(f"unknown calibration method {cfg.calib_method!r}; choose from {', '.join(METHODS)}")
    if not 0 < cfg.percentile <= 100:
        raise QuantizationError(f"--percentile must be in (0, 100], got {cfg.percentile}")
    if cfg.batch_size < 1:
        raise QuantizationError(f"--batch-size must be a positive integer, got {cfg.batch_size}")
    if cfg.high_precision is not None and cfg.high_precision not in HIGH_PRECISIONS:
        raise QuantizationError(f"--high-precision must be one of {', '.join(HIGH_PRECISIONS)}, "
                                f"got {cfg.high_precision!r}")
    if cfg.qdq_layout not in QDQ_LAYOUTS:
        raise QuantizationError(f"unknown --qdq-layout {cfg.qdq_layout!r}; choose from {', '.join(QDQ_LAYOUTS)}")
    if cfg.target == "cpu" and (cfg.high_precision == "fp16" or cfg.qdq_layout != "eca-deploy"):
        raise QuantizationError("--high-precision fp16 and --qdq-layout modelopt are for --target tensorrt; the cpu "
                                "target's layout and FP32 glue are what onnxruntime fuses into integer kernels")
    if cfg.precision == "int8" and cfg.calib_data is None:
        raise QuantizationError("INT8 needs calibration images: pass --calib-data (a folder, list or .npy)")


def quantize(cfg: QuantizeConfig) -> QuantizeResult:
    _validate(cfg)
    t0 = time.perf_counter()
    source = Path(cfg.onnx)
    model = load_onnx(source)
    imgsz = check_input_model(model, source)
    output = Path(cfg.output) if cfg.output else default_output(source, cfg.precision, cfg.target,
                                                                 high_precision_of(cfg), cfg.qdq_layout)
    ensure_not_input(output, [source, cfg.calib_data, cfg.val_data])
    ensure_output_dir(output.parent)  # an unwritable folder fails before calibration, not after it
    if cfg.precision == "fp16":
        return _fp16(cfg, source, model, imgsz, output, t0)
    return _int8(cfg, source, model, imgsz, output, t0)


def _check_data(cfg: QuantizeConfig, model: onnx.ModelProto, imgsz: int) -> tuple[Dataset | None, bool]:
    """Images for the parity figures (--val-data, else a subset of the calibration images, else None), and
    whether their labels are the model's classes. Labels beyond the model's classes are refused, as parity
    does; ImageFolder ranks of a class subset (calibration images often are one) only lose the accuracy figure."""
    source = cfg.val_data if cfg.val_data is not None else cfg.calib_data
    if source is None:
        return None, False
    data = load_dataset(source, imgsz, cfg.check_count, cfg.seed)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    classes = dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None
    problem = label_problem(data.labels, data, classes, str(source)) if classes else None
    if problem and data.class_names is None:
        raise DataError(problem)
    if problem:
        warn(f"{problem}; no accuracy figure")
    return data, data.labels is not None and not problem


def _logits(reference: onnx.ModelProto, candidate: onnx.ModelProto, data: Dataset | None, imgsz: int,
            batch_size: int, seed: int, use_labels: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Logits of both models on the same inputs (images, or one seeded random batch), and labels if any."""
    sessions = [make_session(reference, label="the input model"),
                make_session(candidate, label="the converted model")]
    name = sessions[0].get_inputs()[0].name
    if data is None:
        batch = np.random.default_rng(seed).standard_normal((FP16_CHECK_BATCH, 3, imgsz, imgsz), dtype=np.float32)
        return sessions[0].run(None, {name: batch})[0], sessions[1].run(None, {name: batch})[0], None
    ref, cand, labels = [], [], []
    for batch, batch_labels in data.batches(batch_size, desc="checking"):
        ref.append(sessions[0].run(None, {name: batch})[0])
        cand.append(sessions[1].run(None, {name: batch})[0])
        if batch_labels is not None and use_labels:
            labels.append(batch_labels)
    return np.concatenate(ref), np.concatenate(cand), (np.concatenate(labels) if labels else None)


def _parity(reference: onnx.ModelProto, candidate: onnx.ModelProto, data: Dataset | None, use_labels: bool,
            imgsz: int, cfg: QuantizeConfig) -> tuple[dict, dict | None]:
    ref, cand, labels = _logits(reference, candidate, data, imgsz, cfg.batch_size, cfg.seed, use_labels)
    parity = compare_outputs(ref, cand).as_dict()
    accuracy = None
    if labels is not None and len(labels) == len(ref):
        accuracy = {"fp32": float(np.mean(ref.argmax(1) == labels)),
                    "candidate": float(np.mean(cand.argmax(1) == labels)), "images": int(len(labels))}
    return parity, accuracy


def _describe(data: Dataset | None) -> str:
    if data is None:
        return "seeded random inputs"
    return f"{len(data) - len(data.skipped)} images from {data.description}"


def _fp16(cfg: QuantizeConfig, source: Path, model: onnx.ModelProto, imgsz: int, output: Path,
          t0: float) -> QuantizeResult:
    timings = {}
    t = time.perf_counter()
    half, report = convert_to_fp16(model)
    timings["convert"] = time.perf_counter() - t
    before, after = summarize(model), summarize(half)
    if sum(b.plain for b in after.eca_blocks) != sum(b.plain for b in before.eca_blocks):
        raise QuantizationError("FP16 conversion changed the shape of the ECA blocks")
    data, use_labels = _check_data(cfg, model, imgsz)
    t = time.perf_counter()
    parity, accuracy = _parity(model, half, data, use_labels, imgsz, cfg)
    timings["check"] = time.perf_counter() - t
    if not parity["min_cosine"] >= FP16_MIN_COSINE:  # also catches NaN
        raise ParityError(f"FP16 output drifts from FP32: cosine {parity['min_cosine']:.6f} on the worst sample "
                          f"(limit {FP16_MIN_COSINE}); not written")
    atomic_write(output, half.SerializeToString())
    manifest = write_manifest(output, "quantize", precision="fp16", target=None, source=source.name,
                              source_sha256=sha256_file(source), io_dtype="float32", fp16=report.as_dict(),
                              parity={**parity, "data": _describe(data), "min_cosine_limit": FP16_MIN_COSINE},
                              accuracy=accuracy, versions=package_versions("onnx", "onnxruntime"))
    timings["total"] = time.perf_counter() - t0
    return QuantizeResult(output, manifest, "fp16", None, parity, accuracy, _describe(data),
                          fp16=report.as_dict(), timings=timings)


def calibrate(model: onnx.ModelProto, tensors: list[str], model_sha256: str, data: Dataset, cfg: QuantizeConfig,
              cache: Path | None) -> tuple[dict[str, TensorRange], dict]:
    """Ranges for ``cfg.calib_method`` from the cache, or from a pass over ``data`` (which fills the cache).

    A histogram pass yields all three methods at no extra cost, so all of them go into the cache.
    """
    key = cache_key(model_sha256, data.data_hash, cfg.calib_method, cfg.percentile)
    info = {"method": cfg.calib_method, "data_hash": data.data_hash, "tensors": len(tensors),
            "cache": str(cache) if cache else None}
    if cache is not None and cache.exists():
        cached = load_ranges(cache, key, tensors)
        if cached is not None:
            return cached[0], {**info, "cached": True, "images": cached[1], "skipped": []}
    histograms = cfg.calib_method != "minmax"
    stats, used = collect_stats(model, tensors, data, cfg.batch_size, histograms=histograms)
    methods = METHODS if histograms else ("minmax",)
    entries = {cache_key(model_sha256, data.data_hash, m, cfg.percentile):
               {name: s.range(m, cfg.percentile) for name, s in stats.items()} for m in methods}
    if cache is not None:
        store_ranges(cache, entries, used)
    skipped = [{"path": p, "reason": r} for p, r in data.skipped]
    return entries[key], {**info, "cached": False, "images": used, "skipped": skipped}


def _int8(cfg: QuantizeConfig, source: Path, model: onnx.ModelProto, imgsz: int, output: Path,
          t0: float) -> QuantizeResult:
    timings = {}
    name_nodes(model)
    data = load_dataset(cfg.calib_data, imgsz, cfg.calib_count, cfg.seed)
    check, use_labels = _check_data(cfg, model, imgsz)  # bad labels are refused before minutes of calibration
    cache = None
    if cfg.use_cache:
        cache = Path(cfg.calib_cache) if cfg.calib_cache else output.with_name(f"{source.stem}.calib.json")
        ensure_not_input(cache, [source, cfg.calib_data, cfg.val_data])
    model_sha256 = sha256_file(source)
    plan = make_plan(model, cfg.target, cfg.qdq_layout)
    high_precision = high_precision_of(cfg)
    t = time.perf_counter()
    ranges, calibration = calibrate(model, plan.calibrated_tensors, model_sha256, data, cfg, cache)
    timings["calibrate"] = time.perf_counter() - t

    t = time.perf_counter()
    quantized, summary = insert_qdq(model, plan, ranges)
    if high_precision == "fp16":
        quantized, _ = qdq_glue_to_fp16(quantized)
    try:
        onnx.checker.check_model(quantized)
    except onnx.checker.ValidationError as exc:
        raise QuantizationError(f"the Q/DQ model fails onnx.checker: {first_line(exc)}") from exc
    timings["insert_qdq"] = time.perf_counter() - t

    t = time.perf_counter()
    parity, accuracy = _parity(model, quantized, check, use_labels, imgsz, cfg)
    timings["check"] = time.perf_counter() - t
    if not np.isfinite(parity["max_abs"]):
        raise ParityError("the INT8 model outputs NaN or infinity on the check images; not written")

    atomic_write(output, quantized.SerializeToString())
    qdq = summary.as_dict()
    manifest = write_manifest(
        output, "quantize", precision="int8", target=cfg.target, source=source.name, source_sha256=model_sha256,
        io_dtype="float32",
        quantization={"activations": "int8 symmetric" if cfg.target == "tensorrt" else "uint8 asymmetric",
                      "weights": "int8 symmetric per-channel", "bias": "float" if cfg.target == "tensorrt"
                      else "int32", "high_precision": high_precision,
                      "qdq_layout": plan.layout if cfg.target == "tensorrt" else None,
                      "opset": opset_of(quantized)},
        calibration={**calibration, "method": cfg.calib_method, "percentile": cfg.percentile
                     if cfg.calib_method == "percentile" else None, "count": cfg.calib_count, "seed": cfg.seed,
                     "source": str(cfg.calib_data)},
        qdq=qdq, parity={**parity, "data": _describe(check)}, accuracy=accuracy,
        versions=package_versions("onnx", "onnxruntime"))
    timings["total"] = time.perf_counter() - t0
    return QuantizeResult(output, manifest, "int8", cfg.target, parity, accuracy, _describe(check), qdq=qdq,
                          calibration=calibration, timings=timings)
