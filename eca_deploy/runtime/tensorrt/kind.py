"""The TensorRT artifact kind: a serialized engine (.engine / .plan) and the manifest `build` wrote."""

from __future__ import annotations

import json
from pathlib import Path

from ...artifacts import manifest_path, read_manifest
from ...errors import EngineError, ManifestError, MissingDependencyError
from ...graph.input_format import check_input_format
from ..base import ArtifactKind, Backend, OpenOptions
from .compat import refuse_stale_manifest
from .env import tensorrt_unavailable_reason
from .plan import ENGINE_SUFFIXES


def input_format(artifact) -> str:
    """An engine's input format: build copies the ONNX's into the manifest."""
    recorded = (artifact.manifest or {}).get("input_format")
    return check_input_format(recorded, f"manifest {manifest_path(artifact.path)}")


def _is_shape(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value)


ENGINE_MANIFEST_TYPES = {"profile": dict, "gpu": dict, "tensorrt_version": str, "precision": str,
                         "version_compatible": bool}


def check_engine_manifest(path: Path, manifest: dict | None) -> dict | None:
    """An engine's manifest decides batch limits and compatibility before TensorRT loads the engine, so
    every field it is read for must have the type ``eca-deploy build`` writes."""
    if manifest is None:
        return None
    refuse_stale_manifest(path, manifest)
    where = f"manifest {manifest_path(path)}"
    fix = "rebuild the engine with `eca-deploy build` or delete the manifest"
    for key, kind in ENGINE_MANIFEST_TYPES.items():
        if key in manifest and not isinstance(manifest[key], kind):
            raise ManifestError(f"{where}: \"{key}\" is a {type(manifest[key]).__name__}, not a "
                                f"{kind.__name__}; {fix}")
    for key in ("min", "opt", "max"):
        shape = (manifest.get("profile") or {}).get(key)
        if shape is not None and not _is_shape(shape):
            raise ManifestError(f"{where}: \"profile.{key}\" is not a shape of positive integers "
                                f"({json.dumps(shape)[:40]}); {fix}")
    return manifest


def open_engine(artifact, options: OpenOptions) -> Backend:
    reason = tensorrt_unavailable_reason()
    if reason:
        raise MissingDependencyError(f"cannot run the engine {artifact.path.name}: {reason}")
    from .backend import TensorRTBackend

    return TensorRTBackend(artifact.path, device=options.gpu, allow_host_code=options.allow_host_code)


KIND = ArtifactKind(
    "tensorrt", "TensorRT", "TensorRT engine", ("a TensorRT .engine/.plan file",), open_engine,
    suffixes=ENGINE_SUFFIXES, not_found=EngineError,
    manifest=lambda path: check_engine_manifest(path, read_manifest(path)),
    int8_layout=lambda artifact: "tensorrt", input_format=input_format)
