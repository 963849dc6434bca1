"""Accuracy parity: the same inputs through a reference and candidates, then a verdict per candidate.

Tolerances depend on the candidate's precision (graph/compare.py holds the one definition). FP32 is
judged at FP32's own error: the PyTorch reference's float32-vs-float64 gap on a few of the same inputs,
with a margin and a floor. FP16 is judged element by element the way Polygraphy does (an element fails
only when it is over BOTH atol and rtol); INT8 changes logits too much for that, so it is judged by the
answers that flip: top-1 agreement with the reference, and where labels exist the top-1 drop counted
from right-to-wrong flips.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath

import numpy as np

from ...artifacts import atomic_write, sha256_file, short_identity, weights_identity
from ...data.sources import label_problem, load_dataset
from ...data.synthetic import SyntheticInputs
from ...errors import DataError, EcaDeployError, ParityError, first_line, warn
from ...graph.compare import Verdict, compare_outputs, judge, rounding_gap, tolerance_for, topk_accuracy
from ...precisions import FP32_FIXED, PRECISIONS, ROUNDING_MARGIN, ROUNDING_SAMPLES, Tolerance
from ..registry import ARTIFACT_KINDS, Artifact, open_backend, parse_spec
from ..base import Backend, OpenOptions
from .device import int8_cpu_warning
from .rows import ReportRow




def weights_of(artifact: Artifact) -> str | None:
    """Which weights an artifact was made from (artifacts.weights_identity): a torch spec's weights file, else
    what its manifest records; None where that is not known."""
    if not artifact.path:  # a model its spec names, with its weights file
        return f"sha256 {sha256_file(artifact.weights)}" if artifact.weights else None
    return weights_identity(artifact.manifest)


def parse_override(text: str) -> tuple[str, float | None]:
    """'1e-3' -> ('*', 1e-3); 'fp16=0.05' -> ('fp16', 0.05); 'int8=off' -> ('int8', None)."""
    precision, sep, value = text.rpartition("=")
    precision = precision if sep else "*"
    if precision != "*" and precision not in PRECISIONS:
        raise EcaDeployError(f"tolerance '{text}': precision must be one of {', '.join(PRECISIONS)}")
    if value.lower() in ("off", "none"):
        return precision, None
    try:
        number = float(value)
    except ValueError:
        raise EcaDeployError(f"tolerance '{text}' is not a number, PRECISION=NUMBER or PRECISION=off") from None
    if not math.isfinite(number) or number < 0:
        raise EcaDeployError(f"tolerance '{text}' must be a finite number >= 0")
    return precision, number


def collect_logits(backend: Backend, data, batch: int, desc: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Run every batch of ``data`` at a batch size the backend takes (a static axis or an engine's profile
    decide); a short last batch is zero-padded up to the smallest batch the backend accepts."""
    low, high = backend.batch_limits()
    batch = max(low, min(batch, high or batch))
    outputs, labels = [], []
    for images, targets in data.batches(batch, desc=desc, input_format=backend.input_format):
        n = len(images)
        if n < low:
            images = np.concatenate([images, np.zeros((low - n, *images.shape[1:]), images.dtype)])
        outputs.append(np.asarray(backend.infer(images), dtype=np.float32).reshape(len(images), -1)[:n])
        if targets is not None:
            labels.append(np.asarray(targets))
    return np.concatenate(outputs), (np.concatenate(labels) if labels else None)


def check_input_size(name: str, backend: Backend, imgsz: int) -> None:
    height, width = backend.image_size
    if any(side is not None and side != imgsz for side in (height, width)):  # a dynamic side takes any size
        raise DataError(f"{name} takes {height or '?'}x{width or '?'} inputs but the comparison runs at "
                        f"{imgsz}x{imgsz} (set --imgsz, or compare models exported at the same size)")


def resolve_imgsz(imgsz: int | None, backends: list[tuple[str, Backend]]) -> int:
    """--imgsz, else the first fixed input side among the models, else 224."""
    if imgsz is None:
        imgsz = next((side for _, b in backends for side in b.image_size if side), 224)
    for name, backend in backends:
        check_input_size(name, backend, imgsz)
    return imgsz


