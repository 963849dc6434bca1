"""The one table of precisions: what each is called, how its files are named, how it is judged,
which TensorRT 8.6 builder flag it needs, and how to recognise it in an ONNX graph.

The CLI choices, precision detection, parity tolerances, quantize's dispatch and output names and the
pipeline's variants all read this table; adding a precision means a row here, its converter (named by the
row, imported only when it runs, so this table stays below every stage), its graph recogniser where the
ones here do not tell it, and its tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnx

from .errors import OnnxFileError


@dataclass(frozen=True)
class Tolerance:
    atol: float | None = None  # element check runs when atol and rtol are both set
    rtol: float | None = None
    max_top1_drop: float | None = None  # percentage points of images right in the reference, wrong in the candidate
    min_agreement: float | None = None  # top-1 agreement with the reference, with or without labels
    rounding: float | None = None  # FP32: error limit = this x the reference's own float32-vs-float64 gap


TOLERANCE_FIELDS = ("atol", "rtol", "max_top1_drop", "min_agreement")

# FP32 is judged at FP32's own error on the model and data at hand: the reference's float32 logits against
# float64 ones on its first ROUNDING_SAMPLES inputs, in units of each sample's logit scale. Another FP32
# implementation (onnxruntime, OpenVINO, TensorRT without TF32) rounds differently but no worse: measured
# 1.3-1.6x that gap on every registered model (real photos, random init). ROUNDING_MARGIN leaves room for
# inputs the gap was not measured on; ROUNDING_FLOOR (Polygraphy's FP32 default atol) for models that round
# to nothing on those few. A corrupted model (classifier x1.02 on every 7th input, one ECA weight x1.01, one
# BatchNorm mean off by 1% of its std) moves logits by 1e-3 and more of their scale.
ROUNDING_MARGIN = 4.0
ROUNDING_FLOOR = 1e-5
ROUNDING_SAMPLES = 4


Recogniser = Callable[[onnx.ModelProto], "str | None"]  # the graph layout ("int8 cpu") where a graph is this precision


@dataclass(frozen=True)
class Precision:
    name: str
    suffix: str  # the ONNX variant's file suffix, before ".onnx" ("" for the exported FP32 model)
    tolerance: Tolerance  # parity's default judgement of an artifact in this precision
    trt86_flag: str | None  # the BuilderFlag a TensorRT 8.6 (weakly typed) build of such an ONNX needs
    description: str
    recognise: Recogniser  # graph_layout asks the rows by descending ``detect_rank``; the first answer wins
    converter: str | Callable | None = None  # quantize's converter: "module:function" or the function; None: not made
    qdq_dtype: int | None = None  # TensorProto type of the Q/DQ data: set where ranges are calibrated into Q/DQ
    detect_rank: int = 0  # higher asks first: an INT8 graph with FP16 glue has half-float weights as well
    openvino_hint: str = "f32"  # OpenVINO's INFERENCE_PRECISION_HINT where the graph and the CPU can compute so

    @property
    def exported(self) -> bool:
        """The precision export writes (no variant suffix): the baseline the others are made from."""
        return not self.suffix

    @property
    def quantizes(self) -> bool:
        """Made with calibrated ranges written as Q/DQ (a calibration cache, a sensitivity search, a layout)."""
        return self.qdq_dtype is not None

    def convert(self) -> Callable:
        """The converter, imported on first use: stages sit above this table, so the row names theirs."""
        if callable(self.converter):
            return self.converter
        module, name = self.converter.split(":")
        return getattr(importlib.import_module(module), name)


# FP32: at its own rounding error (above). FP32_FIXED where the reference cannot run in float64 (an ONNX, IR
# or engine reference, a saved reference without its gap): kernels and summation orders stay within 1e-3.
# FP16: 10 mantissa bits; after ~50 layers every logit, near-zero ones included, moves by several 1e-2
# (README, FP16 and INT8). A broken conversion (overflow, NaN, a wrong graph) moves them by ~1.
# INT8: at most 1 point of images the reference gets right turned wrong (the usual bar for post-training
# quantization, counted from flips so wrong-to-right ones cannot hide it), and top-1 agreement of at least
# 97% with or without labels (3 answers in 100 may change, e.g. among images both get wrong).
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                           "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "QLinearAdd", "QLinearMul"})


def _float32_layout(model: onnx.ModelProto) -> str:
    return "fp32"  # what every graph is that no other row claims


def _float16_layout(model: onnx.ModelProto) -> str | None:
    return "fp16" if any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer) else None


def _int8_layout(model: onnx.ModelProto) -> str | None:
    """int8 tensorrt (Q/DQ with int8 zero points: symmetric activations) or int8 cpu (uint8 activation zero
    points: onnxruntime's x86 layout)."""
    if not any(node.op_type in QUANTIZED_OPS for node in model.graph.node):
        return None
    types = {i.name: i.data_type for i in model.graph.initializer}
    zero_points = {types.get(n.input[2]) for n in model.graph.node
                   if n.op_type == "QuantizeLinear" and len(n.input) > 2}
    return "int8 cpu" if onnx.TensorProto.UINT8 in zero_points else "int8 tensorrt"


CONVERTERS = "eca_deploy.calibration.quantize"
PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", "", Tolerance(rounding=ROUNDING_MARGIN), None, "float32, as exported", _float32_layout,
              detect_rank=-1),
    Precision("fp16", "fp16", Tolerance(atol=1e-1, rtol=5e-2), "FP16", "float16 weights and activations, FP32 I/O",
              _float16_layout, f"{CONVERTERS}:quantize_fp16", openvino_hint="f16"),
    Precision("int8", "int8", Tolerance(max_top1_drop=1.0, min_agreement=0.97), "INT8",
              "explicit Q/DQ, ranges calibrated on images", _int8_layout, f"{CONVERTERS}:quantize_int8",
              qdq_dtype=onnx.TensorProto.INT8, detect_rank=1),
)}


