"""A DeepStream Gst-nvinfer config for an ECA classifier (``network-type=1``), its labels file and, for legacy
INT8, its calibration table.

Every key is one that DeepStream's gstnvinfer_property_parser.h defines, with nvinfer's meanings:
network-mode is NvDsInferNetworkMode (0 FP32, 1 INT8, 2 FP16), model-color-format NvDsInferFormat (0 RGB),
scaling-filter NvBufSurfTransform_Inter (0 nearest, 1 bilinear, 2 GPU-cubic), infer-dims is c;h;w, and paths
are resolved against the config file's folder (gstnvinfer_property_parser.cpp, get_absolute_file_path),
so they are written relative to it.

Where nvinfer cannot do what our preprocessing does, the result says so in ``warnings``, with the size of
the difference: one net-scale-factor for three channel std values, and no centre crop.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from .. import __version__
from ..artifacts import atomic_write, check_outputs, manifest_path, sha256_file
from ..calibration.cache import load_ranges
from ..data.labels import class_names, read_labels
from ..data.preprocess import DataConfig, resize_size
from ..errors import DataError, UsageError
from ..export.onnx_export import OUTPUT_NAME
from ..runtime.backends.registry import Artifact, parse_spec
from ..runtime.harness.predict import data_config
from ..runtime.tensorrt.calibration_table import (ALGORITHMS, CalibrationTable, parse_calibration_table,
                                                  table_from_ranges, version_code)

NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2}  # NvDsInferNetworkMode, nvdsinfer_context.h
SCALING_FILTERS = {"nearest": 0, "bilinear": 1, "bicubic": 2}  # NvBufSurfTransform_Inter: Algo1 is GPU-cubic
RGB = 0  # NvDsInferFormat_RGB
CLASSIFIER = 1  # network-type: NvDsInferNetworkType_Classifier
NHWC = 1  # network-input-order: NvDsInferTensorOrder_kNHWC
# The header of a table made from our ranges names the TensorRT of DeepStream 6.3 and 7.0 unless told another.
DEFAULT_TENSORRT = "8.6.1"
# nvinfer calibrates (reads the table) with IInt8EntropyCalibrator2, whatever method made the scales.
NVINFER_ALGORITHM = ALGORITHMS["entropy"]
SOURCE_HOPS = 3  # engine -> INT8/FP16 ONNX -> FP32 ONNX: the export manifest with the data config is that far


@dataclass(frozen=True)
class DeepStreamConfig:
    artifact: str  # a .onnx file or a TensorRT engine
    output: str = "config_infer_primary.txt"
    batch_size: int | None = None  # None: the engine's profile maximum, a static ONNX's batch, else 1
    classifier_threshold: float = 0.0
    gie_unique_id: int = 1
    labels: str | None = None  # one class name per line; None: ImageNet's for 1,000 classes, else indices
    calib_cache: str | None = None  # our calibration cache (JSON) or a TensorRT calibration table: INT8 for nvinfer
    calib_method: str | None = None  # which of the cache's entries, where it holds several for this model
    tensorrt_version: str = DEFAULT_TENSORRT  # the header of a table made from our ranges


@dataclass
class DeepStreamResult:
    config: Path
    labels: Path
    calib_table: Path | None
    keys: dict[str, str]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Normalization:
    """nvinfer's y = net-scale-factor * (x - offsets[c]) standing for ours, y = (x / 255 - mean[c]) / std[c]."""

    scale: float
    offsets: tuple[float, float, float]
    max_error: float  # largest |nvinfer's y - ours| over pixel values 0..255, in units of the normalised input
    max_relative: float  # largest |scale / ours - 1| over the channels


