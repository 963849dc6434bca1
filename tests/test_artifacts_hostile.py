"""Issue 11, item 5: an artifact and its manifest are written as a pair, and a stale ONNX manifest is not trusted."""

import errno
import json
import os
import shutil

import onnx
import pytest
from onnx import numpy_helper

from eca_deploy import artifacts
from eca_deploy.artifacts import verified_manifest, write_artifact
from eca_deploy.cli.main import main
from eca_deploy.errors import OutputError


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
    with pytest.raises(OutputError, match="no space left in"):
        write_artifact(model, b"new model", "quantize", precision="int8")
    assert model.read_bytes() == b"old model" and verified_manifest(model)["precision"] == "fp32"
    assert _names(tmp_path) == ["m.onnx", "m.onnx.json"]


def test_a_stale_manifest_is_ignored_with_a_warning(tmp_path, capsys):
    model, manifest = _pair(tmp_path)
    model.write_bytes(b"replaced by hand")
    assert verified_manifest(model) is None
    assert capsys.readouterr().err == (f"eca-deploy: warning: manifest {manifest} does not describe {model} "
                                       "(sha256 differs); ignored\n")


def test_parity_does_not_take_the_precision_from_a_stale_manifest(digits, tmp_path, capsys):
    """main: an FP32 ONNX off by 0.05 passed as int8 because a stale manifest said so; alone it fails."""
    candidate = tmp_path / "eca_resnet18.onnx"
    model = onnx.load(str(digits.onnx))
    bias = next(i for i in model.graph.initializer if i.name.endswith("fc.bias"))
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 0.05, bias.name))
    onnx.save(model, str(candidate))
    stale = json.loads(artifacts.manifest_path(digits.onnx).read_text())
    artifacts.manifest_path(candidate).write_text(json.dumps({**stale, "precision": "int8"}))
    code = main(["parity", "--reference", f"torch:{digits.model}:{digits.checkpoint}", "--candidate",
                 str(candidate), "--count", "16", "--threads", "1", "--out", str(tmp_path / "p.json")])
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("eca-deploy: warning:")]
    assert code == 1  # judged as the FP32 model it is
    result = json.loads((tmp_path / "p.json").read_text())
    row = next(r for r in result["rows"] if r["status"] != "reference")
    assert row["precision"] == "fp32" and row["status"] == "fail"
    assert warned == [f"eca-deploy: warning: manifest {candidate}.json does not describe {candidate} (sha256 "
                      "differs); ignored"]  # said once, on one line


def test_quantize_writes_a_manifest_that_verifies(digits, tmp_path):
    source = tmp_path / "m.onnx"
    shutil.copy(digits.onnx, source)
    assert main(["quantize", "--onnx", str(source), "--precision", "fp16"]) == 0
    manifest = verified_manifest(tmp_path / "m.fp16.onnx")
    assert manifest["precision"] == "fp16" and manifest["artifact"] == "m.fp16.onnx"
