"""The legacy implicit INT8 calibrator's data and cache, on real decoded images, without TensorRT or a GPU.

Polygraphy's Calibrator (polygraphy/backend/trt/calibrator.py) iterates :class:`CalibrationData` and
copies each batch to the GPU; what is tested here is ours: which batches it gets, in what order and
shape, what happens to a short last batch and to too few images, and the cache's identity and checks.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from eca_deploy.data.sources import load_dataset
from eca_deploy.errors import DataError, EngineError
from eca_deploy.runtime.tensorrt.calibrator import (CacheSource, CalibrationData, cache_source, calibration_base,
                                                    read_calibration_cache, record_calibration_cache)

IMGSZ = 32
CACHE = b"TRT-100300-EntropyCalibration2\ninput: 3c010a14\n"


def test_full_batches_go_to_polygraphy_in_order_and_the_short_one_is_dropped(digit_folder, tmp_path):
    dataset = load_dataset(digit_folder, imgsz=IMGSZ)
    expected = [images for images, _ in dataset.batches(8) if len(images) == 8]
    data = CalibrationData(dataset, "input", 8, tmp_path / "scales.calib")
    seen = [batch["input"] for batch in data]
    assert len(seen) == 2 and data.images == 16 and data.error is None
    for got, want in zip(seen, expected):
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)


def test_too_few_images_is_an_error_kept_for_after_the_build(digit_folder, tmp_path):
    data = CalibrationData(load_dataset(digit_folder, imgsz=IMGSZ, count=5), "input", 8, tmp_path / "s.calib")
    assert list(data) == []  # Polygraphy, and TensorRT, only hear "no more data"
    assert isinstance(data.error, DataError) and "fewer images than one batch of 8" in str(data.error)


def test_no_data_and_no_usable_cache_is_reported(tmp_path):
    data = CalibrationData(None, "input", 8, tmp_path / "missing.calib")
    assert list(data) == [] and "no --calib-data was given" in str(data.error)


def test_cache_is_recorded_only_when_it_parses(tmp_path):
    written, cache = tmp_path / "work.calib", tmp_path / "scales.calib"
    source = CacheSource("onnx-a", "data-a", "entropy", reuse=False)
    for bad in (None, b"", b"not a cache", b"TRT-100300-EntropyCalibration2\n"):
        if bad is not None:
            written.write_bytes(bad)
        assert read_calibration_cache(written) is None
        assert not record_calibration_cache(written, cache, source, 16) and not cache.exists()
    written.write_bytes(CACHE)
    assert record_calibration_cache(written, cache, source, 16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scales.calib", "scales.calib.json", "work.calib"]
    assert cache_source(cache, "onnx-a", None, "entropy") == CacheSource("onnx-a", "data-a", "entropy", reuse=True)


def test_cache_is_reused_only_for_the_same_onnx_data_and_method(digit_folder, tmp_path):
    """TensorRT finds scales by tensor name: a retrained ONNX, new images or another method's scales must
    not be read."""
    cache, written = tmp_path / "scales.calib", tmp_path / "work.calib"
    dataset = load_dataset(digit_folder, imgsz=IMGSZ)
    written.write_bytes(CACHE)
    record_calibration_cache(written, cache, cache_source(cache, "onnx-a", dataset, "entropy"), 16)
    assert cache_source(cache, "onnx-a", dataset, "entropy").reuse
    other_images = load_dataset(digit_folder, imgsz=IMGSZ, count=10, seed=1)
    for onnx_sha, data, method in (("onnx-b", dataset, "entropy"), ("onnx-a", other_images, "entropy"),
                                   ("onnx-a", dataset, "minmax")):
        assert not cache_source(cache, onnx_sha, data, method).reuse
    with pytest.raises(EngineError, match="was made from another ONNX; pass --calib-data"):
        cache_source(cache, "onnx-b", None, "entropy")
    with pytest.raises(EngineError, match="holds entropy scales, not minmax"):
        cache_source(cache, "onnx-a", None, "minmax")
    cache.write_bytes(b"TRT-100300-EntropyCalibration2\nfrom elsewhere: 00\n")  # its record no longer describes it
    assert not cache_source(cache, "onnx-a", dataset, "entropy").reuse
    with pytest.raises(EngineError, match="has no record"):
        cache_source(cache, "onnx-a", None, "entropy")
    with pytest.raises(EngineError, match="must be one of entropy, minmax"):
        cache_source(cache, "onnx-a", dataset, "percentile")


def test_tensorrt_11_has_no_implicit_calibrator():
    bases = types.SimpleNamespace(__version__="10.3.0", IInt8EntropyCalibrator2="entropy", IInt8MinMaxCalibrator="mm")
    assert (calibration_base(bases, "entropy"), calibration_base(bases, "minmax")) == ("entropy", "mm")
    with pytest.raises(EngineError, match="TensorRT 11.1.0 has no implicit INT8 calibrator"):
        calibration_base(types.SimpleNamespace(__version__="11.1.0"), "entropy")
