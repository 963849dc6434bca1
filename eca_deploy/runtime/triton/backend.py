"""A model on a running Triton server as a backend: float32 batches go out over HTTP, logits come back.

The client side of ``eca-deploy bench triton://HOST:PORT/MODEL``: what it times is the server as a client
sees it (network, queueing and dynamic batching included). ``infer`` may be called from several threads at
once (bench's concurrency levels): each thread gets its own connection, as perf_analyzer opens one per
in-flight request.
"""

from __future__ import annotations

import threading

import numpy as np

from ...errors import EcaDeployError
from ..base import Backend, InputSpec
from .client import TritonUrl, connect, http_module, request_failed, server_metadata

TRITON_DTYPES = {"FP32": "float32", "FP16": "float16"}


class TritonBackend(Backend):
    name = "triton-http"

    def __init__(self, url: TritonUrl):
        self.url = url
        self._http = http_module()
        self._local = threading.local()
        self._clients: list = []
        self._lock = threading.Lock()
        self.server = server_metadata(self._client(), url)
        model = self.server["model"]
        if len(model["inputs"]) != 1 or not model["outputs"]:
            self.close()
            raise EcaDeployError(f"{url} has {len(model['inputs'])} inputs and {len(model['outputs'])} outputs; "
                                 "eca-deploy runs image classifiers with one input and a logits output")
        spec = model["inputs"][0]
        self._input_type = spec.get("datatype", "")
        self._output = model["outputs"][0]["name"]
        shape = [int(d) for d in spec.get("shape", [])]
        if model["max_batch_size"] > 0:  # the metadata's shape leads with the batch axis as -1
            self.batch_range = (1, int(model["max_batch_size"]))
        self._spec = InputSpec(spec.get("name", ""), tuple(None if d < 0 else d for d in shape),
                               TRITON_DTYPES.get(self._input_type, self._input_type.lower() or "unknown"))

    def _client(self):
        """This thread's connection (tritonclient's HTTP client is not shared between threads)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = connect(self.url)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    @property
    def input_spec(self) -> InputSpec:
        return self._spec

    def infer(self, batch: np.ndarray) -> np.ndarray:
        data = np.ascontiguousarray(batch, dtype=self._spec.dtype)
        request = self._http.InferInput(self._spec.name, list(data.shape), self._input_type)
        request.set_data_from_numpy(data, binary_data=True)
        wanted = self._http.InferRequestedOutput(self._output, binary_data=True)
        try:
            result = self._client().infer(self.url.model, [request], outputs=[wanted])
        except EcaDeployError:
            raise
        except Exception as exc:  # InferenceServerException, socket errors
            raise request_failed(self.url, exc) from None
        return result.as_numpy(self._output).astype(np.float32, copy=False)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
