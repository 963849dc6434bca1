"""Read an ONNX graph: op histogram, I/O, and every ECA block with whether it has the plain shape.

The plain ECA shape: GlobalAveragePool (or ReduceMean) -> one Reshape/Squeeze/Flatten
to [N, 1, C] -> Conv with a 1-D kernel [k] -> one Reshape/Unsqueeze back ->
Sigmoid -> Mul (broadcast). Anything else on that path (Shape, Gather, Expand,
Transpose, a second reshape) marks the block as not plain.

The path is read through QuantizeLinear/DequantizeLinear pairs and Casts, and each block
is judged for the graph's precision and layout (:func:`eca_deploy.precisions.graph_layout`): FP32, FP16 and
TensorRT's INT8 layout keep the whole ECA path free of them; the CPU INT8 layout quantizes
the pool's output (onnxruntime's QLinearGlobalAveragePool) and the Sigmoid output into the
gating Mul (QLinearMul), so Q/DQ there is expected, and nowhere else.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from ..artifacts import manifest_path, require_file
from ..errors import OnnxFileError, first_line
from ..precisions import graph_layout
from .eca import POOL_OPS, RESHAPE_IN_OPS, RESHAPE_OUT_OPS, EcaPath, Links, eca_paths, is_conv1d_weight
# Edges of the ECA path (named by the op types around them) where each layout may hold Q/DQ or Cast nodes;
# a layout not named here (a precision added later) may hold none, the strictest reading.
ALLOWED_CROSSINGS = {"fp32": set(), "fp16": set(), "int8 tensorrt": set(),
                     "int8 cpu": {"Sigmoid -> Mul"} | {f"{p} -> {r}" for p in POOL_OPS for r in RESHAPE_IN_OPS}}


@dataclass
class EcaBlock:
    conv: str  # the Conv1d node's name
    k: int
    channels: int | None
    plain: bool
    path: list[str] = field(default_factory=list)  # op types from the pool to the Mul
    problem: str = ""
    crossings: list[str] = field(default_factory=list)  # path edges read through Q/DQ or Cast ("Sigmoid -> Mul")


@dataclass
class GraphSummary:
    ops: Counter
    inputs: list[tuple[str, list]]
    outputs: list[tuple[str, list]]
    opset: int
    eca_blocks: list[EcaBlock]
    layout: str = "fp32"  # fp32 | fp16 | int8 tensorrt | int8 cpu (see precisions.graph_layout)

    @property
    def all_plain(self) -> bool:
        return bool(self.eca_blocks) and all(b.plain for b in self.eca_blocks)


def load_onnx(path: str | Path, load_weights: bool = True) -> onnx.ModelProto:
    path = require_file(path, "ONNX file", OnnxFileError)
    try:
        model = onnx.load(str(path), load_external_data=load_weights)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning, ValueError... on foreign bytes
        if load_weights and _is_onnx(path):  # the graph reads; its external data file is missing or refused
            raise OnnxFileError(f"cannot load the external data of {path}: {first_line(exc)}") from exc
        raise OnnxFileError(f"{path} is not an ONNX model ({type(exc).__name__})") from exc
    if not model.graph.node:
        raise OnnxFileError(f"{path} is not an ONNX model (no graph nodes)")
    return model


def _is_onnx(path: Path) -> bool:
    try:
        onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return True


def _dims(value_info: onnx.ValueInfoProto) -> list:
    shape = value_info.type.tensor_type.shape
    return [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?") for d in shape.dim]


def io_tensors(model: onnx.ModelProto) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) of a graph as {"name", "shape", "dtype"}: a dynamic axis by its name ("?" where it has
    none), the dtype as numpy names it; what a server's model config declares, and an engine's manifest records."""
    initializers = {i.name for i in model.graph.initializer}

    def tensor(info: onnx.ValueInfoProto) -> dict:
        elem = info.type.tensor_type.elem_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "undefined"
        return {"name": info.name, "shape": _dims(info), "dtype": dtype}

    return ([tensor(i) for i in model.graph.input if i.name not in initializers],
            [tensor(o) for o in model.graph.output])


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def summarize(model: onnx.ModelProto) -> GraphSummary:
    graph = model.graph
    links = Links(model)

    shapes = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            shapes[vi.name] = _dims(vi)
    except Exception:  # shape inference is a nicety here; the pattern check does not depend on it
        pass

    layout = graph_layout(model)
    blocks = [_eca_block(path, links, shapes, ALLOWED_CROSSINGS.get(layout, set())) for path in eca_paths(model, links)]
    graph_inputs = [i for i in graph.input if i.name not in links.initializers]
    return GraphSummary(
        ops=Counter(n.op_type for n in graph.node),
        inputs=[(i.name, _dims(i)) for i in graph_inputs],
        outputs=[(o.name, _dims(o)) for o in graph.output],
        opset=opset_of(model),
        eca_blocks=blocks,
        layout=layout,
    )


