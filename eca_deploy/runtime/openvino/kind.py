"""The OpenVINO artifact kind: an IR (.xml + .bin), or any file OpenVINO reads named openvino:<file>
(openvino:<file.onnx> runs an ONNX file on OpenVINO instead of onnxruntime)."""

from __future__ import annotations

from pathlib import Path

from ...artifacts import require_file
from ...errors import OnnxFileError, UsageError
from ...precisions import ir_precision
from ..base import ArtifactKind, Backend, OpenOptions, optional_manifest, recorded_layout

PREFIX = "openvino:"
READS = (".onnx", ".xml")  # the files OpenVINO opens here


def named(spec: str, rest: str) -> dict:
    path = Path(rest)
    if path.suffix.lower() not in READS:
        raise UsageError(f"'{spec}': OpenVINO runs a .onnx file or an IR .xml here")
    require_file(path, "model", OnnxFileError)
    return {"path": path, "manifest": optional_manifest(path)}


def check_weights(path: Path) -> None:
    if not path.with_suffix(".bin").is_file():
        raise OnnxFileError(f"OpenVINO IR {path.name} has no weights file {path.with_suffix('.bin').name} beside it")


def open_openvino(artifact, options: OpenOptions) -> Backend:
    from .backend import OpenVinoBackend

    return OpenVinoBackend(artifact.path, precision=artifact.precision()[0], threads=options.threads,
                           hint=options.ov_hint)


KIND = ArtifactKind(
    "openvino", "OpenVINO IR", "OpenVINO IR", ("an OpenVINO IR .xml", f"{PREFIX}<file.onnx>"), open_openvino,
    suffixes=(".xml",), prefix=PREFIX, named=named, check=check_weights, companions=(".bin",), output_tag=".ir",
    precision=lambda artifact: (ir_precision(artifact.path), "graph"), int8_layout=recorded_layout)
