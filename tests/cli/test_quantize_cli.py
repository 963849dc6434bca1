"""`eca-deploy quantize` from the command line: the happy path, and each bad input as one line, exit 2, no file."""

import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eca_deploy.artifacts import read_manifest
from eca_deploy.cli.main import main


@pytest.fixture
def out(tmp_path):
    return tmp_path / "out"


def _fails(capsys, argv, out, match):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    # The status line ("quantizing ...") may precede it; the error itself is one line, no traceback.
    errors = [line for line in err if line.startswith("eca-deploy:")]
    assert errors == [err[-1]] and errors[0].startswith("eca-deploy: error:") and match in errors[0], err
    assert not any("Traceback" in line for line in err)
    assert not out.exists() or not any(out.iterdir()), "something was written"


def _int8(digits, out, *extra):
    return ["quantize", "--onnx", str(digits.onnx), "--output", str(out / "model.int8.onnx"), *extra]


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["quantize", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--onnx", "--precision", "--calib-data", "--target", "--calib-method", "--calib-count", "--seed",
                 "--calib-cache", "--no-calib-cache", "--batch-size", "--val-data", "--check-count", "--output",
                 "--percentile", "--max-top1-drop", "--min-agreement", "--max-float-layers", "--sensitivity"):
        assert flag in text


def test_int8_prints_counts_and_float_nodes(digits, out, capsys, monkeypatch):
    from eca_deploy import errors

    monkeypatch.setattr(errors, "_WARNED", set())  # a warning is said once per process: as if this ran first
    code = main(_int8(digits, out, "--calib-data", str(digits.calib_dir), "--calib-count", "40",
                      "--check-count", "8", "--no-calib-cache"))
    captured = capsys.readouterr()
    text = captured.out
    assert code == 0
    assert "parity's verdict on 8 images of " in text and ": pass: top-1 agreement" in text
    # the default target writes FP16 glue: said to be for TensorRT, with what to use for onnxruntime
    assert "note: this file is for TensorRT" in text and "--target cpu or --high-precision fp32" in text
    # 8 images cannot resolve the 0.97 agreement default: said before the work, with what it takes
    assert ("warning: on 8 images top-1 agreement moves in steps of 12.5%: min agreement 0.97 allows no flip "
            "(every image must match); it takes 34 images to allow one") in captured.err
    notes = read_manifest(out / "model.int8.onnx")["verdict"]["notes"]
    assert notes[0].startswith("on 8 images top-1 agreement moves in steps of 12.5%") and notes[1] == (
        "on 8 images the top-1 drop moves in steps of 12.5 points: 1 points allows no right-to-wrong flip; it takes "
        "100 images to allow one") and len(notes) == 2
    assert "Q/DQ: 21 activation pairs, 21 per-channel weight DQ, bias in float" in text
    assert "left in float:" in text and "8 Sigmoid" in text and "/layer1/layer1.0/eca/conv/Conv" in text
    assert sorted(p.name for p in out.iterdir()) == ["model.int8.onnx", "model.int8.onnx.json"]
    fp16 = read_manifest(out / "model.int8.onnx")["fp16"]  # FP16 glue: the conversion report is kept
    assert set(fp16) == {"tensors_converted", "values_clamped", "values_flushed_to_zero", "scales_raised"}


def test_missing_calibration_folder(digits, out, tmp_path, capsys):
    _fails(capsys, _int8(digits, out, "--calib-data", str(tmp_path / "nowhere")), out, "not found")


def test_empty_calibration_folder(digits, out, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _fails(capsys, _int8(digits, out, "--calib-data", str(tmp_path / "empty")), out, "no images")


def test_calibration_folder_of_non_images(digits, out, tmp_path, capsys):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "labels.csv").write_text("a,b\n")
    (folder / "model.onnx").write_bytes(digits.onnx.read_bytes()[:100])
    _fails(capsys, _int8(digits, out, "--calib-data", str(folder)), out, "no images")


def test_calibration_folder_of_only_corrupt_images(digits, out, tmp_path, capsys):
    folder = tmp_path / "corrupt"
    folder.mkdir()
    for i in range(3):
        (folder / f"img{i}.jpg").write_bytes(b"\xff\xd8\xff" + bytes(range(50)))
    _fails(capsys, _int8(digits, out, "--calib-data", str(folder), "--no-calib-cache"), out, "no usable image")