def normalization(mean: tuple[float, ...], std: tuple[float, ...]) -> Normalization:
    """The offsets are exact (255 * mean); the one scale factor is the value that minimises the largest error
    over the channels and pixel values. That error, |s - 1/(255 std_c)| * |x - offset_c|, is largest at x = 0
    or 255, so the best s lies where two channels' error lines cross, or on one channel's exact value."""
    offsets = tuple(255.0 * m for m in mean)
    wanted = [1.0 / (255.0 * s) for s in std]
    reach = [max(o, 255.0 - o) for o in offsets]  # how far a pixel value can lie from the offset

    def error(scale: float) -> float:
        return max(abs(scale - w) * r for w, r in zip(wanted, reach))

    crossings = [(wanted[i] * reach[i] + wanted[j] * reach[j]) / (reach[i] + reach[j])
                 for i, j in itertools.combinations(range(len(wanted)), 2)]
    best = min(wanted + crossings, key=error)
    return Normalization(best, offsets, error(best), max(abs(best / w - 1.0) for w in wanted))


RAW_PIXELS = Normalization(1.0, (0.0, 0.0, 0.0), 0.0, 0.0)  # a uint8-input model normalises inside its graph


def normalization_warning(norm: Normalization, std: tuple[float, ...]) -> str | None:
    if norm.max_error == 0.0:
        return None
    return (f"nvinfer has one net-scale-factor for all channels and the model's std differs per channel "
            f"({', '.join(f'{s:g}' for s in std)}): net-scale-factor={norm.scale:.8g} minimises the error, which "
            f"is at most {norm.max_error:.4f} in normalised units ({norm.max_relative:.2%} of a channel's scale); "
            "`eca-deploy export --input-format uint8-nhwc` bakes the exact normalisation into the graph instead")


def resize_warning(config: DataConfig, imgsz: int) -> str:
    """nvinfer scales the whole frame (or object) to the network size; ours resizes, then centre-crops."""
    short = resize_size(imgsz, config)
    return (f"nvinfer has no centre crop: it scales the whole frame or object into {imgsz}x{imgsz}, keeping its "
            f"aspect ratio and padding both sides (maintain-aspect-ratio=1, symmetric-padding=1), where our "
            f"preprocessing resizes the shorter side to {short} and crops the central {imgsz}x{imgsz} "
            f"({imgsz / short:.1%} of it); to match, crop each frame to its central square of side "
            f"{imgsz / short:.4g} x its shorter side upstream (nvvideoconvert src-crop, or a Gst-nvdspreprocess ROI)"
            + ("; Pillow's filter also antialiases a downscale, nvinfer's does not"
               if config.interpolation != "nearest" else ""))


LOGITS_WARNING = ("the model outputs logits, not probabilities: nvinfer's classifier parser attaches the top class "
                  "only where its value exceeds both classifier-threshold and 0 (parseAttributesFromSoftmaxLayers)")


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
    tensorrt_version: str | None  # an engine's


def _source_of(path: Path, manifest: dict | None) -> Path | None:
    """The file ``path`` was made from, where its manifest names it and the bytes there are still those."""
    if not manifest:
        return None
    named, sha = manifest.get("source_onnx") or manifest.get("source"), \
        manifest.get("source_onnx_sha256") or manifest.get("source_sha256")
    if not isinstance(named, str):
        return None
    for candidate in (Path(named), path.parent / Path(named).name):
        if candidate.is_file() and sha256_file(candidate) == sha:
            return candidate
    return None


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
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    image = next(i for i in graph.input if i.name not in weights)
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                 for d in image.type.tensor_type.shape.dim)
    output = graph.output[0]
    classes = output.type.tensor_type.shape.dim[-1].dim_value
    return dims, image.type.tensor_type.elem_type == onnx.TensorProto.UINT8, output.name, classes


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
    fp32 = next((a for a in chain if a.kind == "onnx" and a.precision()[0] == "fp32"), None)
    precision = artifact.precision()[0]
    if artifact.kind == "onnx":
        shape, uint8, output, classes = _graph_io(artifact.path)
        max_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        return ModelFacts(artifact.path, None, precision, shape, uint8, output, classes, max_batch,
                          _recorded_data_config(chain), sha256_file(fp32.path) if fp32 else None, None, None)
    return _engine_facts(artifact, chain, onnx_path, fp32, precision)


