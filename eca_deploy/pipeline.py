"""One command from a checkpoint to a report: export -> FP16 / INT8 -> engines -> parity -> bench -> report.

Where OpenVINO is installed and the CPU is x86 (or with ``openvino=True``), the FP32 model is also
converted to OpenVINO IR, and the IR and every ONNX variant are run on OpenVINO too: extra rows.
Every artifact, manifest and report lands in one folder. A step that cannot run here (no
TensorRT, no calibration data) is skipped with its reason, recorded in the report and printed;
a candidate that cannot be opened is a row with status "error", and the others still run.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from .artifacts import check_outputs, ensure_output_dir, sha256_file
from .data.sources import load_dataset, source_files
from .data.pixels import FLOAT_NCHW
from .errors import DataError, EcaDeployError, MissingDependencyError, OutputError
from .precisions import EXPORTED, LOW_PRECISIONS, is_quantized
from .packaging.triton import TritonOptions, check_name, install_entry, prepare_entry, refuse_existing
from .export.onnx_export import ExportConfig, export_model, safe_name
from .export.openvino_export import write_ir
from .graph.compare import given_overrides
from .models import k_per_stage, load_model
from .calibration.search.evaluate import check_budget
from .calibration.quantize import QuantizeConfig, quantize
from .packaging.deepstream import DeepStreamConfig, pick_artifact, write_deepstream_config
from .runtime.onnxruntime.backend import resolve_provider
from .graph.openvino_session import import_openvino
from .runtime.openvino.kind import PREFIX as OPENVINO_PREFIX
from .runtime.registry import Artifact, open_backend, parse_spec
from .runtime.torch.backend import TorchBackend
from .runtime.base import OpenOptions
from .runtime.harness.bench import Timing, bench_backend, check_batches
from .runtime.harness.device import describe_device, int8_cpu_warning
from .runtime.harness.parity import ReferenceRun, check_labels, open_inputs, read_saved_meta
from .runtime.harness.recommend import recommend
from .runtime.harness.report import new_report, report_paths, write_report
from .runtime.harness.rows import ReportRow
from .runtime.tensorrt.builder import BuildConfig, build_engine
from .runtime.tensorrt.compat import trt_major
from .runtime.tensorrt.env import build_unavailable_reason, installed_tensorrt_version

X86 = ("x86_64", "amd64", "i386", "i686")


@dataclass
class PipelineConfig:
    """The pipeline's settings, named as its command line names them; each step builds its stage's config
    (the ONNX to quantize, the candidates to check) from them. The model and image size come from ``export``.
    """

    export: ExportConfig  # model, weights (None: random init), out_dir (default: artifacts/<model>/), imgsz, opset
    calib_data: str | None = None  # images to calibrate INT8 on; without them INT8 is skipped
    calib_count: int | None = None  # None: all
    calib_method: str = QuantizeConfig.calib_method
    high_precision: str | None = None  # INT8 for TensorRT: the glue dtype (None: quantize's default)
    qdq_layout: str = QuantizeConfig.qdq_layout  # INT8 for TensorRT: whose Q/DQ placement
    cpu_vnni: bool = False  # INT8 for the cpu target: 8-bit weights
    data: str | None = None  # images parity compares on (None: seeded synthetic inputs)
    count: int | None = None
    use_labels: bool = True
    batch_size: int = 16  # images per inference batch of the accuracy runs
    overrides: dict = field(default_factory=dict)  # tolerance overrides (--atol, --max-top1-drop, ...)
    options: OpenOptions = field(default_factory=OpenOptions)  # how every artifact is opened
    timing: Timing = field(default_factory=lambda: Timing(batches=(1, 8)))
    seed: int = 0  # subsets, synthetic inputs and benchmarks
    precisions: tuple[str, ...] = LOW_PRECISIONS
    openvino: bool | None = None  # OpenVINO rows: None where it is installed and the CPU is x86; True; False

    target: str | None = None  # INT8 layout of the ONNX candidates: tensorrt | cpu; None: cpu on the CPU provider
    reference: str | None = None  # a .npz from `parity --save-reference`: judge against it instead of PyTorch
    deepstream: str | None = None  # a Gst-nvinfer config file to write for the artifact picked from the report
    recommend_by: str = "latency"  # report.RECOMMEND_BY: how the recommended artifact is chosen
    triton: str | None = None  # a Triton model repository to package the recommended artifact into


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


def _budget(cfg: PipelineConfig, precision: str) -> dict:
    """The --max-top1-drop / --min-agreement given for ``precision`` (or every precision): also quantize's budget
    where the precision quantizes (none otherwise: only Q/DQ layers can be left in float until it holds)."""
    if not is_quantized(precision):
        return {}
    return given_overrides(cfg.overrides, precision, ("max_top1_drop", "min_agreement"))


def _quantize(onnx_path: Path, precision: str, target: str, cfg: PipelineConfig):
    """quantize() writes beside the FP32 ONNX, named by precision and target, with its manifest."""
    budget = _budget(cfg, precision)
    # --high-precision and --qdq-layout are the tensorrt target's; the cpu target takes its own layout
    layout = (QuantizeConfig(str(onnx_path), high_precision=cfg.high_precision, qdq_layout=cfg.qdq_layout)
              if target == "tensorrt" else QuantizeConfig(str(onnx_path), cpu_vnni=cfg.cpu_vnni))
    return quantize(replace(layout, precision=precision, target=target, calib_data=cfg.calib_data,
                            calib_count=cfg.calib_count, calib_method=cfg.calib_method, seed=cfg.seed,
                            overrides=cfg.overrides, **budget))



def make_onnx_variants(onnx_path: Path, precisions: tuple[str, ...], target: str, cfg: PipelineConfig,
                       log: _Log) -> dict[str, Path]:
    """FP16 / INT8 ONNX files (INT8 laid out for ``target``: onnxruntime on the CPU, or TensorRT)."""
    variants: dict[str, Path] = {}
    for precision in precisions:
        name = f"{precision} ONNX" + (f" ({target} target)" if is_quantized(precision) else "")
        if is_quantized(precision) and not cfg.calib_data:
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
    largest = max((*cfg.timing.batches, cfg.batch_size))
    profile = f"1:{max(cfg.timing.batches)}:{largest}"
    engines = []
    for precision, onnx_path in sources.items():
        started = time.perf_counter()
        try:
            result = build_engine(BuildConfig(onnx=str(onnx_path), profile=profile, seed=cfg.seed,
                                              gpu=cfg.options.gpu))
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
    quantized = tuple(p for p in variants if is_quantized(p))
    sources = {EXPORTED: onnx_path, **{p: v for p, v in variants.items() if p not in quantized}}
    if quantized:
        sources.update(variants if ort_target == "tensorrt"
                       else make_onnx_variants(onnx_path, quantized, "tensorrt", cfg, log))
    return sources


def openvino_skip_reason(wanted: bool | None) -> str | None:
    """Why the OpenVINO rows are left out, or None to add them. Asked for but not installed: an error."""
    if wanted is False:
        return "--no-openvino"
    try:
        import_openvino()
    except MissingDependencyError as exc:
        if wanted:
            raise
        return str(exc)
    machine = platform.machine()
    if not wanted and machine.lower() not in X86:
        return f"not an x86 CPU ({machine}); --openvino runs it anyway"
    return None


def pixel_input(cfg: PipelineConfig, log: _Log) -> PipelineConfig:
    """A uint8-nhwc export is checked as FP32 (its ONNX, engine and the ONNX on OpenVINO): quantize takes
    float-nchw models."""
    if cfg.export.input_format == FLOAT_NCHW:
        return cfg
    for precision in cfg.precisions:
        log.skip(f"{precision} ONNX", f"quantize takes float-nchw models; this export takes {cfg.export.input_format}")
    return replace(cfg, precisions=())


def make_ir(exported, loaded, export_cfg: ExportConfig, log: _Log) -> list[str]:
    """The FP32 model as OpenVINO IR, converted from the verified ONNX and verified again."""
    if export_cfg.input_format != FLOAT_NCHW:
        log.skip("OpenVINO IR", "the IR export takes float-nchw models (OpenVINO runs the uint8 ONNX itself)")
        return []
    started = time.perf_counter()
    try:
        result = write_ir(exported, loaded, export_cfg)
    except EcaDeployError as exc:
        log.error("OpenVINO IR", str(exc), "OpenVINO IR", "fp32")
        return []
    log.done("OpenVINO IR", f"{result.xml_path.name} + {result.bin_path.name}, verified against PyTorch", started)
    return [str(result.xml_path)]


def _measure(backend, artifact: Artifact, cfg: PipelineConfig, imgsz: int) -> dict:
    timing = cfg.timing
    check_batches(artifact, timing.batches, backend)
    return {"imgsz": imgsz, "batches": bench_backend(backend, timing.batches, imgsz, timing.warmup, timing.iterations,
                                                    timing.duration, cfg.seed, artifact.label)}


def _check_candidate(artifact: Artifact, provider: str, data, ref_run: ReferenceRun,
                     cfg: PipelineConfig) -> ReportRow:
    backend = open_backend(artifact, cfg.options, provider=provider)
    try:
        row = ref_run.judge(artifact, backend, data).row()
        row.bench = _measure(backend, artifact, cfg, cfg.export.imgsz)
        return row
    finally:
        backend.close()


def _saved_reference(cfg: PipelineConfig, data) -> ReferenceRun:
    """The saved reference, refused in one line when it is of another model or weights, or other data."""
    meta = read_saved_meta(cfg.reference)
    name = Path(cfg.reference).name
    model, weights = cfg.export.model, cfg.export.weights
    if meta.get("model") and meta["model"] != model:
        raise DataError(f"{name} is a reference of {meta['model']}, not {model}")
    if weights and meta.get("weights_sha256") and meta["weights_sha256"] != sha256_file(weights):
        raise DataError(f"{name} was saved from other weights than {weights} (sha256 differs)")
    return ReferenceRun.load(cfg.reference, data, cfg.data, cfg.export.imgsz, cfg.use_labels, cfg.batch_size,
                             cfg.overrides)


def explain_saturation(rows: list[ReportRow], saturated: dict[str, str]) -> None:
    """A row that fails because this CPU's u8s8 kernels saturate its 8-bit weights says so, naming the
    row of the same file that passes elsewhere (onnxruntime runs the FP16-glue file in float)."""
    for row in rows:
        if row.status != "fail" or row.identity not in saturated:
            continue
        file = row.identity.removeprefix(OPENVINO_PREFIX)
        passing = [r.backend for r in rows if r is not row and r.status == "pass"
                   and r.identity.removeprefix(OPENVINO_PREFIX) == file]
        elsewhere = f"passes on {', '.join(passing)} but " if passing else ""
        row.reason = (f"{row.reason}; this file {elsewhere}fails on {row.backend} because this CPU has no VNNI: "
                      "its u8s8 kernels saturate the 8-bit weights in int16 (quantize --target cpu, 7-bit "
                      "weights, does not)")


def _triton(chosen: dict, cfg: PipelineConfig, labels: list[str] | None) -> str:
    """The recommended artifact as a Triton model named after the model, preferred batch from its own bench row."""
    entry = prepare_entry(parse_spec(chosen["spec"]), cfg.triton, TritonOptions(
        name=safe_name(cfg.export.model), bench_entries=chosen["bench"]["batches"], labels=labels))
    install_entry(entry)
    return f"{entry.path} ({chosen['artifact']}: {entry.serving}, max_batch_size {entry.max_batch_size})"


# serving stack -> (the PipelineConfig field naming where it goes, the packager); a DeepStream config joins here
PACKAGERS = {"Triton repository": ("triton", _triton)}


def package_recommended(recommended: list[dict], cfg: PipelineConfig, labels: list[str] | None, log: _Log) -> None:
    """Package the recommended artifact for each serving stack asked for: one step each, skipped where no artifact
    passed. The pipeline measures one device, so there is at most one recommended artifact."""
    for step, (target, packager) in PACKAGERS.items():
        if not getattr(cfg, target):
            continue
        if not recommended:
            log.skip(step, "no artifact passed parity with a bench result to rank it by, so none is recommended")
            continue
        started = time.perf_counter()
        try:
            log.done(step, packager(recommended[0], cfg, labels), started)
        except EcaDeployError as exc:
            log.error(step, str(exc))


def run_pipeline(cfg: PipelineConfig, echo: Callable[[str], None] = _stderr) -> PipelineResult:
    model, imgsz = cfg.export.model, cfg.export.imgsz
    if cfg.batch_size < 1:
        raise EcaDeployError("batch sizes must be positive integers")
    cfg.timing.check()
    unknown = set(cfg.precisions) - set(LOW_PRECISIONS)
    if unknown:
        raise EcaDeployError(f"--precisions takes {', '.join(LOW_PRECISIONS)}; got {', '.join(sorted(unknown))}")
    log = _Log(echo)
    cfg = pixel_input(cfg, log)  # before any work: a uint8 export without --data is refused
    total = time.perf_counter()
    out = ensure_output_dir(cfg.export.out_dir or Path("artifacts") / safe_name(model))
    # each stage refuses to overwrite what it reads; the report, written last, is checked before any work
    check_outputs(report_paths(out).values(),
                  [cfg.export.weights, *source_files(cfg.calib_data), *source_files(cfg.data)])
    if cfg.triton:  # the model's entry is never replaced: refused before minutes of work, not after
        refuse_existing(Path(cfg.triton) / check_name(safe_name(model)), force=False)
    data = open_inputs(cfg.data, imgsz, cfg.count, cfg.seed)  # a bad data folder fails before any work
    saved = _saved_reference(cfg, data) if cfg.reference else None  # wrong data or model: refused before work
    if cfg.calib_data:
        calib = load_dataset(cfg.calib_data, imgsz=imgsz, count=cfg.calib_count, seed=cfg.seed)
        for precision in cfg.precisions:  # --max-top1-drop on unlabeled calibration images: refused before work
            check_budget(**_budget(cfg, precision), labeled=calib.labels is not None)
    provider = resolve_provider(cfg.options.provider)
    no_openvino = openvino_skip_reason(cfg.openvino)  # asked for but not installed: fails before any work

    started = time.perf_counter()
    loaded = load_model(model, cfg.export.weights, seed=cfg.export.seed)
    labels = data.labels if cfg.use_labels else None
    check_labels(labels, data, loaded.num_classes, cfg.data or "synthetic")  # before minutes of work
    export_cfg = replace(cfg.export, out_dir=str(out))
    exported = export_model(export_cfg, loaded=loaded)
    log.done("export", f"{exported.onnx_path.name}, simplified and verified against PyTorch", started)

    no_tensorrt = build_unavailable_reason()
    if not no_tensorrt and cfg.high_precision is None:
        if trt_major(installed_tensorrt_version()) < 10:  # 8.x parses opset <= 17: FP32 glue, FP16 comes from its flag
            cfg = replace(cfg, high_precision="fp32")
    ort_target = cfg.target or ("cpu" if provider == "cpu" else "tensorrt")
    variants = make_onnx_variants(exported.onnx_path, cfg.precisions, ort_target, cfg, log)
    engines: list[Path] = []
    if no_tensorrt:
        log.skip("TensorRT engines", no_tensorrt)
    else:
        engines = build_engines(_engine_sources(exported.onnx_path, variants, ort_target, cfg, log), cfg, log)
    candidates = [str(p) for p in (exported.onnx_path, *variants.values(), *engines)]
    if no_openvino:
        log.skip("OpenVINO", no_openvino)
    else:
        candidates += make_ir(exported, loaded, export_cfg, log)
        candidates += [OPENVINO_PREFIX + str(p) for p in (exported.onnx_path, *variants.values())]

    started = time.perf_counter()
    weights = cfg.export.weights
    if saved is not None:
        ref_run, ref_artifact = saved, saved.artifact
        rows = [ref_run.row()]
        log.done("reference", f"saved {Path(cfg.reference).name} ({ref_run.backend}) on "
                              f"{ref_run.metrics['samples']} inputs", started)
    else:
        reference = TorchBackend(model, weights, device=cfg.options.device, imgsz=imgsz, loaded=loaded,
                                 threads=cfg.options.threads)
        ref_artifact = parse_spec(f"torch:{model}" + (f":{weights}" if weights else ""))
        try:
            ref_run = ReferenceRun.measure(ref_artifact, reference, data, cfg.data, cfg.batch_size,
                                           cfg.use_labels, cfg.overrides)
            rows = [ref_run.row(bench=_measure(reference, ref_artifact, cfg, imgsz))]
        finally:
            reference.close()
        log.done("reference", f"{reference.name} on {ref_run.metrics['samples']} inputs, benchmarked", started)

    saturated: dict[str, str] = {}  # row identity -> why this CPU's runtime saturates that file
    for spec in candidates:
        started = time.perf_counter()
        artifact = parse_spec(spec)
        try:
            row = _check_candidate(artifact, provider, data, ref_run, cfg)
        except EcaDeployError as exc:  # one artifact that cannot run here does not stop the others
            log.error(f"parity + bench {artifact.label}", str(exc))
            rows.append(ReportRow.of(artifact, artifact.precision()[0], "-", "error", str(exc)))
            continue
        saturation = int8_cpu_warning(artifact.path, row.backend)
        if saturation:
            log.echo(f"[warning] {saturation}")
            saturated[row.identity] = saturation
        rows.append(row)
        log.done(f"parity + bench {artifact.label}", row.status + (f" ({row.reason})" if row.reason else ""),
                 started)

    explain_saturation(rows, saturated)
    rows += log.rows
    device = describe_device(cfg.options.threads)
    device["warnings"] += list(saturated.values())
    recommended = recommend([{"device": device["label"], **row.as_dict()} for row in rows], cfg.recommend_by)
    package_recommended(recommended, cfg, getattr(data, "class_names", None), log)
    timings = {s.name: round(s.seconds, 2) for s in log.steps if s.status == "done"}
    timings["total"] = round(time.perf_counter() - total, 2)
    report = new_report(
        "pipeline", device, rows,
        model={"name": loaded.name, "weights": weights, "num_classes": loaded.num_classes, "imgsz": imgsz,
               "eca_k_per_stage": k_per_stage(loaded.model)},
        data=ref_run.data,
        reference=ref_artifact.spec,
        recommended=recommended,
        skipped=[{"step": s.name, "reason": s.detail} for s in log.steps if s.status == "skipped"],
        steps=[{"step": s.name, "status": s.status, "detail": s.detail, "seconds": round(s.seconds, 2)}
               for s in log.steps],
        timings_s=timings)
    written = write_report(report, out)
    if cfg.deepstream:
        written.update(package_deepstream(report, cfg.deepstream, cfg.recommend_by, log))
    return PipelineResult(report, written, log.steps)


def package_deepstream(report: dict, output: str, by: str, log: _Log) -> dict:
    """The nvinfer config for the artifact the report recommends among those nvinfer runs; skipped, with the
    reason, where none passed."""
    artifact = pick_artifact(report, by)
    if artifact is None:
        log.skip("DeepStream config", "no ONNX file or engine for TensorRT passed its checks")
        return {}
    started = time.perf_counter()
    result = write_deepstream_config(DeepStreamConfig(artifact=artifact, output=output))
    for line in result.warnings:
        log.echo(f"[warning] {line}")
    log.done("DeepStream config", f"{result.config.name} for {Path(artifact).name}", started)
    return {"deepstream": result.config, "deepstream_labels": result.labels}
