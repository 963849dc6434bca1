"""One command from a checkpoint to a report: export -> FP16 / INT8 -> engines -> parity -> bench -> report.

Every artifact, manifest and report lands in one folder. A step that cannot run here (no
TensorRT, no calibration data) is skipped with its reason, recorded in the report and printed;
a candidate that cannot be opened is a row with status "error", and the others still run.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from .artifacts import ensure_output_dir
from .errors import DataError, EcaDeployError, OutputError
from .precisions import LOW_PRECISIONS
from .export.onnx_export import ExportConfig, export_model, safe_name
from .models import k_per_stage, load_model
from .calibration.quantize import QuantizeConfig, quantize
from .data.sources import load_dataset
from .runtime.backends.onnxruntime_backend import resolve_provider
from .runtime.backends.registry import Artifact, open_backend, parse_spec
from .runtime.backends.torch_backend import TorchBackend
from .runtime.harness.bench import bench_backend, check_batches
from .runtime.harness.device import describe_device
from .runtime.harness.parity import ReferenceRun, check_labels, open_inputs
from .runtime.harness.report import new_report, write_report
from .runtime.harness.rows import ReportRow
from .runtime.tensorrt.builder import BuildConfig, build_engine
from .runtime.tensorrt.env import tensorrt_unavailable_reason


@dataclass
class PipelineConfig:
    model: str
    weights: str | None = None  # None: random init (timings are real, accuracy is not)
    calib_data: str | None = None  # images for INT8 calibration; without them INT8 is skipped
    data: str | None = None  # labeled validation images; None: seeded synthetic inputs
    use_labels: bool = True  # False: compare on the images alone (their classes are not the model's)
    out_dir: str | None = None  # default: artifacts/<model>/
    imgsz: int = 224
    opset: int = 17
    precisions: tuple[str, ...] = LOW_PRECISIONS
    calib_method: str | None = None  # None: quantize's default
    high_precision: str | None = None  # INT8 for TensorRT: glue dtype; None: fp16 (fp32 where TensorRT is 8.x)
    qdq_layout: str = "eca-deploy"  # INT8 for TensorRT: eca-deploy's or Model Optimizer's Q/DQ placement
    target: str | None = None  # INT8 layout of the ONNX candidates: tensorrt | cpu; None: cpu on the CPU provider
    reference: str | None = None  # a .npz from `parity --save-reference`: judge against it instead of PyTorch
    calib_count: int | None = None
    count: int | None = None  # validation images (default: all)
    batches: tuple[int, ...] = (1, 8)
    parity_batch: int = 16
    warmup: int = 10
    iterations: int | None = None
    duration: float = 3.0
    provider: str = "auto"  # onnxruntime
    device: str = "auto"  # torch reference: cuda where available
    threads: int | None = None
    overrides: dict = field(default_factory=dict)
    seed: int = 0


@dataclass
class Step:
    name: str
    status: str  # "done" | "skipped" | "error"
    detail: str = ""
    seconds: float = 0.0


@dataclass
class PipelineResult:
    report: dict
    written: dict
    steps: list[Step]

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.report["rows"] if r["status"] in ("fail", "error")]


class _Log:
    def __init__(self, echo: Callable[[str], None]):
        self.steps: list[Step] = []
        self.rows: list[ReportRow] = []  # report rows for artifacts a failed step never wrote
        self.echo = echo

    def done(self, name: str, detail: str, started: float) -> None:
        self.steps.append(Step(name, "done", detail, time.perf_counter() - started))
        self.echo(f"[done] {name}: {detail} ({self.steps[-1].seconds:.1f} s)")

    def skip(self, name: str, reason: str) -> None:
        self.steps.append(Step(name, "skipped", reason))
        self.echo(f"[skip] {name}: {reason}")

    def error(self, name: str, reason: str, fmt: str | None = None, precision: str | None = None) -> None:
        self.steps.append(Step(name, "error", reason))
        self.echo(f"[error] {name}: {reason}")
        if fmt:
            self.rows.append(ReportRow(name, name, fmt, precision, "-", "error", reason))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _quantize(onnx_path: Path, precision: str, target: str, cfg: PipelineConfig):
    """quantize() writes beside the FP32 ONNX, named by precision and target, with its manifest."""
    options = {"calib_method": cfg.calib_method, "calib_count": cfg.calib_count}
    if target == "tensorrt":
        options.update(high_precision=cfg.high_precision, qdq_layout=cfg.qdq_layout)
    return quantize(QuantizeConfig(onnx=str(onnx_path), precision=precision, calib_data=cfg.calib_data,
                                   target=target, seed=cfg.seed,
                                   **{k: v for k, v in options.items() if v is not None}))


def make_onnx_variants(onnx_path: Path, precisions: tuple[str, ...], target: str, cfg: PipelineConfig,
                       log: _Log) -> dict[str, Path]:
    """FP16 / INT8 ONNX files (INT8 laid out for ``target``: onnxruntime on the CPU, or TensorRT)."""
    variants: dict[str, Path] = {}
    for precision in precisions:
        name = f"{precision} ONNX" + (f" ({target} target)" if precision == "int8" else "")
        if precision == "int8" and not cfg.calib_data:
            log.skip(name, "no --calib-data to calibrate INT8 ranges on")
            continue
        started = time.perf_counter()
        try:
            result = _quantize(onnx_path, precision, target, cfg)
        except OutputError:
            raise  # the output folder cannot take artifacts (a full disk): no later step could write either
        except EcaDeployError as exc:  # e.g. FP16 drifting from FP32: the other variants still run
            log.error(name, str(exc), "ONNX", precision)
            continue
        variants[precision] = Path(result.path)
        log.done(name, Path(result.path).name, started)
    return variants


def build_engines(sources: dict[str, Path], cfg: PipelineConfig, log: _Log) -> list[Path]:
    """One engine per precision, with a batch profile covering the benchmark and parity batches."""
    largest = max((*cfg.batches, cfg.parity_batch))
    profile = f"1:{max(cfg.batches)}:{largest}"
    engines = []
    for precision, onnx_path in sources.items():
        started = time.perf_counter()
        try:
            result = build_engine(BuildConfig(onnx=str(onnx_path), batch=profile, seed=cfg.seed))
        except OutputError:
            raise
        except EcaDeployError as exc:
            log.error(f"{precision} TensorRT engine", str(exc), "TensorRT", precision)
            continue
        engines.append(Path(result.engine_path))
        log.done(f"{precision} TensorRT engine", f"{Path(result.engine_path).name} (batch {profile})", started)
    return engines


def _engine_sources(onnx_path: Path, variants: dict[str, Path], ort_target: str, cfg: PipelineConfig,
                    log: _Log) -> dict[str, Path]:
    """The ONNX files engines are built from: INT8 needs the TensorRT Q/DQ layout."""
    sources = {"fp32": onnx_path, **{p: v for p, v in variants.items() if p != "int8"}}
    if "int8" in variants:
        sources.update(variants if ort_target == "tensorrt"
                       else make_onnx_variants(onnx_path, ("int8",), "tensorrt", cfg, log))
    return sources


def _measure(backend, artifact: Artifact, cfg: PipelineConfig, imgsz: int) -> dict:
    check_batches(artifact, cfg.batches, backend)
    return {"imgsz": imgsz, "batches": bench_backend(backend, cfg.batches, imgsz, cfg.warmup, cfg.iterations,
                                                    cfg.duration, cfg.seed, artifact.label)}


def _check_candidate(artifact: Artifact, provider: str, data, ref_run: ReferenceRun,
                     cfg: PipelineConfig) -> ReportRow:
    backend = open_backend(artifact, provider=provider, threads=cfg.threads)
    try:
        row = ref_run.judge(artifact, backend, data).row()
        row.bench = _measure(backend, artifact, cfg, cfg.imgsz)
        return row
    finally:
        backend.close()


def _saved_reference(cfg: PipelineConfig, data) -> ReferenceRun:
    """The saved reference, refused in one line when it is of another model or weights, or other data."""
    from .artifacts import sha256_file
    from .runtime.harness.parity import read_saved_reference

    meta, _, _ = read_saved_reference(cfg.reference)
    name = Path(cfg.reference).name
    if meta.get("model") and meta["model"] != cfg.model:
        raise DataError(f"{name} is a reference of {meta['model']}, not {cfg.model}")
    if cfg.weights and meta.get("weights_sha256") and meta["weights_sha256"] != sha256_file(cfg.weights):
        raise DataError(f"{name} was saved from other weights than {cfg.weights} (sha256 differs)")
    return ReferenceRun.load(cfg.reference, data, cfg.data, cfg.imgsz, cfg.use_labels, cfg.parity_batch,
                             cfg.overrides)


def run_pipeline(cfg: PipelineConfig, echo: Callable[[str], None] = _stderr) -> PipelineResult:
    if cfg.parity_batch < 1 or not cfg.batches or min(cfg.batches) < 1:
        raise EcaDeployError("batch sizes must be positive integers")
    unknown = set(cfg.precisions) - set(LOW_PRECISIONS)
    if unknown:
        raise EcaDeployError(f"--precisions takes {', '.join(LOW_PRECISIONS)}; got {', '.join(sorted(unknown))}")
    log = _Log(echo)
    total = time.perf_counter()
    out = ensure_output_dir(cfg.out_dir or Path("artifacts") / safe_name(cfg.model))
    data = open_inputs(cfg.data, cfg.imgsz, cfg.count, cfg.seed)  # a bad data folder fails before any work
    saved = _saved_reference(cfg, data) if cfg.reference else None  # wrong data or model: refused before work
    if cfg.calib_data:
        load_dataset(cfg.calib_data, imgsz=cfg.imgsz, count=cfg.calib_count, seed=cfg.seed)
    provider = resolve_provider(cfg.provider)

    started = time.perf_counter()
    loaded = load_model(cfg.model, cfg.weights)
    labels = data.labels if cfg.use_labels else None
    check_labels(labels, data, loaded.num_classes, cfg.data or "synthetic")  # before minutes of work
    exported = export_model(ExportConfig(model=cfg.model, weights=cfg.weights, out_dir=str(out), opset=cfg.opset,
                                         imgsz=cfg.imgsz, seed=cfg.seed), loaded=loaded)
    log.done("export", f"{exported.onnx_path.name}, simplified and verified against PyTorch", started)

    no_tensorrt = tensorrt_unavailable_reason()
    if not no_tensorrt and cfg.high_precision is None:
        from .runtime.tensorrt.compat import trt_major
        from .runtime.tensorrt.env import installed_tensorrt_version

        if trt_major(installed_tensorrt_version()) < 10:  # 8.x parses opset <= 17: FP32 glue, FP16 comes from its flag
            cfg = replace(cfg, high_precision="fp32")
    ort_target = cfg.target or ("cpu" if provider == "cpu" else "tensorrt")
    variants = make_onnx_variants(exported.onnx_path, cfg.precisions, ort_target, cfg, log)
    engines: list[Path] = []
    if no_tensorrt:
        log.skip("TensorRT engines", no_tensorrt)
    else:
        engines = build_engines(_engine_sources(exported.onnx_path, variants, ort_target, cfg, log), cfg, log)
    candidates = [exported.onnx_path, *variants.values(), *engines]

    started = time.perf_counter()
    if saved is not None:
        ref_run, ref_artifact = saved, saved.artifact
        rows = [ref_run.row()]
        log.done("reference", f"saved {Path(cfg.reference).name} ({ref_run.backend}) on "
                              f"{ref_run.metrics['samples']} inputs", started)
    else:
        reference = TorchBackend(cfg.model, cfg.weights, device=cfg.device, imgsz=cfg.imgsz, loaded=loaded,
                                 threads=cfg.threads)
        ref_artifact = parse_spec(f"torch:{cfg.model}" + (f":{cfg.weights}" if cfg.weights else ""))
        try:
            ref_run = ReferenceRun.measure(ref_artifact, reference, data, cfg.data, cfg.parity_batch,
                                           cfg.use_labels, cfg.overrides)
            rows = [ref_run.row(bench=_measure(reference, ref_artifact, cfg, cfg.imgsz))]
        finally:
            reference.close()
        log.done("reference", f"{reference.name} on {ref_run.metrics['samples']} inputs, benchmarked", started)

    for path in candidates:
        started = time.perf_counter()
        artifact = parse_spec(str(path))
        try:
            row = _check_candidate(artifact, provider, data, ref_run, cfg)
        except EcaDeployError as exc:  # one artifact that cannot run here does not stop the others
            log.error(f"parity + bench {artifact.label}", str(exc))
            rows.append(ReportRow.of(artifact, artifact.precision()[0], "-", "error", str(exc)))
            continue
        rows.append(row)
        log.done(f"parity + bench {artifact.label}", row.status + (f" ({row.reason})" if row.reason else ""),
                 started)

    rows += log.rows
    timings = {s.name: round(s.seconds, 2) for s in log.steps if s.status == "done"}
    timings["total"] = round(time.perf_counter() - total, 2)
    report = new_report(
        "pipeline", describe_device(cfg.threads), rows,
        model={"name": loaded.name, "weights": cfg.weights, "num_classes": loaded.num_classes, "imgsz": cfg.imgsz,
               "eca_k_per_stage": k_per_stage(loaded.eca_blocks)},
        data=ref_run.data,
        reference=ref_artifact.spec,
        skipped=[{"step": s.name, "reason": s.detail} for s in log.steps if s.status == "skipped"],
        steps=[{"step": s.name, "status": s.status, "detail": s.detail, "seconds": round(s.seconds, 2)}
               for s in log.steps],
        timings_s=timings)
    written = write_report(report, out)
    return PipelineResult(report, written, log.steps)