def _eca_block(eca: EcaPath, links: Links, shapes, allowed: set[str]) -> EcaBlock:
    """The matcher's path judged against the plain shape, and its Q/DQ crossings against the layout's."""
    conv = eca.conv
    k = int(links.initializers[conv.input[1]].dims[2])
    path: list[str] = []
    problem = ""
    crossings: list[str] = []

    def cross(crossed: bool, before: str, after: str) -> None:
        if crossed:
            crossings.append(f"{before} -> {after}")

    pre, crossed_pre = eca.up(0)
    pool, crossed_pool = eca.up(1)
    if pre is None or pre.op_type not in RESHAPE_IN_OPS:
        problem = f"input comes from {pre.op_type if pre else 'a graph input'}, not one reshape"
    elif pool is None or pool.op_type not in POOL_OPS:
        problem = f"reshape input comes from {pool.op_type if pool else 'a graph input'}, not a global pool"
    else:
        path += [pool.op_type, pre.op_type]
        cross(crossed_pool, pool.op_type, pre.op_type)
        cross(crossed_pre, pre.op_type, "Conv")
    path.append("Conv")

    channels = None
    conv_shape = shapes.get(conv.output[0])
    if conv_shape and len(conv_shape) == 3 and isinstance(conv_shape[2], int):
        channels = conv_shape[2]

    if not problem:
        (post, crossed_post), (gate, crossed_gate), (mul, crossed_mul) = eca.down(0), eca.down(1), eca.down(2)
        if post is None or post.op_type not in RESHAPE_OUT_OPS:
            problem = f"Conv output goes to {post.op_type if post else 'several nodes'}, not one reshape"
        elif gate is None or gate.op_type != "Sigmoid":
            problem = f"reshape feeds {gate.op_type if gate else 'several nodes'}, not Sigmoid"
        elif mul is None or mul.op_type != "Mul":
            problem = f"Sigmoid feeds {mul.op_type if mul else 'several nodes'}, not Mul"
        elif links.source(pool.input[0])[0] not in {links.source(i)[0] for i in mul.input}:
            problem = "the gating Mul does not scale the pooled tensor directly (Expand or copy between)"
        else:
            path += [post.op_type, gate.op_type, mul.op_type]
            cross(crossed_post, "Conv", post.op_type)
            cross(crossed_gate, post.op_type, gate.op_type)
            cross(crossed_mul, gate.op_type, mul.op_type)
    unexpected = [c for c in crossings if c not in allowed]
    if not problem and unexpected:
        problem = f"Q/DQ or Cast inside the ECA path at {', '.join(unexpected)}"
    return EcaBlock(conv=conv.name, k=k, channels=channels, plain=not problem, path=path, problem=problem,
                    crossings=crossings)


def conv1d_weight_names(model: onnx.ModelProto) -> set[str]:
    """Initializer names of ECA Conv1d weights (so later stages can keep them in float)."""
    inits = {i.name: i for i in model.graph.initializer}
    return {n.input[1] for n in model.graph.node if n.op_type == "Conv" and is_conv1d_weight(n, inits)}


def onnx_inputs(path: str | Path) -> list[Path]:
    """Every file reading the ONNX at ``path`` touches: itself, its external data files and its manifest."""
    path = Path(path)
    files = [path, manifest_path(path)]
    try:
        model = load_onnx(path, load_weights=False)
    except OnnxFileError:  # reading it fails later, with this error; no external data to protect
        return files
    tensors = [*model.graph.initializer, *(a.t for n in model.graph.node for a in n.attribute if a.HasField("t"))]
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), None)
            if location:
                files.append(path.parent / location)
    return list(dict.fromkeys(files))
