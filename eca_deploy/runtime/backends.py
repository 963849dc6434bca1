"""Open a backend from what the user typed: ``torch:<model>[:weights]``, a ``.onnx`` file, or a TensorRT engine.

The artifact's format, precision, size and manifest are read here too, so parity, bench and the
reports describe every artifact the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..artifacts import read_manifest
from ..errors import EngineError, MissingDependencyError, OnnxFileError
from .backend import Backend

TORCH_PREFIX = "torch:"
TIMM_PREFIX = "timm:"
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan")
PRECISIONS = ("fp32", "fp16", "int8")
FORMATS = {"torch": "PyTorch", "onnx": "ONNX", "tensorrt": "TensorRT"}
SPEC_HELP = "torch:<model>[:weights], a .onnx file, or a TensorRT .engine/.plan file"


@dataclass(frozen=True)
class Artifact:
    """One thing to run: a PyTorch model, an ONNX file or an engine, with what its manifest says."""

    spec: str
    kind: str  # "torch" | "onnx" | "tensorrt"
    path: Path | None = None
    model: str | None = None  # torch only
    weights: str | None = None  # torch only
    manifest: dict | None = None

    @property
    def format(self) -> str:
        return FORMATS[self.kind]

    @property
    def label(self) -> str:
        return self.path.name if self.path else f"{self.model} (PyTorch)"

    @property
    def size_mb(self) -> float | None:
        target = self.path or (Path(self.weights) if self.weights else None)
        return round(target.stat().st_size / 2**20, 2) if target and target.is_file() else None

    @property
    def identity(self) -> str:
        """What tells two artifacts apart in a report: the resolved file path, or the torch spec."""
        return str(self.path.resolve()) if self.path else self.spec

    def describe(self, precision: str, backend: str) -> dict:
        """The fields every report row starts with."""
        return {"artifact": self.label, "spec": self.spec, "identity": self.identity, "format": self.format,
                "precision": precision, "backend": backend, "size_mb": self.size_mb}

    def precision(self, override: str | None = None) -> tuple[str, str]:
        """(precision, where it came from): the flag, the manifest, the ONNX graph, or fp32 assumed."""
        if override:
            return override, "flag"
        if self.kind == "torch":
            return "fp32", "pytorch"
        recorded = (self.manifest or {}).get("precision")
        if recorded in PRECISIONS:
            return recorded, "manifest"
        if self.kind == "onnx":
            return onnx_precision(self.path), "graph"
        return "fp32", "assumed (no manifest; pass --precision)"


def batch_limits(backend: Backend) -> tuple[int, int | None]:
    """(smallest, largest) batch the backend takes: a static batch axis, an engine's profile, or (1, None)."""
    fixed = backend.input_spec.shape[0]
    if isinstance(fixed, int):
        return fixed, fixed
    low, high = getattr(backend, "batch_range", (1, None))
    return int(low), (int(high) if high else None)


def onnx_precision(path: Path) -> str:
    """int8 where the graph quantizes, fp16 where its weights are half floats, else fp32."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = {node.op_type for node in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger"}:
        return "int8"
    if any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer):
        return "fp16"
    return "fp32"


def parse_spec(spec: str) -> Artifact:
    """Validate a backend spec without loading anything heavy; missing files fail here, in one line."""
    if spec.startswith(TORCH_PREFIX):
        rest = spec[len(TORCH_PREFIX):]
        prefix = ""
        if rest.startswith(TIMM_PREFIX):  # torch:timm:<name>[:weights]
            prefix, rest = TIMM_PREFIX, rest[len(TIMM_PREFIX):]
        model, _, weights = rest.partition(":")
        if not model:
            raise OnnxFileError(f"'{spec}' names no model; expected {SPEC_HELP}")
        return Artifact(spec, "torch", model=prefix + model, weights=weights or None)
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        if not path.is_file():
            raise OnnxFileError(f"ONNX file not found: {path}")
        return Artifact(spec, "onnx", path=path, manifest=read_manifest(path))
    if suffix in ENGINE_SUFFIXES:
        if not path.is_file():
            raise EngineError(f"TensorRT engine not found: {path}")
        return Artifact(spec, "tensorrt", path=path, manifest=read_manifest(path))
    if not path.exists():
        raise OnnxFileError(f"model not found: {spec} (expected {SPEC_HELP})")
    raise OnnxFileError(f"cannot tell how to run {spec}: expected {SPEC_HELP}")


def open_backend(artifact: Artifact | str, *, provider: str = "auto", device: str = "auto",
                 imgsz: int = 224, threads: int | None = None, allow_host_code: bool = False) -> Backend:
    """provider: onnxruntime execution provider (auto/cpu/cuda/tensorrt); device: torch device; imgsz: torch only;
    threads: onnxruntime intra-op threads, or torch's threads while the backend is open; allow_host_code:
    TensorRT may run host code stored in the engine (the user's explicit choice)."""
    if isinstance(artifact, str):
        artifact = parse_spec(artifact)
    if artifact.kind == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(artifact.model, artifact.weights, device=device, imgsz=imgsz, threads=threads)
    if artifact.kind == "onnx":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(artifact.path, provider=provider, threads=threads)
    from .tensorrt_env import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason:
        raise MissingDependencyError(f"cannot run the engine {artifact.path.name}: {reason}")
    from .tensorrt_backend import TensorRTBackend

    return TensorRTBackend(artifact.path, allow_host_code=allow_host_code)
