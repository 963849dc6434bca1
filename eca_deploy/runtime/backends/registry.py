"""Open a backend from what the user typed: ``torch:<model>[:weights]``, a ``.onnx`` file, a TensorRT engine,
an OpenVINO IR ``.xml``, or ``openvino:<file.onnx>`` (the ONNX file on OpenVINO instead of onnxruntime).

The artifact's format, precision, size and manifest are read here too, so parity, bench and the
reports describe every artifact the same way.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnx

from ...artifacts import manifest_path, read_manifest, require_file, verified_manifest
from ...errors import EcaDeployError, EngineError, ManifestError, MissingDependencyError, OnnxFileError, UsageError, warn
from ...data.pixels import FLOAT_NCHW
from ...graph.graph import onnx_inputs
from ...graph.input_format import check_input_format, read_input_format
from ...precisions import PRECISIONS, graph_layout, ir_precision, onnx_precision
from ..base import Backend, require_image_input
from ..tensorrt.compat import refuse_stale_manifest
from ..tensorrt.env import tensorrt_unavailable_reason
from ..tensorrt.plan import ENGINE_SUFFIXES

TORCH_PREFIX = "torch:"
OPENVINO_PREFIX = "openvino:"


@dataclass(frozen=True)
class OpenOptions:
    """How to open a backend: onnxruntime provider, torch device and input size, threads, TensorRT host code."""

    provider: str = "auto"  # onnxruntime execution provider: auto / cpu / cuda / tensorrt
    device: str = "auto"  # torch device for torch: references
    imgsz: int = 224  # torch only: the input size the model is traced at
    threads: int | None = None  # onnxruntime intra-op / OpenVINO threads, or torch's while the backend is open
    ov_hint: str = "latency"  # OpenVINO's performance hint: latency or throughput
    allow_host_code: bool = False  # engines: let TensorRT run code stored in them (the user's --allow-host-code)
    gpu: int = 0  # engines: the CUDA GPU index they run on (--gpu)


def _open_torch(artifact: "Artifact", options: OpenOptions) -> Backend:
    from .torch_backend import TorchBackend

    return TorchBackend(artifact.model, artifact.weights, device=options.device, imgsz=options.imgsz,
                        threads=options.threads)


def _open_onnx(artifact: "Artifact", options: OpenOptions) -> Backend:
    from .onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(artifact.path, provider=options.provider, threads=options.threads)


def _open_engine(artifact: "Artifact", options: OpenOptions) -> Backend:
    reason = tensorrt_unavailable_reason()
    if reason:
        raise MissingDependencyError(f"cannot run the engine {artifact.path.name}: {reason}")
    from ..tensorrt.backend import TensorRTBackend

    return TensorRTBackend(artifact.path, device=options.gpu, allow_host_code=options.allow_host_code)


def _open_openvino(artifact: "Artifact", options: OpenOptions) -> Backend:
    from .openvino_backend import OpenVinoBackend

    return OpenVinoBackend(artifact.path, precision=artifact.precision()[0], threads=options.threads,
                           hint=options.ov_hint)


def _optional_manifest(path: Path) -> dict | None:
    """An ONNX file's manifest only adds its recorded precision (the graph tells it too): a broken one is
    ignored, said in one line."""
    try:
        manifest = verified_manifest(path)  # a stale one (sha256 of other bytes) is ignored, said once
    except ManifestError as exc:
        warn(f"{exc}; ignored (the precision is read from the graph)")
        return None
    if manifest is not None and not isinstance(manifest.get("precision", ""), str):
        warn(f"manifest {manifest_path(path)} has a non-string \"precision\"; ignored")
        return None
    return manifest


def _is_shape(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value)


ENGINE_MANIFEST_TYPES = {"profile": dict, "gpu": dict, "tensorrt_version": str, "precision": str,
                         "version_compatible": bool}


def check_engine_manifest(path: Path, manifest: dict | None) -> dict | None:
    """An engine's manifest decides batch limits and compatibility before TensorRT loads the engine, so
    every field it is read for must have the type ``eca-deploy build`` writes."""
    if manifest is None:
        return None
    refuse_stale_manifest(path, manifest)
    where = f"manifest {manifest_path(path)}"
    fix = "rebuild the engine with `eca-deploy build` or delete the manifest"
    for key, kind in ENGINE_MANIFEST_TYPES.items():
        if key in manifest and not isinstance(manifest[key], kind):
            raise ManifestError(f"{where}: \"{key}\" is a {type(manifest[key]).__name__}, not a "
                                f"{kind.__name__}; {fix}")
    for key in ("min", "opt", "max"):
        shape = (manifest.get("profile") or {}).get(key)
        if shape is not None and not _is_shape(shape):
            raise ManifestError(f"{where}: \"profile.{key}\" is not a shape of positive integers "
                                f"({json.dumps(shape)[:40]}); {fix}")
    return manifest


@dataclass(frozen=True)
class ArtifactKind:
    """One row of the artifact-kinds table: how a user names it, how it is labelled, how it is opened."""

    name: str
    label: str  # the report's "format" column
    noun: str  # how messages name one ("ONNX file")
    suffixes: tuple[str, ...]  # file suffixes that select it
    opener: Callable[["Artifact", OpenOptions], Backend]
    not_found: type[EcaDeployError] = OnnxFileError  # the error for a named file that is missing
    manifest: Callable[[Path], dict | None] = _optional_manifest  # reads (and checks) the manifest beside it


ARTIFACT_KINDS: dict[str, ArtifactKind] = {kind.name: kind for kind in (
    ArtifactKind("torch", "PyTorch", "PyTorch model", (), _open_torch),  # named by TORCH_PREFIX
    ArtifactKind("onnx", "ONNX", "ONNX file", (".onnx",), _open_onnx),
    ArtifactKind("tensorrt", "TensorRT", "TensorRT engine", ENGINE_SUFFIXES, _open_engine, not_found=EngineError,
                 manifest=lambda path: check_engine_manifest(path, read_manifest(path))),
    # an IR .xml, or a .onnx named with OPENVINO_PREFIX
    ArtifactKind("openvino", "OpenVINO IR", "OpenVINO IR", (".xml",), _open_openvino),
)}
SPEC_HELP = ("torch:<model>[:weights], a .onnx file, a TensorRT .engine/.plan file, an OpenVINO IR .xml, "
             "or openvino:<file.onnx>")


@dataclass(frozen=True)
class Artifact:
    """One thing to run: a PyTorch model, an ONNX file or an engine, with what its manifest says."""

    spec: str
    kind: str  # "torch" | "onnx" | "tensorrt" | "openvino" (an IR, or an ONNX file run by OpenVINO)
    path: Path | None = None
    model: str | None = None  # torch only
    weights: str | None = None  # torch only
    manifest: dict | None = None

    @property
    def onnx_on_openvino(self) -> bool:
        return self.kind == "openvino" and self.path.suffix.lower() in ARTIFACT_KINDS["onnx"].suffixes

    @property
    def format(self) -> str:
        return ARTIFACT_KINDS["onnx" if self.onnx_on_openvino else self.kind].label

    @property
    def label(self) -> str:
        """The file name; an ONNX file run by OpenVINO keeps its prefix, to tell it from the onnxruntime row."""
        if not self.path:
            return f"{self.model} (PyTorch)"
        return OPENVINO_PREFIX + self.path.name if self.onnx_on_openvino else self.path.name

    @property
    def size_mb(self) -> float | None:
        """The file's size; an IR's counts its .bin too."""
        target = self.path or (Path(self.weights) if self.weights else None)
        if not (target and target.is_file()):
            return None
        files = [target, target.with_suffix(".bin")] if self.kind == "openvino" and not self.onnx_on_openvino \
            else [target]
        return round(sum(f.stat().st_size for f in files if f.is_file()) / 2**20, 2)

    @property
    def inputs(self) -> list[Path]:
        """Every file running this artifact reads: what no output of the run may overwrite."""
        if self.kind == "torch":
            return [Path(self.weights)] if self.weights else []
        if self.kind == "onnx":
            return onnx_inputs(self.path)
        return [self.path, manifest_path(self.path)]

    @property
    def identity(self) -> str:
        """What tells two artifacts apart in a report: the resolved file path (with the OpenVINO prefix where an
        ONNX file runs on OpenVINO), or the torch spec."""
        if not self.path:
            return self.spec
        return (OPENVINO_PREFIX if self.onnx_on_openvino else "") + str(self.path.resolve())

    @functools.cached_property
    def input_format(self) -> str:
        """What this artifact is fed (data.pixels), as its export recorded it in the ONNX metadata (an engine's
        manifest copies it at build); a PyTorch model and an OpenVINO IR take float-nchw."""
        if self.kind == "onnx" or self.onnx_on_openvino:
            return read_input_format(self.path)
        if self.kind == "tensorrt":
            recorded = (self.manifest or {}).get("input_format")
            return check_input_format(recorded, f"manifest {manifest_path(self.path)}")
        return FLOAT_NCHW

    def layout(self, precision: str) -> str | None:
        """An INT8 file's layout (tensorrt or cpu): its manifest's target, else what its graph holds."""
        if precision != "int8" or self.kind == "torch":
            return None
        if self.kind == "tensorrt":
            return "tensorrt"
        target = (self.manifest or {}).get("target")
        return target if target else graph_layout(onnx.load(str(self.path), load_external_data=False)).split()[-1]

    def precision(self, override: str | None = None) -> tuple[str, str]:
        """(precision, where it came from): the flag, the manifest, the ONNX graph, or fp32 assumed."""
        if override:
            return override, "flag"
        if self.kind == "torch":
            return "fp32", "pytorch"
        recorded = (self.manifest or {}).get("precision")
        if recorded in PRECISIONS:
            return recorded, "manifest"
        if self.kind == "onnx" or self.onnx_on_openvino:
            return onnx_precision(self.path), "graph"
        if self.kind == "openvino":
            return ir_precision(self.path), "graph"
        return "fp32", "assumed (no manifest; pass --precision)"


def parse_spec(spec: str) -> Artifact:
    """Validate a backend spec without loading anything heavy; missing files fail here, in one line."""
    if spec.startswith(TORCH_PREFIX):
        # models/ imports torch: only a torch: spec may pay for it (parity judges engines against a saved
        # reference on machines without PyTorch)
        from ...models.base import TIMM_PREFIX

        rest = spec[len(TORCH_PREFIX):]
        prefix = ""
        if rest.startswith(TIMM_PREFIX):  # torch:timm:<name>[:weights]
            prefix, rest = TIMM_PREFIX, rest[len(TIMM_PREFIX):]
        model, _, weights = rest.partition(":")
        if not model:
            raise UsageError(f"'{spec}' names no model; expected {SPEC_HELP}")
        return Artifact(spec, "torch", model=prefix + model, weights=weights or None)
    if spec.startswith(OPENVINO_PREFIX):
        path = Path(spec[len(OPENVINO_PREFIX):])
        if path.suffix.lower() not in (*ARTIFACT_KINDS["onnx"].suffixes, *ARTIFACT_KINDS["openvino"].suffixes):
            raise UsageError(f"'{spec}': OpenVINO runs a .onnx file or an IR .xml here")
        require_file(path, "model", OnnxFileError)
        return Artifact(spec, "openvino", path=path, manifest=_optional_manifest(path))
    path = Path(spec)
    kind = next((k for k in ARTIFACT_KINDS.values() if path.suffix.lower() in k.suffixes), None)
    if kind is not None:
        require_file(path, kind.noun, kind.not_found)
        if kind.name == "openvino" and not path.with_suffix(".bin").is_file():
            raise OnnxFileError(f"OpenVINO IR {path.name} has no weights file {path.with_suffix('.bin').name} "
                                "beside it")
        return Artifact(spec, kind.name, path=path, manifest=kind.manifest(path))
    if path.is_dir():
        raise OnnxFileError(f"{spec} is a directory, not a file (expected {SPEC_HELP})")
    if not path.exists():
        raise OnnxFileError(f"model not found: {spec} (expected {SPEC_HELP})")
    raise UsageError(f"cannot tell how to run {spec}: expected {SPEC_HELP}")


def open_backend(artifact: Artifact | str, **options) -> Backend:
    """Open ``artifact`` with the opener its kind's row names; ``options`` are :class:`OpenOptions` fields."""
    if isinstance(artifact, str):
        artifact = parse_spec(artifact)
    backend = ARTIFACT_KINDS[artifact.kind].opener(artifact, OpenOptions(**options))
    try:
        backend.input_format = artifact.input_format  # what the harness feeds it (data.sources batches it so)
        require_image_input(artifact.label, backend.input_spec, backend.input_format)  # one check for every backend
    except OnnxFileError:
        backend.close()
        raise
    return backend
