"""Which input format (data.pixels) an ONNX model takes, as its export recorded it in ``metadata_props``.

Every later stage (parity, bench, predict, pipeline, serve, quantize) learns a model's format from
:func:`read_input_format` alone: the key is written by ``export`` and read nowhere else. A model without
the key (older exports, other tools) takes ``float-nchw``.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from ..data.pixels import FLOAT_NCHW, INPUT_FORMATS
from ..errors import OnnxFileError
from .graph import load_onnx

METADATA_KEY = "eca_deploy.input_format"


def check_input_format(name, where: str) -> str:
    """A recorded input format, checked (``float-nchw`` where none is recorded): the ONNX metadata's value, or
    an engine manifest's copy of it."""
    if name is None:
        return FLOAT_NCHW
    if name not in INPUT_FORMATS:
        raise OnnxFileError(f"{where} records input format {str(name)[:40]!r}; eca-deploy knows "
                            f"{', '.join(INPUT_FORMATS)}")
    return name


def read_input_format(model: onnx.ModelProto | str | Path) -> str:
    """The input format of an ONNX model or file (its weights are not needed, so not loaded)."""
    where = "this ONNX model"
    if not isinstance(model, onnx.ModelProto):
        where, model = str(model), load_onnx(model, load_weights=False)
    recorded = {p.key: p.value for p in model.metadata_props}.get(METADATA_KEY)
    return check_input_format(recorded, f"{where} (metadata {METADATA_KEY})")


def record_input_format(model: onnx.ModelProto, name: str) -> None:
    """Write ``name`` into the model's metadata_props (replacing an earlier value)."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=METADATA_KEY, value=INPUT_FORMATS[name].name)
