"""Hostile saved references (`parity --reference ref.npz`): a saved reference is data.

Nothing named inside it is opened; every member is checked against the meta before it is allocated;
a broken one is one line on stderr and exit 2. Each test builds its own hostile .npz.
"""

from __future__ import annotations

import io
import json
import os
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from eca_deploy.cli.main import main
from eca_deploy.runtime.harness.doctor import tiny_eca_onnx
from eca_deploy.runtime.harness.parity import SyntheticInputs

IMGSZ = 16  # tiny_eca_onnx's input size
COUNT = 8
CLASSES = 10


def _meta(**changes) -> dict:
    meta = {"format": "eca-deploy-reference/1", "reference": "torch:eca_resnet18:w.pth", "kind": "torch",
            "backend": "torch-cpu", "precision": "fp32", "model": "eca_resnet18", "weights_sha256": None,
            "model_sha256": None, "imgsz": IMGSZ, "count": COUNT, "seed": 0, "metrics": {},
            "data": {"source": "synthetic", "samples": COUNT, "labeled": False, "num_classes": None, "skipped": 0,
                     "hash": SyntheticInputs(COUNT, IMGSZ).data_hash}}
    meta.update(changes)
    return meta


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def _npz(path: Path, meta: dict | str, logits=None, labels=None, members: dict | None = None) -> Path:
    """An .npz laid out as `parity --save-reference` writes it, with any member replaced or left out."""
    entries = {"meta.npy": _npy(np.array(meta if isinstance(meta, str) else json.dumps(meta))),
               "logits.npy": _npy(np.zeros((COUNT, CLASSES), np.float32) if logits is None else logits),
               "labels.npy": _npy(np.zeros(0, np.int64) if labels is None else labels)}
    entries.update(members or {})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            if data is not None:
                archive.writestr(name, data)
    return path


@pytest.fixture
def candidate(tmp_path) -> Path:
    return tiny_eca_onnx(tmp_path / "tiny.onnx")


