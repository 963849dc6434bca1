"""Where the Q/DQ nodes land, counted on the written graphs of both targets."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from eca_deploy.calibration.quantize import QuantizeConfig, quantize
from eca_deploy.graph.graph import conv1d_weight_names
from eca_deploy.graph.session import make_session


class Graph:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.inits = {i.name: i for i in model.graph.initializer}
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers = {}
        for n in model.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def nodes(self, op):
        return [n for n in self.model.graph.node if n.op_type == op]

    def made_by(self, tensor, op):
        node = self.producer.get(tensor)
        return node is not None and node.op_type == op

    def array(self, name):
        return numpy_helper.to_array(self.inits[name])

    def is_activation_dq(self, tensor):
        """Output of a DequantizeLinear fed by a QuantizeLinear (an activation Q/DQ pair)."""
        return self.made_by(tensor, "DequantizeLinear") and self.made_by(self.producer[tensor].input[0], "QuantizeLinear")


@pytest.fixture(scope="module")
def fp32(digits):
    return Graph(onnx.load(str(digits.onnx)))


@pytest.fixture(scope="module")
def quantized(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("placement")
    models = {}
    # FP32 glue for the tensorrt layouts: placement is the subject here (FP16 glue: test_quantize_digits.py).
    for name, target, settings in (("tensorrt", "tensorrt", dict(high_precision="fp32")), ("cpu", "cpu", {}),
                                   ("modelopt", "tensorrt", dict(high_precision="fp32", qdq_layout="modelopt"))):
        result = quantize(QuantizeConfig(onnx=digits.onnx, calib_data=digits.calib_dir, target=target,
                                         calib_method="minmax", calib_count=64, check_count=8,
                                         output=out / f"{name}.onnx", calib_cache=out / "cache.json", **settings))
        models[name] = (Graph(onnx.load(str(result.path))), result)
    return models


def _eca_convs(fp32):
    weights = conv1d_weight_names(fp32.model)
    return {n.name for n in fp32.nodes("Conv") if n.input[1] in weights}


def _gating_muls(fp32):
    return {n.name for n in fp32.nodes("Mul") if any(fp32.made_by(i, "Sigmoid") for i in n.input)}


def _straight_from_conv(fp32, add):
    return [fp32.made_by(t, "Conv") and len(fp32.consumers[t]) == 1 for t in add.input]


@pytest.mark.slow
def test_tensorrt_conv_and_gemm_inputs_and_per_channel_weights(fp32, quantized):
    g, result = quantized["tensorrt"]
    eca = _eca_convs(fp32)
    weighted = [n for n in g.nodes("Conv") + g.nodes("Gemm") if n.name not in eca]
    assert len(weighted) == 21  # eca_resnet18: 20 convolutions + fc
    for node in weighted:
        assert g.is_activation_dq(node.input[0]), node.name
        dq = g.producer[node.input[1]]
        assert dq.op_type == "DequantizeLinear" and {a.name: a.i for a in dq.attribute}.get("axis", 1) == 0
        weight = g.array(dq.input[0])
        per_channel_max = np.abs(weight.astype(int)).reshape(len(weight), -1).max(axis=1)
        assert weight.dtype == np.int8 and np.all(per_channel_max == 127)  # every channel uses its own full range
        assert g.array(dq.input[1]).shape == (weight.shape[0],)
        assert not np.any(g.array(dq.input[2]))
        if len(node.input) > 2:
            assert node.input[2] in g.inits and g.inits[node.input[2]].data_type == TensorProto.FLOAT  # bias in float
    assert result.qdq["weight_dq"] == 21 and result.qdq["bias_dq"] == 0


def test_tensorrt_activations_are_symmetric_and_outputs_unquantized(quantized):
    g, _ = quantized["tensorrt"]
    for q in g.nodes("QuantizeLinear"):
        zero = g.array(q.input[2])
        assert zero.dtype == np.int8 and zero == 0
    outputs = {o.name for o in g.model.graph.output}
    assert all(g.made_by(o, "Gemm") for o in outputs)
    assert not any(q.input[0] in outputs for q in g.nodes("QuantizeLinear"))


def test_tensorrt_eca_path_stays_float(fp32, quantized):
    g, result = quantized["tensorrt"]
    eca = _eca_convs(fp32) | _gating_muls(fp32) | {n.name for n in fp32.nodes("Sigmoid")}
    assert len(eca) == 24
    for node in g.model.graph.node:
        if node.name in eca:
            assert not any(g.made_by(i, "DequantizeLinear") for i in node.input), node.name
    assert len(result.qdq["float_nodes"]["Sigmoid"]) == 8 and len(result.qdq["float_nodes"]["Mul"]) == 8


def test_tensorrt_add_quantizes_only_the_residual_input(fp32, quantized):
    g, result = quantized["tensorrt"]
    adds = g.nodes("Add")
    assert len(adds) == 8
    downsample_adds = 0
    for add in adds:
        original = next(n for n in fp32.nodes("Add") if n.name == add.name)
        from_conv = _straight_from_conv(fp32, original)
        quantized_inputs = [g.is_activation_dq(t) for t in add.input]
        assert sum(quantized_inputs) == 1, add.name
        if any(from_conv):  # downsample block: the Conv branch fuses in TensorRT and stays float
            downsample_adds += 1
            assert quantized_inputs == [not c for c in from_conv]
        else:  # identity block: the skip connection (the block input, not the ECA-gated branch) is the residual
            skip = original.input[quantized_inputs.index(True)]
            assert not fp32.made_by(skip, "Mul")
    assert downsample_adds == 3
    # Independent count: one pair per distinct Conv/Gemm data input, plus the gated branch of each downsample Add.
    eca = _eca_convs(fp32)
    conv_inputs = {n.input[0] for n in fp32.nodes("Conv") + fp32.nodes("Gemm") if n.name not in eca}
    assert result.qdq["activation_qdq_pairs"] == len(conv_inputs) + downsample_adds == len(g.nodes("QuantizeLinear"))


def test_cpu_is_u8_activations_s8_weights_int32_bias(fp32, quantized):
    g, result = quantized["cpu"]
    for q in g.nodes("QuantizeLinear"):
        assert g.array(q.input[2]).dtype == np.uint8
    eca = _eca_convs(fp32)
    weighted = [n for n in g.nodes("Conv") + g.nodes("Gemm") if n.name not in eca]
    for node in weighted:
        assert g.is_activation_dq(node.input[0])
        assert g.array(g.producer[node.input[1]].input[0]).dtype == np.int8
        bias_dq = g.producer[node.input[2]]
        assert bias_dq.op_type == "DequantizeLinear" and g.array(bias_dq.input[0]).dtype == np.int32
        # bias scale = input scale x weight scale, per output channel
        input_scale = g.array(g.producer[node.input[0]].input[1])
        weight_scale = g.array(g.producer[node.input[1]].input[1])
        np.testing.assert_allclose(g.array(bias_dq.input[1]), input_scale * weight_scale, rtol=1e-6)
    assert result.qdq["bias_dq"] == len(weighted) == 21


def test_cpu_relus_can_fold_and_eca_gate_is_integer(fp32, quantized):
    g, _ = quantized["cpu"]
    for relu in g.nodes("Relu"):
        users = g.consumers[relu.output[0]]
        assert [u.op_type for u in users] == ["QuantizeLinear"], relu.name
        assert g.array(users[0].input[2]) == 0  # u8 zero point 0 clips at zero: the ReLU is redundant
    for mul in g.nodes("Mul"):
        assert all(g.is_activation_dq(i) for i in mul.input)
    gates = [q for q in g.nodes("QuantizeLinear") if g.made_by(q.input[0], "Sigmoid")]
    assert len(gates) == 8
    for q in gates:  # the ECA gate keeps its whole [0, 1] range, whatever the calibration saw
        assert g.array(q.input[1]) == np.float32(1 / 255) and g.array(q.input[2]) == 0
    for name in _eca_convs(fp32):
        conv = next(n for n in g.nodes("Conv") if n.name == name)
        assert not any(g.made_by(i, "DequantizeLinear") for i in conv.input)


def test_cpu_model_runs_as_integer_kernels_in_onnxruntime(quantized, tmp_path):
    """What the placement is for: onnxruntime fuses it into QLinearConv/QLinearAdd/QLinearMul/QGemm."""
    import onnxruntime as ort

    _, result = quantized["cpu"]
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(result.path), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert ops.count("QLinearConv") == 20 and ops.count("QLinearAdd") == 8 and ops.count("QLinearMul") == 8
    assert ops.count("QGemm") == 1 and "Relu" not in ops
    assert ops.count("Conv") == 8  # only the ECA Conv1d stay float


def test_both_targets_run_and_agree_with_fp32(digits, quantized):
    batch = np.random.default_rng(0).standard_normal((2, 3, digits.imgsz, digits.imgsz)).astype(np.float32)
    reference = make_session(digits.onnx).run(None, {"input": batch})[0]
    for target in ("tensorrt", "cpu", "modelopt"):
        _, result = quantized[target]
        logits = make_session(result.path).run(None, {"input": batch})[0]
        assert logits.shape == reference.shape
        assert np.corrcoef(logits.ravel(), reference.ravel())[0, 1] > 0.99


def test_modelopt_layout_is_model_optimizers_placement(fp32, quantized):
    """Measured with nvidia-modelopt 0.47.0 on an ECA-ResNet-50: besides every Conv input it quantizes the ECA
    pool input, both gating-Mul inputs, both inputs of identity-block Adds, MaxPool and the final pool, and
    leaves the classifier Gemm float."""
    g, result = quantized["modelopt"]
    eca = _eca_convs(fp32)
    for conv in g.nodes("Conv"):
        assert g.is_activation_dq(conv.input[0]) == (conv.name not in eca), conv.name
    gemm = g.nodes("Gemm")[0]
    assert not any(g.made_by(i, "DequantizeLinear") for i in gemm.input)  # classifier in float
    for mul in g.nodes("Mul"):
        assert all(g.is_activation_dq(i) for i in mul.input), mul.name
        gate = next(i for i in mul.input if g.made_by(g.producer[g.producer[i].input[0]].input[0], "Sigmoid"))
        assert g.array(g.producer[gate].input[1]) == np.float32(1 / 127)  # the gate's fixed [0, 1] range
    pools = g.nodes("GlobalAveragePool") + g.nodes("MaxPool")
    assert len(pools) == 10 and all(g.is_activation_dq(p.input[0]) for p in pools)
    downsample = 0
    for add in g.nodes("Add"):
        from_conv = _straight_from_conv(fp32, next(n for n in fp32.nodes("Add") if n.name == add.name))
        downsample += any(from_conv)
        assert [g.is_activation_dq(t) for t in add.input] == [not c for c in from_conv], add.name
    assert downsample == 3
    assert json_layout(result) == "modelopt" and json_layout(quantized["tensorrt"][1]) == "eca-deploy"


def json_layout(result):
    from eca_deploy.artifacts import read_manifest

    return read_manifest(result.path)["quantization"]["qdq_layout"]
