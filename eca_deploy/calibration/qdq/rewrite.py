"""Rewrite a float ONNX graph with explicit QuantizeLinear/DequantizeLinear following a :class:`QdqPlan`.

Activations get a Q -> DQ pair right after their producer; weights are stored as
int8 with one DequantizeLinear per weight (per output channel); on the cpu target
biases become int32 with scale = input scale x weight scale, the form onnxruntime's
integer kernels take.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...errors import QuantizationError
from ...graph.qdq import QDQ_OPS
from ..int8.calibrators import TensorRange
from .placement import GraphIndex, QdqPlan

INT8_MAX = 127
UINT8_MAX = 255
INT32_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class QuantParams:
    scale: float
    zero_point: int
    dtype: int  # the plan's dtype (symmetric), or TensorProto.UINT8 (asymmetric)


@dataclass
class QdqSummary:
    activation_pairs: int
    weight_dq: int
    bias_dq: int
    quantized_nodes: Counter
    float_nodes: dict[str, list[str]]  # op type -> node names computing in float
    clipped_biases: int = 0

    def as_dict(self) -> dict:
        return {"activation_qdq_pairs": self.activation_pairs, "weight_dq": self.weight_dq,
                "bias_dq": self.bias_dq, "quantized_nodes": dict(sorted(self.quantized_nodes.items())),
                "float_nodes": self.float_nodes, "clipped_biases": self.clipped_biases}


def activation_params(rng: TensorRange, symmetric: bool, dtype: int = TensorProto.INT8) -> QuantParams:
    """Symmetric: ``dtype`` with a zero zero point (TensorRT's only form); asymmetric: uint8, onnxruntime's
    x86 activations."""
    if symmetric:
        amax = rng.amax if rng.amax > 0 else 1.0
        return QuantParams(amax / _qmax(dtype), 0, dtype)
    lo, hi = rng.asymmetric
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0:
        return QuantParams(1.0, 0, TensorProto.UINT8)
    scale = (hi - lo) / UINT8_MAX
    zero_point = int(np.clip(round(-lo / scale), 0, UINT8_MAX))
    return QuantParams(scale, zero_point, TensorProto.UINT8)


def _qmax(dtype: int) -> int:
    return int(np.iinfo(helper.tensor_dtype_to_np_dtype(dtype)).max)


def weight_qmax(bits: int) -> int:
    """The narrow symmetric range of ``bits``-bit weights: 127 for 8 bits (as TensorRT expects), 63 for 7."""
    return 2 ** (bits - 1) - 1


def weight_scales(weight: np.ndarray, axis: int, qmax: int = INT8_MAX) -> np.ndarray:
    """Symmetric per-channel scales over ``axis``, mapping each channel's max |w| to ``qmax``."""
    reduce = tuple(i for i in range(weight.ndim) if i != axis)
    amax = np.max(np.abs(weight), axis=reduce) if reduce else np.abs(weight)
    return np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)


