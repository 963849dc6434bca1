"""Where Q/DQ goes, per target. Pure graph analysis: no numbers, no rewriting.

``tensorrt`` (TensorRT 10/11 strongly typed), in two layouts:

- ``eca-deploy`` (default): Q/DQ on the data input of every Conv/Gemm and on the residual input
  of each Add; the Add input that comes straight out of a Conv stays float because TensorRT
  fuses that Add into the Conv. Weights per output channel; bias and the network output stay
  float. The ECA path (pool, Conv1d, Sigmoid, gating Mul) stays float.
- ``modelopt``: NVIDIA Model Optimizer's placement, which is not the same: measured with
  nvidia-modelopt 0.47.0 on an ECA-ResNet-50 it differs on 70 op inputs. It also quantizes the
  ECA pool input, both inputs of the gating Mul (the Sigmoid gate with its fixed [0, 1] range),
  both inputs of an Add where neither comes straight out of a Conv (identity blocks), and the
  inputs of MaxPool and the final pool, and leaves the classifier Gemm in float. (Model Optimizer
  also stores weights as float + Q/DQ; here weights stay int8 + DQ, which builds the same engine.)

``cpu`` (onnxruntime x86): onnxruntime turns ``DQ -> op -> Q`` groups into integer
kernels (QLinearConv, QLinearAdd, QLinearMul, QGemm, int8 MaxPool), so every
tensor between such ops is quantized, including Conv/Add outputs (after the ReLU
that follows, which onnxruntime then drops because a u8 zero point of 0 already
clips at zero) and int32 biases. The ECA pool and Conv1d run in float on tiny
[N, C] tensors; the gating Mul, which touches the whole feature map, is quantized, its Sigmoid input
with the fixed range [0, 1].
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

import onnx
from onnx import TensorProto

from ...errors import QuantizationError
from ...graph.eca import eca_node_names

TARGETS = ("tensorrt", "cpu")
QDQ_LAYOUTS = ("eca-deploy", "modelopt")  # placements for the tensorrt target
WEIGHTED_OPS = {"Conv", "Gemm"}
# Ops whose output may share the input's quantization (values are a subset of the input's).
SHARED_RANGE_OPS = {"MaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze"}
# Outputs whose range is known: calibrating them can only lose values. Entropy calibration of an ECA gate
# whose values sat in [0.28, 0.73] chose 0.28, clipping every gate to one value (cosine 0.86 on a digit).
BOUNDED_OUTPUTS = {"Sigmoid": (0.0, 1.0), "HardSigmoid": (0.0, 1.0)}


@dataclass(frozen=True)
class ActivationQuant:
    tensor: str
    consumers: tuple[tuple[str, int], ...] | None  # (node name, input index) to rewire; None: every consumer
    range_of: str  # the calibrated tensor whose range sets the scale (itself, or a pass-through op's input)
    fixed_range: tuple[float, float] | None = None  # a bounded activation's own range; no calibration


@dataclass(frozen=True)
class WeightQuant:
    node: str
    axis: int  # output-channel axis of the weight (0 for Conv and Gemm with transB=1)


@dataclass
class QdqPlan:
    target: str
    activations: list[ActivationQuant]
    weights: list[WeightQuant]
    quantize_bias: bool
    eca_nodes: set[str] = field(default_factory=set)
    layout: str | None = None  # tensorrt target: one of QDQ_LAYOUTS
    dtype: int = TensorProto.INT8  # the precision row's Q/DQ dtype: weights, and activations on symmetric layouts
    weight_bits: int = 8  # 7: weights in [-63, 63], exact in the u8s8 kernels of x86 CPUs without VNNI (graph/cpu.py)

    @property
    def calibrated_tensors(self) -> list[str]:
        return sorted({a.range_of for a in self.activations if a.fixed_range is None})

    def only(self, groups: list[QdqGroup]) -> QdqPlan:
        """The same placement with only ``groups`` quantized; everything else stays float."""
        tensors = {g.tensor for g in groups}
        nodes = {n for g in groups for n in g.weights}
        return replace(self, activations=[a for a in self.activations if a.tensor in tensors],
                       weights=[w for w in self.weights if w.node in nodes])

    def without(self, groups: list[QdqGroup]) -> QdqPlan:
        """The same placement with ``groups`` left in float."""
        tensors = {g.tensor for g in groups}
        nodes = {n for g in groups for n in g.weights}
        return replace(self, activations=[a for a in self.activations if a.tensor not in tensors],
                       weights=[w for w in self.weights if w.node not in nodes])


@dataclass(frozen=True)
class QdqGroup:
    """One quantized activation and the weights of the layers that read it: the unit kept in float or not.

    Leaving a group in float removes its Q/DQ pair and the weight quantization of those layers, so
    they compute in float (a float input with int8 weights would still lose the weights' precision).
    """

    tensor: str
    nodes: tuple[str, ...]  # nodes reading the quantized tensor
    weights: tuple[str, ...]  # the weighted ones among them
    position: int  # index in network order (the order of plan.activations)
    fixed_range: bool  # a bounded activation (Sigmoid gate) quantized with its own range


def qdq_groups(model: onnx.ModelProto, plan: QdqPlan) -> list[QdqGroup]:
    """The plan's activations as groups, in network order; each weight joins the group of its input."""
    index = GraphIndex(model)
    weighted = {w.node for w in plan.weights}
    groups = []
    for position, act in enumerate(plan.activations):
        readers = act.consumers if act.consumers is not None else \
            tuple((n.name, i) for n, i in index.consumers.get(act.tensor, []))
        nodes = tuple(dict.fromkeys(name for name, _ in readers))
        weights = tuple(name for name, i in readers if i == 0 and name in weighted)
        groups.append(QdqGroup(act.tensor, nodes, weights, position, act.fixed_range is not None))
    return groups


class GraphIndex:
    """Producers, consumers and constants of a graph whose nodes all have unique names."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.nodes = {n.name: n for n in graph.node}
        if len(self.nodes) != len(graph.node) or "" in self.nodes:
            raise QuantizationError("the model has unnamed or duplicate node names; re-export it with eca-deploy export")
        self.order = {n.name: i for i, n in enumerate(graph.node)}
        self.initializers = {i.name: i for i in graph.initializer}
        self.constants = set(self.initializers) | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for n in graph.node:
            for i, name in enumerate(n.input):
                if name:
                    self.consumers.setdefault(name, []).append((n, i))
        self.graph_inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.graph_outputs = {o.name for o in graph.output}

    def is_activation(self, name: str) -> bool:
        return bool(name) and name not in self.constants

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        return users[0][0] if len(users) == 1 and name not in self.graph_outputs else None

    def ancestors(self, name: str) -> dict[str, int]:
        """Distance (in nodes) from each upstream tensor to ``name``; ``name`` itself at 0."""
        distance = {name: 0}
        queue = deque([name])
        while queue:
            tensor = queue.popleft()
            node = self.producer.get(tensor)
            if node is None:
                continue
            for source in node.input:
                if self.is_activation(source) and source not in distance:
                    distance[source] = distance[tensor] + 1
                    queue.append(source)
        return distance


def name_nodes(model: onnx.ModelProto) -> None:
    """Give unnamed nodes a unique name (in place): the plan refers to nodes by name."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            name = f"{node.op_type}_{i}"
            while name in seen:
                name += "_"
            node.name = name
        seen.add(node.name)


def gating_muls(index: GraphIndex, eca: set[str]) -> list[onnx.NodeProto]:
    return [index.nodes[n] for n in eca if index.nodes[n].op_type == "Mul"]


def _weight_axis(node: onnx.NodeProto) -> int:
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 0


def _quantizable_weighted(index: GraphIndex, eca: set[str]) -> list[onnx.NodeProto]:
    return [n for n in index.nodes.values()
            if n.op_type in WEIGHTED_OPS and n.name not in eca and len(n.input) > 1
            and n.input[1] in index.initializers and index.is_activation(n.input[0])]


def _straight_from_conv(index: GraphIndex, tensor: str, eca: set[str]) -> bool:
    node = index.producer.get(tensor)
    if node is not None and node.op_type == "BatchNormalization" and index.only_consumer(node.input[0]) is node:
        node = index.producer.get(node.input[0])
    return (node is not None and node.op_type == "Conv" and node.name not in eca
            and len(index.consumers.get(tensor, [])) == 1)


def residual_input(index: GraphIndex, add: onnx.NodeProto, eca: set[str]) -> int | None:
    """Which input of a two-activation Add is the residual one that gets Q/DQ (None: neither).

    The input coming straight out of a Conv fuses into it in TensorRT, so the
    other one is the residual. Otherwise the residual is the input on the shorter
    path from the two branches' nearest common ancestor (the skip connection).
    """
    a, b = add.input[0], add.input[1]
    from_conv = (_straight_from_conv(index, a, eca), _straight_from_conv(index, b, eca))
    if from_conv[0] != from_conv[1]:
        return 1 if from_conv[0] else 0
    up_a, up_b = index.ancestors(a), index.ancestors(b)
    common = set(up_a) & set(up_b)
    if not common:
        return None
    lca = min(common, key=lambda t: (up_a[t] + up_b[t], up_a[t]))
    if up_a[lca] == up_b[lca]:
        return None
    return 0 if up_a[lca] < up_b[lca] else 1


def plan_tensorrt(model: onnx.ModelProto) -> QdqPlan:
    index = GraphIndex(model)
    eca = eca_node_names(model)
    consumers: dict[str, list[tuple[str, int]]] = {}
    weights = []
    for node in _quantizable_weighted(index, eca):
        consumers.setdefault(node.input[0], []).append((node.name, 0))
        weights.append(WeightQuant(node.name, _weight_axis(node)))
    for node in index.nodes.values():
        if node.op_type == "Add" and len(node.input) == 2 and all(index.is_activation(i) for i in node.input):
            r = residual_input(index, node, eca)
            if r is not None:
                consumers.setdefault(node.input[r], []).append((node.name, r))
    activations = [ActivationQuant(t, tuple(sorted(c, key=lambda x: index.order[x[0]])), t)
                   for t, c in sorted(consumers.items(), key=lambda kv: _position(index, kv[0]))]
    return QdqPlan("tensorrt", activations, weights, quantize_bias=False, eca_nodes=eca, layout="eca-deploy")


def plan_modelopt(model: onnx.ModelProto) -> QdqPlan:
    """Model Optimizer's placement for the tensorrt target (see the module docstring)."""
    index = GraphIndex(model)
    eca = eca_node_names(model)
    consumers: dict[str, list[tuple[str, int]]] = {}

    def quantize(node: onnx.NodeProto, i: int) -> None:
        if index.is_activation(node.input[i]):
            consumers.setdefault(node.input[i], []).append((node.name, i))

    weights = []
    for node in _quantizable_weighted(index, eca):
        if node.op_type == "Conv":  # the classifier Gemm stays float
            quantize(node, 0)
            weights.append(WeightQuant(node.name, _weight_axis(node)))
    for node in index.nodes.values():
        if node.op_type == "Add" and len(node.input) == 2 and all(index.is_activation(i) for i in node.input):
            for i, tensor in enumerate(node.input):
                if not _straight_from_conv(index, tensor, eca):
                    quantize(node, i)
        elif node.name in eca and node.op_type in {"GlobalAveragePool", "ReduceMean", "Mul"}:
            for i in range(len(node.input) if node.op_type == "Mul" else 1):
                quantize(node, i)
        elif node.name not in eca and node.op_type in {"MaxPool", "GlobalAveragePool", "AveragePool"}:
            quantize(node, 0)
    activations = [ActivationQuant(t, tuple(sorted(c, key=lambda x: index.order[x[0]])), t,
                                   _bounded_range(index, t))
                   for t, c in sorted(consumers.items(), key=lambda kv: _position(index, kv[0]))]
    return QdqPlan("tensorrt", activations, weights, quantize_bias=False, eca_nodes=eca, layout="modelopt")


def plan_cpu(model: onnx.ModelProto) -> QdqPlan:
    index = GraphIndex(model)
    eca = eca_node_names(model)
    gates = {n.name for n in gating_muls(index, eca)}
    range_of: dict[str, str] = {}  # quantized tensor -> the tensor whose range it uses

    def quantize(tensor: str, source: str | None = None) -> None:
        if index.is_activation(tensor) and tensor not in index.graph_outputs:
            range_of.setdefault(tensor, range_of.get(source, source) if source else tensor)

    def output_of(node: onnx.NodeProto) -> str:
        """The node's output, or the output of the ReLU right after it (onnxruntime folds that ReLU)."""
        relu = index.only_consumer(node.output[0])
        return relu.output[0] if relu is not None and relu.op_type == "Relu" else node.output[0]

    weighted = {n.name for n in _quantizable_weighted(index, eca)}
    weights = []
    for node in model.graph.node:  # topological order: a pass-through op sees its input's decision
        if node.name in weighted:
            quantize(node.input[0])
            weights.append(WeightQuant(node.name, _weight_axis(node)))
            quantize(output_of(node))
        elif node.op_type == "Add" and len(node.input) == 2 and all(index.is_activation(i) for i in node.input):
            for tensor in node.input:
                quantize(tensor)
            quantize(output_of(node))
        elif node.name in gates:
            for tensor in node.input:
                quantize(tensor)
            quantize(node.output[0])
        elif node.name not in eca and node.op_type in SHARED_RANGE_OPS and node.input[0] in range_of:
            quantize(node.output[0], source=node.input[0])
        elif node.op_type in {"GlobalAveragePool", "AveragePool"} and node.input[0] in range_of:
            quantize(node.output[0])  # ECA's pool too: it reads the whole map, its [N, C] output is tiny
    activations = [ActivationQuant(t, None, src, _bounded_range(index, t))
                   for t, src in sorted(range_of.items(), key=lambda kv: _position(index, kv[0]))]
    return QdqPlan("cpu", activations, weights, quantize_bias=True, eca_nodes=eca)


def _bounded_range(index: GraphIndex, tensor: str) -> tuple[float, float] | None:
    producer = index.producer.get(tensor)
    return BOUNDED_OUTPUTS.get(producer.op_type) if producer is not None else None


def _position(index: GraphIndex, tensor: str) -> int:
    producer = index.producer.get(tensor)
    return index.order[producer.name] if producer is not None else -1


def make_plan(model: onnx.ModelProto, target: str, layout: str = "eca-deploy", cpu_vnni: bool = False,
              dtype: int = TensorProto.INT8) -> QdqPlan:
    """``cpu_vnni``: the cpu target's deployment CPU has VNNI (or AMX), so its weights may use all 8 bits;
    without it they keep to 7 (see graph/cpu.py). TensorRT's weights always use 8. ``dtype``: the precision
    row's Q/DQ dtype."""
    if target == "tensorrt":
        if layout not in QDQ_LAYOUTS:
            raise QuantizationError(f"unknown --qdq-layout {layout!r}; choose from {', '.join(QDQ_LAYOUTS)}")
        return replace(plan_modelopt(model) if layout == "modelopt" else plan_tensorrt(model), dtype=dtype)
    if target == "cpu":
        return replace(plan_cpu(model), dtype=dtype, weight_bits=8 if cpu_vnni else 7)
    raise QuantizationError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
