"""OpenVINO models compiled the same way everywhere (IR export checks, the OpenVINO backend).

The precision is always set, never left to the plugin: on CPUs with AMX or AVX-512 BF16, OpenVINO's
CPU plugin computes an FP32 model in bfloat16 unless told otherwise (measured on a Xeon with AMX:
max abs 0.16 on logits of ~16 against onnxruntime by default, 2e-5 with f32).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import OnnxFileError, UsageError, first_line, missing_dependency
from ..precisions import PRECISIONS

INSTALL = "pip install 'eca-deploy[openvino]'"
DEVICE = "CPU"
HINTS = ("latency", "throughput")


def import_openvino():
    """The openvino module, or the one-line 'install this' error every optional dependency gives."""
    try:
        import openvino
    except ImportError as exc:
        raise missing_dependency("OpenVINO (the `openvino` Python package)", INSTALL) from exc
    return openvino


def computes_in_fp16(model) -> bool:
    """True where the graph computes in half floats (an FP16 ONNX); False for FP16-compressed weights alone,
    which the graph converts to f32 before they are used."""
    return any(op.get_type_name() not in ("Constant", "Convert", "Parameter", "Result")
               and op.get_output_size() and op.get_output_element_type(0).get_type_name() == "f16"
               for op in model.get_ops())


def inference_precision(precision: str, core, model) -> str:
    """OpenVINO's INFERENCE_PRECISION_HINT for an artifact of ``precision``: what its graph says.

    fp32: f32. int8: f32 too, so what the Q/DQ pairs leave in float stays FP32 (the quantized
    convolutions run in INT8 either way). fp16: f16 where the graph computes in FP16 and the CPU can
    (OPTIMIZATION_CAPABILITIES lists FP16), else f32 (FP16-compressed weights, or an older CPU).
    """
    hint = PRECISIONS[precision].openvino_hint
    if hint == "f16" and not (computes_in_fp16(model)
                              and "FP16" in core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")):
        return "f32"
    return hint


def compile_model(model, precision: str = "fp32", threads: int | None = None, hint: str = "latency"):
    """Compile an ov.Model or a .onnx / .xml file for the CPU with explicit precision, threads and hint."""
    ov = import_openvino()
    if hint not in HINTS:
        raise UsageError(f"unknown OpenVINO hint '{hint}'; choose from {', '.join(HINTS)}")
    core = ov.Core()
    if isinstance(model, (str, os.PathLike)):
        model = read_model(core, Path(model))
    properties = {"INFERENCE_PRECISION_HINT": inference_precision(precision, core, model),
                  "PERFORMANCE_HINT": hint.upper()}
    if threads:
        properties["INFERENCE_NUM_THREADS"] = int(threads)
    return core.compile_model(model, DEVICE, properties)


def read_model(core, path: Path):
    if not path.is_file():
        raise OnnxFileError(f"model not found: {path}")
    check_ir_weights(path)
    try:
        return core.read_model(str(path))
    except Exception as exc:  # OpenVINO raises plain RuntimeError with multi-line text
        raise OnnxFileError(f"OpenVINO cannot load {path}: {ov_message(exc)}") from exc


def check_ir_weights(path: Path) -> None:
    """An IR's .bin is its external data: like onnxruntime for ONNX external data, refuse one that resolves
    (through a link) outside the model's folder, so a model file cannot make us read any file it names."""
    weights = path.with_suffix(".bin")
    if path.suffix.lower() != ".xml" or not weights.exists():
        return
    folder = path.absolute().parent.resolve()
    if not weights.resolve().is_relative_to(folder):
        raise OnnxFileError(f"the weights file {weights.name} of {path} resolves outside the model's folder "
                            f"({weights.resolve()}); copy the file beside the .xml instead of linking it")


# OpenVINO's messages start with where in its sources they were raised; the reason comes after.
_OV_LOCATION = re.compile(r"^(Exception from \S+:\d+:|Check '.*' failed at \S+:\d+:)$")


def ov_message(exc: BaseException) -> str:
    """The line of an OpenVINO error that says why ("Incorrect weights in bin file!"), kept short."""
    reasons = [line.strip() for line in str(exc).splitlines() if line.strip() and not _OV_LOCATION.match(line.strip())]
    return (reasons[0] if reasons else first_line(exc))[:200]


def run_once(model, batch: np.ndarray, precision: str = "fp32") -> np.ndarray:
    """Logits of one batch (a fresh compile: for checks, not for timing)."""
    compiled = compile_model(model, precision)
    return np.array(compiled(np.ascontiguousarray(batch, dtype=np.float32))[0])
