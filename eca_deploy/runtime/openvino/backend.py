"""OpenVINO backend on the CPU: an ONNX file or an OpenVINO IR (.xml + .bin).

Precision is set from the artifact (see openvino_session.inference_precision), threads from
--threads, and the performance hint from --ov-hint:

- latency: one stream; every thread works on one request (lowest time per call).
- throughput: the plugin makes several streams (threads split between them); ``infer`` cuts a
  batch into one slice per stream and runs the slices as parallel requests, so batches above 1 get
  more images per second at a longer time per call.
"""

from __future__ import annotations

import os

import numpy as np

from ...graph.openvino_session import compile_model, import_openvino
from ..base import Backend, InputSpec


def _dims(partial_shape) -> tuple[int | None, ...]:
    return tuple(d.get_length() if d.is_static else None for d in partial_shape)


class OpenVinoBackend(Backend):
    def __init__(self, path: str | os.PathLike, precision: str = "fp32", threads: int | None = None,
                 hint: str = "latency"):
        ov = import_openvino()
        self.compiled = compile_model(path, precision, threads, hint)
        self.hint = hint
        self.name = "openvino-cpu" + ("-throughput" if hint == "throughput" else "")
        inp, out = self.compiled.inputs[0], self.compiled.outputs[0]
        self._dtype = inp.get_element_type().to_dtype()
        self._spec = InputSpec(inp.get_any_name(), _dims(inp.get_partial_shape()), np.dtype(self._dtype).name)
        self.num_classes = _dims(out.get_partial_shape())[-1]
        self._request = self.compiled.create_infer_request()
        self._queue = None
        if hint == "throughput" and self._spec.shape[0] is None:  # a static batch cannot be sliced
            # No Python callback on the queue: OpenVINO's worker threads would then need the GIL, and a
            # worker still finishing a callback while close() drops the compiled model (which joins the
            # workers with the GIL held) deadlocks. The results are read from the requests instead.
            self._queue = ov.AsyncInferQueue(self.compiled,
                                             int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
            self._calls = 0

    @property
    def input_spec(self) -> InputSpec:
        return self._spec

    @property
    def inference_precision(self) -> str:
        """What the compiled model computes in, as OpenVINO reports it (e.g. 'f32')."""
        return self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype != self._dtype or not batch.flags.c_contiguous:
            batch = self.as_input(batch, self._dtype)
        if self._queue is None or len(batch) == 1:
            return self._request.infer(batch, share_inputs=True)[0]
        parts = np.array_split(batch, min(len(batch), len(self._queue)))
        self._calls += 1  # tags this call's requests: the others still hold an earlier call's userdata
        for index, part in enumerate(parts):
            self._queue.start_async(part, (self._calls, index), share_inputs=True)
        self._queue.wait_all()
        slices = {tag[1]: request.get_output_tensor(0).data.copy()
                  for request, tag in zip(self._queue, self._queue.userdata) if tag and tag[0] == self._calls}
        return np.concatenate([slices[i] for i in range(len(parts))])

    def close(self) -> None:
        """Wait for every request, then drop the queue and requests before the compiled model that owns them."""
        if self._queue is not None:
            self._queue.wait_all()
        self._request = self._queue = None
        self.compiled = None
