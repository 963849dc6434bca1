"""Every command and code block of the README's TensorRT section (desktop GPU and Jetson) is run here, so the
docs cannot drift from the code again (they did: a Python example importing a module that does not exist,
and a Jetson `--dla` example our own DLA rule refuses).

- ``eca-deploy ...`` lines run through the CLI in a scratch folder, with fakes for TensorRT, pycuda and
  Polygraphy (the fake engines run the built ONNX in onnxruntime); a ``$ `` line's printed output must match.
- ``python`` blocks are executed after the commands before them (the engine they open was built there).
- ``python3 -m pytest ...`` is run with ``--collect-only``: it must collect tests (the GPU tests need a GPU).
- ``pip install`` lines may name only this project's extras and dependencies; ``apt``/``venv`` lines are the
  JetPack setup, which must name the package the TensorRT install hint names.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import onnx
import pytest

from eca_deploy.calibration.fp16 import convert_to_fp16
from eca_deploy.cli.main import main
from eca_deploy.runtime.harness.doctor import tiny_eca_onnx
from eca_deploy.runtime.tensorrt import env as tensorrt_env
from fake_polygraphy import FakePolygraphy, polygraphy_modules
from fake_tensorrt import FakeCuda, fake_tensorrt

ROOT = Path(__file__).resolve().parents[3]
SECTION = "<!-- section: tensorrt -->"
IMGSZ = 224  # the size the section's examples print
# The JetPack setup the section shows: run by the user on the board, not here.
SYSTEM_SETUP = ("sudo apt install ", "python3 -m venv --system-site-packages .venv && . .venv/bin/activate")


def section_blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced block in the TensorRT section, in order."""
    text = (ROOT / "README.md").read_text()
    body = text[text.index(SECTION):]
    body = body[:body.index("\n## ")]
    return re.findall(r"```(\w+)\n(.*?)```", body, flags=re.S)


def _commands(block: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) per command line; output follows a ``$ `` command."""
    commands = []
    for line in block.splitlines():
        if not line.strip():
            continue
        if line.startswith("$ ") or not commands or not commands[-1][0].startswith("$ "):
            commands.append((line, []))
        else:
            commands[-1][1].append(line)
    return commands


@pytest.fixture()
def board(monkeypatch, tmp_path):
    """A scratch folder holding the ONNX files the section names, and a Jetson-like machine played by fakes
    (TensorRT 10.3, one DLA core)."""
    fp32 = tiny_eca_onnx(tmp_path / "tiny.onnx")
    model = onnx.load(str(fp32))
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_value = IMGSZ  # global pooling makes the tiny ECA network size-agnostic
    fp16 = convert_to_fp16(model)[0]
    for name, proto in (("artifacts/eca_resnet50/eca_resnet50.onnx", model), ("eca_resnet18.onnx", model),
                        ("artifacts/eca_resnet50/eca_resnet50.int8.onnx", model), ("eca_resnet50.fp16.onnx", fp16)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        onnx.save(proto, str(tmp_path / name))
    cuda = FakeCuda()
    modules = {"tensorrt": fake_tensorrt(cuda, dla_cores=1), "pycuda.driver": cuda,
               **polygraphy_modules(FakePolygraphy(dla_cores=1))}
    monkeypatch.setattr(tensorrt_env, "_import_module", modules.__getitem__)
    monkeypatch.setattr(tensorrt_env, "_primary", None)
    monkeypatch.setattr(tensorrt_env, "_at_exit", lambda hook: None)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _pip(command: str) -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    known = {re.split(r"[<>=\[ ]", dep)[0] for dep in extras["dependencies"]}
    for deps in extras["optional-dependencies"].values():
        known |= {re.split(r"[<>=\[ ]", dep)[0] for dep in deps}
    for word in shlex.split(command.split("pip install", 1)[1]):
        if word in ("-e", "."):
            continue
        extra = re.fullmatch(r"\.\[(\w+)\]", word)
        if extra:
            assert extra.group(1) in extras["optional-dependencies"], word
        else:
            assert re.split(r"[<>=]", word)[0] in known, f"{word} is not a dependency of eca-deploy"


def _run(command: str, expected: list[str], capsys) -> None:
    line = command.removeprefix("$ ")
    if line.startswith("eca-deploy "):
        code = main(shlex.split(line)[1:])
        out, err = capsys.readouterr()
        assert code == 0, f"{line}: {err}"
        if expected:
            assert out.splitlines() == expected
    elif line.startswith("python3 -m pytest "):
        argv = shlex.split(line)[3:]
        done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                               *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and re.search(r"\d+ tests? collected", done.stdout), done.stdout[-2000:]
    elif "pip install" in line:
        _pip(line)
    else:
        assert line.startswith(SYSTEM_SETUP), f"a README command no test runs: {line}"
        if line.startswith("sudo apt install "):
            assert "python3-libnvinfer" in line and "python3-libnvinfer" in tensorrt_env.TENSORRT_INSTALL


def test_every_command_and_code_block_of_the_tensorrt_section_runs(board, capsys):
    blocks = section_blocks()
    assert {language for language, _ in blocks} == {"bash", "python"}
    ran = 0
    for language, text in blocks:
        if language == "python":
            exec(compile(text, "README.md (TensorRT section)", "exec"), {})  # noqa: S102 - our own docs
            ran += 1
            continue
        for command, expected in _commands(text):
            _run(command, expected, capsys)
            ran += 1
    assert ran >= 9
    manifest = (board / "eca_resnet50.fp16.engine.json").read_text()
    assert '"dla_core": 0' in manifest  # the Jetson example built for DLA, as the README says


def test_the_python_example_imports_the_backend_that_exists():
    python = [text for language, text in section_blocks() if language == "python"]
    assert python and all("eca_deploy.runtime.tensorrt.backend import TensorRTBackend" in text for text in python)
