"""Q/DQ facts of an ONNX graph that stages on several floors read: which ops are Q/DQ, and whether TensorRT
can build a Q/DQ graph (the build refuses early instead of failing deep inside the parser)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def tensorrt_incompatible_qdq(model: onnx.ModelProto) -> str | None:
    """Why TensorRT cannot build this Q/DQ graph, or None: TensorRT takes symmetric INT8 only (int8
    zero points, all zero), so the cpu target's uint8 activations with their non-zero zero points fail."""
    initializers = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in QDQ_OPS or len(node.input) < 3 or node.input[2] not in initializers:
            continue
        zero = initializers[node.input[2]]
        if zero.data_type != TensorProto.INT8:
            dtype = TensorProto.DataType.Name(zero.data_type).lower()
            return f"{node.op_type} '{node.name}' has a {dtype} zero point"
        if np.any(numpy_helper.to_array(zero)):
            return f"{node.op_type} '{node.name}' has a non-zero zero point"
    return None
