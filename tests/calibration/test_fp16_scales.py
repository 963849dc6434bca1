"""FP16-glue INT8 (`--high-precision fp16`): Q/DQ scales below float16's smallest normal are raised to it,
and the int8 weights they dequantize requantized, on a real Q/DQ Conv run by onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from eca_deploy.calibration.fp16 import FP16_SMALLEST_NORMAL, qdq_glue_to_fp16
from eca_deploy.graph.session import run_once

CHANNEL_MAX = np.array([1e-6, 1e-4, 0.5], np.float32)  # per output channel: scale 0, subnormal, normal


def _qdq_conv() -> tuple[onnx.ModelProto, np.ndarray]:
    """input -> Q/DQ (int8) -> Conv whose int8 weights dequantize per output channel (axis 0)."""
    rng = np.random.default_rng(0)
    weight = rng.uniform(-1, 1, (3, 2, 1, 1)).astype(np.float32)
    weight *= (CHANNEL_MAX / np.abs(weight).reshape(3, -1).max(1))[:, None, None, None]
    w_scale = (CHANNEL_MAX / 127).astype(np.float32)
    w_int8 = np.clip(np.round(weight / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
    inits = [numpy_helper.from_array(np.float32(1 / 127), "x_scale"), numpy_helper.from_array(np.int8(0), "x_zero"),
             numpy_helper.from_array(w_int8, "w"), numpy_helper.from_array(w_scale, "w_scale"),
             numpy_helper.from_array(np.zeros(3, np.int8), "w_zero")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zero"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["logits"])]
    graph = helper.make_graph(nodes, "qdq_conv", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                               ["batch", 2, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model, weight


def test_tiny_scales_are_raised_to_float16s_smallest_normal_and_counted():
    model, weight = _qdq_conv()
    half, report = qdq_glue_to_fp16(model)
    scales = {i.name: numpy_helper.to_array(i) for i in half.graph.initializer if i.name.endswith("scale")}
    assert scales["w_scale"].dtype == np.float16
    assert np.all(scales["w_scale"] >= np.float16(FP16_SMALLEST_NORMAL))  # none 0 (TensorRT 10 refuses), none subnormal
    assert report.scales_raised == 2 and report.as_dict()["scales_raised"] == 2
    # a plain float16 cast of the same scales gives 0 for the first channel: the defect
    assert np.float16(CHANNEL_MAX[0] / 127) == 0


def test_requantized_weights_keep_each_channels_value_as_nearly_as_the_step_allows():
    model, weight = _qdq_conv()
    half, _ = qdq_glue_to_fp16(model)
    images = np.random.default_rng(1).uniform(-1, 1, (2, 2, 4, 4)).astype(np.float32)
    want = run_once(model, images)
    got = run_once(half, images)
    assert np.all(np.isfinite(got))
    step = FP16_SMALLEST_NORMAL * np.abs(images).reshape(2, -1).max() * 2  # one weight step, two input channels
    assert np.abs(got[:, :2] - want[:, :2]).max() <= step + 1e-6  # the raised channels: within one step
    np.testing.assert_allclose(got[:, 2], want[:, 2], rtol=2e-3, atol=2e-3)  # the normal channel: float16's error
