"""The one ECA matcher serves both readers: graph.summarize judges the path's shape, the Q/DQ placement keeps
every node of the path in float, plain or not."""

import onnx
from onnx import helper

from eca_deploy.calibration.qdq.placement import make_plan, name_nodes
from eca_deploy.graph.eca import eca_node_names
from eca_deploy.graph.graph import summarize
from eca_deploy.runtime.harness.doctor import tiny_eca_onnx

ECA_OPS = ["GlobalAveragePool", "Reshape", "Conv", "Reshape", "Sigmoid", "Mul"]


def _tiny(tmp_path) -> onnx.ModelProto:
    model = onnx.load(str(tiny_eca_onnx(tmp_path / "tiny.onnx")))
    name_nodes(model)
    return model


def _ops(model: onnx.ModelProto, names: set[str]) -> list[str]:
    return [n.op_type for n in model.graph.node if n.name in names]


def test_a_plain_block_is_one_path_for_both_readers(tmp_path):
    model = _tiny(tmp_path)
    (block,) = summarize(model).eca_blocks
    assert block.plain and block.path == ECA_OPS
    assert _ops(model, eca_node_names(model)) == ECA_OPS  # the network's own Conv, pools and Gemm are not on it
    assert make_plan(model, "tensorrt").eca_nodes == eca_node_names(model)


def test_a_transpose_on_the_path_is_not_plain_yet_stays_on_the_path(tmp_path):
    model = _tiny(tmp_path)
    nodes = list(model.graph.node)
    conv1d = next(n for n in nodes if n.op_type == "Conv" and n.input[0] == "p1")
    conv1d.input[0] = "p1t"
    nodes.insert(nodes.index(conv1d), helper.make_node("Transpose", ["p1"], ["p1t"], name="t", perm=[0, 1, 2]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    (block,) = summarize(model).eca_blocks
    assert not block.plain and block.problem == "input comes from Transpose, not one reshape"
    assert _ops(model, eca_node_names(model)) == ["GlobalAveragePool", "Reshape", "Transpose", *ECA_OPS[2:]]
