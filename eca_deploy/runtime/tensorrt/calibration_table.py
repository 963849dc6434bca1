"""TensorRT's INT8 calibration table (the "calibration cache" of the implicit, legacy INT8 path), as text.

The format, as TensorRT writes it through IInt8Calibrator::writeCalibrationCache and trtexec --calib and
DeepStream's int8-calib-file read it: a first line ``TRT-<version>-<algorithm>`` (``TRT-8601-EntropyCalibration2``),
then one ``<tensor>: <scale>`` line per tensor, the scale a float32 (dynamic range / 127) written as the hex of
its big-endian bytes. NVIDIA's own reader decodes it so: ``struct.unpack("!f", bytes.fromhex(hex_value))``
(NVIDIA/TensorRT-Model-Optimizer, modelopt/onnx/quantization/calib_utils.py, import_scales_from_calib_cache,
commit 0991404). Pure text: no TensorRT needed to read or write it.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass

from ...errors import DataError

HEADER = re.compile(r"TRT-(\d+)-(\w+)")
# TensorRT prints the 32 bits with std::hex, so a small value may come without leading zeros: 1 to 8 digits.
ENTRY = re.compile(r"(.+): ([0-9a-fA-F]{1,8})")
INT8_MAX = 127  # a symmetric INT8 range: scale = amax / 127
# The algorithm names TensorRT writes (CalibrationAlgoType): nvinfer's own calibrator is IInt8EntropyCalibrator2
# (DeepStream 6.2 sources/libs/nvdsinfer/nvdsinfer_context_impl.cpp, NvDsInferInt8Calibrator), and TensorRT
# ignores a table whose algorithm differs from the calibrator that reads it.
ALGORITHMS = {"entropy": "EntropyCalibration2", "minmax": "MinMaxCalibration", "legacy": "LegacyCalibration",
              "entropy1": "EntropyCalibration"}


def version_code(version: str) -> int:
    """TensorRT's version as the number in the header: NV_TENSORRT_VERSION of NvInferVersion.h, which is
    major*1000 + minor*100 + patch up to 8.x (8.6.1 -> 8601) and major*10000 + minor*100 + patch from 10.0."""
    try:
        major, minor, patch = (int(part) for part in (version.split(".") + ["0", "0"])[:3])
    except ValueError:
        raise DataError(f"'{version}' is not a TensorRT version like 8.6.1") from None
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


@dataclass(frozen=True)
class CalibrationTable:
    """A parsed table: the header's version number and algorithm, and each tensor's scale (dynamic range / 127)."""

    version: int
    algorithm: str
    scales: dict[str, float]

    def text(self) -> str:
        """The table as TensorRT writes it; each scale as 8 hex digits (bytes.fromhex needs an even count)."""
        lines = [f"TRT-{self.version}-{self.algorithm}"]
        lines += [f"{name}: {struct.pack('>f', scale).hex()}" for name, scale in self.scales.items()]
        return "\n".join(lines) + "\n"

    def with_algorithm(self, algorithm: str) -> "CalibrationTable":
        return CalibrationTable(self.version, algorithm, self.scales)


def parse_calibration_table(text: str, source: str = "calibration table") -> CalibrationTable:
    """The table in ``text``; DataError naming the first line that is not TensorRT's format."""
    lines = text.splitlines()
    header = HEADER.fullmatch(lines[0]) if lines else None
    if header is None:
        raise DataError(f"{source} is not a TensorRT calibration table (its first line is not TRT-<version>-"
                        "<algorithm>)")
    scales: dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        entry = ENTRY.fullmatch(line)
        if entry is None:
            raise DataError(f"{source} line {number} is not '<tensor>: <hex scale>'")
        scales[entry.group(1)] = struct.unpack(">f", int(entry.group(2), 16).to_bytes(4, "big"))[0]
    if not scales:
        raise DataError(f"{source} holds no tensor scales")
    return CalibrationTable(int(header.group(1)), header.group(2), scales)


def table_from_ranges(amax: dict[str, float], version: int, algorithm: str) -> CalibrationTable:
    """A table of the symmetric ranges ``amax`` (largest |x| kept per tensor): scale = amax / 127."""
    bad = next((name for name, value in amax.items() if not (math.isfinite(value) and value > 0)), None)
    if bad is not None:
        raise DataError(f"tensor {bad} has no usable range ({amax[bad]:g}) for a calibration table")
    return CalibrationTable(version, algorithm, {name: value / INT8_MAX for name, value in amax.items()})
