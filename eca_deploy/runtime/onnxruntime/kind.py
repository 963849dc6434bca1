"""The ONNX artifact kind: a .onnx file, run by onnxruntime."""

from __future__ import annotations

from ...graph.graph import onnx_inputs
from ...graph.input_format import read_input_format
from ...precisions import onnx_precision
from ..base import ArtifactKind, Backend, OpenOptions, recorded_layout


def open_onnx(artifact, options: OpenOptions) -> Backend:
    from .backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(artifact.path, provider=options.provider, threads=options.threads)


KIND = ArtifactKind(
    "onnx", "ONNX", "ONNX file", ("a .onnx file",), open_onnx, suffixes=(".onnx",),
    precision=lambda artifact: (onnx_precision(artifact.path), "graph"),
    inputs=lambda artifact: onnx_inputs(artifact.path),  # with its external data files
    input_format=lambda artifact: read_input_format(artifact.path),  # as its export recorded it in the metadata
    int8_layout=recorded_layout)
