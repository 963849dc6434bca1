"""Run the FP32 model on calibration batches and feed each requested activation to its statistics.

The model is copied with the requested tensors added as graph outputs; every
batch's activations update the running statistics and are dropped before the
next batch, so memory is bounded by one batch's activations, not by the data set.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from ...errors import DataError
from ...graph.session import make_session
from .calibrators import TensorStats
from ...data.sources import Dataset


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns the named intermediate tensors."""
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    present = {o.name for o in augmented.graph.output}
    augmented.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                                  for n in names if n not in present)
    return augmented


def collect_stats(model: onnx.ModelProto, tensors: list[str], data: Dataset, batch_size: int,
                  histograms: bool = True, threads: int | None = None,
                  desc: str = "calibrating") -> tuple[dict[str, TensorStats], int]:
    """Statistics of ``tensors`` over every usable image of ``data``; returns (stats, images used)."""
    session = make_session(with_outputs(model, tensors), threads=threads, label="the input model")
    input_name = session.get_inputs()[0].name
    stats = {name: TensorStats(histogram=histograms) for name in tensors}
    used = 0
    for batch, _ in data.batches(batch_size, desc=desc):
        outputs = session.run(tensors, {input_name: batch})
        for name, value in zip(tensors, outputs):
            try:
                stats[name].update(value)
            except FloatingPointError as exc:
                raise DataError(f"calibration: tensor {name} went non-finite on {data.description} "
                                f"({exc}); the model or the data is broken") from exc
        used += len(batch)
        del outputs
    return stats, used
