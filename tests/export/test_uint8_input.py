"""`export --input-format uint8-nhwc`: the model takes decoded RGB bytes; every stage feeds it the same images
as bytes and judges it against the float PyTorch reference."""

import json

import numpy as np
import onnx
import pytest

from eca_deploy.artifacts import manifest_path
from eca_deploy.cli.main import main
from eca_deploy.data.pixels import FLOAT_NCHW, UINT8_NHWC
from eca_deploy.data.sources import load_dataset
from eca_deploy.errors import DataError, OnnxFileError, QuantizationError
from eca_deploy.export.onnx_export import ExportConfig, export_model
from eca_deploy.graph.graph import summarize
from eca_deploy.graph.input_format import METADATA_KEY, read_input_format, record_input_format
from eca_deploy.precisions import FP32_FIXED
from eca_deploy.runtime.base import OpenOptions
from eca_deploy.runtime.registry import open_backend
from eca_deploy.runtime.harness.bench import BenchConfig, Timing, run_bench
from eca_deploy.runtime.harness.parity import ParityConfig, run_parity


@pytest.fixture(scope="module")
def pixels_onnx(digits, tmp_path_factory):
    """The trained digits model exported to take uint8 [N, H, W, 3] pixels."""
    out = tmp_path_factory.mktemp("uint8")
    return export_model(ExportConfig(model=digits.model, weights=str(digits.checkpoint), imgsz=digits.imgsz,
                                     out_dir=str(out), input_format=UINT8_NHWC)).onnx_path


@pytest.mark.slow
def test_the_export_records_its_format_and_does_the_preprocessing_in_the_graph(pixels_onnx, digits):
    model = onnx.load(str(pixels_onnx))
    assert read_input_format(pixels_onnx) == UINT8_NHWC and read_input_format(digits.onnx) == FLOAT_NCHW
    (name, dims), = summarize(model).inputs
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert dims == ["batch", digits.imgsz, digits.imgsz, 3]
    # Cast and layout first; onnxsim folds the 1/std scale into the first Conv, the mean shift stays a Sub
    assert [n.op_type for n in model.graph.node[:4]] == ["Cast", "Transpose", "Sub", "Conv"]
    blocks = summarize(model).eca_blocks
    assert blocks and all(b.plain for b in blocks)
    manifest = json.loads(manifest_path(pixels_onnx).read_text())
    assert manifest["input_format"] == UINT8_NHWC and manifest["input"]["dtype"] == "uint8"


def test_the_metadata_round_trips_and_a_rewrite_replaces_it(tmp_path, digits):
    model = onnx.load(str(digits.onnx))
    record_input_format(model, FLOAT_NCHW)
    record_input_format(model, UINT8_NHWC)
    assert [p.value for p in model.metadata_props if p.key == METADATA_KEY] == [UINT8_NHWC]
    path = tmp_path / "copy.onnx"
    onnx.save(model, str(path))
    assert read_input_format(path) == UINT8_NHWC


@pytest.mark.slow
def test_bytes_pass_parity_against_the_float_pytorch_reference_on_real_images(pixels_onnx, digits, photos):
    for data, count in ((digits.val_dir, 64), (photos, None)):  # scanned digits; JPEG and PNG photos
        comparison = run_parity(ParityConfig(reference=f"torch:{digits.model}:{digits.checkpoint}",
                                             candidates=[str(pixels_onnx), str(digits.onnx)], data=str(data),
                                             count=count, batch_size=16,
                                             options=OpenOptions(device="cpu", provider="cpu", threads=1)))
        pixels, floats = comparison.candidates
        assert pixels.precision == "fp32" and pixels.verdict.passed, pixels.verdict.failures  # FP32's own error
        assert pixels.metrics["max_abs"] <= FP32_FIXED.atol  # and inside the fixed FP32 limit, element by element
        assert pixels.metrics["top1_agreement"] == 1.0 and pixels.metrics["top1"] == floats.metrics["top1"]
        assert comparison.reference.metrics["samples"] == (count or 8)


@pytest.mark.slow
def test_the_backend_is_fed_the_same_decoded_pixels(pixels_onnx, digits):
    data = load_dataset(digits.val_dir, digits.imgsz, count=8)
    (pixels, _), = data.batches(8, input_format=UINT8_NHWC)
    (floats, _), = data.batches(8)
    assert pixels.dtype == np.uint8 and pixels.shape == (8, digits.imgsz, digits.imgsz, 3)
    with open_backend(str(pixels_onnx), provider="cpu", threads=1) as ours, \
            open_backend(str(digits.onnx), provider="cpu", threads=1) as theirs:
        assert ours.input_format == UINT8_NHWC and ours.image_size == (digits.imgsz, digits.imgsz)
        np.testing.assert_allclose(ours.infer(pixels), theirs.infer(floats), atol=1e-4, rtol=0)
        with pytest.raises(DataError, match=r"takes uint8 \[N, H, W, 3\] RGB pixels; got a float32") as info:
            ours.infer(floats)  # normalised floats cast to bytes would be garbage: refused
        assert "\n" not in str(info.value)