def _parity(capsys, ref: Path, candidate: Path, *extra) -> tuple[int, str, str]:
    code = main(["parity", "--reference", str(ref), "--candidate", str(candidate), "--count", str(COUNT),
                 "--threads", "1", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(code: int, err: str, *expected: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("eca-deploy: error: "), err
    for text in expected:
        assert text in lines[0], lines[0]


def test_a_valid_saved_reference_runs_and_its_row_is_its_recorded_identity(tmp_path, capsys, candidate):
    """The control for the cases below: the hand-built layout is what parity reads."""
    out = tmp_path / "parity.json"
    code, _, err = _parity(capsys, _npz(tmp_path / "ref.npz", _meta()), candidate, "--output", str(out))
    assert code in (0, 1), err  # zeros are not the tiny model's logits: a verdict, not an error
    row = json.loads(out.read_text())["rows"][0]
    assert row["status"] == "reference" and row["identity"] == "torch:eca_resnet18:w.pth"
    assert row["format"] == "PyTorch" and row["artifact"] == "eca_resnet18 (PyTorch)"


@pytest.mark.parametrize("named", ["/dev/zero", "fifo", "/etc/shadow", "secret.onnx"])
def test_nothing_a_saved_reference_names_is_opened(tmp_path, capsys, candidate, named, monkeypatch):
    """main: meta kind 'onnx', reference '/dev/zero' was read until MemoryError; a FIFO hung; a file was parsed.
    Here every file the meta names is a trap: opening it for reading fails the test."""
    if named == "fifo":
        named = str(tmp_path / "fifo.onnx")
        os.mkfifo(named)
    elif named == "secret.onnx":
        named = str(tmp_path / "secret.onnx")
        Path(named).write_bytes(b"not for parity")
    opened = []
    real_open = open

    def spy(file, *args, **kwargs):
        if str(file) == named:
            opened.append(file)
            raise AssertionError(f"a saved reference made parity open {file}")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    import onnx

    real_load = onnx.load
    monkeypatch.setattr(onnx, "load", lambda f, *a, **k: spy(f) if str(f) == named else real_load(f, *a, **k))
    ref = _npz(tmp_path / "ref.npz", _meta(kind="onnx", reference=named, precision="int8"))
    out = tmp_path / "parity.json"
    code, _, err = _parity(capsys, ref, candidate, "--output", str(out))
    assert opened == [] and code in (0, 1), err
    row = json.loads(out.read_text())["rows"][0]
    assert row["identity"] == named and row["artifact"] == Path(named).name and row["size_mb"] is None


def test_a_zip_bomb_logits_member_is_refused_before_it_is_allocated(tmp_path, capsys, candidate):
    """main allocated the size the .npy header declared (4.66 GiB for a 4.9 MB file) before reading it."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (COUNT, 150_000_000)})  # 4.8 GB declared
    bomb = header.getvalue() + bytes(1 << 16)  # the data stops early: only the header is honest about nothing
    ref = _npz(tmp_path / "ref.npz", _meta(), members={"logits.npy": bomb})
    tracemalloc.start()
    try:
        code, _, err = _parity(capsys, ref, candidate)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _one_line(code, err, "logits.npy declares float32 [8, 150000000]", "records 8 samples x classes")
    assert peak < 256 * 2**20  # numpy registers its buffers with tracemalloc: main's peak here was 4.8 GB


@pytest.mark.parametrize("case, expected", [
    ("truncated", "BadZipFile"),
    ("unknown kind", 'meta "kind" is "keras"'),
    ("missing key", 'meta "data.hash" is missing'),
    ("no logits member", "KeyError"),
    ("1-D logits", "logits.npy declares float32 [8]"),
    ("wrong label count", "labels.npy declares int64 [5]"),
    ("labels out of range", "labels outside 0..9"),
    ("object array", "logits.npy declares object"),
    ("meta not JSON", "JSONDecodeError"),
    ("string imgsz", 'meta "imgsz" is "16"'),
])
def test_a_broken_saved_reference_is_one_line_exit_2(tmp_path, capsys, candidate, case, expected):
    """main: BadZipFile, KeyError, IndexError and ValueError escaped as internal errors (exit 1); a string
    imgsz gave "takes 16x16 inputs but the comparison runs at 16x16"."""
    ref = tmp_path / "ref.npz"
    if case == "truncated":
        _npz(ref, _meta())
        ref.write_bytes(ref.read_bytes()[:200])
    elif case == "unknown kind":
        _npz(ref, _meta(kind="keras"))
    elif case == "missing key":
        meta = _meta()
        del meta["data"]["hash"]
        _npz(ref, meta)
    elif case == "no logits member":
        _npz(ref, _meta(), members={"logits.npy": None})
    elif case == "1-D logits":
        _npz(ref, _meta(), logits=np.zeros(COUNT, np.float32))
    elif case == "wrong label count":
        _npz(ref, _meta(), labels=np.zeros(5, np.int64))
    elif case == "labels out of range":
        _npz(ref, _meta(), labels=np.full(COUNT, 12, np.int64))
    elif case == "object array":
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": (COUNT, 10)})
        _npz(ref, _meta(), members={"logits.npy": header.getvalue()})
    elif case == "meta not JSON":
        _npz(ref, "{not json")
    elif case == "string imgsz":
        _npz(ref, _meta(imgsz=str(IMGSZ)))
    code, _, err = _parity(capsys, ref, candidate)
    _one_line(code, err, "is not a reference saved by `eca-deploy parity --save-reference`", expected)


def test_other_synthetic_data_names_what_differs(tmp_path, capsys, candidate):
    """main: "data hash synthetic-no vs synthetic-no": the two hashes cut to the same 12 characters."""
    ref = _npz(tmp_path / "ref.npz", _meta())
    code, _, err = _parity(capsys, ref, candidate, "--seed", "3")
    _one_line(code, err, "data hash synthetic-photo-like-seed3-n8-16px vs synthetic-photo-like-seed0-n8-16px")


@pytest.mark.parametrize("gap", [1.0, -1e-6, "1e-6", 1e300])
def test_a_saved_rounding_gap_cannot_loosen_the_fp32_verdict(tmp_path, capsys, candidate, gap):
    """The saved gap sets FP32's limit: a file claiming a huge (or nonsense) one is refused, never obeyed."""
    code, _, err = _parity(capsys, _npz(tmp_path / "ref.npz", _meta(rounding_gap=gap)), candidate)
    _one_line(code, err, 'meta "rounding_gap"')


def test_a_saved_rounding_gap_within_fp32s_range_is_used(tmp_path, capsys, candidate):
    code, _, err = _parity(capsys, _npz(tmp_path / "ref.npz", _meta(rounding_gap=1e-6)), candidate)
    assert code in (0, 1), err
