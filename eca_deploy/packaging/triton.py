"""A Triton Inference Server model repository entry for one artifact: ``<repo>/<name>/config.pbtxt``,
``<repo>/<name>/1/<model file>`` with the artifact's manifest beside it, and ``labels.txt`` where the classes have
names.

Everything the config declares is read from the artifact itself: tensor names, data types and dims from the
ONNX graph, the IR (through OpenVINO) or the engine's manifest (TensorRT is not needed, so a repository for a
Jetson's engine can be written anywhere); ``max_batch_size`` from the engine's optimization profile or the
ONNX/IR batch axis. The config is plain text written here, not through tritonclient: the writer needs no
serving packages; the tests parse every config with Triton's own ModelConfig protobuf.

An existing entry of the same name is never replaced unless asked (``force``): it may be someone's tuned
config. The new entry is assembled in a staging folder inside the repository and renamed into place, so a
failure leaves the repository as it was.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts import DISK_FULL, disk_full_error, manifest_path, output_dir, staging_dir
from ..data.labels import class_names
from ..errors import DataError, OutputError, UsageError, plural, visible_text
from ..graph.graph import load_onnx
from ..runtime.registry import Artifact
from ..runtime.harness.report import load_report
from ..runtime.tensorrt.compat import BatchProfile
from ..runtime.tensorrt.plan import DEFAULT_DYNAMIC_BATCH
from .model_io import ModelIO, Tensor, read_io

VERSION = "1"  # the one model version written; Triton serves the highest numbered folder
LABELS_FILE = "labels.txt"
STAGING_PREFIX = ".triton-"  # artifacts.STAGING_PREFIXES: a dead run's staging folder is swept once stale
# a dynamic ONNX / IR batch axis has no limit of its own: the largest batch a default engine profile takes
DEFAULT_MAX_BATCH = BatchProfile.parse(DEFAULT_DYNAMIC_BATCH).max
# a batch "pays" up to the smallest size within this share of the best measured throughput: waiting to fill a
# larger batch adds queueing latency for less than 10% more images per second
PREFERRED_SHARE = 0.9
# Triton's model name is a folder name and part of every request URL: letters, digits, '_', '-', '.', not led by
# a dot (hidden, or '..'), at most 64 characters
NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")

# how it is served -> (config key, its value, the model's file name); OpenVINO's backend loads model.xml by default
# and an ONNX file named by default_model_filename (Triton's OpenVINO tutorial, Quick_Deploy/OpenVINO)
SERVING = {"tensorrt": ("platform", "tensorrt_plan", "model.plan"),
           "onnx": ("backend", "onnxruntime", "model.onnx"),
           "openvino": ("backend", "openvino", "model.xml"),
           "openvino_onnx": ("backend", "openvino", "model.onnx")}
KIND_GPU, KIND_CPU = "KIND_GPU", "KIND_CPU"
# numpy's dtype names -> Triton's DataType
TRITON_TYPES = {"bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
                "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
                "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64"}


@dataclass
class TritonOptions:
    name: str | None = None  # default: the artifact's file name, made folder-safe
    max_batch_size: int | None = None  # default: the engine profile's max, or DEFAULT_MAX_BATCH; 0 for a static batch
    instances: int = 1
    bench_entries: list[dict] = field(default_factory=list)  # bench entries of this artifact (preferred batch)
    labels: list[str] | None = None  # class names; default: ImageNet's for 1,000 outputs
    force: bool = False  # replace an existing entry of the same name


@dataclass(frozen=True)
class TritonEntry:
    path: Path  # <repo>/<name>
    name: str
    serving: str  # tensorrt_plan / onnxruntime / openvino
    max_batch_size: int
    preferred: tuple[int, ...]
    kind: str  # KIND_GPU / KIND_CPU
    instances: int
    labels: list[str] | None  # the class names written to labels.txt
    config: str  # config.pbtxt's text
    files: dict[str, Path]  # name in the version folder -> the file copied there


def default_name(artifact: Artifact) -> str:
    """The artifact's file name without its suffix (a torch:/timm: model's name), every character a Triton
    name cannot hold made '_'. `serve` names its model by the same rule."""
    base = artifact.path.name[:-len(artifact.path.suffix)] if artifact.path else re.split(r"[:/]", artifact.model)[-1]
    return re.sub(r"[^A-Za-z0-9_-]", "_", base or "model")[:64]


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise UsageError(f"--name {name!r} cannot be a Triton model name: use letters, digits, '_', '-' and '.' "
                         "(not first), at most 64 characters")
    return name


def _triton_type(tensor: Tensor) -> str:
    if tensor.dtype not in TRITON_TYPES:
        raise DataError(f"tensor {tensor.name!r} has data type {tensor.dtype!r}, which a Triton config cannot "
                        "declare")
    return TRITON_TYPES[tensor.dtype]


def serving_kind(artifact: Artifact) -> str:
    """The SERVING row of an artifact: its kind, or openvino_onnx for an ONNX file named openvino:<file.onnx>."""
    return "openvino_onnx" if artifact.foreign else artifact.kind


def max_batch_size(io: ModelIO, asked: int | None, label: str) -> int:
    """Triton's max_batch_size: 0 for a static batch axis (the dims then hold it); else the flag, at most the
    engine profile's largest batch; default that largest batch, or DEFAULT_MAX_BATCH for ONNX and IR."""
    if asked is not None and asked < 0:
        raise UsageError(f"--max-batch-size must be 0 or more, got {asked}")
    if io.static_batch:
        if asked:
            raise UsageError(f"{label} has a static batch axis ({io.inputs[0].dims[0]}), so Triton's max_batch_size "
                             "must be 0 (no batching); drop --max-batch-size or export with a dynamic batch axis")
        return 0
    if io.batch_min != 1:
        raise UsageError(f"{label}'s profile starts at batch {io.batch_min}, but Triton sends batches from 1; "
                         f"rebuild it with `eca-deploy build --profile 1:OPT:{io.batch_limit}`")
    if asked is not None and io.batch_limit is not None and asked > io.batch_limit:
        raise UsageError(f"--max-batch-size {asked} is above {label}'s optimization profile (max batch "
                         f"{io.batch_limit}); Triton would refuse to load it")
    if asked is not None:
        return asked
    return io.batch_limit or DEFAULT_MAX_BATCH