def check_labels(labels: np.ndarray | None, data, num_classes: int, source: str) -> None:
    problem = label_problem(labels, data, num_classes, source)
    if problem:
        raise DataError(f"{problem}; or use --no-labels")


@dataclass
class CandidateResult:
    artifact: Artifact
    backend: str
    precision: str
    precision_source: str
    tolerance: Tolerance
    verdict: Verdict
    metrics: dict  # compare_outputs + top1/top5 + elements

    def row(self) -> ReportRow:
        return ReportRow.of(self.artifact, self.precision, self.backend, "pass" if self.verdict.passed else "fail",
                            "; ".join(self.verdict.failures), precision_source=self.precision_source,
                            parity={**self.metrics, "tolerance": asdict(self.tolerance),
                                    "checks": self.verdict.checks, "notes": self.verdict.notes})


def measure_rounding_gap(backend: Backend, data) -> float | None:
    """FP32's own error on the first few of these inputs (graph.compare.rounding_gap), where the backend can
    also run them in float64 (the PyTorch reference); None where it cannot."""
    for images, _ in data.batches(ROUNDING_SAMPLES, input_format=backend.input_format):
        exact = backend.float64_logits(images)
        return None if exact is None else rounding_gap(backend.infer(images), exact)
    return None


def accuracy(logits: np.ndarray, labels: np.ndarray | None) -> dict:
    if labels is None:
        return {"top1": None, "top5": None}
    return {"top1": topk_accuracy(logits, labels, 1), "top5": topk_accuracy(logits, labels, 5)}


