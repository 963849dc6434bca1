"""The precision stage: FP32 ONNX -> FP16 ONNX, or -> INT8 ONNX with explicit Q/DQ from calibrated ranges.

Precision lives in the ONNX because TensorRT 11 dropped the FP16/INT8 builder
flags and calibrators. Each result is checked against the FP32 model on
onnxruntime CPU before it is written, then written atomically with a manifest.

INT8 is accuracy-first: ``auto`` calibration builds a candidate per method from one histogram pass
and keeps the one closest to FP32 on held-out images (fewest flipped answers, then cosine); with a
budget (--max-top1-drop / --min-agreement) the most sensitive layers stay in float until the budget
holds. Every INT8 file gets parity's verdict (graph.compare.judge, same defaults) on those images.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from ..artifacts import (check_outputs, ensure_output_dir, manifest_path, package_versions, sha256_file,
                         source_weights, write_artifact)
from ..data.sources import Dataset, label_problem, load_dataset, skipped_files, source_files
from ..data.synthetic import photo_like_batch
from ..errors import DataError, ParityError, QuantizationError, first_line, warn
from ..graph.compare import compare_outputs, judge, resolution_notes
from ..data.pixels import FLOAT_NCHW
from ..graph.graph import load_onnx, onnx_inputs, opset_of, summarize
from ..graph.input_format import read_input_format
from ..graph.session import make_session
from ..precisions import LOW_PRECISIONS, PRECISIONS, QUANTIZED_OPS, Tolerance, variant_suffix
from ..progress import progress
from .fp16 import FP16_GLUE, FP32_GLUE, HIGH_PRECISIONS, convert_to_fp16, qdq_glue_to_fp16
from .int8.calibrators import CALIB_METHODS, DEFAULT_PERCENTILE, METHODS, TensorRange
from .int8.collect import calibrate
from .qdq.placement import QDQ_LAYOUTS, TARGETS, QdqPlan, make_plan, name_nodes, qdq_groups
from .qdq.rewrite import QdqSummary, insert_qdq, weight_qmax
from .search.evaluate import (JUDGED_ON, Reference, budget_record, budget_tolerance, check_budget, describe_budget,
                              reference_run, run_model, runtime_check, score, select_method)
from .search.fallback import keep_in_float
from .search.sensitivity import MEASURE, measure_sensitivity, write_plot

LOW_PRECISION_TYPES = {TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16", TensorProto.INT8: "INT8",
                       TensorProto.UINT8: "UINT8"}
FP16_CHECK_BATCH = 8  # photo-like random inputs for the FP16 check when no images are given
# Measured: onnxruntime's graph optimizations miscompute FP16-glue Q/DQ models (digits top-1 97.50 -> 95.28%
# on ECA-ResNet-18, 94.72 -> 84.72% on ECA-ResNet-50); TensorRT runs the FP16 glue as written.
FP16_GLUE_NOTE = ("this file is for TensorRT: its FP16 glue loses accuracy in onnxruntime with graph optimizations "
                  "on (measured 94.72 -> 84.72% top-1); for onnxruntime use --target cpu or --high-precision fp32")


@dataclass
class QuantizeConfig:
    onnx: str | Path
    precision: str = "int8"
    calib_data: str | Path | None = None  # images for calibration (int8, required) or for the FP16 check
    target: str = "tensorrt"
    high_precision: str | None = None  # int8 tensorrt: glue dtype, fp16 (default) or fp32; cpu: fp32 only
    qdq_layout: str = "eca-deploy"  # int8 tensorrt: eca-deploy's Q/DQ placement or Model Optimizer's
    cpu_vnni: bool = False  # int8 cpu: the deployment CPU has VNNI/AMX, so weights may use 8 bits (else 7)
    calib_method: str = CALIB_METHODS[0]
    calib_count: int | None = 512
    seed: int = 0
    calib_cache: str | Path | None = None  # default: <model stem>.calib.json beside the output
    use_cache: bool = True
    output: str | Path | None = None  # default: beside the input, <stem>.fp16.onnx / .int8.onnx / .int8.cpu.onnx
    batch_size: int = 8
    percentile: float = DEFAULT_PERCENTILE
    val_data: str | Path | None = None  # held-out images (default: calibration images not used for calibration)
    check_count: int | None = 128  # held-out images for the parity figures and the choices (None: all of them)
    max_top1_drop: float | None = None  # budget in points (labeled held-out images): float fallback until it holds
    min_agreement: float | None = None  # budget as top-1 agreement with FP32, where there are no labels
    max_float_layers: int | None = None  # most layers the fallback may leave in float (None: any number)
    sensitivity: bool = False  # measure per-layer sensitivity even without a budget
    overrides: dict = field(default_factory=dict)  # parity's tolerance overrides: {"atol": {"fp16": 0.2}}

    @property
    def budget_given(self) -> bool:
        """A budget was asked for: the most sensitive layers may stay in float until it holds."""
        return self.max_top1_drop is not None or self.min_agreement is not None


@dataclass
class ConvertJob:
    """What quantize() hands the precision's converter (its row's ``converter``), read and checked once."""

    source: Path
    model: onnx.ModelProto
    imgsz: int
    output: Path
    cache: Path | None  # the calibration cache (precisions that calibrate, unless --no-calib-cache)
    tolerance: Tolerance  # parity's verdict for this precision with the overrides, and the budget where it applies


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
    method_selection: dict | None = None  # auto: each method's held-out figures and why one won
    sensitivity: dict | None = None  # ranked per-layer table and its plot (int8, with a budget or on request)
    fallback: dict | None = None  # budget, layers left in float and why, the steps tried (int8 with a budget)
    verdict: dict | None = None  # int8: parity's verdict on the held-out images (passed, checks, notes, tolerance)
    fp16: dict | None = None  # clamped/flushed weight counts (fp16)
    skipped: list[dict] = field(default_factory=list)  # unreadable check images skipped (fp16; int8: calibration)
    runtime: dict | None = None  # int8: this CPU's default onnxruntime session beside the math (runtime_check)
    timings: dict = field(default_factory=dict)


def default_output(onnx_path: Path, precision: str, target: str, high_precision: str = FP16_GLUE,
                   layout: str = "eca-deploy") -> Path:
    """<stem>.<variant suffix>.onnx; a tensorrt INT8 file other than the default (FP16 glue, eca-deploy
    layout) adds .modelopt / .fp32-glue, so the engines of a comparison can sit side by side."""
    suffix = variant_suffix(precision, target)
    if PRECISIONS[precision].quantizes and target == "tensorrt":
        suffix += (".modelopt" if layout == "modelopt" else "") + (".fp32-glue" if high_precision == FP32_GLUE else "")
    return onnx_path.with_name(f"{onnx_path.stem}.{suffix}.onnx")


def high_precision_of(cfg: QuantizeConfig) -> str:
    """The INT8 glue dtype: fp16 by default on the tensorrt target (Model Optimizer's default for
    TensorRT), fp32 on the cpu target, whose integer kernels onnxruntime fuses from FP32 Q/DQ."""
    return cfg.high_precision or (FP16_GLUE if cfg.target == "tensorrt" else FP32_GLUE)


def check_input_model(model: onnx.ModelProto, path: Path) -> int:
    """Refuse quantized or non-image models; return the square input size."""
    if read_input_format(model) != FLOAT_NCHW:  # calibration and the checks feed normalised float images
        raise QuantizationError(f"{path} takes uint8 pixels (exported with --input-format uint8-nhwc); quantize "
                                "the float-nchw export of the same model instead")
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
    if cfg.calib_method not in CALIB_METHODS:
        raise QuantizationError(f"unknown calibration method {cfg.calib_method!r}; "
                                f"choose from {', '.join(CALIB_METHODS)}")
    if cfg.max_float_layers is not None and cfg.max_float_layers < 0:
        raise QuantizationError(f"--max-float-layers must be >= 0, got {cfg.max_float_layers}")
    check_budget(cfg.max_top1_drop, cfg.min_agreement)
    if not 0 < cfg.percentile <= 100:
        raise QuantizationError(f"--percentile must be in (0, 100], got {cfg.percentile}")
    if cfg.batch_size < 1:
        raise QuantizationError(f"--batch-size must be a positive integer, got {cfg.batch_size}")
    if cfg.high_precision is not None and cfg.high_precision not in HIGH_PRECISIONS:
        raise QuantizationError(f"--high-precision must be one of {', '.join(HIGH_PRECISIONS)}, "
                                f"got {cfg.high_precision!r}")
    if cfg.qdq_layout not in QDQ_LAYOUTS:
        raise QuantizationError(f"unknown --qdq-layout {cfg.qdq_layout!r}; choose from {', '.join(QDQ_LAYOUTS)}")
    if cfg.target == "cpu" and (cfg.high_precision == FP16_GLUE or cfg.qdq_layout != "eca-deploy"):
        raise QuantizationError("--high-precision fp16 and --qdq-layout modelopt are for --target tensorrt; the cpu "
                                "target's layout and FP32 glue are what onnxruntime fuses into integer kernels")
    if cfg.cpu_vnni and cfg.target != "cpu":
        raise QuantizationError("--cpu-vnni is for --target cpu (TensorRT's INT8 weights always use 8 bits)")
    if PRECISIONS[cfg.precision].quantizes and cfg.calib_data is None:
        raise QuantizationError(f"{cfg.precision.upper()} needs calibration images: pass --calib-data (a folder, "
                                "list or .npy)")


def quantize(cfg: QuantizeConfig) -> QuantizeResult:
    _validate(cfg)
    t0 = time.perf_counter()
    source = Path(cfg.onnx)
    model = load_onnx(source)
    imgsz = check_input_model(model, source)
    output = Path(cfg.output) if cfg.output else default_output(source, cfg.precision, cfg.target,
                                                                 high_precision_of(cfg), cfg.qdq_layout)
    row = PRECISIONS[cfg.precision]
    cache = calibration_cache(cfg, source, output)
    plot = sensitivity_plot(output) if row.quantizes and (cfg.sensitivity or cfg.budget_given) else None
    check_outputs([output, manifest_path(output), cache, plot],
                  [*onnx_inputs(source), *source_files(cfg.calib_data), *source_files(cfg.val_data)])
    ensure_output_dir(output.parent)  # an unwritable folder fails before calibration, not after it
    # the budget is the Q/DQ precisions': only they can leave layers in float until it holds
    budget = (cfg.max_top1_drop, cfg.min_agreement) if row.quantizes else (None, None)
    tolerance = budget_tolerance(cfg.precision, cfg.overrides, *budget)
    result = row.convert()(cfg, ConvertJob(source, model, imgsz, output, cache, tolerance))
    result.timings["total"] = time.perf_counter() - t0  # every converter's, timed the same way
    return result


def calibration_cache(cfg: QuantizeConfig, source: Path, output: Path) -> Path | None:
    """The range cache this run reads and rewrites (None where the precision calibrates nothing, or
    --no-calib-cache)."""
    if not PRECISIONS[cfg.precision].quantizes or not cfg.use_cache:
        return None
    return Path(cfg.calib_cache) if cfg.calib_cache else output.with_name(f"{source.stem}.calib.json")


def sensitivity_plot(output: Path) -> Path:
    return output.with_name(f"{output.name}.sensitivity.png")


def _check_data(cfg: QuantizeConfig, model: onnx.ModelProto, imgsz: int) -> tuple[Dataset | None, bool]:
    """Images for the parity figures (--val-data, else a subset of the calibration images, else None), and
    whether their labels are the model's classes. Labels beyond the model's classes are refused, as parity
    does; ImageFolder ranks of a class subset (calibration images often are one) only lose the accuracy figure."""
    source = cfg.val_data if cfg.val_data is not None else cfg.calib_data
    if source is None:
        return None, False
    data = load_dataset(source, imgsz, cfg.check_count, cfg.seed)
    return data, _labels_usable(data, model, str(source))


def _labels_usable(data: Dataset, model: onnx.ModelProto, source: str, needed: bool = False) -> bool:
    """Whether ``data``'s labels are the model's classes (refused when they cannot be, or when ``needed`` by a
    --max-top1-drop budget: then the error says what differs, not that labels are missing)."""
    dims = model.graph.output[0].type.tensor_type.shape.dim
    classes = dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None
    problem = label_problem(data.labels, data, classes, source) if classes else None
    if problem and (data.class_names is None or needed):
        raise DataError(problem)
    if problem:
        warn(f"{problem}; no accuracy figure")
    return data.labels is not None and not problem


def _logits(reference: onnx.ModelProto, candidate: onnx.ModelProto, data: Dataset | None, imgsz: int,
            batch_size: int, seed: int, use_labels: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Logits of both models on the same inputs (images, or one seeded random batch), and labels if any."""
    sessions = [make_session(reference, label="the input model"),
                make_session(candidate, label="the converted model")]
    name = sessions[0].get_inputs()[0].name
    if data is None:
        batch = photo_like_batch(FP16_CHECK_BATCH, imgsz, seed)
        return sessions[0].run(None, {name: batch})[0], sessions[1].run(None, {name: batch})[0], None
    ref, cand, labels = [], [], []
    for batch, batch_labels in data.batches(batch_size, desc="checking"):
        ref.append(sessions[0].run(None, {name: batch})[0])
        cand.append(sessions[1].run(None, {name: batch})[0])
        if batch_labels is not None and use_labels:
            labels.append(batch_labels)
    return np.concatenate(ref), np.concatenate(cand), (np.concatenate(labels) if labels else None)


