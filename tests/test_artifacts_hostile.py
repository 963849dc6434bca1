"""Issue 11, item 5: an artifact and its manifest are written as a pair, and a stale ONNX manifest is not trusted."""

import errno
import json
import os
import shutil
import warnings

import onnx
import pytest
from onnx import numpy_helper

from eca_deploy import artifacts
from eca_deploy.artifacts import StaleManifestWarning, verified_manifest, write_artifact
from eca_deploy.cli.main import main


def _pair(tmp_path):
    model = tmp_path / "m.onnx"
    write_artifact(model, b"old model", "export", precision="fp32")
    return model, artifacts.manifest_path(model)


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def _crash_on_replace(monkeypatch, nth):
    """os.replace works until its ``nth`` call, which dies as kill -9 would leave things (no cleanup runs)."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == nth:
            raise SystemExit("killed")
        real(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", replace)


@pytest.mark.parametrize("nth", [1, 2])
def test_a_crash_between_the_writes_never_leaves_a_mismatched_pair(tmp_path, monkeypatch, nth):
    model, manifest = _pair(tmp_path)
    _crash_on_replace(monkeypatch, nth)
    with pytest.raises(SystemExit):
        write_artifact(model, b"new model", "quantize", precision="int8")
    monkeypatch.undo()
    if nth == 1:  # before the model moved: no manifest (it went first), the old model
        assert model.read_bytes() == b"old model" and not manifest.exists()
    else:  # between the model and its manifest: the new model, alone
        assert model.read_bytes() == b"new model" and not manifest.exists()
    assert _names(tmp_path) == ["m.onnx"]  # no temporary files either
    assert verified_manifest(model) is None


def test_a_full_disk_leaves_the_old_pair(tmp_path, monkeypatch):
    model, manifest = _pair(tmp_path)

    def no_space(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts, "_manifest_payload", no_space)  # the disk filled up after the model's bytes
    with pytest.raises(OSError):
        write_artifact(model, b"new model", "quantize", precision="int8")
    assert model.read_bytes() == b"old model" and verified_manifest(model)["precision"] == "fp32"
    assert _names(tmp_path) == ["m.onnx", "m.onnx.json"]


def test_a_stale_manifest_is_ignored_with_a_warning(tmp_path):
    model, manifest = _pair(tmp_path)
    model.write_bytes(b"replaced by hand")
    with pytest.warns(StaleManifestWarning, match="m.onnx.json does not describe m.onnx"):
        assert verified_manifest(model) is None
    manifest.write_text(json.dumps(["not", "a", "manifest"]))
    with pytest.warns(StaleManifestWarning):
        assert verified_manifest(model) is None


def test_parity_does_not_take_the_precision_from_a_stale_manifest(digits, tmp_path):
    """main: an FP32 ONNX off by 0.05 passed as int8 because a stale manifest said so; alone it fails."""
    candidate = tmp_path / "eca_resnet18.onnx"
    model = onnx.load(str(digits.onnx))
    bias = next(i for i in model.graph.initializer if i.name.endswith("fc.bias"))
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 0.05, bias.name))
    onnx.save(model, str(candidate))
    stale = json.loads(artifacts.manifest_path(digits.onnx).read_text())
    artifacts.manifest_path(candidate).write_text(json.dumps({**stale, "precision": "int8"}))
    with pytest.warns(StaleManifestWarning) as caught:
        code = main(["parity", "--reference", f"torch:{digits.model}:{digits.checkpoint}", "--candidate",
                     str(candidate), "--count", "16", "--threads", "1", "--out", str(tmp_path / "p.json")])
    assert code == 1  # judged as the FP32 model it is
    result = json.loads((tmp_path / "p.json").read_text())
    row = next(r for r in result["rows"] if r["status"] != "reference")
    assert row["precision"] == "fp32" and row["status"] == "fail"
    shown = warnings.formatwarning(caught[0].message, caught[0].category, caught[0].filename, caught[0].lineno)
    assert shown == "eca-deploy: warning: eca_resnet18.onnx.json does not describe eca_resnet18.onnx (sha256 " \
                    "differs); ignored\n"  # what the user sees: one line


def test_quantize_writes_a_manifest_that_verifies(digits, tmp_path):
    source = tmp_path / "m.onnx"
    shutil.copy(digits.onnx, source)
    assert main(["quantize", "--onnx", str(source), "--precision", "fp16"]) == 0
    manifest = verified_manifest(tmp_path / "m.fp16.onnx")
    assert manifest["precision"] == "fp16" and manifest["artifact"] == "m.fp16.onnx"
