"""`eca-deploy predict`: top-5 classes of image files through any artifact, named from ImageNet's list or a file."""

import json
import shutil

import numpy as np
import pytest

from eca_deploy.cli.main import main
from eca_deploy.data.labels import imagenet_classes
from eca_deploy.runtime.harness.predict import top_k

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _one_per_class(digits):
    return [sorted((digits.val_dir / str(d)).iterdir())[0] for d in range(10)]


def _predict_json(capsys, *argv):
    assert main(["predict", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_imagenet_names_ship_with_the_package():
    names = imagenet_classes()
    assert len(names) == 1000
    assert (names[0], names[1], names[281], names[999]) == ("tench", "goldfish", "tabby", "toilet tissue")
    assert names.count("crane") == 2 and names.count("maillot") == 2  # ILSVRC's own duplicates, kept in place


def test_top_k_is_softmax_order_without_overflow():
    logits = np.array([1000.0, 1002.0, 999.0, -5.0], dtype=np.float32)
    top = top_k(logits, None, k=5)
    assert [i for i, _, _ in top] == [1, 0, 2, 3]  # fewer classes than k: all of them
    expected = np.exp([2.0, 0.0, -1.0, -1007.0]) / np.exp([2.0, 0.0, -1.0, -1007.0]).sum()
    assert np.allclose([p for _, _, p in top], expected)


def test_onnx_and_torch_classify_real_digits_with_a_labels_file(digits, tmp_path, capsys):
    labels = tmp_path / "digits.txt"
    labels.write_text("\n".join(DIGIT_NAMES) + "\n")
    images = _one_per_class(digits)
    onnx_rows = _predict_json(capsys, digits.onnx, *images, "--labels", labels)
    torch_rows = _predict_json(capsys, f"torch:{digits.model}:{digits.checkpoint}", *images, "--labels", labels,
                               "--imgsz", digits.imgsz, "--device", "cpu")
    assert [row["image"] for row in onnx_rows] == [str(p) for p in images]
    top1 = [row["top5"][0]["label"] for row in onnx_rows]
    assert sum(name == DIGIT_NAMES[d] for d, name in enumerate(top1)) >= 9, top1  # a ~97% model
    for ours, reference in zip(onnx_rows, torch_rows):
        assert [c["index"] for c in ours["top5"]] == [c["index"] for c in reference["top5"]]
        assert np.allclose([c["probability"] for c in ours["top5"]],
                           [c["probability"] for c in reference["top5"]], atol=1e-4)
        probabilities = [c["probability"] for c in ours["top5"]]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6


def test_openvino_runs_the_same_file_to_the_same_answer(digits, capsys):
    pytest.importorskip("openvino")
    images = _one_per_class(digits)[:4]
    ours = _predict_json(capsys, f"openvino:{digits.onnx}", *images)
    reference = _predict_json(capsys, digits.onnx, *images)
    for a, b in zip(ours, reference):
        assert a["top5"][0]["index"] == b["top5"][0]["index"]
        assert np.allclose([c["probability"] for c in a["top5"]], [c["probability"] for c in b["top5"]], atol=1e-3)


def test_an_engine_without_tensorrt_is_one_line(tmp_path, digits, capsys):
    from eca_deploy.runtime.tensorrt.env import tensorrt_unavailable_reason

    if not tensorrt_unavailable_reason():
        pytest.skip("TensorRT works here: the engine path is tested with a GPU")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    code = main(["predict", str(engine), str(_one_per_class(digits)[0])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot run the engine model.engine" in err[0], err


def test_other_class_counts_show_indices_and_the_table_names_each_image(digits, capsys):
    image = _one_per_class(digits)[3]
    assert main(["predict", str(digits.onnx), str(image)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and len(lines) == 6
    assert lines[1].strip().startswith("1.") and lines[1].endswith("class (3)"), lines


def test_readme_predict_command_names_imagenet_classes(tmp_path, photos, random_exports, monkeypatch, capsys):
    """predict on the default export's path (docs/predict.md), with a real photo: five ImageNet names per image."""
    monkeypatch.chdir(tmp_path)
    readme_export = tmp_path / "artifacts" / "eca_resnet50"  # where the default export writes, at 64x64
    readme_export.mkdir(parents=True)
    onnx_path = random_exports["eca_resnet50"].onnx
    for path in (onnx_path, onnx_path.with_name(onnx_path.name + ".json")):  # the model and its manifest
        shutil.copy(path, readme_export)
    shutil.copy(sorted(photos.glob("*.jpg"))[0], tmp_path / "photo.jpg")
    assert main("predict artifacts/eca_resnet50/eca_resnet50.onnx photo.jpg".split()) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "photo.jpg" and len(lines) == 6
    names = set(imagenet_classes())
    assert all(line.split("%  ")[1].rsplit(" (", 1)[0] in names for line in lines[1:]), lines


@pytest.mark.parametrize("argv, match", [
    (["{onnx}", "missing.jpg"], "image not found: missing.jpg"),
    (["{onnx}", "{image}", "--labels", "missing.txt"], "labels file not found: missing.txt"),
    (["{onnx}", "{image}", "--labels", "{three}"], "names 3 classes but the model has 10 outputs"),
    (["{onnx}", "{folder}"], "is not a regular file: a folder"),
    (["{onnx}", "{text}"], "cannot read image"),
])
def test_bad_inputs_are_one_line_exit_2(digits, tmp_path, capsys, argv, match):
    three = tmp_path / "three.txt"
    three.write_text("a\nb\nc\n")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    values = {"onnx": digits.onnx, "image": _one_per_class(digits)[0], "three": three, "folder": tmp_path,
              "text": text}
    code = main(["predict", *(a.format(**values) for a in argv)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("eca-deploy: error: ") and match in err[0], err


def test_a_broken_data_config_in_a_manifest_falls_back_to_imagenet_with_a_warning(digits, tmp_path, capsys):
    import json as json_module

    from eca_deploy.artifacts import manifest_path, sha256_file

    onnx_path = tmp_path / "m.onnx"
    shutil.copy(digits.onnx, onnx_path)
    manifest = json_module.loads(manifest_path(digits.onnx).read_text())
    manifest.update(sha256=sha256_file(onnx_path), data_config={"mean": "x", "interpolation": "nope"})
    manifest_path(onnx_path).write_text(json_module.dumps(manifest))
    image = _one_per_class(digits)[2]
    assert main(["predict", str(onnx_path), str(image), "--json"]) == 0
    out, err = capsys.readouterr()
    assert "unusable data_config" in err and json_module.loads(out)[0]["top5"][0]["index"] == 2
