"""The digits model is trained once per version of its code and shared by runs, safely when they overlap."""

import json

import pytest

from eca_deploy.testing import digits as digits_module
from eca_deploy.testing.digits import Digits, cache_key, cached_digits


def _fake_build(root):
    """What build_digits leaves on disk, without the half minute of training."""
    for sub in ("calib", "val", "onnx"):
        (root / sub).mkdir(parents=True)
    (root / "ck.pth.tar").write_bytes(b"weights")
    (root / "onnx" / "m.onnx").write_bytes(b"onnx")
    return Digits(root, "eca_resnet18", root / "ck.pth.tar", root / "onnx" / "m.onnx", 32, root / "calib",
                  root / "val", 10, 0.97)


def test_built_once_then_reused(tmp_path, monkeypatch):
    builds = []
    monkeypatch.setattr(digits_module, "build_digits", lambda root: builds.append(root) or _fake_build(root))
    first = cached_digits(tmp_path)
    again = cached_digits(tmp_path)
    assert len(builds) == 1 and first == again
    assert first.root == tmp_path / f"digits-{cache_key()}" and first.onnx.read_bytes() == b"onnx"
    assert first.val_accuracy == 0.97 and first.calib_dir == first.root / "calib"
    assert [p.name for p in tmp_path.iterdir()] == [first.root.name]  # no half-built folder left behind


def test_a_run_that_loses_the_race_uses_the_winners_folder(tmp_path, monkeypatch):
    final = tmp_path / f"digits-{cache_key()}"

    def racing(root):
        built = _fake_build(root)
        winner = _fake_build(final)  # another run renames its folder into place meanwhile
        (final / "digits.json").write_text(json.dumps(digits_module._record(winner)))
        (final / "onnx" / "m.onnx").write_bytes(b"winner")
        return built

    monkeypatch.setattr(digits_module, "build_digits", racing)
    got = cached_digits(tmp_path)
    assert got.root == final and got.onnx.read_bytes() == b"winner"
    assert [p.name for p in tmp_path.iterdir()] == [final.name]


def test_building_a_new_version_removes_the_earlier_ones(tmp_path, monkeypatch):
    old = _fake_build(tmp_path / "digits-0123456789abcdef")
    (old.root / "digits.json").write_text(json.dumps(digits_module._record(old)))
    (tmp_path / "unrelated").mkdir()
    monkeypatch.setattr(digits_module, "build_digits", _fake_build)
    got = cached_digits(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([got.root.name, "unrelated"])


def test_the_key_follows_the_code(monkeypatch):
    key = cache_key()
    monkeypatch.setattr(digits_module, "CACHE_PACKAGES", digits_module.CACHE_PACKAGES + ("no-such-package",))
    assert cache_key() != key and len(key) == 16


@pytest.mark.slow
def test_training_is_deterministic(digits, tmp_path):
    """Trained again from scratch, the digits model has bit-identical weights (seeds, one thread, deterministic
    algorithms), so the cached one is the one this code makes."""
    import torch

    from eca_deploy.testing.digits import build_digits

    again = build_digits(tmp_path / "again")
    first, second = (torch.load(d.checkpoint, weights_only=True)["state_dict"] for d in (digits, again))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert again.val_accuracy == digits.val_accuracy
