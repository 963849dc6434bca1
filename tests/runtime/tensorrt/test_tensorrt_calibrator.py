"""The legacy implicit INT8 calibrator's data flow, on real decoded images, without TensorRT or a GPU.

TensorRT's side is played by the smallest stand-ins that show what it receives: a base class with
no behaviour, a builder/config that record what they are given, and host memory standing in for
the pycuda device buffer (mem_alloc -> a byte array, memcpy_htod -> a copy into it). What is
tested is ours: which batches reach TensorRT, in what order and shape, what happens to a short last
batch and to too few images, and the calibration cache.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from PIL import Image

from eca_deploy.data.sources import load_dataset
from eca_deploy.runtime.tensorrt.calibrator import CacheSource, attach_implicit_calibrator, cache_source
from eca_deploy.errors import DataError, EngineError

IMGSZ = 32
SHAPE = (8, 3, IMGSZ, IMGSZ)


class _Base:
    """Stands in for trt.IInt8EntropyCalibrator2 / IInt8MinMaxCalibrator (pybind trampolines)."""

    def __init__(self):
        self.initialised = True


class _Memory:
    """A device allocation played by host bytes; int() is its address, as with pycuda."""

    def __init__(self, nbytes):
        self.data = np.zeros(nbytes, dtype=np.uint8)
        self.freed = False

    def __int__(self):
        return self.data.ctypes.data

    def free(self):
        self.freed = True


def _host_cuda():
    allocations = []

    def mem_alloc(nbytes):
        allocations.append(_Memory(nbytes))
        return allocations[-1]

    def memcpy_htod(dest, src):
        dest.data[:] = np.frombuffer(np.ascontiguousarray(src).tobytes(), dtype=np.uint8)

    return types.SimpleNamespace(mem_alloc=mem_alloc, memcpy_htod=memcpy_htod), allocations


class _Recorder:
    """Builder and config: remember the calibration profile and calibrator they are handed."""

    def __init__(self):
        self.shapes = {}

    def create_optimization_profile(self):
        recorder = self

        class Profile:
            def set_shape(self, name, low, opt, high):
                recorder.shapes[name] = (low, opt, high)

        return Profile()

    def set_calibration_profile(self, profile):
        self.calibration_profile = profile


def _trt(version="10.3.0"):
    return types.SimpleNamespace(__version__=version, IInt8EntropyCalibrator2=_Base, IInt8MinMaxCalibrator=_Base)


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """20 of scikit-learn's handwritten digits as PNG files: real images through the real decode path."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("calib_digits")
    digits = load_digits()
    for i in range(20):
        pixels = np.round(digits.images[i] * (255.0 / 16.0)).astype(np.uint8)
        Image.fromarray(pixels, mode="L").resize((IMGSZ, IMGSZ), Image.BILINEAR).save(folder / f"d{i:02d}.png")
    return folder


def _attach(dataset, cache, trt=None, method="entropy", source=None):
    cuda, allocations = _host_cuda()
    recorder = _Recorder()
    source = source or CacheSource("onnx-a", dataset.data_hash if dataset else "data-a", reuse=True)
    calibrator = attach_implicit_calibrator(trt or _trt(), cuda, recorder, recorder, "input", SHAPE, dataset,
                                            cache, source, method)
    return calibrator, recorder, allocations


def _device_batch(calibrator, allocations):
    pointers = calibrator.get_batch(["input"])
    if pointers is None:
        return None
    assert pointers == [int(allocations[0])]
    return allocations[0].data.view(np.float32).reshape(SHAPE).copy()


def test_full_batches_reach_tensorrt_in_order_and_the_short_one_is_dropped(digit_folder, tmp_path):
    dataset = load_dataset(digit_folder, imgsz=IMGSZ)
    expected = [images for images, _ in dataset.batches(8) if len(images) == 8]
    calibrator, recorder, allocations = _attach(dataset, tmp_path / "scales.calib")
    assert recorder.shapes == {"input": (SHAPE, SHAPE, SHAPE)} and recorder.int8_calibrator is calibrator
    assert calibrator.initialised and calibrator.get_batch_size() == 8
    seen = []
    while (batch := _device_batch(calibrator, allocations)) is not None:
        seen.append(batch)
    assert len(seen) == 2 and calibrator.images == 16 and calibrator.error is None
    for got, want in zip(seen, expected):
        np.testing.assert_array_equal(got, want)
    calibrator.free()
    assert allocations[0].freed


def test_too_few_images_is_an_error_kept_for_after_the_build(digit_folder, tmp_path):
    dataset = load_dataset(digit_folder, imgsz=IMGSZ, count=5)
    calibrator, _, allocations = _attach(dataset, tmp_path / "scales.calib")
    assert _device_batch(calibrator, allocations) is None  # TensorRT only hears "no more data"
    assert isinstance(calibrator.error, DataError) and "fewer images than one batch of 8" in str(calibrator.error)


def test_cache_is_written_atomically_with_its_sources_and_read_back_instead_of_images(tmp_path):
    cache = tmp_path / "scales.calib"
    calibrator, _, _ = _attach(None, cache, method="minmax")
    assert calibrator.read_calibration_cache() is None
    calibrator.write_calibration_cache(memoryview(b"TRT-100300-MinMaxCalibration\ninput: 3c010a14\n"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scales.calib", "scales.calib.json"]
    source = cache_source(cache, "onnx-a", None)
    assert source == CacheSource("onnx-a", "data-a", reuse=True)
    again, _, _ = _attach(None, cache, source=source)
    assert again.read_calibration_cache() == cache.read_bytes() and again.cache_reused


def test_cache_is_reused_only_for_the_same_onnx_and_data(digit_folder, tmp_path):
    """TensorRT finds scales by tensor name: a retrained ONNX or new images must not get the old cache."""
    cache = tmp_path / "scales.calib"
    dataset = load_dataset(digit_folder, imgsz=IMGSZ)
    first, _, _ = _attach(dataset, cache, source=cache_source(cache, "onnx-a", dataset))
    first.write_calibration_cache(b"TRT-100300-EntropyCalibration2\ninput: 3c010a14\n")
    assert cache_source(cache, "onnx-a", dataset).reuse
    other_images = load_dataset(digit_folder, imgsz=IMGSZ, count=10, seed=1)
    for onnx_sha, data in (("onnx-b", dataset), ("onnx-a", other_images)):
        source = cache_source(cache, onnx_sha, data)
        assert not source.reuse
        fresh, _, _ = _attach(data, cache, source=source)
        assert fresh.read_calibration_cache() is None and not fresh.cache_reused
    with pytest.raises(EngineError, match="was made from another ONNX; pass --calib-data"):
        cache_source(cache, "onnx-b", None)
    cache.write_bytes(b"TRT-100300-EntropyCalibration2\nfrom elsewhere\n")  # its record no longer describes it
    assert not cache_source(cache, "onnx-a", dataset).reuse
    with pytest.raises(EngineError, match="has no record"):
        cache_source(cache, "onnx-a", None)


def test_no_data_and_no_cache_is_reported(tmp_path):
    calibrator, _, allocations = _attach(None, tmp_path / "missing.calib")
    assert _device_batch(calibrator, allocations) is None
    assert "no --calib-data was given" in str(calibrator.error)


def test_tensorrt_11_has_no_implicit_calibrator(tmp_path):
    with pytest.raises(EngineError, match="TensorRT 11.1.0 has no implicit INT8 calibrator"):
        _attach(None, tmp_path / "x.calib", trt=types.SimpleNamespace(__version__="11.1.0"))
