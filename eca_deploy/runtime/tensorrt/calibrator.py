"""LEGACY PATH, TensorRT 8.6 and 10.x only: the implicit INT8 calibrator behind ``--legacy-precision int8``.

TensorRT 11 removed IInt8Calibrator and the INT8 builder flag; there, INT8 comes from an ONNX
with explicit Q/DQ (``eca-deploy quantize``). On 8.6 / 10.x (JetPack 6) this calibrator feeds
TensorRT batches from the calibration data sources through a pycuda device buffer, and keeps
the scales in a calibration cache so the next build needs no images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...artifacts import read_manifest, sha256_file, write_artifact
from ...errors import DataError, EngineError
from .compat import trt_major, version_text

METHODS = ("entropy", "minmax")


@dataclass(frozen=True)
class CacheSource:
    """What the scales of a build come from: the ONNX and the data hashes, and whether the cache on disk
    (``<cache>.json`` records its own) was made from exactly those, so TensorRT may read it."""

    onnx_sha256: str
    data_hash: str | None
    reuse: bool


def cache_source(cache_path: Path, onnx_sha256: str, dataset: Any) -> CacheSource:
    """A cache is reused only when it was made from this ONNX and, with --calib-data, this data: TensorRT
    looks scales up by tensor name, so a retrained ONNX or new images would silently get the old ones."""
    recorded = read_manifest(cache_path) if cache_path.is_file() else None
    if recorded and recorded.get("sha256") != sha256_file(cache_path):
        recorded = None  # the cache was rewritten by something else since its record was made
    made_from = (recorded.get("source_onnx_sha256"), recorded.get("data_hash")) if recorded else None
    if dataset is not None:
        return CacheSource(onnx_sha256, dataset.data_hash, made_from == (onnx_sha256, dataset.data_hash))
    if made_from is None or made_from[0] != onnx_sha256:
        why = "was made from another ONNX" if made_from else f"has no record ({cache_path.name}.json) of its ONNX"
        raise EngineError(f"the calibration cache {cache_path} {why}; pass --calib-data to calibrate this ONNX")
    return CacheSource(onnx_sha256, made_from[1], True)


def attach_implicit_calibrator(trt: Any, cuda: Any, builder: Any, config: Any, input_name: str,
                               batch_shape: tuple[int, ...], dataset: Any, cache_path: Path,
                               source: CacheSource, method: str = "entropy") -> Any:
    """Give ``config`` an implicit INT8 calibrator and the fixed-shape profile it calibrates with.

    ``dataset`` is a data.sources Dataset, or None when ``cache_path`` already holds the scales.
    Returns the calibrator: its ``error`` is set when the data failed mid-build (TensorRT only sees
    "no more batches"), and ``images`` / ``cache_reused`` describe the run for the manifest.
    """
    if trt_major(trt.__version__) >= 11:
        raise EngineError(f"TensorRT {version_text(trt.__version__)} has no implicit INT8 calibrator; "
                          "build a Q/DQ ONNX from `eca-deploy quantize --precision int8` instead")
    if method not in METHODS:
        raise EngineError(f"--calib-method for TensorRT must be one of {', '.join(METHODS)}, got '{method}'")
    base = trt.IInt8EntropyCalibrator2 if method == "entropy" else trt.IInt8MinMaxCalibrator

    class ImplicitCalibrator(base):
        def __init__(self):
            base.__init__(self)  # pybind11 trampolines crash unless the base is initialised explicitly
            self.error: Exception | None = None
            self.images = 0
            self.cache_reused = False
            self._batches = None
            self._device = cuda.mem_alloc(int(np.prod(batch_shape)) * np.dtype(np.float32).itemsize)

        def get_batch_size(self):
            return batch_shape[0]

        def get_batch(self, names):
            try:
                return self._next_batch()
            except Exception as exc:  # an exception must not cross into TensorRT's C++ caller
                self.error = exc
                return None

        def _next_batch(self):
            if self._batches is None:
                if dataset is None:
                    raise DataError(f"the calibration cache {cache_path} is empty or unusable and no "
                                    "--calib-data was given")
                self._batches = dataset.batches(batch_shape[0], desc="TensorRT INT8 calibration")
            for images, _ in self._batches:
                if images.shape[0] != batch_shape[0]:
                    continue  # the short last batch: the calibration profile has one fixed shape
                cuda.memcpy_htod(self._device, np.ascontiguousarray(images, dtype=np.float32))
                self.images += images.shape[0]
                return [int(self._device)]
            if self.images == 0:
                raise DataError(f"calibration data gave fewer images than one batch of {batch_shape[0]}; "
                                "lower --calib-batch or add images")
            return None

        def read_calibration_cache(self):
            if source.reuse and cache_path.is_file() and cache_path.stat().st_size:
                self.cache_reused = True
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache):
            # the hashes beside the cache decide whether a later build may reuse it
            write_artifact(cache_path, bytes(cache), "calibration-cache", source_onnx_sha256=source.onnx_sha256,
                           data_hash=source.data_hash, images=self.images, method=method)

        def free(self):
            self._device.free()

    calibrator = ImplicitCalibrator()
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, batch_shape, batch_shape, batch_shape)
    config.set_calibration_profile(profile)
    config.int8_calibrator = calibrator
    return calibrator