def _accuracy(ref: np.ndarray, cand: np.ndarray, labels: np.ndarray | None) -> dict | None:
    if labels is None or len(labels) != len(ref):
        return None
    return {"fp32": float(np.mean(ref.argmax(1) == labels)), "candidate": float(np.mean(cand.argmax(1) == labels)),
            "images": int(len(labels))}


def _describe(data: Dataset | None) -> str:
    if data is None:
        return "seeded random photo-like inputs"
    return f"{len(data) - len(data.skipped)} images from {data.description}"


def quantize_fp16(cfg: QuantizeConfig, job: ConvertJob) -> QuantizeResult:
    """The fp16 row's converter: half-float weights and activations, checked against FP32 before writing."""
    source, model, imgsz, output, tolerance = job.source, job.model, job.imgsz, job.output, job.tolerance
    timings = {}
    t = time.perf_counter()
    half, report = convert_to_fp16(model)
    timings["convert"] = time.perf_counter() - t
    before, after = summarize(model), summarize(half)
    if sum(b.plain for b in after.eca_blocks) != sum(b.plain for b in before.eca_blocks):
        raise QuantizationError("FP16 conversion changed the shape of the ECA blocks")
    data, use_labels = _check_data(cfg, model, imgsz)
    t = time.perf_counter()
    ref, cand, labels = _logits(model, half, data, imgsz, cfg.batch_size, cfg.seed, use_labels)
    parity, accuracy = compare_outputs(ref, cand).as_dict(), _accuracy(ref, cand, labels)
    timings["check"] = time.perf_counter() - t
    # The judgement parity makes of an FP16 candidate, with the same overrides (--atol fp16=... etc.).
    verdict, _ = judge(tolerance, cand, ref, labels)
    if not verdict.passed:
        raise ParityError(f"FP16 output drifts from FP32 on {_describe(data)}: {'; '.join(verdict.failures)}; "
                          "not written (loosen with --atol/--rtol fp16=VALUE, as for parity)")
    manifest = write_artifact(output, half.SerializeToString(), "quantize", precision=cfg.precision, target=None,
                              source=source.name, source_sha256=sha256_file(source), **source_weights(source),
                              io_dtype="float32",
                              fp16=report.as_dict(),
                              parity={**parity, "data": _describe(data), "tolerance": asdict(tolerance),
                                      "checks": verdict.checks, "skipped": skipped_files(data)},
                              accuracy=accuracy, versions=package_versions("onnx", "onnxruntime"))
    return QuantizeResult(output, manifest, cfg.precision, None, parity, accuracy, _describe(data),
                          fp16=report.as_dict(), timings=timings, skipped=skipped_files(data))


