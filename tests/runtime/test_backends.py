"""Backends behind one interface, opened by spec or file type; real ONNX files through onnxruntime."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from eca_deploy.data.sources import load_dataset
from eca_deploy.errors import EngineError, MissingDependencyError, OnnxFileError, UsageError
from eca_deploy.runtime.base import Backend
from eca_deploy.precisions import onnx_precision
from eca_deploy.runtime.registry import open_backend, parse_spec
from eca_deploy.runtime.tensorrt.env import tensorrt_unavailable_reason


@pytest.mark.parametrize("spec, model, weights", [
    ("torch:eca_resnet50", "eca_resnet50", None),
    ("torch:eca_resnet50:w/ckpt.pth.tar", "eca_resnet50", "w/ckpt.pth.tar"),
    ("torch:eca_resnet50:C:/w.pth", "eca_resnet50", "C:/w.pth"),  # a colon inside the weights path
    ("torch:timm:ecaresnet50d:w.pth", "timm:ecaresnet50d", "w.pth"),
])
def test_torch_specs(spec, model, weights):
    artifact = parse_spec(spec)
    assert (artifact.kind, artifact.model, artifact.weights) == ("torch", model, weights)
    assert artifact.precision() == ("fp32", "pytorch")


def test_missing_and_unknown_files_fail_in_one_line(tmp_path):
    with pytest.raises(OnnxFileError, match="ONNX file not found"):
        parse_spec(str(tmp_path / "nope.onnx"))
    with pytest.raises(EngineError, match="engine not found"):
        parse_spec(str(tmp_path / "nope.plan"))
    with pytest.raises(OnnxFileError, match="model not found"):
        parse_spec(str(tmp_path / "nope.bin"))
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\0" * 16)
    with pytest.raises(UsageError, match="cannot tell how to run"):
        parse_spec(str(other))
    with pytest.raises(UsageError, match="names no model"):
        parse_spec("torch:")


def test_a_file_that_is_not_onnx_is_refused(tmp_path):
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"this is not protobuf")
    with pytest.raises(OnnxFileError, match="onnxruntime cannot load"):
        open_backend(str(fake), provider="cpu")


def _tiny_model(path, weight_type, with_qdq=False):
    """Y = X * W (+ a Q/DQ pair on X): the smallest graphs that carry each precision."""
    np_type = np.float16 if weight_type == TensorProto.FLOAT16 else np.float32
    nodes, inits, source = [], [helper.make_tensor("W", weight_type, [1], np.ones(1, np_type).tobytes(), raw=True)], "X"
    if weight_type == TensorProto.FLOAT16:
        nodes.append(helper.make_node("Cast", ["X"], ["Xh"], to=TensorProto.FLOAT16))
        source = "Xh"
    if with_qdq:
        inits += [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [0])]
        nodes += [helper.make_node("QuantizeLinear", ["X", "s", "z"], ["Xq"]),
                  helper.make_node("DequantizeLinear", ["Xq", "s", "z"], ["Xd"])]
        source = "Xd"
    nodes.append(helper.make_node("Mul", [source, "W"], ["Y16" if weight_type == TensorProto.FLOAT16 else "Y"]))
    if weight_type == TensorProto.FLOAT16:
        nodes.append(helper.make_node("Cast", ["Y16"], ["Y"], to=TensorProto.FLOAT))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_precision_is_read_from_the_graph_without_a_manifest(tmp_path):
    assert onnx_precision(_tiny_model(tmp_path / "a.onnx", TensorProto.FLOAT)) == "fp32"
    assert onnx_precision(_tiny_model(tmp_path / "b.onnx", TensorProto.FLOAT16)) == "fp16"
    assert onnx_precision(_tiny_model(tmp_path / "c.onnx", TensorProto.FLOAT, with_qdq=True)) == "int8"
    assert parse_spec(str(tmp_path / "b.onnx")).precision() == ("fp16", "graph")
    assert parse_spec(str(tmp_path / "b.onnx")).precision("int8") == ("int8", "flag")


def test_export_manifest_and_onnxruntime_backend_agree_with_torch(digits):
    artifact = parse_spec(str(digits.onnx))
    assert artifact.manifest["stage"] == "export" and artifact.format == "ONNX"
    assert artifact.precision() == ("fp32", "graph")
    ort_backend = open_backend(artifact, provider="cpu")
    torch_backend = open_backend(f"torch:{digits.model}:{digits.checkpoint}", device="cpu", imgsz=digits.imgsz)
    try:
        for backend in (ort_backend, torch_backend):
            assert isinstance(backend, Backend)
        assert ort_backend.name == "onnxruntime-cpu" and torch_backend.name == "torch-cpu"
        assert ort_backend.input_spec.shape == (None, 3, digits.imgsz, digits.imgsz)
        assert ort_backend.num_classes == torch_backend.num_classes == digits.num_classes
        images, labels = next(load_dataset(digits.val_dir, digits.imgsz, count=16).batches(16))
        ort_out, torch_out = ort_backend.infer(images), torch_backend.infer(images)
        assert ort_out.shape == (16, digits.num_classes) and ort_out.dtype == np.float32
        np.testing.assert_allclose(ort_out, torch_out, atol=1e-4, rtol=1e-4)
        assert np.mean(np.argmax(ort_out, 1) == labels) > 0.8  # a trained model on real decoded images
    finally:
        ort_backend.close()
        torch_backend.close()


def test_an_engine_without_tensorrt_is_a_missing_dependency(tmp_path):
    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 64)
    with pytest.raises(MissingDependencyError, match="cannot run the engine model.engine"):
        open_backend(str(engine))
