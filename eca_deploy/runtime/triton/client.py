"""Talking to a Triton server over HTTP: the ``triton://HOST:PORT/MODEL`` spec, the client, its metadata.

Every failure a user can meet (nothing listens there, no such model, a server that is not ready) becomes
one line naming the URL; tritonclient is imported on first use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import EcaDeployError, UsageError, first_line, missing_dependency

TRITON_PREFIX = "triton://"
SERVE_INSTALL = 'pip install "eca-deploy[serve]"'
# Triton's model names: what pytriton accepts too (alphanumerics, dots, underscores, dashes)
MODEL_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
NETWORK_TIMEOUT_S = 60.0  # one request's limit: a stalled server fails the run instead of hanging it
_URL = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})/(?P<model>[^/]+)")


@dataclass(frozen=True)
class TritonUrl:
    host: str
    port: int
    model: str

    @property
    def address(self) -> str:
        """HOST:PORT, as tritonclient takes it."""
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{TRITON_PREFIX}{self.address}/{self.model}"


def parse_url(spec: str) -> TritonUrl:
    """``triton://HOST:PORT/MODEL`` -> its parts; anything else is a usage error that shows the form."""
    rest = spec[len(TRITON_PREFIX):] if spec.startswith(TRITON_PREFIX) else spec
    match = _URL.fullmatch(rest)
    if not match or not 0 < int(match["port"]) < 65536 or not MODEL_NAME.fullmatch(match["model"]):
        shown = spec if len(spec) <= 80 else spec[:77] + "..."
        raise UsageError(f"'{ascii(shown)[1:-1]}' is not a Triton model URL: expected "
                         f"{TRITON_PREFIX}HOST:PORT/MODEL (PORT the server's HTTP port, MODEL a name of letters, "
                         "digits, '.', '_' or '-')")
    return TritonUrl(match["host"], int(match["port"]), match["model"])


def http_module():
    """tritonclient.http, or the one line that says how to install it."""
    try:
        import tritonclient.http as http
    except ImportError:
        raise missing_dependency("tritonclient (the Triton client)", SERVE_INSTALL) from None
    return http


def connect(url: TritonUrl):
    """A client of the server at ``url`` whose model is ready; one line where it is not."""
    http = http_module()
    try:
        client = http.InferenceServerClient(url.address, connection_timeout=NETWORK_TIMEOUT_S,
                                            network_timeout=NETWORK_TIMEOUT_S)
    except Exception as exc:  # tritonclient raises plain exceptions for a malformed address
        raise EcaDeployError(f"cannot reach the Triton server at {url.address}: {first_line(exc)}") from None
    try:
        if not client.is_model_ready(url.model):
            raise EcaDeployError(f"the Triton server at {url.address} has no ready model '{url.model}'")
    except EcaDeployError:
        client.close()
        raise
    except Exception as exc:  # refused, unresolvable, timed out: socket errors and InferenceServerException
        client.close()
        raise EcaDeployError(f"cannot reach the Triton server at {url.address}: {first_line(exc)}") from None
    return client


def request_failed(url: TritonUrl, exc: Exception) -> EcaDeployError:
    """The one-line error for a request the server refused or could not answer."""
    return EcaDeployError(f"Triton server {url.address}, model '{url.model}': {first_line(exc)}")


def server_metadata(client, url: TritonUrl) -> dict:
    """What the server says about itself and the model (the metadata endpoints, and the model's batch limit):
    recorded beside client-side timings, which measure the server as much as the network."""
    try:
        server = client.get_server_metadata()
        model = client.get_model_metadata(url.model)
        config = client.get_model_config(url.model)
    except Exception as exc:
        raise request_failed(url, exc) from None
    return {"url": str(url), "name": server.get("name"), "version": server.get("version"),
            "extensions": server.get("extensions", []), "model": {
                "name": model.get("name"), "versions": model.get("versions", []),
                "platform": model.get("platform"), "backend": config.get("backend"),
                "max_batch_size": config.get("max_batch_size", 0),
                "dynamic_batching": "dynamic_batching" in config,
                "inputs": model.get("inputs", []), "outputs": model.get("outputs", [])}}