def held_out(cfg: QuantizeConfig, imgsz: int, calibration: Dataset) -> tuple[Dataset, str, bool]:
    """Images to judge on: --val-data, else calibration images not used for calibration, else (said so) those used.
    --val-data is held out only where none of its images has the bytes of a calibration image (another folder
    or list may name the same files, or copies of them).

    Returns (data, what the images are, held out or not).
    """
    if cfg.val_data is not None:
        data = load_dataset(cfg.val_data, imgsz, cfg.check_count, cfg.seed)
        shared = calibration.shared_samples(data)
        if shared:
            return data, (f"images from {cfg.val_data} (NOT held out: {shared} of {len(data)} are calibration "
                          f"images of {cfg.calib_data}, same bytes; pass other images as --val-data)"), False
        return data, f"held-out images from {cfg.val_data}", True
    if cfg.calib_count is not None:
        rest = load_dataset(cfg.calib_data, imgsz, cfg.check_count, cfg.seed, exclude=cfg.calib_count)
        if len(rest):
            return rest, f"images of {cfg.calib_data} not used for calibration", True
    data = load_dataset(cfg.calib_data, imgsz, cfg.check_count, cfg.seed)
    return data, (f"calibration images (NOT held out: every image of {cfg.calib_data} calibrated; "
                  "pass --val-data or a smaller --calib-count)"), False


