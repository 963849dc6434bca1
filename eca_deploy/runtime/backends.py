"""Open a backend from what the user typed: ``torch:<model>[:weights]``, a ``.onnx`` file, a TensorRT engine,
an OpenVINO IR ``.xml``, or ``openvino:<file.onnx>`` (the ONNX file on OpenVINO instead of onnxruntime).

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
OPENVINO_PREFIX = "openvino:"
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan")
IR_SUFFIXES = (".xml",)
PRECISIONS = ("fp32", "fp16", "int8")
FORMATS = {"torch": "PyTorch", "onnx": "ONNX", "tensorrt": "TensorRT", "openvino": "OpenVINO IR"}
SPEC_HELP = ("torch:<model>[:weights], a .onnx file, a TensorRT .engine/.plan file, an OpenVINO IR .xml, "
             "or openvino:<file.onnx>")


@dataclass(frozen=True)
class Artifact:
    """One thing to run: a PyTorch model, an ONNX file or an engine, with what its manifest says."""

    spec: str
    kind: str  # "torch" | "onnx" | "tensorrt" | "openvino" (an IR, or an ONNX file run by OpenVINO)
    path: Path | None = None
    model: str | None = None  # torch only
    weights: str | None = None  # torch only
    manifest: dict | None = None

    @property
    def onnx_on_openvino(self) -> bool:
        return self.kind == "openvino" and self.path.suffix.lower() in ONNX_SUFFIXES

    @property
    def format(self) -> str:
        return FORMATS["onnx" if self.onnx_on_openvino else self.kind]

    @property
    def label(self) -> str:
        """The file name; an ONNX file run by OpenVINO keeps its prefix, to tell it from the onnxruntime row."""
        if not self.path:
            return f"{self.model} (PyTorch)"
        return OPENVINO_PREFIX + self.path.name if self.onnx_on_openvino else self.path.name

    @property
    def size_mb(self) -> float | None:
        target = self.path or (Path(self.weights) if self.weights else None)
        if not (target and target.is_file()):
            return None
        files = [target, target.with_suffix(".bin")] if target.suffix.lower() in IR_SUFFIXES else [target]
        return round(sum(f.stat().st_size for f in files if f.is_file()) / 2**20, 2)

    @property
    def identity(self) -> str:
        """What tells two artifacts apart in a report: the resolved file path, or the torch spec."""
        if not self.path:
            return self.spec
        return (OPENVINO_PREFIX if self.onnx_on_openvino else "") + str(self.path.resolve())

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
        if self.kind == "onnx" or self.onnx_on_openvino:
            return onnx_precision(self.path), "graph"
        if self.kind == "openvino":
            return ir_precision(self.path), "graph"
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


def ir_precision(path: Path) -> str:
    """int8 where the IR quantizes (FakeQuantize), fp16 where its weights are half floats, else fp32."""
    from xml.etree import ElementTree

    try:
        layers = ElementTree.parse(path).getroot().iter("layer")
    except ElementTree.ParseError as exc:
        raise OnnxFileError(f"{path} is not an OpenVINO IR: {exc}") from exc
    types = [(layer.get("type"), (layer.find("data").get("element_type") if layer.find("data") is not None
                                  else None)) for layer in layers]
    if any(kind == "FakeQuantize" for kind, _ in types):
        return "int8"
    if any(kind == "Const" and element == "f16" for kind, element in types):
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
    if spec.startswith(OPENVINO_PREFIX):
        path = Path(spec[len(OPENVINO_PREFIX):])
        if path.suffix.lower() not in (*ONNX_SUFFIXES, *IR_SUFFIXES):
            raise OnnxFileError(f"'{spec}': OpenVINO runs a .onnx file or an IR .xml here")
        if not path.is_file():
            raise OnnxFileError(f"model not found: {path}")
        return Artifact(spec, "openvino", path=path, manifest=read_manifest(path))
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        if not path.is_file():
            raise OnnxFileError(f"ONNX file not found: {path}")
        return Artifact(spec, "onnx", path=path, manifest=read_manifest(path))
    if suffix in IR_SUFFIXES:
        if not path.is_file():
            raise OnnxFileError(f"OpenVINO IR not found: {path}")
        if not path.with_suffix(".bin").is_file():
            raise OnnxFileError(f"OpenVINO IR {path.name} has no weights file {path.with_suffix('.bin').name} "
                                "beside it")
        return Artifact(spec, "openvino", path=path, manifest=read_manifest(path))
    if suffix in ENGINE_SUFFIXES:
        if not path.is_file():
            raise EngineError(f"TensorRT engine not found: {path}")
        return Artifact(spec, "tensorrt", path=path, manifest=read_manifest(path))
    if not path.exists():
        raise OnnxFileError(f"model not found: {spec} (expected {SPEC_HELP})")
    raise OnnxFileError(f"cannot tell how to run {spec}: expected {SPEC_HELP}")


def open_backend(artifact: Artifact | str, *, provider: str = "auto", device: str = "auto",
                 imgsz: int = 224, threads: int | None = None, ov_hint: str = "latency") -> Backend:
    """provider: onnxruntime execution provider (auto/cpu/cuda/tensorrt); device: torch device; imgsz: torch only;
    threads: onnxruntime intra-op threads, OpenVINO's inference threads, or torch's threads while the backend is
    open; ov_hint: OpenVINO's performance hint, latency or throughput."""
    if isinstance(artifact, str):
        artifact = parse_spec(artifact)
    if artifact.kind == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(artifact.model, artifact.weights, device=device, imgsz=imgsz, threads=threads)
    if artifact.kind == "onnx":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(artifact.path, provider=provider, threads=threads)
    if artifact.kind == "openvino":
        from .openvino_backend import OpenVinoBackend

        return OpenVinoBackend(artifact.path, precision=artifact.precision()[0], threads=threads, hint=ov_hint)
    from .tensorrt_env import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason:
        raise MissingDependencyError(f"cannot run the engine {artifact.path.name}: {reason}")
    from .tensorrt_backend import TensorRTBackend

    return TensorRTBackend(artifact.path)
