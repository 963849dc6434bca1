"""onnxruntime sessions made the same way everywhere (export checks, quantization, backends)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import onnx

from ..errors import OnnxFileError, first_line


def make_session(model: str | os.PathLike | onnx.ModelProto, providers: list[str] | None = None,
                 threads: int | None = None, spinning: bool = True, label: str | None = None):
    """``spinning=False`` lets idle worker threads sleep: where several sessions are alive (benchmarks that
    interleave models), the default spin-waiting of an idle session takes CPU from the one being timed.

    A model onnxruntime refuses (an unknown op or domain, a bad graph) is an OnnxFileError naming ``label``
    (default: the file, or "the model")."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # keep onnxruntime's warnings out of the user's terminal
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(Path(model))
    try:
        return ort.InferenceSession(source, options, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NotImplemented types
        what = label or (source if isinstance(source, str) else "the model")
        raise OnnxFileError(f"onnxruntime cannot load {what}: {ort_message(exc)}") from exc


def ort_message(exc: BaseException) -> str:
    """onnxruntime's first line without its "[ONNXRuntimeError] : 1 : FAIL :" prefix, kept short."""
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", first_line(exc))[:300]


def run_once(model: str | os.PathLike | onnx.ModelProto, batch: np.ndarray) -> np.ndarray:
    """Logits of one batch on onnxruntime CPU (a fresh session: for checks, not for timing)."""
    session = make_session(model)
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