@dataclass
class ReferenceRun:
    """The reference's outputs on one data set; every candidate is judged against them.

    The parity command and the pipeline both make one with :meth:`measure` and call :meth:`judge`
    per candidate, so there is one definition of a parity check.
    """

    artifact: Artifact
    backend: str
    logits: np.ndarray
    labels: np.ndarray | None
    metrics: dict  # top1, top5, samples
    data: dict  # what the comparison ran on (data_record)
    batch: int = 16
    overrides: dict = field(default_factory=dict)  # {"atol": {"*": 1e-3}, "max_top1_drop": {"int8": 2.0}}
    weights: str | None = None  # which weights the reference is (weights_identity); None: not known
    rounding_gap: float | None = None  # the reference's own FP32 error (None: it cannot run in float64)

    @classmethod
    def measure(cls, artifact: Artifact, backend: Backend, data, source: str | None, batch: int = 16,
                use_labels: bool = True, overrides: dict | None = None) -> "ReferenceRun":
        gap = measure_rounding_gap(backend, data)  # first: the full pass below records the skipped files
        logits, labels = collect_logits(backend, data, batch, f"reference {backend.name}")
        labels = labels if use_labels else None
        check_labels(labels, data, logits.shape[1], source or "synthetic")
        metrics = {**accuracy(logits, labels), "samples": int(len(logits))}
        return cls(artifact, backend.name, logits, labels, metrics, data_record(data, source, len(logits), use_labels),
                   batch, dict(overrides or {}), weights=weights_of(artifact), rounding_gap=gap)

    def judge(self, artifact: Artifact, backend: Backend, data, precision: str | None = None) -> CandidateResult:
        """Run ``data`` through the candidate and apply the tolerances of its precision."""
        theirs = weights_of(artifact)
        if self.weights and theirs and theirs != self.weights:  # said first: its figures will be far off
            warn(f"{artifact.label}: this candidate was made from other weights ({short_identity(theirs)}) than the "
                 f"reference ({short_identity(self.weights)}); the comparison is of two different models")
        logits, _ = collect_logits(backend, data, self.batch, f"{artifact.label} {backend.name}")
        if logits.shape != self.logits.shape:
            raise DataError(f"{artifact.label} outputs {logits.shape[1]} classes, the reference "
                            f"{self.logits.shape[1]}: they are not the same model")
        prec, prec_source = artifact.precision(precision)
        tol = tolerance_for(prec, self.overrides, fp32_math=backend.fp32_math,
                            rounding_known=self.rounding_gap is not None)
        acc = accuracy(logits, self.labels)
        verdict, elements = judge(tol, logits, self.logits, self.labels, self.rounding_gap)
        metrics = {**acc, **compare_outputs(self.logits, logits).as_dict(), "elements": elements}
        return CandidateResult(artifact, backend.name, prec, prec_source, tol, verdict, metrics)

    def row(self, **sections) -> ReportRow:
        return ReportRow.of(self.artifact, self.artifact.precision()[0], self.backend, "reference",
                            parity=self.metrics, **sections)

    def save(self, path: str | Path, imgsz: int, count: int | None, seed: int) -> Path:
        """Write the reference's outputs and what identifies them to ``path`` (.npz), so candidates can be
        judged on another machine (a Jetson without PyTorch) against the same numbers."""
        artifact = self.artifact
        meta = {"format": SAVED_REFERENCE_FORMAT, "reference": artifact.spec, "kind": artifact.kind,
                "backend": self.backend, "precision": artifact.precision()[0], "model": artifact.model,
                "weights_sha256": sha256_file(artifact.weights) if artifact.weights else None, "weights": self.weights,
                "model_sha256": sha256_file(artifact.path) if artifact.path else None,
                "data": self.data, "imgsz": imgsz, "count": count, "seed": seed, "metrics": self.metrics,
                "rounding_gap": self.rounding_gap}
        labels = self.labels if self.labels is not None else np.zeros(0, np.int64)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a bare name
                np.savez(fh, logits=self.logits, labels=labels, meta=np.array(json.dumps(meta)))
        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path, data, source: str | None, imgsz: int, use_labels: bool = True, batch: int = 16,
             overrides: dict | None = None) -> "ReferenceRun":
        """A saved reference, after refusing data that is not the data it saw (other files, count, seed,
        preprocessing or image size change the data hash)."""
        meta = read_saved_meta(path)  # checked against the data before any array is read
        name = Path(path).name
        if imgsz != meta["imgsz"]:
            raise DataError(f"{name} was saved at {meta['imgsz']}x{meta['imgsz']}, these candidates take "
                            f"{imgsz}x{imgsz}: not the same comparison")
        saved_hash = meta["data"]["hash"]
        if data.data_hash != saved_hash:
            ours, theirs = differing_prefixes(data.data_hash, saved_hash)
            raise DataError(f"--data is not the data {name} was saved from (data hash {ours} vs "
                            f"{theirs}); give the same --data, --count ({meta['count'] or 'all'}) and "
                            f"--seed ({meta['seed']}) as when it was saved")
        meta, logits, labels = read_saved_reference(path)
        labels = labels if use_labels and labels is not None else None
        artifact = RecordedArtifact(meta["reference"], meta["kind"], meta.get("model"), meta["precision"])
        metrics = {**accuracy(logits, labels), "samples": int(len(logits))}
        weights = meta.get("weights") or weights_identity({"weights_sha256": meta.get("weights_sha256")})
        return cls(artifact, meta["backend"], logits, labels, metrics,
                   {**data_record(data, source, len(logits), use_labels), "saved_reference": name},
                   batch, dict(overrides or {}), weights=weights, rounding_gap=meta.get("rounding_gap"))


@dataclass
class Comparison:
    """Everything parity learned: the reference run, and one result per candidate."""

    reference: ReferenceRun
    candidates: list[CandidateResult]
    imgsz: int

    @property
    def failed(self) -> list[CandidateResult]:
        return [c for c in self.candidates if not c.verdict.passed]

    def rows(self) -> list[ReportRow]:
        return [self.reference.row()] + [c.row() for c in self.candidates]


@dataclass
class ParityConfig:
    reference: str
    candidates: list[str]
    data: str | None = None  # an image folder (ImageFolder gives labels); None: seeded synthetic inputs
    count: int | None = None  # images to use (default: all), or synthetic samples (default 32)
    imgsz: int | None = None  # default: the candidates' input size, else 224
    batch_size: int = 16
    seed: int = 0
    use_labels: bool = True
    precision: str | None = None  # overrides every candidate's manifest
    overrides: dict = field(default_factory=dict)  # {"atol": {"*": 1e-3}, "max_top1_drop": {"int8": 2.0}}
    options: OpenOptions = field(default_factory=OpenOptions)  # how reference and candidates are opened
    save_reference: str | None = None  # write the reference's outputs here (.npz) for another machine


