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
