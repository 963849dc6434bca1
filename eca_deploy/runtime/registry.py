"""Open a backend from what the user typed: a spec one row of ARTIFACT_KINDS recognises, by its prefix
(``torch:<model>[:weights]``, ``openvino:<file>``) or by its file's suffix (.onnx, .engine/.plan, .xml).

The artifact's format, precision, size and manifest are read here too, through its row, so parity, bench
and the reports describe every artifact the same way. A new kind of artifact is one row: its framework
folder's kind.py, listed below.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..artifacts import require_file
from ..errors import OnnxFileError, UsageError
from ..precisions import EXPORTED, PRECISIONS, is_quantized
from .base import ArtifactKind, Backend, OpenOptions, require_image_input
from .onnxruntime.kind import KIND as ONNX
from .openvino.kind import KIND as OPENVINO
from .tensorrt.kind import KIND as TENSORRT
from .torch.kind import KIND as TORCH
from .triton.kind import KIND as TRITON

__all__ = ["ARTIFACT_KINDS", "Artifact", "OpenOptions", "open_backend", "parse_spec", "register", "spec_help"]

ARTIFACT_KINDS: dict[str, ArtifactKind] = {}


def register(kind: ArtifactKind) -> ArtifactKind:
    """Add a row; its suffixes and prefix must select no other row."""
    for other in ARTIFACT_KINDS.values():
        if set(kind.suffixes) & set(other.suffixes) or (kind.prefix and kind.prefix == other.prefix):
            raise ValueError(f"artifact kind {kind.name} claims a suffix or prefix of {other.name}")
    ARTIFACT_KINDS[kind.name] = kind
    return kind


for _kind in (TORCH, ONNX, TENSORRT, OPENVINO, TRITON):
    register(_kind)


def spec_help() -> str:
    """Every spec the table takes, as --help and error messages list them."""
    pieces = [piece for kind in ARTIFACT_KINDS.values() for piece in kind.help]
    return ", ".join(pieces[:-1]) + ", or " + pieces[-1]


def kind_of_file(path: Path) -> ArtifactKind | None:
    return next((k for k in ARTIFACT_KINDS.values() if path.suffix.lower() in k.suffixes), None)


@dataclass(frozen=True)
class Artifact:
    """One thing to run: a PyTorch model or a file, with what its manifest says; its row says the rest."""

    spec: str
    kind: str  # a name in ARTIFACT_KINDS
    path: Path | None = None
    model: str | None = None  # a model named by its spec (torch:)
    weights: str | None = None
    manifest: dict | None = None

    @property
    def row(self) -> ArtifactKind:
        return ARTIFACT_KINDS[self.kind]

    @property
    def owner(self) -> ArtifactKind:
        """The row whose suffix the file has: a file of another kind named with this row's prefix
        (openvino:m.onnx) keeps that kind's format, precision reader and size."""
        return (kind_of_file(self.path) if self.path else None) or self.row

    @property
    def foreign(self) -> bool:
        return self.owner is not self.row

    @property
    def format(self) -> str:
        return self.owner.label

    @property
    def label(self) -> str:
        """The file name; a foreign file keeps its prefix, to tell its row from its own kind's."""
        if not self.path:
            return f"{self.model} ({self.row.label})"
        return self.row.prefix + self.path.name if self.foreign else self.path.name

    @property
    def identity(self) -> str:
        """What tells two artifacts apart in a report: the resolved file path (with the prefix where a foreign
        file runs), or the spec."""
        if not self.path:
            return self.spec
        return (self.row.prefix if self.foreign else "") + str(self.path.resolve())

    @property
    def folder(self) -> Path:
        """Where results about it are written by default: beside its file, else the working folder."""
        return self.path.parent if self.path else Path(".")

    @property
    def stem(self) -> str:
        """Its name in default output names, apart from another row's result on the same file."""
        if not self.path:  # timm:<name> -> <name>, triton://host:port/<name> -> <name>.triton: no colon or slash
            return re.split(r"[:/]", self.model)[-1] + self.row.output_tag
        return self.path.stem + ("." + self.row.name if self.foreign else self.owner.output_tag)

    @property
    def size_mb(self) -> float | None:
        """The size of its files (an IR's counts its .bin too)."""
        target = self.path or (Path(self.weights) if self.weights else None)
        if not (target and target.is_file()):
            return None
        files = [target, *(target.with_suffix(suffix) for suffix in self.owner.companions)]
        return round(sum(f.stat().st_size for f in files if f.is_file()) / 2**20, 2)

    @property
    def inputs(self) -> list[Path]:
        """Every file running this artifact reads: what no output of the run may overwrite."""
        return self.row.inputs(self)

    @functools.cached_property
    def input_format(self) -> str:
        """What this artifact is fed (data.pixels), as its file records it (its owner row reads it)."""
        return self.owner.input_format(self)

    def layout(self, precision: str) -> str | None:
        """An INT8 artifact's Q/DQ layout (tensorrt or cpu)."""
        return self.row.int8_layout(self) if is_quantized(precision) else None

    def precision(self, override: str | None = None) -> tuple[str, str]:
        """(precision, where it came from): the flag, the manifest, the file itself, or fp32 assumed."""
        if override:
            return override, "flag"
        recorded = (self.manifest or {}).get("precision")
        if recorded in PRECISIONS:
            return recorded, "manifest"
        if self.owner.precision:
            return self.owner.precision(self)
        return EXPORTED, "assumed (no manifest; pass --precision)"


def parse_spec(spec: str) -> Artifact:
    """Validate a backend spec without loading anything heavy; missing files fail here, in one line."""
    for kind in ARTIFACT_KINDS.values():
        if kind.prefix and spec.startswith(kind.prefix):
            return Artifact(spec, kind.name, **kind.named(spec, spec[len(kind.prefix):]))
    path = Path(spec)
    kind = kind_of_file(path)
    if kind is not None:
        require_file(path, kind.noun, kind.not_found)
        kind.check(path)
        return Artifact(spec, kind.name, path=path, manifest=kind.manifest(path))
    if path.is_dir():
        raise OnnxFileError(f"{spec} is a directory, not a file (expected {spec_help()})")
    if not path.exists():
        raise OnnxFileError(f"model not found: {spec} (expected {spec_help()})")
    raise UsageError(f"cannot tell how to run {spec}: expected {spec_help()}")


def open_backend(artifact: Artifact | str, options: OpenOptions | None = None, **fields) -> Backend:
    """Open ``artifact`` with the opener its row names; ``fields`` change single :class:`OpenOptions` fields."""
    if isinstance(artifact, str):
        artifact = parse_spec(artifact)
    backend = artifact.row.opener(artifact, replace(options or OpenOptions(), **fields))
    try:
        backend.input_format = artifact.input_format  # what the harness feeds it (data.sources batches it so)
        require_image_input(artifact.label, backend.input_spec, backend.input_format)  # one check for every backend
    except OnnxFileError:
        backend.close()
        raise
    return backend
