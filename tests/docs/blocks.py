"""The fenced blocks of the user docs, and running a page's runnable ones (the convention is in docs/architecture.md).

A block whose info string is `bash` or `python` and whose fence is immediately preceded by
`<!-- doc-test: run [flag ...] -->` is runnable; flags: `fake-tensorrt` (the fake TensorRT, pycuda and Polygraphy
of tests/runtime/tensorrt stand in for the real ones), `slow` (the page's test is slow).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAKE_TENSORRT = Path(__file__).resolve().parent / "fake_tensorrt"
MARKER = re.compile(r"<!-- doc-test: run((?: [\w-]+)*) -->")
FLAGS = {"fake-tensorrt", "slow"}
BLOCK_TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str  # the fence's info string
    text: str
    flags: frozenset[str] | None  # None: shown only; else runnable, with these flags

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(page: Path) -> list[Block]:
    """Every fenced block of `page`, in order."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        start, language = i, lines[i][3:].strip()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = MARKER.fullmatch(lines[start - 1].strip()) if start else None
        flags = frozenset(marker.group(1).split()) if marker else None
        found.append(Block(page, start + 1, language, "\n".join(lines[start + 1:end]) + "\n", flags))
        i = end + 1
    return found


def runnable(page: Path) -> list[Block]:
    return [block for block in blocks(page) if block.flags is not None]


def command_folder(tmp_path: Path) -> Path:
    """A folder for PATH where `eca-deploy` and `python3` are this interpreter running this checkout."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "python3").symlink_to(sys.executable)
    script = folder / "eca-deploy"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m eca_deploy "$@"\n')
    script.chmod(0o755)
    return folder


def run_block(block: Block, cwd: Path, bin_folder: Path) -> subprocess.CompletedProcess:
    """Run one runnable block in `cwd`: bash with -e and pipefail (every command must succeed), python with python3."""
    python_path = [str(ROOT), *([str(FAKE_TENSORRT)] if "fake-tensorrt" in block.flags else [])]
    env = {**os.environ, "PATH": f"{bin_folder}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(python_path), "MPLBACKEND": "Agg",
           "ECA_DEPLOY_CACHE": str(cwd.parent / "cache")}  # a download cache of the page's own
    argv = ["bash", "-euo", "pipefail", "-c", block.text] if block.language == "bash" else \
        [sys.executable, "-c", block.text]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
