"""What a deployment config is made of, read from an ONNX graph or an engine's manifest and from the manifests of
what the artifact was made from (an engine's ONNX, a quantized ONNX's FP32 source, the export's data config)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..artifacts import manifest_path, sha256_file
from ..data.preprocess import DataConfig
from ..precisions import is_exported
from ..errors import DataError, OnnxFileError, UsageError
from ..export.onnx_export import OUTPUT_NAME
from ..graph.graph import io_tensors, load_onnx
from ..runtime.registry import Artifact, parse_spec
from ..runtime.harness.predict import data_config

SOURCE_HOPS = 3  # engine -> INT8/FP16 ONNX -> FP32 ONNX: the export manifest with the data config is that far


@dataclass(frozen=True)
class ModelFacts:
    """What the config is made of, read from the artifact's graph or manifest."""

    onnx: Path | None
    engine: Path | None
    precision: str
    input_shape: tuple  # [batch or a name, ...] as the graph or manifest gives it
    uint8_input: bool  # images in as bytes: the graph normalises (export --input-format uint8-nhwc)
    output_name: str
    num_classes: int
    max_batch: int | None  # an engine's profile maximum, a static ONNX's batch; None: any
    data_config: DataConfig
    fp32_onnx_sha256: str | None  # the model our calibration ranges are keyed by
    calibration_cache: Path | None  # an engine's recorded TensorRT calibration cache


def _source_of(path: Path, manifest: dict | None) -> Path | None:
    """The file ``path`` was made from, where its manifest names it and the bytes there are still those."""
    if not manifest:
        return None
    named, sha = manifest.get("source_onnx") or manifest.get("source"), \
        manifest.get("source_onnx_sha256") or manifest.get("source_sha256")
    if not isinstance(named, str):
        return None
    candidate = _beside(path, named)
    return candidate if candidate.is_file() and sha256_file(candidate) == sha else None


def _lineage(artifact: Artifact) -> list[Artifact]:
    """The artifact and what it was made from, nearest first (engine, its ONNX, that ONNX's FP32 source)."""
    chain = [artifact]
    while len(chain) <= SOURCE_HOPS:
        source = _source_of(chain[-1].path, chain[-1].manifest)
        if source is None:
            break
        chain.append(parse_spec(str(source)))
    return chain


def _graph_io(path: Path) -> tuple[tuple, bool, str, int]:
    """(input shape, uint8 input, output name, classes) of an ONNX graph; dims without a value are names."""
    inputs, outputs = io_tensors(load_onnx(path, load_weights=False))
    if not inputs or not outputs:
        raise OnnxFileError(f"{path.name} has no image input or no output for a classifier config")
    image, output = inputs[0], outputs[0]
    classes = output["shape"][-1] if output["shape"] and isinstance(output["shape"][-1], int) else 0
    return tuple(image["shape"]), image["dtype"] == "uint8", output["name"], classes


def _recorded_data_config(chain: list[Artifact]) -> DataConfig:
    """The first data config a manifest of the lineage records (export writes it), else ImageNet's."""
    recorded = next((a for a in chain if isinstance((a.manifest or {}).get("data_config"), dict)), chain[0])
    return data_config(recorded, None)


def model_facts(artifact: Artifact) -> ModelFacts:
    if artifact.kind not in ("onnx", "tensorrt"):
        raise UsageError(f"DeepStream's nvinfer runs TensorRT: give a .onnx file or a TensorRT engine, not "
                         f"{artifact.label}")
    chain = _lineage(artifact)
    onnx_path = next((a.path for a in chain if a.kind == "onnx"), None)
    fp32 = next((a for a in chain if a.kind == "onnx" and is_exported(a.precision()[0])), None)
    precision = artifact.precision()[0]
    if artifact.kind == "onnx":
        shape, uint8, output, classes = _graph_io(artifact.path)
        max_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        return ModelFacts(artifact.path, None, precision, shape, uint8, output, classes, max_batch,
                          _recorded_data_config(chain), sha256_file(fp32.path) if fp32 else None, None)
    return _engine_facts(artifact, chain, onnx_path, fp32, precision)


def _engine_facts(artifact: Artifact, chain: list[Artifact], onnx_path: Path | None, fp32: Artifact | None,
                  precision: str) -> ModelFacts:
    manifest = artifact.manifest
    if not manifest or not isinstance(manifest.get("input"), dict) or not (manifest.get("profile") or {}).get("max"):
        raise DataError(f"{artifact.label} has no manifest from `eca-deploy build` ({manifest_path(artifact.path)}):"
                        " its input size and batch profile cannot be read without TensorRT")
    shape = tuple(manifest["profile"]["max"])
    output, classes = OUTPUT_NAME, next((a.manifest.get("num_classes") for a in chain
                                         if isinstance((a.manifest or {}).get("num_classes"), int)), None)
    if onnx_path is not None:
        _, _, output, classes = _graph_io(onnx_path)
    if not classes:
        raise DataError(f"cannot tell how many classes {artifact.label} has: its source ONNX is not beside it")
    cache = (manifest.get("calibration") or {}).get("cache")
    return ModelFacts(onnx_path, artifact.path, precision, shape, manifest["input"].get("dtype") == "uint8",
                      output, classes, shape[0], _recorded_data_config(chain),
                      sha256_file(fp32.path) if fp32 else manifest.get("source_onnx_sha256"),
                      _beside(artifact.path, cache) if cache else None)


def _beside(artifact: Path, recorded: str) -> Path:
    """A path a manifest recorded (relative to where the command ran then), else the file of that name beside
    the artifact: an engine and its cache are moved together."""
    path = Path(recorded)
    return path if path.is_file() else artifact.parent / path.name

