"""An engine built from a uint8-nhwc ONNX records the format in its manifest, where the runner reads it."""

import json

import onnx
import pytest
from onnx import TensorProto, helper

from eca_deploy.data.pixels import UINT8_NHWC
from eca_deploy.errors import EngineError
from eca_deploy.graph.input_format import record_input_format
from eca_deploy.runtime.registry import parse_spec
from eca_deploy.runtime.tensorrt.builder import BuildConfig, build_engine
from test_polygraphy_build import machine  # noqa: F401  (the fake TensorRT + Polygraphy fixture)


@pytest.fixture()
def pixels_onnx(tmp_path):
    """uint8 [N, 16, 16, 3] -> Cast -> Transpose -> [N, 3, 16, 16], the front export puts on a model."""
    x = helper.make_tensor_value_info("input", TensorProto.UINT8, ["batch", 16, 16, 3])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, 16, 16])
    nodes = [helper.make_node("Cast", ["input"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["f"], ["logits"], perm=[0, 3, 1, 2])]
    model = helper.make_model(helper.make_graph(nodes, "front", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    record_input_format(model, UINT8_NHWC)
    path = tmp_path / "pixels.onnx"
    onnx.save(model, str(path))
    return path


def test_the_engine_manifest_carries_the_input_format(machine, pixels_onnx):  # noqa: F811
    machine("10.3.0.30")
    result = build_engine(BuildConfig(onnx=str(pixels_onnx), profile="1:4:8"))
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["input_format"] == UINT8_NHWC and manifest["input"]["dtype"] == "uint8"
    assert manifest["input"]["shape"] == ["batch", 16, 16, 3]
    assert parse_spec(str(result.engine_path)).input_format == UINT8_NHWC


def test_legacy_int8_calibration_of_a_uint8_model_is_refused(machine, pixels_onnx, tmp_path):  # noqa: F811
    machine("8.6.1")
    with pytest.raises(EngineError, match="takes uint8 pixels; legacy INT8 calibration feeds float images"):
        build_engine(BuildConfig(onnx=str(pixels_onnx), legacy_precision="int8", calib_data=str(tmp_path)))