SYNTHETIC_COUNT = 32
SAVED_REFERENCE_FORMAT = "eca-deploy-reference/1"
SAVED_REFERENCE_SUFFIX = ".npz"


# What a saved reference may cause: reading its own three members (meta, logits, labels), each checked before
# it is allocated. Nothing named inside it is opened (see RecordedArtifact).
MAX_META_CHARS = 1 << 20
MAX_REFERENCE_VALUES = 1 << 28  # float32 logits: 1 GiB, five times ImageNet's 50,000 x 1,000 validation set
# meta key -> (allowed types, check): what `parity --save-reference` writes, and every field read back
_META_FIELDS = {
    "reference": (str, None), "backend": (str, None), "model": ((str, type(None)), None),
    "kind": (str, lambda v: v in ARTIFACT_KINDS), "precision": (str, lambda v: v in PRECISIONS),
    "imgsz": (int, lambda v: v > 0), "count": ((int, type(None)), lambda v: v is None or v > 0),
    "seed": (int, None), "data": (dict, None),
}
_DATA_FIELDS = {"hash": (str, None), "samples": (int, lambda v: 0 < v)}
# FP32's limit from a saved gap is never looser than the fixed check used where no gap is known
_GAP_FIELD = {"rounding_gap": (float, lambda v: 0 <= v <= FP32_FIXED.atol / ROUNDING_MARGIN)}


def _not_saved(path: Path, why: str) -> DataError:
    return DataError(f"{path} is not a reference saved by `eca-deploy parity --save-reference` ({why})")


def _check_fields(obj: dict, fields: dict, where: str, path: Path) -> None:
    for key, (types, check) in fields.items():
        value = obj.get(key)
        if (key not in obj or not isinstance(value, types) or isinstance(value, bool)
                or (check is not None and not check(value))):
            shown = json.dumps(value)[:40] if key in obj else "missing"
            raise _not_saved(path, f"meta \"{where}{key}\" is {shown}")


