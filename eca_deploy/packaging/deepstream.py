"""A DeepStream Gst-nvinfer config for an ECA classifier (``network-type=1``), its labels file and, for legacy
INT8, its calibration table.

Every key is one that DeepStream's gstnvinfer_property_parser.h defines, with nvinfer's meanings:
network-mode is NvDsInferNetworkMode (0 FP32, 1 INT8, 2 FP16), model-color-format NvDsInferFormat (0 RGB),
scaling-filter NvBufSurfTransform_Inter (0 nearest, 1 bilinear, 2 GPU-cubic), infer-dims is c;h;w, and paths
are resolved against the config file's folder (gstnvinfer_property_parser.cpp, get_absolute_file_path),
so they are written relative to it.

Where nvinfer cannot do what our preprocessing does, the result says so in ``warnings``, with the size of
the difference (nvinfer_preprocess.py); the INT8 table comes from nvinfer_int8.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..artifacts import atomic_write, check_outputs
from ..data.labels import class_names, read_labels
from ..errors import DataError, UsageError
from ..precisions import is_exported
from ..runtime.harness.recommend import recommend
from ..runtime.registry import parse_spec
from .artifact_facts import ModelFacts, model_facts
from .nvinfer_int8 import calibration_table
from .nvinfer_preprocess import (LOGITS_WARNING, RAW_PIXELS, SCALING_FILTERS, normalization, normalization_warning,
                                 resize_warning, uint8_hook)

NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2}  # NvDsInferNetworkMode, nvdsinfer_context.h
RGB = 0  # NvDsInferFormat_RGB
CLASSIFIER = 1  # network-type: NvDsInferNetworkType_Classifier
NHWC = 1  # network-input-order: NvDsInferTensorOrder_kNHWC


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
    tensorrt_version: str | None = None  # named in a table made from our ranges (None: 8.6.1)


@dataclass
class DeepStreamResult:
    config: Path
    labels: Path
    calib_table: Path | None
    keys: dict[str, str]
    warnings: list[str] = field(default_factory=list)


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


def network_mode(cfg: DeepStreamConfig, facts: ModelFacts) -> int:
    if cfg.calib_cache and (not is_exported(facts.precision) or facts.engine is not None):
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
    table = calibration_table(cfg.calib_cache, cfg.calib_method, cfg.tensorrt_version, facts, warnings) \
        if mode == NETWORK_MODES["int8"] else None
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
    elif normalization_warning(norm, facts.data_config.std):
        warnings.append(normalization_warning(norm, facts.data_config.std))
    warnings += [resize_warning(facts.data_config, imgsz), LOGITS_WARNING]
    return keys


def config_text(keys: dict[str, str], source: str) -> str:
    lines = [f"# Gst-nvinfer config for {source}, written by eca-deploy {__version__}",
             "# network-mode: 0 FP32, 1 INT8, 2 FP16; model-color-format 0 = RGB; infer-dims = c;h;w",
             "[property]"]
    return "\n".join(lines + [f"{key}={value}" for key, value in keys.items()]) + "\n"


def pick_artifact(report: dict, by: str = "latency") -> str | None:
    """The artifact a pipeline hands to DeepStream: the one the report would recommend (report.recommend) among
    those nvinfer can run: ONNX files and engines that passed (TensorRT runs neither OpenVINO IRs nor the
    cpu-layout INT8 ONNX)."""
    usable = [{"device": "", **row} for row in report["rows"] if row.get("format") in ("ONNX", "TensorRT")
              and not str(row.get("identity", "")).startswith("openvino:") and row.get("layout") != "cpu"]
    chosen = recommend(usable, by)
    return chosen[0]["spec"] if chosen else None
