"""The torch: artifact kind: a registered model (or timm:<name>) and its weights, run by PyTorch eager."""

from __future__ import annotations

from pathlib import Path

from ...errors import UsageError
from ...precisions import EXPORTED
from ..base import ArtifactKind, Backend, OpenOptions

PREFIX = "torch:"
HELP = "torch:<model>[:weights]"


def named(spec: str, rest: str) -> dict:
    # models/ imports torch: only a torch: spec may pay for it (parity judges engines against a saved
    # reference on machines without PyTorch)
    from ...models.base import TIMM_PREFIX

    prefix = ""
    if rest.startswith(TIMM_PREFIX):  # torch:timm:<name>[:weights]
        prefix, rest = TIMM_PREFIX, rest[len(TIMM_PREFIX):]
    model, _, weights = rest.partition(":")
    if not model:
        raise UsageError(f"'{spec}' names no model; expected {HELP}")
    return {"model": prefix + model, "weights": weights or None}


def open_torch(artifact, options: OpenOptions) -> Backend:
    from .backend import TorchBackend

    return TorchBackend(artifact.model, artifact.weights, device=options.device, imgsz=options.imgsz,
                        threads=options.threads)


KIND = ArtifactKind(
    "torch", "PyTorch", "PyTorch model", (HELP,), open_torch, prefix=PREFIX, named=named,
    precision=lambda artifact: (EXPORTED, "pytorch"),
    inputs=lambda artifact: [Path(artifact.weights)] if artifact.weights else [])
