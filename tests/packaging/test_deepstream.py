"""`eca-deploy deepstream`: the Gst-nvinfer config, its labels file and its INT8 calibration table, written for the
trained digits model and checked against DeepStream's own key list, our preprocessing and TensorRT's table format."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eca_deploy.artifacts import sha256_file, write_artifact
from eca_deploy.calibration.int8.cache import load_ranges
from eca_deploy.cli.main import main
from eca_deploy.data.preprocess import DataConfig, center_crop, preprocess, resize_shorter, resize_size
from eca_deploy.packaging.deepstream import pick_artifact
from eca_deploy.packaging.nvinfer_preprocess import normalization
from eca_deploy.runtime.tensorrt.calibration_table import parse_calibration_table
from eca_deploy.runtime.tensorrt.calibrator import read_calibration_cache
from nvinfer import NVINFER_KEYS, read_config


def write(args: list[str], capsys) -> tuple[int, str]:
    code = main(["deepstream", *args])
    return code, capsys.readouterr().err


def test_fp32_onnx_config_uses_only_nvinfer_keys_and_matches_the_model(calibrated_digits, tmp_path, capsys):
    out = tmp_path / "ds" / "config_infer_primary.txt"
    code, err = write([str(calibrated_digits / "eca_resnet18.onnx"), "-o", str(out)], capsys)
    assert code == 0
    keys = read_config(out)
    assert set(keys) <= NVINFER_KEYS, set(keys) - NVINFER_KEYS
    assert (out.parent / keys["onnx-file"]).resolve() == (calibrated_digits / "eca_resnet18.onnx").resolve()
    assert {k: keys[k] for k in ("network-type", "network-mode", "batch-size", "infer-dims", "model-color-format",
                                 "output-blob-names", "gie-unique-id", "maintain-aspect-ratio", "scaling-filter")} \
        == {"network-type": "1", "network-mode": "0", "batch-size": "1", "infer-dims": "3;32;32",
            "model-color-format": "0", "output-blob-names": "logits", "gie-unique-id": "1",
            "maintain-aspect-ratio": "1", "scaling-filter": "1"}
    assert [float(o) for o in keys["offsets"].split(";")] == pytest.approx([123.675, 116.28, 103.53])
    assert "model-engine-file" not in keys and "int8-calib-file" not in keys
    labels = (out.parent / keys["labelfile-path"]).read_text()
    assert labels == ";".join(str(i) for i in range(10)) + "\n"  # digits have no names: the indices, one line
    assert "one net-scale-factor" in err and "no centre crop" in err and "at most 0.0258" in err


def test_nvinfer_scale_factor_minimises_the_error_and_states_it_on_a_real_photo(photos):
    config = DataConfig()
    norm = normalization(config.mean, config.std)
    pixels = np.arange(256.0)[:, None]
    wanted = 1 / (255 * np.asarray(config.std))

    def worst(scale: float) -> float:  # over every pixel value and channel
        return float(np.abs((scale - wanted) * (pixels - np.asarray(norm.offsets))).max())

    assert worst(norm.scale) == pytest.approx(norm.max_error, rel=1e-9)
    grid = np.linspace(wanted.min(), wanted.max(), 2001)
    assert min(worst(s) for s in grid) >= norm.max_error * (1 - 1e-6)
    # nvinfer's y = s * (x - offsets) on the pixels of a real photo, after our own resize and crop, against ours
    image = Image.open(sorted(photos.iterdir())[0]).convert("RGB")
    x = np.asarray(center_crop(resize_shorter(image, resize_size(64)), 64), dtype=np.float64)
    theirs = norm.scale * (x - np.asarray(norm.offsets))
    ours = preprocess(image, 64).transpose(1, 2, 0)
    gap = float(np.abs(theirs - ours).max())
    assert 0.2 * norm.max_error < gap <= norm.max_error + 1e-5
    same = normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert same.max_error == 0 and same.scale == pytest.approx(1 / 127.5)


def test_int8_from_our_calibration_cache_writes_a_table_that_round_trips(calibrated_digits, tmp_path, capsys):
    out = tmp_path / "config_infer_primary.txt"
    cache = calibrated_digits / "eca_resnet18.calib.json"
    code, err = write([str(calibrated_digits / "eca_resnet18.onnx"), "-o", str(out), "--calib-cache", str(cache)],
                      capsys)
    assert code == 0, err
    keys = read_config(out)
    assert set(keys) <= NVINFER_KEYS and keys["network-mode"] == "1"
    table_path = out.parent / keys["int8-calib-file"]
    text = table_path.read_text()
    assert text.splitlines()[0] == "TRT-8601-EntropyCalibration2"  # the calibrator nvinfer reads tables with
    table = parse_calibration_table(text)
    key, entry = next(iter(json.loads(cache.read_text())["entries"].items()))
    ranges = load_ranges(cache, key, sorted(entry["ranges"])).ranges
    assert set(table.scales) == set(ranges) and len(ranges) > 10
    for name, r in ranges.items():  # float32 bit for bit: amax / 127, as TensorRT stores a dynamic range
        assert struct.pack(">f", table.scales[name]) == struct.pack(">f", r.amax / 127)
    assert table.text() == text and read_calibration_cache(table_path) is not None
    assert "says" not in err  # written as EntropyCalibration2 from the start: nothing renamed
    assert f"scales for {len(ranges)} of the" in err  # TensorRT wants one per tensor: the rest run in float


def test_tensorrt_written_tables_parse_as_nvidia_reads_them():
    # ModelOpt decodes a line with struct.unpack("!f", bytes.fromhex(hex)); TensorRT may print fewer than 8 digits
    table = parse_calibration_table("TRT-100300-MinMaxCalibration\ninput: 3c010a14\nconv1: 3e000000\nzero: 0\n")
    assert table.version == 100300 and table.algorithm == "MinMaxCalibration"
    assert table.scales == {"input": struct.unpack("!f", bytes.fromhex("3c010a14"))[0], "conv1": 0.125, "zero": 0.0}
    assert table.text().splitlines()[1:] == ["input: 3c010a14", "conv1: 3e000000", "zero: 00000000"]


def engine_with_manifest(folder: Path, onnx: Path, calib: Path) -> Path:
    """An engine file as `build --legacy-precision int8` leaves it: the plan (here opaque bytes: no TensorRT on
    this machine) and the manifest build writes, naming its ONNX, profile and TensorRT calibration cache."""
    engine = folder / "eca_resnet18.int8.engine"
    write_artifact(engine, b"plan bytes", "build", source_onnx=str(onnx), source_onnx_sha256=sha256_file(onnx),
                   tensorrt_version="8.6.1", gpu={"name": "Orin"}, precision="int8",
                   precision_source="legacy builder flags",
                   input={"name": "input", "shape": ["batch", 3, 32, 32], "dtype": "float32"},
                   profile={"batch": "1..4..8", "min": [1, 3, 32, 32], "opt": [4, 3, 32, 32], "max": [8, 3, 32, 32]},
                   calibration={"method": "minmax", "cache": str(calib)})
    return engine


def test_legacy_int8_engine_config_carries_its_onnx_and_calibration_table(calibrated_digits, tmp_path, capsys):
    onnx = tmp_path / "eca_resnet18.onnx"
    for name in ("eca_resnet18.onnx", "eca_resnet18.onnx.json"):
        shutil.copy(calibrated_digits / name, tmp_path / name)
    calib = tmp_path / "eca_resnet18.calib"
    calib.write_text("TRT-8601-MinMaxCalibration\ninput: 3c010a14\n")  # what build's minmax calibrator leaves
    engine = engine_with_manifest(tmp_path, onnx, calib)
    out = tmp_path / "deploy" / "config_infer_primary.txt"
    code, err = write([str(engine), "-o", str(out)], capsys)
    assert code == 0, err
    keys = read_config(out)
    assert set(keys) <= NVINFER_KEYS
    assert (keys["model-engine-file"], keys["onnx-file"], keys["batch-size"], keys["network-mode"]) \
        == ("../eca_resnet18.int8.engine", "../eca_resnet18.onnx", "8", "1")
    table = parse_calibration_table((out.parent / keys["int8-calib-file"]).read_text())
    assert table.algorithm == "EntropyCalibration2"
    assert table.scales == parse_calibration_table(calib.read_text()).scales
    assert "says MinMaxCalibration" in err
    code, err = write([str(engine), "-o", str(out), "--batch-size", "16"], capsys)
    assert code == 2 and "profile's maximum is 8" in err and err.count("\n") == 1


@pytest.mark.parametrize("make, expected", [
    (lambda d, tmp: str(d / "eca_resnet18.int8.onnx"), "--calib-cache is for an FP32 ONNX"),
    (lambda d, tmp: "torch:eca_resnet18", "nvinfer runs TensorRT"),
])
def test_what_nvinfer_cannot_take_is_refused_in_one_line(calibrated_digits, tmp_path, capsys, make, expected):
    out = tmp_path / "c.txt"
    code, err = write([make(calibrated_digits, tmp_path), "-o", str(out), "--calib-cache",
                       str(calibrated_digits / "eca_resnet18.calib.json")], capsys)
    assert code == 2 and expected in err and err.count("\n") == 1 and not out.exists()


def test_qdq_int8_onnx_needs_no_table(calibrated_digits, tmp_path, capsys):
    out = tmp_path / "c.txt"
    assert write([str(calibrated_digits / "eca_resnet18.int8.onnx"), "-o", str(out)], capsys)[0] == 0
    keys = read_config(out)
    assert keys["network-mode"] == "1" and "int8-calib-file" not in keys  # explicit Q/DQ carries its scales
    assert set(keys) <= NVINFER_KEYS


def test_pipeline_hands_deepstream_the_fastest_passing_artifact_tensorrt_can_run():
    def row(spec, status, p50, fmt="ONNX", layout=None, identity=None):
        return {"spec": spec, "status": status, "format": fmt, "layout": layout, "identity": identity or spec,
                "bench": {"batches": [{"batch": 1, "p50": p50, "fps": 1e3 / p50, "clock": "host"},
                                      {"batch": 8, "p50": p50 / 4, "fps": 8e3 * 4 / p50, "clock": "host"}]}}

    rows = [row("a.onnx", "pass", 3.0), row("a.int8.cpu.onnx", "pass", 1.0, layout="cpu"),
            row("a.fp16.onnx", "fail", 0.5), row("a.xml", "pass", 0.4, fmt="OpenVINO IR"),
            row("openvino:a.onnx", "pass", 0.3, identity="openvino:/x/a.onnx"), row("a.int8.onnx", "pass", 2.0)]
    assert pick_artifact({"rows": rows}) == "a.int8.onnx"
    assert pick_artifact({"rows": rows[1:5]}) is None


def uint8_nhwc_classifier(path: Path) -> Path:
    """A real ONNX classifier that takes uint8 [N, 32, 32, 3] pixels (as `export --input-format uint8-nhwc` makes
    them): Cast, Flatten, one Gemm to 10 logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.random.default_rng(0).standard_normal((32 * 32 * 3, 10)).astype(np.float32),
                                      "w")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["input"], ["x"], to=TensorProto.FLOAT), helper.make_node("Flatten", ["x"], ["f"]),
         helper.make_node("Gemm", ["f", "w"], ["logits"])], "uint8_nhwc",
        [helper.make_tensor_value_info("input", TensorProto.UINT8, ["batch", 32, 32, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], [weights])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_uint8_input_model_gets_raw_pixels_and_the_float_tensor_caveat(tmp_path, capsys):
    model = uint8_nhwc_classifier(tmp_path / "bytes.onnx")
    code, err = write([str(model), "-o", str(tmp_path / "c.txt")], capsys)
    keys = read_config(tmp_path / "c.txt")
    assert code == 0 and set(keys) <= NVINFER_KEYS
    assert (keys["net-scale-factor"], keys["offsets"], keys["network-input-order"], keys["infer-dims"]) \
        == ("1", "0;0;0", "1", "3;32;32")
    assert "normalises them itself" in err and "float32 tensors" in err and "one net-scale-factor" not in err


def test_a_calibration_cache_of_neither_format_is_refused_in_one_line(calibrated_digits, tmp_path, capsys):
    cache = tmp_path / "scales.txt"
    cache.write_text("input 0.05\n")  # a hand-made list, not TensorRT's format nor ours
    code, err = write([str(calibrated_digits / "eca_resnet18.onnx"), "-o", str(tmp_path / "c.txt"), "--calib-cache",
                       str(cache)], capsys)
    assert code == 2 and "neither a TensorRT calibration table nor" in err and err.count("\n") == 1
    assert not (tmp_path / "c.txt").exists()