def test_some_corrupt_images_are_skipped_and_counted(digits, out, tmp_path, capsys):
    folder = tmp_path / "mixed"
    shutil.copytree(digits.calib_dir / "3", folder / "3")
    shutil.copytree(digits.calib_dir / "7", folder / "7")
    good = len(list(folder.rglob("*.png")))
    (folder / "3" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (folder / "7" / "zz_empty.jpg").write_bytes(b"")
    code = main(_int8(digits, out, "--calib-data", str(folder), "--calib-count", "all", "--check-count", "8",
                      "--no-calib-cache"))
    text = capsys.readouterr().out
    assert code == 0
    assert f"from {good} images" in text and "skipped 2 unreadable files" in text
    calibration = read_manifest(out / "model.int8.onnx")["calibration"]
    assert calibration["images"] == good
    assert sorted(s["path"].rsplit("/", 1)[1] for s in calibration["skipped"]) == ["zz_broken.png", "zz_empty.jpg"]


def test_fp16_says_which_check_images_it_skipped(digits, out, tmp_path, capsys):
    """As INT8 does: the unreadable files are printed and listed in the manifest, not dropped silently."""
    folder = tmp_path / "mixed"
    shutil.copytree(digits.calib_dir / "3", folder / "3")
    good = len(list(folder.rglob("*.png")))
    (folder / "3" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (folder / "3" / "zz_empty.jpg").write_bytes(b"")
    code = main(["quantize", "--onnx", str(digits.onnx), "--precision", "fp16", "--calib-data", str(folder),
                 "--check-count", "all", "--output", str(out / "model.fp16.onnx")])
    text = capsys.readouterr().out
    assert code == 0 and "skipped 2 unreadable files" in text and f"on {good} images" in text
    parity = read_manifest(out / "model.fp16.onnx")["parity"]
    assert sorted(s["path"].rsplit("/", 1)[1] for s in parity["skipped"]) == ["zz_broken.png", "zz_empty.jpg"]


def test_already_quantized_model(digits, tmp_path, out, capsys):
    first = tmp_path / "first"
    assert main(["quantize", "--onnx", str(digits.onnx), "--calib-data", str(digits.calib_dir), "--calib-count", "16",
                 "--check-count", "4", "--no-calib-cache", "--output", str(first / "q.onnx")]) == 0
    assert main(["quantize", "--onnx", str(digits.onnx), "--precision", "fp16", "--output",
                 str(first / "h.onnx")]) == 0
    capsys.readouterr()
    _fails(capsys, ["quantize", "--onnx", str(first / "q.onnx"), "--calib-data", str(digits.calib_dir), "--output",
                    str(out / "again.onnx")], out, "already quantized")
    _fails(capsys, ["quantize", "--onnx", str(first / "h.onnx"), "--precision", "fp16", "--output",
                    str(out / "again.onnx")], out, "FP16")


def _save(model, path):
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_model_without_an_image_input(tmp_path, out, digits, capsys):
    weight = numpy_helper.from_array(np.ones((4, 10), dtype=np.float32), "w")
    vector = helper.make_model(helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "vector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [weight]))
    path = _save(vector, tmp_path / "vector.onnx")
    _fails(capsys, ["quantize", "--onnx", str(path), "--calib-data", str(digits.calib_dir), "--output",
                    str(out / "q.onnx")], out, "expected one float32 image input [N, 3, S, S]")

    kernel = numpy_helper.from_array(np.ones((2, 1, 3, 3), dtype=np.float32), "k")
    gray = helper.make_model(helper.make_graph(
        [helper.make_node("Conv", ["image", "k"], ["y"])], "gray",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 30, 30])], [kernel]))
    path = _save(gray, tmp_path / "gray.onnx")
    _fails(capsys, ["quantize", "--onnx", str(path), "--precision", "fp16", "--output", str(out / "h.onnx")], out,
           "input 'image' is float32 [1, 1, 32, 32]")


def test_not_an_onnx_file(tmp_path, out, capsys):
    (tmp_path / "fake.onnx").write_bytes(b"definitely not protobuf \xff\xfe")
    _fails(capsys, ["quantize", "--onnx", str(tmp_path / "fake.onnx"), "--precision", "fp16", "--output",
                    str(out / "h.onnx")], out, "not an ONNX model")


def test_int8_without_calibration_data(digits, out, capsys):
    _fails(capsys, _int8(digits, out), out, "--calib-data")


def test_refuses_to_overwrite_its_input(digits, tmp_path, capsys):
    source = tmp_path / "m.onnx"
    shutil.copy(digits.onnx, source)
    before = source.read_bytes()
    _fails(capsys, ["quantize", "--onnx", str(source), "--precision", "fp16", "--output", str(source)],
           tmp_path / "nothing", "refusing to overwrite")
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.fixture(scope="module")
def random_r50(random_exports):
    """The default model (eca_resnet50) with random weights, exported at 64x64, with its weights file."""
    shared = random_exports["eca_resnet50"]
    return shared.onnx, shared.weights


@pytest.mark.slow
def test_fp16_gate_is_parity_fp16_verdict_and_takes_its_flags(random_r50, photos, tmp_path, capsys):
    """The FP16 command of docs/quantize.md writes on the default random-weight model with real photos; the gate is the
    judgement parity makes of FP16 (parity then passes the file), and parity's flags tighten or loosen it."""
    from eca_deploy.runtime.base import OpenOptions
    from eca_deploy.runtime.harness.parity import ParityConfig, run_parity

    onnx_path, weights = random_r50
    half = tmp_path / "r50.fp16.onnx"
    assert main(["quantize", "--onnx", str(onnx_path), "--precision", "fp16", "--calib-data", str(photos),
                 "--output", str(half)]) == 0
    assert read_manifest(half)["parity"]["tolerance"]["atol"] == 0.1
    comparison = run_parity(ParityConfig(reference=f"torch:eca_resnet50:{weights}", candidates=[str(half)],
                                         data=str(photos), options=OpenOptions(device="cpu", threads=1)))
    assert comparison.candidates[0].verdict.passed
    capsys.readouterr()
    strict = tmp_path / "strict.fp16.onnx"
    code = main(["quantize", "--onnx", str(onnx_path), "--precision", "fp16", "--calib-data", str(photos),
                 "--atol", "fp16=1e-6", "--rtol", "fp16=1e-6", "--output", str(strict)])
    err = capsys.readouterr().err
    assert code == 1 and "not written" in err and "atol 1e-06" in err and not strict.exists()