def preferred_batches(entries: list[dict], limit: int) -> tuple[int, ...]:
    """The smallest measured batch (above 1, at most ``limit``) whose throughput is within PREFERRED_SHARE of the
    best measured: where waiting for a fuller batch stops paying. () where batch 1 is already that good, or
    nothing was measured."""
    best: dict[int, float] = {}
    for entry in entries:
        if entry["clock"] == "host" and entry["batch"] <= limit:
            best[entry["batch"]] = max(best.get(entry["batch"], 0.0), entry["fps"])
    if not best:
        return ()
    top = max(best.values())
    chosen = min(b for b, fps in best.items() if fps >= PREFERRED_SHARE * top)
    return (chosen,) if chosen > 1 else ()


def bench_entries(path: str | os.PathLike, artifact: Artifact) -> list[dict]:
    """The host-clock bench entries of ``artifact`` in an eca-deploy report (bench, parity or pipeline JSON, or
    a comparison): the rows whose resolved path, else file name, is the artifact's. The file is checked against
    the report schema first (load_report), as any report from another machine is."""
    report = load_report(path)
    rows = [r for r in report["rows"] if r.get("bench")]
    mine = [r for r in rows if r.get("identity") == artifact.identity] or \
        [r for r in rows if r["artifact"] == artifact.label]
    if not mine:
        named = visible_text(", ".join(sorted({r["artifact"] for r in rows})) or "none")  # names from the file
        raise DataError(f"{path} holds no bench result of {artifact.label} (it has: {named[:200]})")
    return [e for r in mine for e in r["bench"]["batches"] if e["clock"] == "host"]


