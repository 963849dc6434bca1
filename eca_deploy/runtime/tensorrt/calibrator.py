"""LEGACY PATH, TensorRT 8.5 to 10.x only: the data and the cache of the implicit INT8 calibrator behind
``--legacy-precision int8``.

TensorRT 11 removed IInt8Calibrator and the INT8 builder flag; there, INT8 comes from an ONNX with
explicit Q/DQ (``eca-deploy quantize``). Polygraphy's ``Calibrator`` (polygraphy/backend/trt/calibrator.py)
is the calibrator: it copies each batch to the GPU and reads/writes the cache file. What stays ours:
the batches from our data sources, the errors they raise (Polygraphy's get_batch catches only its own
exceptions, so ours would vanish into TensorRT's trampoline), and the cache's identity and checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ...artifacts import read_manifest, sha256_file, write_artifact
from ...errors import DataError, EngineError
from .calibration_table import parse_calibration_table
from .compat import trt_major, version_text

METHODS = ("entropy", "minmax")


@dataclass(frozen=True)
class CacheSource:
    """What the scales of a build come from: the ONNX and data hashes and the method, and whether the cache
    on disk (``<cache>.json`` records its own) was made from exactly those, so TensorRT may read it."""

    onnx_sha256: str
    data_hash: str | None
    method: str
    reuse: bool


def cache_source(cache_path: Path, onnx_sha256: str, dataset: Any, method: str) -> CacheSource:
    """A cache is reused only when it was made from this ONNX, with this method and, with --calib-data, this
    data: TensorRT looks scales up by tensor name, so a retrained ONNX, new images or another method's
    cache would silently give the old scales (and a manifest naming the wrong method)."""
    if method not in METHODS:
        raise EngineError(f"--calib-method for TensorRT must be one of {', '.join(METHODS)}, got '{method}'")
    recorded = read_manifest(cache_path) if cache_path.is_file() else None
    if recorded and recorded.get("sha256") != sha256_file(cache_path):
        recorded = None  # the cache was rewritten by something else since its record was made
    made_from = (recorded.get("source_onnx_sha256"), recorded.get("data_hash"), recorded.get("method")) \
        if recorded else None
    if dataset is not None:
        return CacheSource(onnx_sha256, dataset.data_hash, method,
                           made_from == (onnx_sha256, dataset.data_hash, method))
    if made_from is None or made_from[0] != onnx_sha256:
        why = "was made from another ONNX" if made_from else f"has no record ({cache_path.name}.json) of its ONNX"
        raise EngineError(f"the calibration cache {cache_path} {why}; pass --calib-data to calibrate this ONNX")
    if made_from[2] != method:
        raise EngineError(f"the calibration cache {cache_path} holds {made_from[2]} scales, not {method}; pass "
                          f"--calib-data to calibrate with {method}, or --calib-method {made_from[2]}")
    return CacheSource(onnx_sha256, made_from[1], method, True)


@dataclass
class CalibrationData:
    """The data loader Polygraphy's Calibrator iterates: {input name: float32 batch} per full batch.

    The short last batch is dropped (the calibration profile has one fixed shape). An error is kept in
    ``error`` and ends the data, to be raised after the build; ``images`` counts what TensorRT was given.
    """

    dataset: Any  # a data.sources Dataset, or None when the cache holds the scales
    input_name: str
    batch: int
    cache_path: Path
    images: int = 0
    error: Exception | None = field(default=None, repr=False)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        try:
            yield from self._batches()
        except Exception as exc:  # an exception must not cross into TensorRT's C++ caller
            self.error = exc

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        if self.dataset is None:
            raise DataError(f"the calibration cache {self.cache_path} is empty or unusable and no --calib-data "
                            "was given")
        for images, _ in self.dataset.batches(self.batch, desc="TensorRT INT8 calibration"):
            if images.shape[0] == self.batch:
                self.images += images.shape[0]
                yield {self.input_name: np.ascontiguousarray(images, dtype=np.float32)}
        if self.images == 0:
            raise DataError(f"calibration data gave fewer images than one batch of {self.batch}; lower "
                            "--batch-size or add images")


def calibration_base(trt: Any, method: str) -> type:
    """The TensorRT calibrator class Polygraphy's Calibrator derives from (its BaseClass argument); the method
    was checked by :func:`cache_source`."""
    if trt_major(trt) >= 11:
        raise EngineError(f"TensorRT {version_text(trt)} has no implicit INT8 calibrator; build a Q/DQ ONNX from "
                          "`eca-deploy quantize --precision int8` instead")
    return trt.IInt8EntropyCalibrator2 if method == "entropy" else trt.IInt8MinMaxCalibrator


def read_calibration_cache(path: Path) -> bytes | None:
    """The cache's bytes when the file exists and parses as a TensorRT calibration cache, else None."""
    data = path.read_bytes() if path.is_file() else b""
    try:
        parse_calibration_table(data.decode("ascii", "replace"))
    except DataError:
        return None
    return data


def record_calibration_cache(written: Path, cache_path: Path, source: CacheSource, images: int) -> bool:
    """Keep the cache the build wrote at ``written`` as ``cache_path`` with its record (the hashes and method
    that decide a later reuse). A failed write inside TensorRT's trampoline is only printed (pyInt8.cpp,
    10.3), so the file is checked: False, and nothing recorded, when it is missing or does not parse."""
    data = read_calibration_cache(written)
    if data is None:
        return False
    write_artifact(cache_path, data, "calibration-cache", source_onnx_sha256=source.onnx_sha256,
                   data_hash=source.data_hash, images=images, method=source.method)
    return read_calibration_cache(cache_path) is not None
