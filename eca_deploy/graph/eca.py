"""The one ECA matcher: from each Conv1d (a [1, 1, k] weight) back to its global pool and on to the gating Mul.

It walks leniently, through every op an exported ECA path may hold (reshapes, transposes, expands, hard
sigmoids) and through Q/DQ pairs and Casts, which change the number format and not the values' path. Its
readers judge what it found: graph.summarize whether the path has the plain shape, the Q/DQ placement which
nodes it keeps in float (or, for Model Optimizer's layout, quantizes).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from .qdq import QDQ_OPS

POOL_OPS = {"GlobalAveragePool", "ReduceMean"}
RESHAPE_IN_OPS = {"Reshape", "Squeeze", "Flatten"}
RESHAPE_OUT_OPS = {"Reshape", "Unsqueeze"}
PRE_OPS = POOL_OPS | RESHAPE_IN_OPS | {"Unsqueeze", "Transpose"}  # what may sit between the pool and the Conv1d
POST_OPS = RESHAPE_OUT_OPS | {"Squeeze", "Transpose", "Expand", "Sigmoid", "HardSigmoid"}  # Conv1d to gating Mul
TRANSPARENT_OPS = QDQ_OPS | {"Cast"}  # change the number format, not the values' path

Step = tuple["onnx.NodeProto | None", bool]  # a node on the walk (None: a graph input, or a fan-out), Q/DQ crossed


@dataclass
class EcaPath:
    conv: onnx.NodeProto
    upstream: list[Step]  # from the Conv1d towards the pool, nearest first, ending at the pool or the first other
    downstream: list[Step]  # from the Conv1d towards the gating Mul, nearest first, ending at the first non-ECA op

    def up(self, i: int) -> Step:
        return self.upstream[i] if i < len(self.upstream) else (None, False)

    def down(self, i: int) -> Step:
        return self.downstream[i] if i < len(self.downstream) else (None, False)

    @property
    def nodes(self) -> list[onnx.NodeProto]:
        """The nodes of the path: the ECA ops around the Conv1d, the Conv1d, and the gating Mul where one ends it."""
        before = [n for n, _ in self.upstream if n is not None and n.op_type in PRE_OPS]
        after = [n for n, _ in self.downstream if n is not None and n.op_type in POST_OPS]
        last = self.downstream[-1][0] if self.downstream else None
        return before + [self.conv] + after + ([last] if last is not None and last.op_type == "Mul" else [])


class Links:
    """Producers and consumers of a graph's tensors, Constant nodes counted as initializers."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.initializers = {i.name: i for i in graph.initializer}
        for n in graph.node:
            if n.op_type == "Constant" and n.attribute:
                self.initializers.setdefault(n.output[0], n.attribute[0].t)
        self.producers = {out: n for n in graph.node for out in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def source(self, name: str) -> tuple[str, bool]:
        """The tensor ``name`` carries before any Q/DQ or Cast, and whether one was crossed."""
        crossed = False
        while (node := self.producers.get(name)) is not None and node.op_type in TRANSPARENT_OPS:
            name, crossed = node.input[0], True
        return name, crossed

    def producer(self, name: str) -> Step:
        tensor, crossed = self.source(name)
        return self.producers.get(tensor), crossed

    def next_node(self, name: str) -> Step:
        """The single consumer of ``name`` past any Q/DQ or Cast (None where it fans out), and whether one was crossed."""
        crossed = False
        while True:
            users = self.consumers.get(name, [])
            node = users[0] if len(users) == 1 else None
            if node is None or node.op_type not in TRANSPARENT_OPS:
                return node, crossed
            name, crossed = node.output[0], True


def is_conv1d_weight(node: onnx.NodeProto, initializers) -> bool:
    weight = initializers.get(node.input[1]) if len(node.input) > 1 else None
    return weight is not None and len(weight.dims) == 3 and weight.dims[0] == 1 and weight.dims[1] == 1


def eca_paths(model: onnx.ModelProto, links: Links | None = None) -> list[EcaPath]:
    """Every Conv1d's path, in graph order."""
    links = links or Links(model)
    return [_walk(n, links) for n in model.graph.node
            if n.op_type == "Conv" and is_conv1d_weight(n, links.initializers)]


def _walk(conv: onnx.NodeProto, links: Links) -> EcaPath:
    upstream = [links.producer(conv.input[0])]
    while (node := upstream[-1][0]) is not None and node.op_type in PRE_OPS - POOL_OPS:
        upstream.append(links.producer(node.input[0]))
    downstream = [links.next_node(conv.output[0])]
    while (node := downstream[-1][0]) is not None and node.op_type in POST_OPS:
        downstream.append(links.next_node(node.output[0]))
    return EcaPath(conv, upstream, downstream)


def eca_node_names(model: onnx.ModelProto) -> set[str]:
    """Names of every node on an ECA path: pool -> reshapes -> Conv1d -> reshapes -> Sigmoid -> gating Mul."""
    return {n.name for path in eca_paths(model) for n in path.nodes}