def _quote(text: str) -> str:
    """A protobuf text-format string: quotes, backslashes and every non-printing character escaped."""
    from google.protobuf import text_encoding  # protobuf comes with onnx

    return '"' + text_encoding.CEscape(text, as_utf8=True) + '"'


def _tensor_block(tensor: Tensor, batching: bool, label_file: str | None) -> str:
    dims = tensor.dims[1:] if batching else tensor.dims
    lines = [f"    name: {_quote(tensor.name)}", f"    data_type: {_triton_type(tensor)}",
             f"    dims: [ {', '.join(map(str, dims))} ]"]
    if label_file:
        lines.append(f"    label_filename: {_quote(label_file)}")
    return "  {\n" + "\n".join(lines) + "\n  }"


def needs_plain_graph(artifact: Artifact, kind: str) -> bool:
    """An INT8 ONNX with FP16 glue (made for TensorRT) that onnxruntime's graph optimizations miscompute: our own
    sessions run it with them off (graph/session.py), and so must Triton's onnxruntime backend."""
    from ..graph.session import has_fp16_qdq

    return kind == "onnx" and has_fp16_qdq(load_onnx(artifact.path, load_weights=False))


def render_config(name: str, kind: str, io: ModelIO, batch: int, preferred: tuple[int, ...], instances: int,
                  labels: bool, plain_graph: bool = False) -> str:
    key, value, model_file = SERVING[kind]
    group = KIND_GPU if kind == "tensorrt" else KIND_CPU
    batching = batch > 0
    inputs = ",\n".join(_tensor_block(t, batching, None) for t in io.inputs)
    outputs = ",\n".join(_tensor_block(t, batching, LABELS_FILE if labels and i == 0 else None)
                         for i, t in enumerate(io.outputs))
    text = [f"name: {_quote(name)}", f"{key}: {_quote(value)}",
            *([f"default_model_filename: {_quote(model_file)}"] if kind == "openvino_onnx" else []),
            f"max_batch_size: {batch}",
            f"input [\n{inputs}\n]", f"output [\n{outputs}\n]",
            f"instance_group [\n  {{\n    count: {instances}\n    kind: {group}\n  }}\n]"]
    if plain_graph:  # the onnxruntime backend's graph level 2: every optimization off (its README, "level")
        text.append("optimization {\n  graph {\n    level: 2\n  }\n}")
    if batching:
        sizes = f"\n  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n" if preferred else " "
        text.append(f"dynamic_batching {{{sizes}}}")
    return "\n".join(text) + "\n"


def _class_names(io: ModelIO, labels: list[str] | None, label: str) -> list[str] | None:
    """The names of the first output's classes (its last axis), or None where they have none."""
    classes = io.outputs[0].dims[-1] if io.outputs[0].dims else -1
    if classes < 1:
        if labels is not None:
            raise DataError(f"{label}'s output has no fixed class count to match the labels file against")
        return None
    return class_names(classes, labels, "the labels file")


def _model_files(artifact: Artifact, kind: str) -> dict[str, Path]:
    """{name in the version folder: source}: the model under Triton's default name, its weights files, and its
    manifest under the name our tools look for beside it."""
    model_file = SERVING[kind][2]
    files = {model_file: artifact.path}
    if kind == "openvino":
        files["model.bin"] = artifact.path.with_suffix(".bin")
    if kind in ("onnx", "openvino_onnx"):
        data = _external_data(artifact.path)
        if model_file in data or manifest_path(Path(model_file)).name in data:
            raise DataError(f"{artifact.label} names its external data {model_file!r} (or its manifest's name), "
                            "which the copy of the model itself takes; save it with another data file name")
        files.update(data)
    if artifact.manifest is not None:  # a stale or broken one was refused or ignored when the artifact was read
        files[manifest_path(Path(model_file)).name] = manifest_path(artifact.path)
    return files


