"""FP32 ONNX -> FP16 ONNX with FP32 inputs and outputs.

Every float tensor inside the graph becomes float16; one Cast after each graph
input and one before each graph output keep the interface float32, so callers
and TensorRT bindings do not change. Nothing is inserted inside the network, so
each ECA block keeps its plain pool -> reshape -> Conv1d -> reshape -> Sigmoid ->
Mul shape (checked by the caller with :func:`eca_deploy.export.graph.summarize`).
Weights beyond the float16 range are clamped and counted; nonzero weights
smaller than float16's smallest subnormal flush to zero and are counted too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..graph.graph import opset_of
from ..graph.qdq import QDQ_OPS

HIGH_PRECISIONS = ("fp16", "fp32")  # the dtype of an INT8 model's non-quantized glue (tensorrt target)
FP16_GLUE, FP32_GLUE = HIGH_PRECISIONS  # named, so the glue is compared by name, not by a string typed again

FP16_MAX = float(np.finfo(np.float16).max)
QDQ_FP16_OPSET = 19  # QuantizeLinear / DequantizeLinear take float16 inputs and scales from opset 19 on
FP16_TINY = float(np.finfo(np.float16).smallest_subnormal)
FP16_SMALLEST_NORMAL = float(np.finfo(np.float16).tiny)  # 2**-14: smaller float16 values lose precision


@dataclass
class Fp16Report:
    tensors_converted: int
    values_clamped: int  # |w| > 65504
    values_flushed: int  # 0 < |w| < 2**-24
    scales_raised: int = 0  # Q/DQ scales below float16's smallest normal, raised to it (FP16 glue only)

    def as_dict(self) -> dict:
        return {"tensors_converted": self.tensors_converted, "values_clamped": self.values_clamped,
                "values_flushed_to_zero": self.values_flushed, "scales_raised": self.scales_raised}


def _to_half(tensor: TensorProto, report: Fp16Report) -> TensorProto:
    array = numpy_helper.to_array(tensor).astype(np.float32)
    magnitude = np.abs(array)
    report.values_clamped += int(np.count_nonzero(magnitude > FP16_MAX))
    report.values_flushed += int(np.count_nonzero((magnitude > 0) & (magnitude < FP16_TINY / 2)))
    report.tensors_converted += 1
    return numpy_helper.from_array(np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16), tensor.name)


def _retype(value_info: onnx.ValueInfoProto) -> None:
    tensor_type = value_info.type.tensor_type
    if tensor_type.elem_type == TensorProto.FLOAT:
        tensor_type.elem_type = TensorProto.FLOAT16


def convert_to_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Fp16Report]:
    report = Fp16Report(0, 0, 0)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph

    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            graph.initializer[i].CopyFrom(_to_half(init, report))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(_to_half(attr.t, report))
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    for value_info in graph.value_info:
        _retype(value_info)

    initializer_names = {i.name for i in graph.initializer}
    head: list[onnx.NodeProto] = []
    for graph_input in graph.input:
        if graph_input.name in initializer_names or graph_input.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        half = f"{graph_input.name}_fp16"
        _rename(graph, graph_input.name, half, outputs=False)
        head.append(helper.make_node("Cast", [graph_input.name], [half], name=f"{graph_input.name}_to_fp16",
                                     to=TensorProto.FLOAT16))
    tail: list[onnx.NodeProto] = []
    for graph_output in graph.output:
        if graph_output.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        half = f"{graph_output.name}_fp16"
        _rename(graph, graph_output.name, half, outputs=True)
        tail.append(helper.make_node("Cast", [half], [graph_output.name], name=f"{graph_output.name}_to_fp32",
                                     to=TensorProto.FLOAT))
    nodes = head + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)
    return result, report


def _rename(graph: onnx.GraphProto, old: str, new: str, outputs: bool) -> None:
    """Point every node input (and, with ``outputs``, the producing node's output) named ``old`` at ``new``."""
    for node in graph.node:
        fields = (node.input, node.output) if outputs else (node.input,)
        for names in fields:
            for j, name in enumerate(names):
                if name == old:
                    names[j] = new


def qdq_glue_to_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Fp16Report]:
    """A Q/DQ INT8 model with its non-quantized glue in FP16 and FP32 network I/O, as NVIDIA Model
    Optimizer writes it with high_precision_dtype="fp16": every float tensor, the Q/DQ scales
    included, becomes float16, so on TensorRT's strongly typed networks the layers between INT8 ones
    run and store FP16. Float16 Q/DQ needs opset 19, so older graphs are converted first.

    Scales below float16's smallest normal are raised to it first (as Model Optimizer does): a weight
    channel whose largest magnitude is below ~3.8e-6 would otherwise get scale 0, which TensorRT 10's
    parser refuses ("Scale coefficients must all be positive", onnx-tensorrt onnxOpImporters.cpp), and
    smaller ones are subnormals (1.6% off at a channel max of 1e-4, 24% at 1e-5)."""
    if opset_of(model) < QDQ_FP16_OPSET:
        model = onnx.version_converter.convert_version(model, QDQ_FP16_OPSET)
    model = _copy(model)
    raised = _raise_small_scales(model.graph)
    half, report = convert_to_fp16(model)
    report.scales_raised = raised
    return half, report


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    result = onnx.ModelProto()
    result.CopyFrom(model)
    return result


def _raise_small_scales(graph: onnx.GraphProto) -> int:
    """Raise Q/DQ scale initializers below FP16_SMALLEST_NORMAL to it, in place; the int8 weights a raised
    scale dequantizes are requantized (w * old / new, rounded), so each weight keeps its value as nearly as
    the coarser step allows. Returns how many scale values were raised."""
    inits = {init.name: init for init in graph.initializer}
    qdq = [node for node in graph.node if node.op_type in QDQ_OPS and len(node.input) > 1]
    old = {name: numpy_helper.to_array(inits[name]).astype(np.float32)
           for name in {node.input[1] for node in qdq} if name in inits}
    low = {name: scale for name, scale in old.items() if np.any((scale > 0) & (scale < FP16_SMALLEST_NORMAL))}
    for node in qdq:
        weight = inits.get(node.input[0])
        if node.op_type != "DequantizeLinear" or node.input[1] not in low or weight is None:
            continue
        scale = low[node.input[1]]
        ratio = scale / np.maximum(scale, FP16_SMALLEST_NORMAL)
        values = numpy_helper.to_array(weight)
        if ratio.ndim:  # per-channel: along the node's axis (default 1)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % values.ndim
            ratio = ratio.reshape([-1 if d == axis else 1 for d in range(values.ndim)])
        limit = np.iinfo(values.dtype)
        requantized = np.clip(np.round(values * ratio), -limit.max, limit.max).astype(values.dtype)
        weight.CopyFrom(numpy_helper.from_array(requantized, weight.name))
    for name, scale in low.items():
        inits[name].CopyFrom(numpy_helper.from_array(
            np.where(scale > 0, np.maximum(scale, FP16_SMALLEST_NORMAL), scale).astype(np.float32), name))
    return int(sum(np.count_nonzero((s > 0) & (s < FP16_SMALLEST_NORMAL)) for s in low.values()))