def _engine_facts(artifact: Artifact, chain: list[Artifact], onnx_path: Path | None, fp32: Artifact | None,
                  precision: str) -> ModelFacts:
    manifest = artifact.manifest
    if not manifest or "input" not in manifest or "profile" not in manifest:
        raise DataError(f"{artifact.label} has no manifest from `eca-deploy build` ({manifest_path(artifact.path)}):"
                        " its input size and batch profile cannot be read without TensorRT")
    shape = tuple(manifest["profile"]["max"])
    output, classes = OUTPUT_NAME, next((a.manifest.get("num_classes") for a in chain
                                         if isinstance((a.manifest or {}).get("num_classes"), int)), None)
    if onnx_path is not None:
        _, _, output, classes = _graph_io(onnx_path)
    if not classes:
        raise DataError(f"cannot tell how many classes {artifact.label} has: its source ONNX is not beside it")
    cache = ((manifest.get("calibration") or {}).get("cache"))
    return ModelFacts(onnx_path, artifact.path, precision, shape, manifest["input"].get("dtype") == "uint8",
                      output, classes, shape[0], _recorded_data_config(chain),
                      sha256_file(fp32.path) if fp32 else manifest.get("source_onnx_sha256"),
                      Path(cache) if cache else None, manifest.get("tensorrt_version"))


def batch_size(facts: ModelFacts, wanted: int | None) -> int:
    if wanted is None:
        return facts.max_batch or 1
    if facts.max_batch is not None and wanted > facts.max_batch:
        what = "its profile's maximum" if facts.engine else "its static batch"
        raise UsageError(f"--batch-size {wanted} is more than {(facts.engine or facts.onnx).name} takes "
                         f"({what} is {facts.max_batch})")
    if facts.engine is None and facts.max_batch is not None and wanted != facts.max_batch:
        raise UsageError(f"{facts.onnx.name} has a static batch of {facts.max_batch}; --batch-size must be that")
    return wanted


def coverage_warning(onnx_path: Path, scaled: dict) -> str:
    """Our ranges cover the tensors quantize puts Q/DQ on; TensorRT's implicit INT8 wants one per tensor."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    tensors = {name for node in graph.node for name in node.output} | {i.name for i in graph.input}
    return (f"the table holds scales for {len(tensors & set(scaled))} of the {len(tensors)} tensors of "
            f"{onnx_path.name} (the inputs of the layers quantize makes INT8); TensorRT runs a layer whose "
            "tensors have no scale in higher precision")


def _ranges_table(cache: Path, facts: ModelFacts, method: str | None, version: str,
                  warnings: list[str]) -> CalibrationTable:
    """A table from our calibration cache's entry for this model: scale = amax / 127 per calibrated tensor."""
    if facts.fp32_onnx_sha256 is None:
        raise DataError("the FP32 ONNX our calibration ranges are keyed by is not beside the artifact")
    try:
        entries = json.loads(cache.read_text(encoding="utf-8")).get("entries", {})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise DataError(f"{cache} is neither a TensorRT calibration table nor an eca-deploy calibration cache "
                        f"({type(exc).__name__})") from None
    mine = {key: entry.get("method") for key, entry in entries.items()
            if key.startswith(facts.fp32_onnx_sha256 + "|") and isinstance(entry, dict) and "ranges" in entry}
    if method is None and len(mine) > 1:
        method = "entropy"  # the method of nvinfer's own calibrator (IInt8EntropyCalibrator2)
    chosen = [key for key, m in mine.items() if method in (None, m)]
    if len(chosen) != 1:
        held = ", ".join(sorted(set(mine.values()))) or "none"
        why = "several" if chosen else "no"
        raise DataError(f"{cache} holds {why} calibration entries for this model{f' by {method}' if method else ''}"
                        f" (methods: {held}); choose one with --calib-method")
    lookup = load_ranges(cache, chosen[0], sorted(entries[chosen[0]]["ranges"]))
    if lookup.ranges is None:
        raise DataError(f"{cache}: {lookup.problem}")
    warnings.append(coverage_warning(facts.onnx, lookup.ranges))
    return table_from_ranges({name: r.amax for name, r in lookup.ranges.items()}, version_code(version),
                             NVINFER_ALGORITHM)


