"""onnxruntime sessions made the same way everywhere (export checks, quantization, backends)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..errors import OnnxFileError, first_line
from .qdq import QDQ_OPS


def has_fp16_qdq(model: onnx.ModelProto) -> bool:
    """Q/DQ with float16 scales: an INT8 model whose glue is FP16 (quantize --high-precision fp16, or
    NVIDIA Model Optimizer's high_precision_dtype="fp16")."""
    halves = {i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT16}
    halves |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"
               and any(a.name == "value" and a.t.data_type == TensorProto.FLOAT16 for a in n.attribute)}
    return any(n.op_type in QDQ_OPS and len(n.input) > 1 and n.input[1] in halves for n in model.graph.node)


def _proto(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """The graph without its weights; an empty one where the file is not ONNX (onnxruntime then says so)."""
    if isinstance(model, onnx.ModelProto):
        return model
    try:
        return onnx.load(str(model), load_external_data=False)
    except Exception:  # protobuf's DecodeError and friends: the session below reports the file in one line
        return onnx.ModelProto()


def make_session(model: str | os.PathLike | onnx.ModelProto, providers: list[str] | None = None,
                 threads: int | None = None, spinning: bool = True, label: str | None = None,
                 optimized: bool = True):
    """``spinning=False`` lets idle worker threads sleep: where several sessions are alive (benchmarks that
    interleave models), the default spin-waiting of an idle session takes CPU from the one being timed.

    ``optimized=False`` keeps an INT8 model's Q/DQ as ONNX defines them (session.disable_quant_qdq: DQ -> Conv
    -> Q compute in float), the model's math on any CPU; the other optimizations stay (3x faster than none,
    measured on the digits model). The default session fuses Q/DQ into onnxruntime's integer kernels, whose
    u8 x s8 products saturate on x86 CPUs without VNNI (graph/cpu.py): this CPU's result.

    A model onnxruntime refuses (an unknown op or domain, a bad graph) is an OnnxFileError naming ``label``
    (default: the file, or "the model")."""
    import onnxruntime as ort

    what = label or (str(Path(model)) if not isinstance(model, onnx.ModelProto) else "the model")
    options = _options(ort)
    if not optimized:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    proto = _proto(model)
    if has_fp16_qdq(proto):
        # onnxruntime's graph optimizations, from the BASIC level on, computed Model Optimizer's FP16-glue
        # Q/DQ ECA-ResNet-50 wrongly and lose accuracy on ours (README: "onnxruntime and FP16-glue models").
        # Such a model targets TensorRT; on the CPU it is a reference, so it runs node by node as written,
        # its weights dequantized once beforehand.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if not isinstance(model, onnx.ModelProto):
            model = _with_external_data(proto, model, what)
        model = fold_weight_dequantize(model)
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(Path(model))
    try:
        return ort.InferenceSession(source, options, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NotImplemented types
        raise OnnxFileError(f"onnxruntime cannot load {what}: {ort_message(exc)}") from exc


def _options(ort):
    options = ort.SessionOptions()
    options.log_severity_level = 3  # keep onnxruntime's warnings out of the user's terminal
    return options


def _with_external_data(proto: onnx.ModelProto, path: str | os.PathLike, what: str) -> onnx.ModelProto:
    """``proto``, parsed from ``path`` without its weights, completed with them as ``onnx.load`` would."""
    from onnx.external_data_helper import load_external_data_for_model

    try:
        load_external_data_for_model(proto, str(Path(path).parent))
        return proto
    except Exception as exc:  # a missing external-data file, a truncated tensor
        raise OnnxFileError(f"onnxruntime cannot load {what}: {first_line(exc)}") from exc


def fold_weight_dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with each DequantizeLinear whose inputs are all initializers (the weights) replaced by its
    output, computed once by onnxruntime's own DequantizeLinear kernel, so the results are bit-identical.

    Run node by node, an FP16-glue model otherwise dequantizes every weight on every batch: folded, the digits
    ECA-ResNet-18 ran twice as fast at batch 8 (tests/calibration/test_quantize_digits.py checks the bits)."""
    import onnxruntime as ort

    initializers = {i.name: i for i in model.graph.initializer}
    weights = [n for n in model.graph.node
               if n.op_type == "DequantizeLinear" and all(x in initializers for x in n.input if x)]
    if not weights:
        return model
    needed = dict.fromkeys(x for n in weights for x in n.input if x)
    outputs = [onnx.helper.make_tensor_value_info(n.output[0], _dequantized_type(n, initializers), None)
               for n in weights]
    folder = onnx.helper.make_model(
        onnx.helper.make_graph(weights, "fold_weight_dequantize", [], outputs, [initializers[x] for x in needed]),
        opset_imports=model.opset_import, ir_version=model.ir_version)
    options = _options(ort)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    values = ort.InferenceSession(folder.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
        [n.output[0] for n in weights], {})

    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    gone = {n.output[0] for n in weights}
    kept = [n for n in folded.graph.node if not (n.op_type == "DequantizeLinear" and n.output[0] in gone)]
    del folded.graph.node[:]
    folded.graph.node.extend(kept)
    used = {x for n in kept for x in n.input} | {o.name for o in folded.graph.output}
    stay = [i for i in folded.graph.initializer if i.name not in needed or i.name in used]
    del folded.graph.initializer[:]
    folded.graph.initializer.extend(stay)
    folded.graph.initializer.extend(numpy_helper.from_array(v, n.output[0]) for n, v in zip(weights, values))
    return folded


def _dequantized_type(node: onnx.NodeProto, initializers: dict) -> int:
    """DequantizeLinear's output type: its output_dtype attribute (opset 23) where set, else its scale's type."""
    dtype = next((a.i for a in node.attribute if a.name == "output_dtype"), 0)
    return dtype or initializers[node.input[1]].data_type


def ort_message(exc: BaseException) -> str:
    """onnxruntime's first line without its "[ONNXRuntimeError] : 1 : FAIL :" prefix, kept short."""
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", first_line(exc))[:300]


def run_once(model: str | os.PathLike | onnx.ModelProto, batch: np.ndarray) -> np.ndarray:
    """Logits of one batch on onnxruntime CPU (a fresh session: for checks, not for timing)."""
    session = make_session(model)
    name = session.get_inputs()[0].name
    dtype = np.float32 if batch.dtype.kind == "f" else batch.dtype  # a uint8-nhwc model's pixels stay bytes
    return session.run(None, {name: np.ascontiguousarray(batch, dtype=dtype)})[0]
