"""The typed report row: one artifact on one backend, with its parity and bench sections.

parity, bench, the pipeline and report all build rows through this one type, so every row has
the same fields in the same order and a new field is added in one place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..registry import Artifact

STATUSES = ("reference", "pass", "fail", "measured", "skipped", "error")


@dataclass
class ReportRow:
    artifact: str  # what a person reads: the file name, or "<model> (PyTorch)"
    identity: str  # what tells two artifacts apart: the resolved path, or the torch spec
    format: str  # the artifact kind's label: PyTorch / ONNX / TensorRT
    precision: str | None
    backend: str  # e.g. onnxruntime-cpu; "-" where none could be opened
    status: str  # one of STATUSES
    reason: str = ""
    spec: str | None = None  # what the user typed
    size_mb: float | None = None
    precision_source: str | None = None  # flag / manifest / graph / pytorch
    layout: str | None = None  # an INT8 file's layout (tensorrt / cpu): two INT8 files are told apart by it
    parity: dict | None = None
    bench: dict | None = None

    @classmethod
    def of(cls, artifact: Artifact, precision: str | None, backend: str, status: str, reason: str = "",
           **sections) -> "ReportRow":
        return cls(artifact.label, artifact.identity, artifact.format, precision, backend, status, reason,
                   artifact.spec, artifact.size_mb, layout=artifact.layout(precision), **sections)

    def as_dict(self) -> dict:
        """The JSON form; sections a row does not have are left out."""
        return {key: value for key, value in asdict(self).items()
                if value is not None or key in ("precision", "size_mb")}