def calibration_table(cfg: DeepStreamConfig, facts: ModelFacts, warnings: list[str]) -> CalibrationTable | None:
    """The table nvinfer needs to build INT8 from a float ONNX (implicit calibration), or None."""
    source = Path(cfg.calib_cache) if cfg.calib_cache else facts.calibration_cache
    if source is None:
        return None
    if cfg.calib_cache is None and not source.is_file():
        warnings.append(f"the engine's calibration cache {source} is missing: nvinfer can run the engine, but not "
                        "rebuild it in INT8 from its ONNX")
        return None
    text = source.read_text(encoding="ascii", errors="replace")
    if text.startswith("TRT-"):
        table = parse_calibration_table(text, str(source))
    else:
        table = _ranges_table(source, facts, cfg.calib_method, facts.tensorrt_version or cfg.tensorrt_version,
                              warnings)
    if table.algorithm != NVINFER_ALGORITHM:
        warnings.append(f"{source.name} says {table.algorithm}; its header is written as {NVINFER_ALGORITHM}, the "
                        "calibrator nvinfer reads tables with (TensorRT ignores a table of another algorithm)")
        table = table.with_algorithm(NVINFER_ALGORITHM)
    return table


def network_mode(cfg: DeepStreamConfig, facts: ModelFacts) -> int:
    if cfg.calib_cache and (facts.precision != "fp32" or facts.engine is not None):
        raise UsageError(f"--calib-cache is for an FP32 ONNX that nvinfer builds in INT8; "
                         f"{(facts.engine or facts.onnx).name} is a {facts.precision} "
                         f"{'engine' if facts.engine else 'ONNX'}")
    return NETWORK_MODES["int8" if cfg.calib_cache else facts.precision]


def _relative(path: Path, folder: Path) -> str:
    text = os.path.relpath(path.resolve(), folder.resolve())
    if "\n" in text or "\r" in text:
        raise UsageError(f"{path} has a line break in its name, which a DeepStream config cannot hold")
    return text.replace("\\", "\\\\")  # GKeyFile reads backslash escapes in values


def labels_line(names: list[str]) -> str:
    """nvinfer's classifier labels: one line per output layer, the classes separated by ';'."""
    bad = next((n for n in names if ";" in n or "\n" in n), None)
    if bad is not None:
        raise DataError(f"class name '{bad}' holds a ';' or a line break, which nvinfer's labels file cannot")
    return ";".join(names) + "\n"


def write_deepstream_config(cfg: DeepStreamConfig) -> DeepStreamResult:
    artifact = parse_spec(cfg.artifact)
    facts = model_facts(artifact)
    config = Path(cfg.output)
    labels_path = config.with_name(f"{config.stem}_labels.txt")
    table_path = config.with_name(f"{config.stem}_calib.table")
    warnings: list[str] = []
    mode = network_mode(cfg, facts)
    table = calibration_table(cfg, facts, warnings) if mode == NETWORK_MODES["int8"] else None
    check_outputs([config, labels_path, table_path if table else None],
                  [*artifact.inputs, cfg.calib_cache, cfg.labels, facts.calibration_cache])
    names = class_names(facts.num_classes, read_labels(cfg.labels) if cfg.labels else None, str(cfg.labels)) \
        or [str(i) for i in range(facts.num_classes)]
    keys = config_keys(cfg, facts, mode, config.parent, labels_path, table_path if table else None, warnings)
    atomic_write(labels_path, labels_line(names))
    if table:
        atomic_write(table_path, table.text())
    atomic_write(config, config_text(keys, artifact.label))
    return DeepStreamResult(config, labels_path, table_path if table else None, keys, warnings)


