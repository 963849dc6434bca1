"""The triton:// artifact kind: a model on a running Triton server, reached as a client (no file here)."""

from __future__ import annotations

from ..base import ArtifactKind, Backend, OpenOptions
from .client import TRITON_PREFIX, parse_url


def named(spec: str, rest: str) -> dict:
    return {"model": str(parse_url(spec))}  # the canonical URL: what reports and saved references name


def open_triton(artifact, options: OpenOptions) -> Backend:
    from .backend import TritonBackend

    return TritonBackend(parse_url(artifact.model))


KIND = ArtifactKind(
    "triton", "Triton", "Triton model", (f"{TRITON_PREFIX}HOST:PORT/MODEL",), open_triton, prefix=TRITON_PREFIX,
    named=named, output_tag=".triton", remote=True, inputs=lambda artifact: [])
