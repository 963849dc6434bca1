"""A new kind of artifact is one row: registered here from the test alone (no folder, no edit of the package),
it is parsed, opened, named in --help and given default output names by parity and bench like the built-in kinds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eca_deploy.cli.bench import default_output
from eca_deploy.cli.main import main
from eca_deploy.runtime.base import ArtifactKind, Backend, InputSpec
from eca_deploy.runtime.registry import ARTIFACT_KINDS, Artifact, parse_spec, register, spec_help


class ToyBackend(Backend):
    """Logits that are a fixed slice of the image: the same on every call, on any CPU."""

    name = "toy-cpu"

    def __init__(self, threads):
        self.threads = threads

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec("x", (None, 3, 16, 16))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(batch.reshape(len(batch), -1)[:, :10], dtype=np.float32)

    def close(self) -> None:
        pass


TOY = ArtifactKind("toy", "Toy", "toy model", ("a .toy file", "toy:<file.onnx>"),
                   lambda artifact, options: ToyBackend(options.threads), suffixes=(".toy",), prefix="toy:",
                   named=lambda spec, rest: {"path": parse_spec(rest).path})


@pytest.fixture
def toy(tmp_path, monkeypatch):
    register(TOY)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for name in ("m.toy", "n.toy"):
        (tmp_path / "models" / name).write_bytes(b"toy")
    try:
        yield tmp_path
    finally:
        del ARTIFACT_KINDS["toy"]


def test_a_registered_row_is_parsed_and_described(toy):
    artifact = parse_spec("models/m.toy")
    assert (artifact.kind, artifact.format, artifact.label, artifact.precision()) == (
        "toy", "Toy", "m.toy", ("fp32", "assumed (no manifest; pass --precision)"))
    assert [p.name for p in artifact.inputs] == ["m.toy", "m.toy.json"] and artifact.size_mb == 0.0
    assert spec_help().endswith(", a .toy file, or toy:<file.onnx>")  # the new row, last, read from the table


def test_a_row_cannot_take_another_rows_suffix():
    with pytest.raises(ValueError, match="claims a suffix or prefix of onnx"):
        register(ArtifactKind("copy", "Copy", "copy", ("a .onnx file",), TOY.opener, suffixes=(".onnx",)))
    assert "copy" not in ARTIFACT_KINDS


def test_bench_default_output_and_help_read_the_row(toy, capsys):
    foreign = Artifact("toy:models/m.onnx", "toy", toy / "models" / "m.onnx")  # an ONNX file run by the toy row
    assert (foreign.format, foreign.label) == ("ONNX", "toy:m.onnx")
    assert default_output(foreign).name == "bench-m.toy.json"
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "a .toy file, or toy:<file.onnx>" in " ".join(capsys.readouterr().out.split())
    assert main(["bench", "models/m.toy", "--iterations", "2", "--warmup", "0", "--threads", "1"]) == 0
    (row,) = json.loads((toy / "models" / "bench-m.json").read_text())["rows"]
    assert (row["format"], row["backend"], row["bench"]["imgsz"]) == ("Toy", "toy-cpu", 16)


def test_parity_default_output_and_rows_come_from_the_row(toy, capsys):
    assert main(["parity", "--reference", "models/m.toy", "--candidate", "toy:models/n.toy", "--count", "4"]) == 0
    report = json.loads((toy / "models" / "parity.json").read_text())
    assert [(r["format"], r["status"]) for r in report["rows"]] == [("Toy", "reference"), ("Toy", "pass")]
    assert sorted(p.name for p in toy.iterdir()) == ["models"]
