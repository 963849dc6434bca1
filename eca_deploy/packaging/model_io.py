"""What an artifact takes and gives, read from the artifact alone: tensor names, data types and dims, and the
batches it can take. A serving config (Triton's config.pbtxt, DeepStream's nvinfer keys) declares these.

The ONNX graph is read with onnx, an IR with OpenVINO (read, not compiled: no device needed), an engine from the
manifest ``eca-deploy build`` wrote beside it, so a config for a Jetson's engine can be written without TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..artifacts import manifest_path
from ..errors import ManifestError, UsageError
from ..graph.graph import io_tensors, load_onnx
from ..runtime.registry import Artifact


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # as numpy names it: float32, float16, uint8, ...
    dims: tuple[int, ...]  # every axis, the batch axis first; -1 where dynamic


@dataclass(frozen=True)
class ModelIO:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    batch_limit: int | None  # an engine profile's largest batch; None where the batch axis is unbounded or static
    static_batch: bool  # the inputs' batch axis is a fixed number
    batch_min: int = 1  # an engine profile's smallest batch


def _dim(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else -1


def _tensors(specs: list[dict]) -> tuple[Tensor, ...]:
    return tuple(Tensor(s["name"], s["dtype"], tuple(_dim(d) for d in s["shape"])) for s in specs)


def _io(inputs: list[dict], outputs: list[dict], batch: tuple[int, int] | None = None) -> ModelIO:
    """``batch``: an engine profile's (min, max) batch."""
    ins, outs = _tensors(inputs), _tensors(outputs)
    static = all(t.dims and t.dims[0] > 0 for t in ins)
    low, high = batch or (1, None)
    return ModelIO(ins, outs, None if static else high, static, low)


def _onnx_io(artifact: Artifact) -> ModelIO:
    return _io(*io_tensors(load_onnx(artifact.path, load_weights=False)))


def _ir_io(artifact: Artifact) -> ModelIO:
    from ..graph.openvino_session import import_openvino

    model = import_openvino().Core().read_model(str(artifact.path))

    def specs(ports) -> list[dict]:
        return [{"name": p.get_any_name(), "dtype": p.get_element_type().to_dtype().name,
                 "shape": [d.get_length() if d.is_static else -1 for d in p.get_partial_shape()]} for p in ports]

    return _io(specs(model.inputs), specs(model.outputs))


def _is_spec(spec) -> bool:
    return (isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("dtype"), str)
            and isinstance(spec.get("shape"), list) and bool(spec["shape"]))


def _engine_io(artifact: Artifact) -> ModelIO:
    """From the engine's manifest (registry.check_engine_manifest checked its profile's shapes and types)."""
    manifest = artifact.manifest
    where = f"manifest {manifest_path(artifact.path)}"
    if manifest is None:
        raise ManifestError(f"{artifact.label} has no manifest beside it ({manifest_path(artifact.path).name}): its "
                            "inputs, outputs and batch profile are read from there; build it with `eca-deploy build`")
    tensors = {}
    for key, specs in (("input", [manifest.get("input")]), ("outputs", manifest.get("outputs"))):
        if not (isinstance(specs, list) and specs and all(_is_spec(s) for s in specs)):
            raise ManifestError(f"{where} has no usable \"{key}\" (name, shape and dtype of each tensor); rebuild "
                                "the engine with this version of `eca-deploy build`")
        tensors[key] = specs
    profile = manifest.get("profile") or {}
    if not (profile.get("min") and profile.get("max")):
        raise ManifestError(f"{where} has no batch profile (\"profile\" min / max); rebuild the engine")
    return _io(tensors["input"], tensors["outputs"], (profile["min"][0], profile["max"][0]))


READERS = {"tensorrt": _engine_io, "onnx": _onnx_io, "openvino": _ir_io}


def read_io(artifact: Artifact) -> ModelIO:
    """The inputs, outputs and batch range of a TensorRT engine, an ONNX file (also one named
    openvino:<file.onnx>) or an OpenVINO IR."""
    if artifact.kind not in READERS:
        raise UsageError(f"{artifact.spec}: expected a TensorRT engine, a .onnx file, openvino:<file.onnx> or an "
                         "OpenVINO IR .xml")
    return READERS["onnx" if artifact.foreign else artifact.kind](artifact)
