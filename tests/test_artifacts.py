"""Atomic writes: the file appears whole or not at all, with the user's usual file mode."""

import os

import pytest

from eca_deploy.artifacts import atomic_write, manifest_path, read_manifest, write_artifact


def test_atomic_write_gives_the_umask_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "a.bin", b"data")
    finally:
        os.umask(umask)
    assert path.read_bytes() == b"data"
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_failed_writer_leaves_nothing_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")

    def writer(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, writer)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_manifest_sits_beside_its_artifact(tmp_path):
    artifact = tmp_path / "m.int8.engine"
    write_artifact(artifact, b"x" * 10, "build", precision="int8")
    assert manifest_path(artifact).name == "m.int8.engine.json"
    manifest = read_manifest(artifact)
    assert manifest["precision"] == "int8" and manifest["size_bytes"] == 10 and len(manifest["sha256"]) == 64


@pytest.mark.slow
def test_artifacts_record_their_weights_and_parity_and_export_say_when_they_differ(digits, tmp_path, capsys):
    """A random-init export beside the trained one's weights: export refuses to replace it with other weights
    (one line, nothing changed), every manifest down the line records its weights, and parity says first that
    the candidate was made from other weights than the reference."""
    from eca_deploy.cli.main import main

    folder = tmp_path / "artifacts"
    shape = ["--model", digits.model, "--imgsz", str(digits.imgsz), "-o", str(folder)]
    assert main(["export", *shape, "--num-classes", str(digits.num_classes)]) == 0
    random_onnx = folder / f"{digits.model}.onnx"
    before = random_onnx.read_bytes()
    capsys.readouterr()
    assert main(["export", *shape, "--weights", str(digits.checkpoint)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was made from other weights (random init (seed 0))" in err[0], err
    assert "--output" in err[0] and random_onnx.read_bytes() == before

    half = folder / f"{digits.model}.fp16.onnx"
    assert main(["quantize", "--onnx", str(random_onnx), "--precision", "fp16"]) == 0
    assert read_manifest(half)["random_init_seed"] == 0 and read_manifest(half)["weights_sha256"] is None
    assert read_manifest(digits.onnx)["weights_sha256"]  # the trained export records its file's hash
    capsys.readouterr()
    code = main(["parity", "--reference", f"torch:{digits.model}:{digits.checkpoint}", "--candidate", str(half),
                 "--candidate", str(digits.onnx), "--data", str(digits.val_dir), "--count", "16",
                 "-o", str(tmp_path / "parity.json")])
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "made from other weights" in line]
    assert code == 1 and len(notes) == 1 and half.name in notes[0], err
    assert "this candidate was made from other weights (random init (seed 0)) than the reference (sha256 " in notes[0]
