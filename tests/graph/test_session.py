"""make_session on an FP16-glue INT8 file whose weights lie in an external-data file."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from eca_deploy.errors import OnnxFileError
from eca_deploy.graph.session import make_session


def glue_model(rng: np.random.Generator) -> onnx.ModelProto:
    """x [n, 16] -> Cast fp16 -> Q/DQ (fp16 scale) -> MatMul with a DequantizeLinear'd int8 weight -> fp32."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 16])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 8])
    weight = rng.integers(-127, 128, size=(16, 8), dtype=np.int8)
    inits = [helper.make_tensor("scale", TensorProto.FLOAT16, [], [0.05]),
             helper.make_tensor("zero", TensorProto.INT8, [], [0]),
             onnx.numpy_helper.from_array(weight, "w_q"),
             helper.make_tensor("w_scale", TensorProto.FLOAT16, [], [0.01])]
    nodes = [helper.make_node("Cast", ["input"], ["x16"], to=TensorProto.FLOAT16),
             helper.make_node("QuantizeLinear", ["x16", "scale", "zero"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["d16"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "zero"], ["w16"]),
             helper.make_node("MatMul", ["d16", "w16"], ["y16"]),
             helper.make_node("Cast", ["y16"], ["logits"], to=TensorProto.FLOAT)]
    return helper.make_model(helper.make_graph(nodes, "glue", [x], [y], inits),
                             opset_imports=[helper.make_opsetid("", 19)])


def test_an_fp16_glue_file_with_external_weights_runs_as_the_same_model_inline(tmp_path):
    rng = np.random.default_rng(0)
    model = glue_model(rng)
    onnx.save(model, str(tmp_path / "inline.onnx"))
    (tmp_path / "ext").mkdir()
    onnx.save(model, str(tmp_path / "ext" / "glue.onnx"), save_as_external_data=True, location="glue.onnx.data",
              size_threshold=0)
    assert (tmp_path / "ext" / "glue.onnx.data").stat().st_size >= 16 * 8
    batch = rng.uniform(-3, 3, size=(4, 16)).astype(np.float32)
    inline = make_session(tmp_path / "inline.onnx").run(None, {"input": batch})[0]
    external = make_session(tmp_path / "ext" / "glue.onnx").run(None, {"input": batch})[0]
    assert np.array_equal(inline, external) and np.abs(inline).max() > 0

    (tmp_path / "ext" / "glue.onnx.data").unlink()
    with pytest.raises(OnnxFileError, match=r"^onnxruntime cannot load .*glue\.onnx: .*glue\.onnx\.data"):
        make_session(tmp_path / "ext" / "glue.onnx")