def _external_data(path: Path) -> dict[str, Path]:
    """An ONNX's external data files, kept at the relative location the graph names (Triton reads them beside
    model.onnx); one that points outside the ONNX's folder cannot be carried along and is refused."""
    from ..graph.graph import onnx_inputs

    files = {}
    for data in onnx_inputs(path)[2:]:  # after the model and its manifest
        relative = os.path.relpath(data, path.parent)
        if relative.startswith("..") or os.path.isabs(relative):
            raise DataError(f"{path.name} keeps weights outside its folder ({relative}); save it with its external "
                            "data beside it")
        files[relative] = data
    return files


def prepare_entry(artifact: Artifact, repository: str | os.PathLike, options: TritonOptions) -> TritonEntry:
    """Everything about ``<repository>/<name>`` that can go wrong, worked out before anything is written."""
    io = read_io(artifact)  # first: it refuses what Triton cannot serve (a torch: spec)
    kind = serving_kind(artifact)
    name = check_name(options.name) if options.name is not None else default_name(artifact)
    if options.instances < 1:
        raise UsageError(f"--instances must be at least 1, got {options.instances}")
    batch = max_batch_size(io, options.max_batch_size, artifact.label)
    preferred = preferred_batches(options.bench_entries, batch) if batch else ()
    names = _class_names(io, options.labels, artifact.label)
    target = Path(repository) / name
    refuse_existing(target, options.force)
    return TritonEntry(target, name, SERVING[kind][1], batch, preferred, KIND_GPU if kind == "tensorrt" else KIND_CPU,
                       options.instances, names,
                       render_config(name, kind, io, batch, preferred, options.instances, names is not None,
                                     needs_plain_graph(artifact, kind)),
                       _model_files(artifact, kind))


def install_entry(entry: TritonEntry, force: bool = False) -> None:
    """Assemble the entry in a staging folder inside the repository, then rename it into place (checking again
    for an entry another run made meanwhile)."""
    try:
        with output_dir(entry.path.parent) as repo, staging_dir(repo, STAGING_PREFIX) as staging:
            folder = staging / entry.name
            (folder / VERSION).mkdir(parents=True)
            for relative, source in entry.files.items():
                (folder / VERSION / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, folder / VERSION / relative)
            (folder / "config.pbtxt").write_text(entry.config, encoding="utf-8")
            if entry.labels is not None:
                (folder / LABELS_FILE).write_text("\n".join(entry.labels) + "\n", encoding="utf-8")
            refuse_existing(entry.path, force)
            _swap_in(folder, entry.path, staging)
    except PermissionError as exc:
        raise OutputError(f"cannot write {entry.path}: permission denied") from exc
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full_error(entry.path, sum(source.stat().st_size for source in entry.files.values())) from exc
        raise


def refuse_existing(target: Path, force: bool) -> None:
    """An existing entry is replaced only with ``force``, and only where it is a real folder (not a link)."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise OutputError(f"{target} exists and is not a model folder; choose another --name or output folder")
    if target.exists() and not force:
        raise OutputError(f"{target} already exists; pass --force to replace that model, or choose another --name")


def _swap_in(entry: Path, target: Path, staging: Path) -> None:
    """Rename the finished entry into place; an old one is first moved into the staging folder, which is
    deleted with it."""
    if target.exists():
        os.rename(target, staging / ".replaced")
    os.rename(entry, target)


def write_repository(artifacts: list[Artifact], repository: str | os.PathLike, options: TritonOptions,
                     bench: str | os.PathLike | None = None) -> list[TritonEntry]:
    """One entry per artifact; ``--name`` names a single one. Names are checked for clashes before any is written."""
    if options.name is not None and len(artifacts) > 1:
        raise UsageError(f"--name names one model; got {plural(len(artifacts), 'artifact')} (each is named after "
                         "its file without it)")
    entries = [prepare_entry(artifact, repository, TritonOptions(
        options.name, options.max_batch_size, options.instances,
        bench_entries(bench, artifact) if bench is not None else [], options.labels, options.force))
        for artifact in artifacts]
    names = [entry.name for entry in entries]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash:
        raise UsageError(f"two artifacts would both be the Triton model {clash!r}; package them one at a time "
                         "with --name")
    for entry in entries:
        install_entry(entry, options.force)
    return entries