@pytest.mark.slow
def test_int8_checks_on_images_it_did_not_calibrate_on_and_says_which(random_r50, photos, tmp_path, capsys):
    onnx_path, _ = random_r50
    base = ["quantize", "--onnx", str(onnx_path), "--calib-data", str(photos), "--no-calib-cache",
            "--target", "cpu", "--calib-method", "minmax"]
    base += ["--min-agreement", "int8=off", "--max-top1-drop", "int8=off"]  # random weights: where, not how well
    assert main([*base, "--calib-count", "5", "--output", str(tmp_path / "a.onnx")]) == 0
    out = capsys.readouterr().out
    assert "3 images of" in out and "not used for calibration" in out
    assert "this file is for TensorRT" not in out  # the cpu target runs in onnxruntime
    evaluation = read_manifest(tmp_path / "a.onnx")["evaluation"]
    assert evaluation["held_out"] is True and evaluation["images"] == 3
    assert main([*base, "--calib-count", "all", "--output", str(tmp_path / "b.onnx")]) == 0
    out, err = capsys.readouterr()
    # one word for one thing: images that are not held out are never called held-out, not even in progress
    assert "NOT held out" in out and "held-out" not in out + err and "check images: 0/" in err
    evaluation = read_manifest(tmp_path / "b.onnx")["evaluation"]
    assert evaluation["held_out"] is False and evaluation["images"] == 8


@pytest.mark.slow
def test_inspect_reads_through_qdq_and_judges_each_layout(random_r50, photos, tmp_path, capsys):
    """Our own INT8 files (both layouts) and FP16 file are plain ECA for their layout; a Q/DQ pair that no
    layout places (on the Conv1d output of a TensorRT-layout file) is called out."""
    onnx_path, _ = random_r50
    files = {"int8 tensorrt": tmp_path / "m.int8.onnx", "int8 cpu": tmp_path / "m.int8.cpu.onnx",
             "fp16": tmp_path / "m.fp16.onnx"}
    for layout, path in files.items():
        precision = "fp16" if layout == "fp16" else "int8"
        target = ["--target", layout.split()[1], "--calib-data", str(photos), "--calib-count", "4",
                  "--calib-method", "minmax", "--no-calib-cache", "--min-agreement", "int8=off",
                  "--max-top1-drop", "int8=off"] if precision == "int8" else []
        assert main(["quantize", "--onnx", str(onnx_path), "--precision", precision, *target,
                     "--output", str(path)]) == 0
    capsys.readouterr()
    for layout, path in {"fp32": onnx_path, **files}.items():
        assert main(["inspect", str(path)]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[0].endswith(f", {layout}"), out
        assert "NOT plain" not in out and "every ECA block has the plain shape" in out, out
        assert f"judged for {layout}" in out

    model = onnx.load(str(files["int8 tensorrt"]))
    conv1d = next(n for n in model.graph.node if n.op_type == "Conv"
                  and any(a.name == "kernel_shape" and len(a.ints) == 1 for a in n.attribute))
    out_name = conv1d.output[0]
    for node in model.graph.node:
        node.input[:] = [f"{out_name}_dq" if i == out_name else i for i in node.input]
    model.graph.initializer.extend([numpy_helper.from_array(np.array(0.01, np.float32), "s"),
                                    numpy_helper.from_array(np.array(0, np.int8), "z")])
    model.graph.node.extend([helper.make_node("QuantizeLinear", [out_name, "s", "z"], [f"{out_name}_q"]),
                             helper.make_node("DequantizeLinear", [f"{out_name}_q", "s", "z"], [f"{out_name}_dq"])])
    onnx.save(model, str(tmp_path / "odd.onnx"))
    assert main(["inspect", str(tmp_path / "odd.onnx")]) == 0
    out = capsys.readouterr().out
    assert "NOT plain: Q/DQ or Cast inside the ECA path at Conv -> Reshape" in out
    assert "some ECA blocks are not plain" in out


def test_the_fp16_file_is_named_without_a_target_and_int8_with_its_layout():
    from pathlib import Path

    from eca_deploy.calibration.quantize import default_output

    names = {(p, t): default_output(Path("m/a.onnx"), p, t).name for p in ("fp16", "int8") for t in ("cpu", "tensorrt")}
    assert names == {("fp16", "cpu"): "a.fp16.onnx", ("fp16", "tensorrt"): "a.fp16.onnx",
                     ("int8", "cpu"): "a.int8.cpu.onnx", ("int8", "tensorrt"): "a.int8.onnx"}
