"""The INT8 calibration table nvinfer reads (int8-calib-file) to build a float ONNX in INT8, the legacy implicit
calibration of TensorRT 8.5 to 10.x: from our calibration cache's ranges, or from the TensorRT cache an engine's
legacy INT8 build recorded."""

from __future__ import annotations

from pathlib import Path

import onnx

from ..calibration.int8.cache import load_ranges, read_cache
from ..errors import DataError
from ..runtime.tensorrt.calibration_table import (ALGORITHMS, CalibrationTable, parse_calibration_table,
                                                  table_from_ranges, version_code)
from .artifact_facts import ModelFacts

# The header of a table made from our ranges names the TensorRT of DeepStream 6.3 and 7.0 unless told another.
DEFAULT_TENSORRT = "8.6.1"
# nvinfer calibrates (reads the table) with IInt8EntropyCalibrator2, whatever method made the scales.
NVINFER_ALGORITHM = ALGORITHMS["entropy"]


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
        entries = read_cache(cache)["entries"]
    except DataError as exc:
        raise DataError(f"{cache} is neither a TensorRT calibration table nor an eca-deploy calibration cache "
                        f"({type(exc.__cause__ or exc).__name__})") from None
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


def calibration_table(given: str | None, method: str | None, version: str | None, facts: ModelFacts,
                      warnings: list[str]) -> CalibrationTable | None:
    """The table nvinfer needs to build INT8 from a float ONNX: from ``given`` (our cache or a TensorRT table;
    ``method`` picks our cache's entry, ``version`` names TensorRT in its header), else the one an engine's
    manifest records; None where there is none."""
    source = Path(given) if given else facts.calibration_cache
    if source is None:
        return None
    if given is None and not source.is_file():
        warnings.append(f"the engine's calibration cache {source} is missing: nvinfer can run the engine, but not "
                        "rebuild it in INT8 from its ONNX")
        return None
    text = source.read_text(encoding="ascii", errors="replace")
    if text.startswith("TRT-"):
        table = parse_calibration_table(text, str(source))
    else:
        table = _ranges_table(source, facts, method, version or DEFAULT_TENSORRT, warnings)
    if table.algorithm != NVINFER_ALGORITHM:
        warnings.append(f"{source.name} says {table.algorithm}; its header is written as {NVINFER_ALGORITHM}, the "
                        "calibrator nvinfer reads tables with (TensorRT ignores a table of another algorithm)")
        table = table.with_algorithm(NVINFER_ALGORITHM)
    return table