def _broadcast(values: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return values.reshape(shape)


def insert_qdq(model: onnx.ModelProto, plan: QdqPlan, ranges: dict[str, TensorRange]) -> tuple[onnx.ModelProto, QdqSummary]:
    """A new model with the plan's Q/DQ, of the plan's dtype and in its target's layout; ``ranges`` holds every
    tensor in ``plan.calibrated_tensors``."""
    index = GraphIndex(model)
    symmetric = plan.target == "tensorrt"
    missing = [t for t in plan.calibrated_tensors if t not in ranges]
    if missing:
        raise QuantizationError(f"no calibration range for {len(missing)} tensors (first: {missing[0]})")

    new_inits: list[TensorProto] = []
    head_nodes: list[onnx.NodeProto] = []  # weight/bias DQ and graph-input Q/DQ
    after: dict[str, list[onnx.NodeProto]] = {}  # producer node name -> Q/DQ nodes that follow it
    rewire: dict[tuple[str, int], str] = {}  # (node, input index) -> new input tensor
    act_params: dict[str, QuantParams] = {}

    def initializer(name: str, array: np.ndarray) -> str:
        new_inits.append(numpy_helper.from_array(array, name))
        return name

    for act in plan.activations:
        rng = TensorRange(act.fixed_range[0], act.fixed_range[1], max(map(abs, act.fixed_range))) \
            if act.fixed_range else ranges[act.range_of]
        params = activation_params(rng, symmetric, plan.dtype)
        act_params[act.tensor] = params
        np_type = helper.tensor_dtype_to_np_dtype(params.dtype)
        scale = initializer(f"{act.tensor}_scale", np.array(params.scale, dtype=np.float32))
        zero = initializer(f"{act.tensor}_zero_point", np.array(params.zero_point, dtype=np_type))
        quantized, dequantized = f"{act.tensor}_quantized", f"{act.tensor}_dequantized"
        pair = [helper.make_node("QuantizeLinear", [act.tensor, scale, zero], [quantized],
                                 name=f"{act.tensor}_QuantizeLinear"),
                helper.make_node("DequantizeLinear", [quantized, scale, zero], [dequantized],
                                 name=f"{act.tensor}_DequantizeLinear")]
        producer = index.producer.get(act.tensor)
        (after.setdefault(producer.name, []) if producer is not None else head_nodes).extend(pair)
        targets = act.consumers if act.consumers is not None else \
            tuple((n.name, i) for n, i in index.consumers.get(act.tensor, []))
        for target in targets:
            rewire[target] = dequantized

    weight_dq: dict[tuple[str, int], str] = {}  # (weight, axis) -> dequantized name; shared weights quantize once
    weight_scale_of: dict[str, np.ndarray] = {}
    qmax = min(weight_qmax(plan.weight_bits), _qmax(plan.dtype))
    weight_type = helper.tensor_dtype_to_np_dtype(plan.dtype)
    for wq in plan.weights:
        node = index.nodes[wq.node]
        name = node.input[1]
        weight = numpy_helper.to_array(index.initializers[name]).astype(np.float32)
        scales = weight_scales(weight, wq.axis, qmax)
        weight_scale_of[wq.node] = scales
        key = (name, wq.axis)
        if key not in weight_dq:
            q = np.clip(np.round(weight / _broadcast(scales, wq.axis, weight.ndim)), -qmax, qmax)
            q_name = initializer(f"{name}_int8", q.astype(weight_type))
            s_name = initializer(f"{name}_scale", scales)
            z_name = initializer(f"{name}_zero_point", np.zeros_like(scales, dtype=weight_type))
            weight_dq[key] = f"{name}_dequantized"
            head_nodes.append(helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [weight_dq[key]],
                                               name=f"{name}_DequantizeLinear", axis=wq.axis))
        rewire[(wq.node, 1)] = weight_dq[key]

    bias_count = clipped = 0
    if plan.quantize_bias:
        for wq in plan.weights:
            node = index.nodes[wq.node]
            if len(node.input) < 3 or node.input[2] not in index.initializers or node.input[0] not in act_params:
                continue
            bias = numpy_helper.to_array(index.initializers[node.input[2]]).astype(np.float64)
            scale = (act_params[node.input[0]].scale * weight_scale_of[wq.node].astype(np.float64))
            if bias.shape != scale.shape:
                continue
            q = np.round(bias / scale)
            clipped += int(np.count_nonzero(np.abs(q) > INT32_LIMIT))
            base = f"{node.name}_bias"
            q_name = initializer(f"{base}_int32", np.clip(q, -INT32_LIMIT, INT32_LIMIT).astype(np.int32))
            s_name = initializer(f"{base}_scale", scale.astype(np.float32))
            z_name = initializer(f"{base}_zero_point", np.zeros(scale.shape, dtype=np.int32))
            head_nodes.append(helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [f"{base}_dequantized"],
                                               name=f"{base}_DequantizeLinear", axis=0))
            rewire[(node.name, 2)] = f"{base}_dequantized"
            bias_count += 1

    nodes: list[onnx.NodeProto] = list(head_nodes)
    for original in model.graph.node:
        node = onnx.NodeProto()
        node.CopyFrom(original)
        for i in range(len(node.input)):
            if (node.name, i) in rewire:
                node.input[i] = rewire[(node.name, i)]
        nodes.append(node)
        nodes.extend(after.get(node.name, []))

    result = onnx.ModelProto()
    result.CopyFrom(model)
    del result.graph.node[:]
    result.graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del result.graph.initializer[:]
    result.graph.initializer.extend(kept + new_inits)
    del result.graph.value_info[:]  # stale after the rewrite; onnxruntime and onnx re-infer
    summary = summarize_qdq(result)
    summary.clipped_biases = clipped
    return result, summary


def summarize_qdq(model: onnx.ModelProto) -> QdqSummary:
    """Count Q/DQ on a (quantized) graph and say which compute nodes read no dequantized input."""
    index = GraphIndex(model)
    quantize_outputs = {n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    dq_nodes = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    pairs = sum(1 for n in dq_nodes if n.input[0] in quantize_outputs)
    weight_dq = sum(1 for n in dq_nodes if n.input[0] in index.initializers
                    and index.initializers[n.input[0]].data_type == TensorProto.INT8)
    bias_dq = sum(1 for n in dq_nodes if n.input[0] in index.initializers
                  and index.initializers[n.input[0]].data_type == TensorProto.INT32)
    dq_outputs = {n.output[0] for n in dq_nodes}
    quantized: Counter = Counter()
    floating: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type in QDQ_OPS or node.op_type == "Constant":
            continue
        if any(i in dq_outputs for i in node.input):
            quantized[node.op_type] += 1
        else:
            floating.setdefault(node.op_type, []).append(node.name)
    return QdqSummary(pairs, weight_dq, bias_dq, quantized, floating)

