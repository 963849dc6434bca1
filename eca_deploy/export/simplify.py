"""onnxsim with our defaults; the caller verifies the result numerically."""

from __future__ import annotations

import onnx

from ..errors import ExportError, first_line


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        import onnxsim
    except ImportError as exc:  # a core dependency, but say what to do if it is gone
        raise ExportError("onnxsim is not installed: pip install onnxsim (or pass --no-simplify)") from exc
    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as exc:
        raise ExportError(f"onnxsim failed: {first_line(exc)}") from exc
    if not ok:
        raise ExportError("onnxsim could not validate the simplified model (try --no-simplify)")
    return simplified