@pytest.mark.slow
def test_bench_and_predict_feed_bytes(pixels_onnx, digits, capsys):
    result = run_bench(BenchConfig(model=str(pixels_onnx), timing=Timing(batches=(1, 2), warmup=1, iterations=3),
                                   options=OpenOptions(provider="cpu", threads=1)))
    assert [e["batch"] for e in result.entries] == [1, 2] and result.imgsz == digits.imgsz
    images = [sorted((digits.val_dir / str(d)).iterdir())[0] for d in range(3)]
    rows = []
    for model in (pixels_onnx, digits.onnx):
        assert main(["predict", str(model), *map(str, images), "--json", "--provider", "cpu"]) == 0
        rows.append(json.loads(capsys.readouterr().out))
    assert [[c["index"] for c in r["top5"]] for r in rows[0]] == [[c["index"] for c in r["top5"]] for r in rows[1]]


@pytest.mark.slow
def test_data_that_is_not_images_is_refused_in_one_line(pixels_onnx, digits, tmp_path):
    array = tmp_path / "pre.npy"
    np.save(array, next(load_dataset(digits.val_dir, digits.imgsz, count=4).batches(4))[0])
    with pytest.raises(DataError, match="uint8 .N, H, W, 3. RGB pixels") as info:  # preprocessed floats: no bytes
        run_parity(ParityConfig(reference=str(digits.onnx), candidates=[str(pixels_onnx)], data=str(array),
                                count=4, options=OpenOptions(provider="cpu")))
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_synthetic_inputs_are_made_from_bytes_so_a_uint8_model_takes_them(pixels_onnx, digits):
    comparison = run_parity(ParityConfig(reference=str(digits.onnx), candidates=[str(pixels_onnx)], count=8,
                                         options=OpenOptions(provider="cpu", threads=1)))
    (pixels,) = comparison.candidates
    assert pixels.verdict.passed and pixels.metrics["max_abs"] <= FP32_FIXED.atol


def test_metadata_that_does_not_match_the_graph_is_refused_on_open(digits, tmp_path):
    model = onnx.load(str(digits.onnx))
    record_input_format(model, UINT8_NHWC)  # a float [N, 3, H, W] graph claiming to take bytes
    lying = tmp_path / "lying.onnx"
    onnx.save(model, str(lying))
    with pytest.raises(OnnxFileError, match=r"takes a float32 \['\?', 3, .*input of uint8 \[N, H, W, 3\]"):
        open_backend(str(lying), provider="cpu")
    model.metadata_props[-1].value = "uint8-nchw"
    onnx.save(model, str(lying))
    with pytest.raises(OnnxFileError, match="records input format 'uint8-nchw'; eca-deploy knows"):
        open_backend(str(lying), provider="cpu")


def test_quantize_and_the_openvino_export_refuse_in_one_line(digits, tmp_path, capsys):
    from eca_deploy.calibration.quantize import QuantizeConfig, quantize

    model = onnx.load(str(digits.onnx))
    record_input_format(model, UINT8_NHWC)  # quantize reads the recorded format before anything else
    onnx.save(model, str(tmp_path / "pixels.onnx"))
    with pytest.raises(QuantizationError, match="takes uint8 pixels .* quantize the float-nchw export"):
        quantize(QuantizeConfig(onnx=str(tmp_path / "pixels.onnx"), precision="fp16"))
    assert main(["export", "--model", "eca_resnet18", "--format", "openvino", "--input-format", "uint8-nhwc"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--input-format uint8-nhwc applies to --format onnx" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_the_pipeline_checks_a_uint8_export_on_images_fed_as_bytes(digits, tmp_path, capsys):
    pytest.importorskip("openvino")
    out = tmp_path / "pipeline"
    code = main(["pipeline", "--model", digits.model, "--weights", str(digits.checkpoint), "--input-format",
                 "uint8-nhwc", "--data", str(digits.val_dir), "--count", "32", "--imgsz", str(digits.imgsz),
                 "--output", str(out), "--batch-sizes", "1,4", "--iterations", "3", "--warmup", "1",
                 "--provider", "cpu", "--device", "cpu", "--threads", "1", "--openvino"])
    assert code == 0, capsys.readouterr().err
    rows = json.loads((out / "report.json").read_text())["rows"]
    statuses = {(r["artifact"], r["backend"]): r["status"] for r in rows}
    onnx_name = f"{digits.model}.onnx"
    assert statuses[(onnx_name, "onnxruntime-cpu")] == "pass"
    assert statuses[(f"openvino:{onnx_name}", "openvino-cpu")] == "pass"  # OpenVINO runs the uint8 ONNX itself
    skipped = {s["step"] for s in json.loads((out / "report.json").read_text())["skipped"]}
    assert {"fp16 ONNX", "int8 ONNX", "OpenVINO IR"} <= skipped


def test_the_cli_choices_are_the_table_s_formats():
    from eca_deploy.cli.args import INPUT_FORMAT_CHOICES
    from eca_deploy.data.pixels import INPUT_FORMATS

    assert INPUT_FORMAT_CHOICES == tuple(INPUT_FORMATS)