@dataclass
class _Candidate:
    model: onnx.ModelProto
    summary: QdqSummary
    logits: np.ndarray
    figures: dict
    fp16: dict | None = None  # the FP16 glue's conversion report (raised scales, clamped/flushed weights)


def _candidate(model: onnx.ModelProto, plan: QdqPlan, ranges: dict[str, TensorRange], ref: Reference,
               tol: Tolerance, high_precision: str = FP32_GLUE) -> _Candidate:
    """The Q/DQ model with these ranges, as it will be written (FP16 glue where asked), judged against FP32."""
    quantized, summary = insert_qdq(model, plan, ranges)
    quantized, report = with_glue(quantized, high_precision)
    logits = run_model(quantized, ref)
    return _Candidate(quantized, summary, logits, score(ref, logits, tol), report and report.as_dict())


def with_glue(model: onnx.ModelProto, high_precision: str):
    """An FP32-glue Q/DQ model with the glue ``high_precision`` names, and the FP16 conversion report (None: FP32)."""
    return qdq_glue_to_fp16(model) if high_precision == FP16_GLUE else (model, None)


def quantize_int8(cfg: QuantizeConfig, job: ConvertJob) -> QuantizeResult:
    """The int8 row's converter: calibrated ranges written as Q/DQ of the row's dtype, in the target's layout,
    accuracy first (method choice, sensitivity, float fallback until the budget ``job.tolerance`` holds)."""
    source, model, imgsz, output, cache, budget = job.source, job.model, job.imgsz, job.output, job.cache, job.tolerance
    timings = {}
    name_nodes(model)
    data = load_dataset(cfg.calib_data, imgsz, cfg.calib_count, cfg.seed)
    model_sha256 = sha256_file(source)
    plan = make_plan(model, cfg.target, cfg.qdq_layout, cfg.cpu_vnni, PRECISIONS[cfg.precision].qdq_dtype)
    high_precision = high_precision_of(cfg)
    check, description, is_held_out = held_out(cfg, imgsz, data)
    use_labels = _labels_usable(check, model, str(cfg.val_data or cfg.calib_data),  # before minutes of calibration
                                needed=cfg.max_top1_drop is not None)
    if cfg.budget_given:  # before decoding a single image: an unusable budget is bad input
        check_budget(cfg.max_top1_drop, labeled=use_labels)
    t = time.perf_counter()
    ref = reference_run(model, check, cfg.batch_size, description, is_held_out, use_labels)
    for note in resolution_notes(budget, ref.images, ref.labeled):
        warn(f"{note} (--check-count / --val-data give more)")
    timings["reference"] = time.perf_counter() - t

    methods = METHODS if cfg.calib_method == "auto" else (cfg.calib_method,)
    t = time.perf_counter()
    per_method, calibration = calibrate(model, plan.calibrated_tensors, model_sha256, data, cache, methods,
                                        cfg.batch_size, cfg.percentile)
    timings["calibrate"] = time.perf_counter() - t

    t = time.perf_counter()
    compared = progress(methods, desc="comparing calibration methods" if len(methods) > 1 else None, unit="methods")
    candidates = {m: _candidate(model, plan, per_method[m], ref, budget, high_precision) for m in compared}
    method, selection = select_method(candidates, ref.images)
    chosen = candidates[method]
    timings["judge_methods"] = time.perf_counter() - t

    sensitivity = fallback = mixed = None
    floated: set[str] = set()
    # fully INT8 already meeting the budget needs no layer ranked (the pass costs one run per layer)
    if cfg.sensitivity or (cfg.budget_given and not chosen.figures["passed"]):
        t = time.perf_counter()
        groups = qdq_groups(model, plan)
        ranking = measure_sensitivity(model, plan, groups, per_method[method], ref)
        timings["sensitivity"] = time.perf_counter() - t
        sensitivity = {"measure": MEASURE, "method": method, "data": ref.description, "groups": len(groups),
                       "ranked": ranking}
        if cfg.budget_given:
            t = time.perf_counter()
            mixed = keep_in_float(model, plan, groups, ranking, per_method[method], ref, budget, chosen.figures,
                                  cfg.max_float_layers)
            timings["fallback"] = time.perf_counter() - t
    if cfg.budget_given:
        steps = [{"float_layers": 0, **chosen.figures, "holds": True}] if mixed is None else mixed.steps
        fallback = {"budget": {**budget_record(budget), "judged_by": describe_budget(budget, ref.labeled)},
                    "float_layers": [] if mixed is None else mixed.floated, "steps": steps,
                    "data": ref.description}
    if mixed is not None:
        # the fallback judged FP32 glue; the file holds the glue this target asked for
        model_out, report = with_glue(mixed.model, high_precision)
        logits = run_model(model_out, ref) if report is not None else mixed.logits
        chosen = _Candidate(model_out, mixed.summary, logits, score(ref, logits, budget),
                            report and report.as_dict())
        floated = {f["tensor"] for f in mixed.floated}

    parity = compare_outputs(ref.logits, chosen.logits).as_dict()
    if not np.isfinite(parity["max_abs"]):
        if calibration["cached"]:  # the user can fix this: the ranges came from their cache file
            raise DataError(f"the INT8 model outputs NaN or infinity with the ranges read from the calibration "
                            f"cache {cache}; not written: delete the cache or pass --no-calib-cache")
        raise ParityError("the INT8 model outputs NaN or infinity on the check images; not written")
    accuracy = _accuracy(ref.logits, chosen.logits, ref.labels)
    runtime = runtime_check(chosen.model, chosen.logits, ref)
    # the verdict `parity` gives this file on these images: the same function, defaults and overrides
    judged, _ = judge(budget, chosen.logits, ref.logits, ref.labels)
    verdict = {"passed": judged.passed, "checks": judged.checks, "notes": judged.notes,
               "tolerance": asdict(budget), "data": ref.description}
    try:
        onnx.checker.check_model(chosen.model)
    except onnx.checker.ValidationError as exc:
        raise QuantizationError(f"the Q/DQ model fails onnx.checker: {first_line(exc)}") from exc

    if sensitivity is not None:
        plot = sensitivity_plot(output)
        write_plot(plot, sensitivity["ranked"], floated,
                   f"{source.name}, {cfg.target} target, {method} ranges: per-layer INT8 sensitivity")
        sensitivity["plot"] = plot.name
    qdq = chosen.summary.as_dict()
    manifest = write_artifact(
        output, chosen.model.SerializeToString(), "quantize", precision=cfg.precision, target=cfg.target,
        source=source.name, source_sha256=model_sha256, **source_weights(source),
        io_dtype="float32",
        quantization={"activations": "int8 symmetric" if cfg.target == "tensorrt" else "uint8 asymmetric",
                      "weights": f"int8 symmetric per-channel, {plan.weight_bits}-bit "
                                 f"[-{weight_qmax(plan.weight_bits)}, {weight_qmax(plan.weight_bits)}]",
                      "weight_bits": plan.weight_bits, "cpu_vnni": cfg.cpu_vnni if cfg.target == "cpu" else None,
                      "bias": "float" if cfg.target == "tensorrt" else "int32", "high_precision": high_precision,
                      "qdq_layout": plan.layout if cfg.target == "tensorrt" else None,
                      "opset": opset_of(chosen.model)},
        calibration={**calibration, "method": method, "requested": cfg.calib_method,
                     "percentile": cfg.percentile if method == "percentile" else None, "count": cfg.calib_count,
                     "seed": cfg.seed, "source": str(cfg.calib_data)},
        evaluation={"data": ref.description, "held_out": ref.held_out, "images": ref.images, "labeled": ref.labeled,
                    "judged_on": JUDGED_ON},
        runtime=runtime,
        method_selection=selection if cfg.calib_method == "auto" else None,
        sensitivity=sensitivity, fallback=fallback, fp16=chosen.fp16,
        qdq=qdq, parity={**parity, "data": ref.description}, accuracy=accuracy, verdict=verdict,
        versions=package_versions("onnx", "onnxruntime"))
    return QuantizeResult(output, manifest, cfg.precision, cfg.target, parity, accuracy, ref.description, qdq=qdq,
                          calibration={**calibration, "method": method}, timings=timings,
                          method_selection=selection if cfg.calib_method == "auto" else None,
                          sensitivity=sensitivity, fallback=fallback, fp16=chosen.fp16, runtime=runtime,
                          verdict=verdict)