class _Names(Sequence):
    """The names of the rows ``keep`` accepts, read from PRECISIONS at each use, so CLI choices and checks
    see a row added at run time (a plug-in, a test) without being rebuilt."""

    def __init__(self, keep: Callable[[Precision], bool]):
        self._keep = keep

    def _names(self) -> tuple[str, ...]:
        return tuple(name for name, row in PRECISIONS.items() if self._keep(row))

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __eq__(self, other) -> bool:
        return self._names() == (tuple(other) if isinstance(other, Sequence) else other)

    def __hash__(self) -> int:
        return hash(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


PRECISION_NAMES = _Names(lambda row: True)
LOW_PRECISIONS = _Names(lambda row: row.converter is not None)  # what quantize makes from an FP32 ONNX
EXPORTED = next(name for name, row in PRECISIONS.items() if row.exported)  # the precision export writes


def is_exported(precision: str) -> bool:
    """The FP32 model as export writes it (the others are made from it)."""
    return PRECISIONS[precision].exported


def is_quantized(precision: str | None) -> bool:
    """A precision made with calibrated ranges (Q/DQ, or TensorRT's legacy calibrator); False for None."""
    return precision is not None and PRECISIONS[precision].quantizes

# TensorRT runs an FP32 engine's convolutions in TF32 on Ampere and newer GPUs unless the build turns
# it off: FP16's 10 mantissa bits with FP32's range, so FP16's tolerance.
TF32_TOLERANCE = Tolerance(atol=1e-1, rtol=5e-2)
FP32_FIXED = Tolerance(atol=1e-3, rtol=1e-3)

def graph_layout(model: onnx.ModelProto) -> str:
    """The layout of the first row (by ``detect_rank``) that recognises the graph: "fp32", "fp16",
    "int8 tensorrt", "int8 cpu"; its first word is the precision."""
    rows = sorted(PRECISIONS.values(), key=lambda row: -row.detect_rank)
    return next(layout for row in rows if (layout := row.recognise(model)))


def graph_precision(model: onnx.ModelProto) -> str:
    """int8 where the graph quantizes, fp16 where its weights are half floats, else fp32."""
    return graph_layout(model).split()[0]


def onnx_precision(path: str | Path) -> str:
    """The precision an ONNX file carries, read from its graph (weights not loaded)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends on foreign bytes, as graph.load_onnx says
        raise OnnxFileError(f"{path} is not an ONNX model ({type(exc).__name__})") from exc
    return graph_precision(model)


def ir_precision(path: str | Path) -> str:
    """The precision an OpenVINO IR .xml carries: int8 where it quantizes (FakeQuantize), fp16 where its weights
    are half floats, else fp32."""
    from xml.etree import ElementTree

    try:
        layers = list(ElementTree.parse(path).getroot().iter("layer"))
    except ElementTree.ParseError as exc:
        raise OnnxFileError(f"{path} is not an OpenVINO IR: {exc}") from exc
    if any(layer.get("type") == "FakeQuantize" for layer in layers):
        return "int8"
    if any(layer.get("type") == "Const" and layer.find("data") is not None
           and layer.find("data").get("element_type") == "f16" for layer in layers):
        return "fp16"
    return "fp32"


def variant_suffix(precision: str, layout: str | None = None) -> str:
    """'fp16' -> 'fp16' whatever the target (one FP16 file serves both); INT8 files also name a layout other
    than TensorRT's ('int8.cpu')."""
    suffix = PRECISIONS[precision].suffix
    quantized_elsewhere = PRECISIONS[precision].quantizes and layout and layout != "tensorrt"
    return f"{suffix}.{layout}" if quantized_elsewhere else suffix