def config_keys(cfg: DeepStreamConfig, facts: ModelFacts, mode: int, folder: Path, labels: Path,
                table: Path | None, warnings: list[str]) -> dict[str, str]:
    imgsz = facts.input_shape[2] if facts.uint8_input else facts.input_shape[-1]
    norm = RAW_PIXELS if facts.uint8_input else normalization(facts.data_config.mean, facts.data_config.std)
    keys = {"gie-unique-id": str(cfg.gie_unique_id), "network-type": str(CLASSIFIER)}
    if facts.onnx:
        keys["onnx-file"] = _relative(facts.onnx, folder)
    if facts.engine:
        keys["model-engine-file"] = _relative(facts.engine, folder)
    if table:
        keys["int8-calib-file"] = _relative(table, folder)
    keys.update({
        "batch-size": str(batch_size(facts, cfg.batch_size)),
        "network-mode": str(mode),
        "infer-dims": f"3;{imgsz};{imgsz}",
        "model-color-format": str(RGB),
        "net-scale-factor": f"{norm.scale:.8g}",
        "offsets": ";".join(f"{o:.6g}" for o in norm.offsets),
        "maintain-aspect-ratio": "1",
        "symmetric-padding": "1",
        "scaling-filter": str(SCALING_FILTERS[facts.data_config.interpolation]),
        "labelfile-path": _relative(labels, folder),
        "output-blob-names": facts.output_name,
        "classifier-threshold": f"{cfg.classifier_threshold:g}",
    })
    if facts.uint8_input:
        keys["network-input-order"] = str(NHWC)
        warnings.append(uint8_hook())
    else:
        warnings += [w for w in (normalization_warning(norm, facts.data_config.std),) if w]
    warnings += [resize_warning(facts.data_config, imgsz), LOGITS_WARNING]
    return keys


def uint8_hook() -> str:
    """A uint8-input model (export --input-format uint8-nhwc) does its own normalisation: net-scale-factor=1,
    offsets 0. What nvinfer's own preprocessing cannot do for it is said here."""
    return ("the model takes uint8 NHWC pixels and normalises them itself (net-scale-factor=1, offsets 0); "
            "nvinfer's own preprocessing writes float32 tensors (nvdsinfer_context_impl.cpp), so feed it uint8 "
            "tensors from Gst-nvdspreprocess (input-tensor-from-meta=1) or use the float model")


def config_text(keys: dict[str, str], source: str) -> str:
    lines = [f"# Gst-nvinfer config for {source}, written by eca-deploy {__version__}",
             "# network-mode: 0 FP32, 1 INT8, 2 FP16; model-color-format 0 = RGB; infer-dims = c;h;w",
             "[property]"]
    return "\n".join(lines + [f"{key}={value}" for key, value in keys.items()]) + "\n"


def pick_artifact(report: dict) -> str | None:
    """The artifact a pipeline hands to DeepStream: of the ONNX files and engines that passed (TensorRT runs
    neither OpenVINO IRs nor the cpu-layout INT8 ONNX), the fastest at the smallest batch timed. A stand-in
    for the report's recommended artifact where that is not yet chosen."""
    def latency(row: dict) -> float:
        entries = (row.get("bench") or {}).get("batches") or []
        smallest = min((e["batch"] for e in entries), default=None)
        return min((e["p50"] for e in entries if e["batch"] == smallest), default=float("inf"))

    usable = [row for row in report["rows"] if row.get("status") == "pass" and row.get("format") in ("ONNX", "TensorRT")
              and not str(row.get("identity", "")).startswith("openvino:") and row.get("layout") != "cpu"]
    return min(usable, key=latency)["spec"] if usable else None
