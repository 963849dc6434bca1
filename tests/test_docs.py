"""Every command the user docs show runs, so no example can rot.

README.md and docs/*.md: each page's runnable blocks (a ```bash or ```python fence right after
`<!-- doc-test: run [fake-tensorrt] [slow] -->`) run in order in one fresh working directory per page and must
exit 0; a page with a `slow` block is a slow test. A bash block shown without the marker must be one of the
few kinds that cannot run here (KINDS), each checked as far as it can be without running it.
"""

from __future__ import annotations

import re
import shlex
import tomllib

import pytest

from docs.blocks import FLAGS, MARKER, ROOT, Block, blocks, command_folder, pages, run_block, runnable
from eca_deploy.runtime.tensorrt.env import TENSORRT_INSTALL

INSTALL = re.compile(r"(sudo apt(-get)? install |python3 -m venv |(PATH=\S+ )?(python3 -m )?pip install )")
KINDS = {
    "install": INSTALL,  # changes the machine: pip, apt, venv
    "gpu": re.compile(r"python3 -m pytest -m gpu "),  # needs a CUDA GPU and TensorRT
    "benchmark": re.compile(r"python3 benchmarks/bench_\w+\.py"),  # minutes of timing on a quiet machine
    # a Triton server (PyTriton's stub needs numpy<2): tests/runtime/triton/test_serve.py runs these commands
    "server": re.compile(r"(eca-deploy (serve |bench triton://|parity .*--candidate triton://)|kill %1$)"),
}


def shown_only_kind(block: Block) -> str | None:
    """The one kind every command line of a shown-only bash block is, else None."""
    lines = [line for line in block.text.splitlines() if line.strip() and not line.startswith("#")]
    kinds = {next((kind for kind, pattern in KINDS.items() if pattern.match(line)), None) for line in lines}
    return kinds.pop() if len(kinds) == 1 else None


def shown_bash(kind: str) -> list[Block]:
    return [block for page in pages() for block in blocks(page)
            if block.language == "bash" and block.flags is None and shown_only_kind(block) == kind]


def _page(page):
    slow = any("slow" in block.flags for block in runnable(page))
    return pytest.param(page, id=str(page.relative_to(ROOT)), marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("page", [_page(page) for page in pages() if runnable(page)])
def test_every_runnable_block_of_the_page_exits_0(page, tmp_path):
    bin_folder, work = command_folder(tmp_path), tmp_path / "work"
    work.mkdir()
    for block in runnable(page):
        done = run_block(block, work, bin_folder)
        assert done.returncode == 0, (f"{block.where} exited {done.returncode}:\n{block.text}\n"
                                      f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def test_every_marker_opens_a_bash_or_python_block_with_known_flags():
    for page in pages():
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip().startswith("<!-- doc-test"):
                marker = MARKER.fullmatch(line.strip())
                assert marker, f"{page.name}:{i + 1}: not `<!-- doc-test: run [flag ...] -->`: {line}"
                assert set(marker.group(1).split()) <= FLAGS, f"{page.name}:{i + 1}: flags are {sorted(FLAGS)}"
                assert i + 1 < len(lines) and lines[i + 1] in ("```bash", "```python"), \
                    f"{page.name}:{i + 1}: the marker must sit right above a ```bash or ```python fence"


def test_every_bash_block_shown_is_run_or_of_a_kind_that_cannot_run_here():
    for page in pages():
        for block in blocks(page):
            if block.language == "bash" and block.flags is None:
                assert shown_only_kind(block), (f"{block.where}: a bash block no test runs; mark it "
                                                f"`<!-- doc-test: run -->` or keep it to one of {sorted(KINDS)}")


def _project_packages() -> tuple[set[str], set[str]]:
    """(names of this project's dependencies and optional dependencies, its extras)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names = {re.split(r"[<>=\[ ]", dep)[0] for dep in [*project["dependencies"], *sum(extras.values(), [])]}
    return names | {"torchvision"}, set(extras)  # torchvision: timm's, installed from PyTorch's index


def test_pip_lines_install_only_this_project_and_its_dependencies():
    names, extras = _project_packages()
    lines = [line for block in shown_bash("install") for line in block.text.splitlines() if "pip install" in line]
    assert lines
    for line in lines:
        words = shlex.split(line.split("pip install", 1)[1].split("&&")[0])
        for word in words:
            if word in ("-e", ".") or word.startswith("--index-url") or word.startswith("https://"):
                continue
            extra = re.fullmatch(r"(?:\.|eca-deploy)\[([\w,]+)\]", word)
            if extra:
                assert set(extra.group(1).split(",")) <= extras, f"{line}: no such extra"
            else:
                assert re.split(r"[<>=]", word)[0] in names, f"{line}: {word} is not a dependency of eca-deploy"


def test_the_jetson_apt_line_installs_the_package_the_tensorrt_hint_names():
    apt = [line for block in shown_bash("install") for line in block.text.splitlines() if " apt install " in line]
    assert apt and all("python3-libnvinfer" in line for line in apt)
    assert "python3-libnvinfer" in TENSORRT_INSTALL


def test_gpu_and_benchmark_commands_name_files_that_exist():
    for kind in ("gpu", "benchmark"):
        for block in shown_bash(kind):
            paths = [word for line in block.text.splitlines() for word in shlex.split(line, comments=True)
                     if word.startswith(("tests/", "benchmarks/"))]
            assert paths and all((ROOT / path).exists() for path in paths), block.where


def test_user_docs_name_no_issue_numbers():
    for page in pages():
        found = re.findall(r"(?i)\bissues?\s*#?\d+|(?<![\w&/])#\d+\b", page.read_text())
        assert not found, f"{page.name}: {found}"


def test_the_readme_is_short_sets_up_in_two_commands_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    set_up = readme[readme.index("\n## Set up\n"):]
    set_up = set_up[:set_up.index("\n## ", 1)]
    commands = [block for block in blocks(ROOT / "README.md") if f"```bash\n{block.text}```" in set_up]
    assert len(commands) == 2 and all(shown_only_kind(block) == "install" for block in commands)
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"