def _npy_header(archive: zipfile.ZipFile, member: str) -> tuple[tuple, np.dtype]:
    """(shape, dtype) a member's .npy header declares, read without its data (a zip bomb declares gigabytes)."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with archive.open(f"{member}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        if version not in readers:
            raise ValueError(f"{member}.npy has .npy version {version}")
        shape, _, dtype = readers[version](fh)
    return shape, dtype


def _read_member(archive: zipfile.ZipFile, member: str) -> np.ndarray:
    with archive.open(f"{member}.npy") as fh:
        return np.lib.format.read_array(fh, allow_pickle=False)


def _open_saved(path: Path) -> zipfile.ZipFile:
    if not path.is_file():  # a FIFO or a device is not a regular file either: never opened
        raise DataError(f"saved reference not found: {path}")
    return zipfile.ZipFile(path)


_BROKEN = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def read_saved_meta(path: str | Path) -> dict:
    """The checked meta of a reference saved by ``parity --save-reference``, its arrays not read."""
    path = Path(path)
    try:
        with _open_saved(path) as archive:
            shape, dtype = _npy_header(archive, "meta")
            if shape != () or dtype.kind != "U" or dtype.itemsize // 4 > MAX_META_CHARS:
                raise _not_saved(path, f"meta.npy declares {dtype} {list(shape)}, not a short text")
            meta = json.loads(str(_read_member(archive, "meta")))
    except _BROKEN as exc:  # not an npz, a truncated one, or an npz of something else
        raise _not_saved(path, f"{type(exc).__name__}: {first_line(exc)[:80]}") from exc
    if not isinstance(meta, dict) or meta.get("format") != SAVED_REFERENCE_FORMAT:
        raise _not_saved(path, f"format is not {SAVED_REFERENCE_FORMAT}")
    _check_fields(meta, _META_FIELDS, "", path)
    _check_fields(meta["data"], _DATA_FIELDS, "data.", path)
    if meta.get("rounding_gap") is not None:  # it sets FP32's limit: a file must not loosen the verdict
        _check_fields(meta, _GAP_FIELD, "", path)
    return meta


def read_saved_reference(path: str | Path) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """(meta, logits, labels or None) of a reference saved by ``parity --save-reference``: every array's
    declared shape and type is checked against the meta (samples x classes) before it is allocated."""
    path = Path(path)
    meta = read_saved_meta(path)
    samples = meta["data"]["samples"]
    try:
        with _open_saved(path) as archive:
            (logits_shape, logits_type), (labels_shape, labels_type) = (
                _npy_header(archive, "logits"), _npy_header(archive, "labels"))
            if (len(logits_shape) != 2 or logits_shape[0] != samples or not 0 < logits_shape[1]
                    or samples * logits_shape[1] > MAX_REFERENCE_VALUES or logits_type.kind != "f"):
                raise _not_saved(path, f"logits.npy declares {logits_type} {list(logits_shape)}; the meta "
                                       f"records {samples} samples x classes, at most {MAX_REFERENCE_VALUES:,} values")
            if labels_shape not in ((0,), (samples,)) or labels_type.kind not in "iu":
                raise _not_saved(path, f"labels.npy declares {labels_type} {list(labels_shape)}; the meta records "
                                       f"{samples} samples")
            logits, labels = _read_member(archive, "logits"), _read_member(archive, "labels")
    except _BROKEN as exc:
        raise _not_saved(path, f"{type(exc).__name__}: {first_line(exc)[:80]}") from exc
    if labels.size and not (0 <= labels.min() and labels.max() < logits.shape[1]):
        raise _not_saved(path, f"labels outside 0..{logits.shape[1] - 1}")
    return meta, logits.astype(np.float32, copy=False), (labels.astype(np.int64) if labels.size else None)


def differing_prefixes(ours: str, theirs: str) -> tuple[str, str]:
    """Two data hashes cut short enough to read and long enough to differ: a sha256 to 12 characters (or past
    the prefix both share), a readable one (synthetic data's seed, count and size) whole."""
    width = max(12, len(os.path.commonprefix([ours, theirs])) + 8)
    return tuple(h if len(h) <= 40 else h[:width] for h in (ours, theirs))


@dataclass(frozen=True)
class RecordedArtifact:
    """A saved reference's artifact as its meta records it, for the reference row. A saved reference is data:
    nothing named inside it (a model path, weights) is opened, resolved or even stat-ed, so a meta naming
    /dev/zero, a FIFO or /etc/shadow causes nothing but that text in the row."""

    spec: str
    kind: str
    model: str | None
    recorded_precision: str
    size_mb = None

    @property
    def label(self) -> str:
        if not ARTIFACT_KINDS[self.kind].suffixes:  # a kind of models named by their spec (torch:), not files
            return f"{self.model} ({self.format})"
        return PurePath(self.spec).name or self.spec

    @property
    def identity(self) -> str:
        return self.spec

    @property
    def format(self) -> str:
        return ARTIFACT_KINDS[self.kind].label

    def layout(self, precision: str) -> None:
        return None  # not recorded: reading it would mean opening the file the meta names

    def precision(self, override: str | None = None) -> tuple[str, str]:
        return (override, "flag") if override else (self.recorded_precision, "saved reference")


def open_inputs(data: str | None, imgsz: int, count: int | None, seed: int):
    """The images a comparison runs on: a data source, or seeded synthetic inputs without one."""
    if count is not None and count < 1:
        raise DataError(f"--count must be a positive integer, got {count}")
    if data is None:
        return SyntheticInputs(count or SYNTHETIC_COUNT, imgsz, seed)
    return load_dataset(data, imgsz=imgsz, count=count, seed=seed)


def data_record(data, source: str | None, samples: int, use_labels: bool) -> dict:
    """What the comparison ran on (a Dataset from data.sources, or SyntheticInputs)."""
    return {"source": source or "synthetic", "samples": samples,
            "labeled": bool(use_labels and data.labels is not None), "num_classes": data.num_classes,
            "skipped": len(data.skipped), "hash": data.data_hash}


def warn_int8_cpu(opened: list[tuple[Artifact, Backend]]) -> None:
    for artifact, backend in opened:
        message = int8_cpu_warning(artifact.path, backend.name)
        if message:
            warn(message)


def run_parity(cfg: ParityConfig) -> Comparison:
    """Open everything first (so a bad candidate fails before minutes of inference), then compare."""
    if cfg.batch_size < 1:
        raise EcaDeployError(f"--batch-size must be a positive integer, got {cfg.batch_size}")
    if not cfg.candidates and not cfg.save_reference:
        raise EcaDeployError("give at least one --candidate (or --save-reference FILE to only save the reference)")
    saved = cfg.reference.lower().endswith(SAVED_REFERENCE_SUFFIX)
    if saved and cfg.save_reference:
        raise EcaDeployError("--save-reference needs a model as --reference, not a saved reference")
    if saved:
        return _run_against_saved(cfg)
    ref_artifact = parse_spec(cfg.reference)
    if not ref_artifact.path and not ref_artifact.weights:
        raise EcaDeployError(f"reference {cfg.reference} has no weights, and a random init matches no exported "
                             f"model; use {ref_artifact.row.prefix}{ref_artifact.model}:WEIGHTS")
    artifacts = [parse_spec(c) for c in cfg.candidates]
    opened: list[tuple[Artifact, Backend]] = []
    try:
        for artifact in artifacts:
            opened.append((artifact, open_backend(artifact, cfg.options)))
        warn_int8_cpu(opened)
        labels = [a.label for a, _ in opened]  # full paths where two candidates share a file name
        imgsz = resolve_imgsz(cfg.imgsz, [(str(a.path) if labels.count(a.label) > 1 else a.label, b)
                                          for a, b in opened])
        reference = open_backend(ref_artifact, cfg.options, imgsz=imgsz)
        opened.insert(0, (ref_artifact, reference))
        check_input_size(f"reference {ref_artifact.label}", reference, imgsz)
        data = open_inputs(cfg.data, imgsz, cfg.count, cfg.seed)
        ref_run = ReferenceRun.measure(ref_artifact, reference, data, cfg.data, cfg.batch_size, cfg.use_labels,
                                       cfg.overrides)
        if cfg.save_reference:
            ref_run.save(cfg.save_reference, imgsz, cfg.count, cfg.seed)
        results = [ref_run.judge(artifact, backend, data, cfg.precision) for artifact, backend in opened[1:]]
    finally:
        for _, backend in opened:
            backend.close()
    return Comparison(ref_run, results, imgsz)


def _run_against_saved(cfg: ParityConfig) -> Comparison:
    """Judge candidates against a saved reference: no reference model is opened, so a machine without
    PyTorch can judge engines against a PyTorch reference run elsewhere."""
    meta = read_saved_meta(cfg.reference)
    artifacts = [parse_spec(c) for c in cfg.candidates]
    opened: list[tuple[Artifact, Backend]] = []
    try:
        for artifact in artifacts:
            opened.append((artifact, open_backend(artifact, cfg.options)))  # --ov-hint and all
        warn_int8_cpu(opened)
        imgsz = resolve_imgsz(cfg.imgsz or meta["imgsz"], [(a.label, b) for a, b in opened])
        data = open_inputs(cfg.data, imgsz, cfg.count, cfg.seed)
        ref_run = ReferenceRun.load(cfg.reference, data, cfg.data, imgsz, cfg.use_labels, cfg.batch_size,
                                  cfg.overrides)
        results = [ref_run.judge(artifact, backend, data, cfg.precision) for artifact, backend in opened]
    finally:
        for _, backend in opened:
            backend.close()
    return Comparison(ref_run, results, imgsz)


def raise_on_failure(comparison: Comparison) -> None:
    failed = comparison.failed
    if failed:
        detail = "; ".join(f"{c.artifact.label}: {', '.join(c.verdict.failures)}" for c in failed)
        raise ParityError(f"{len(failed)} of {len(comparison.candidates)} candidates failed parity: {detail}")
