"""The floors of the package are a test: `lint-imports` checks pyproject's layers contract.

A back-edge (a lower floor importing a higher one) or an import between two framework folders
fails here, in the default tier, rather than waiting for someone to draw the import graph.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("importlinter", reason="import-linter is in the dev extra: pip install -e '.[dev]'")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """Run lint-imports on the package under `root` with `root`'s pyproject; no cache written."""
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run(
        [sys.executable, "-c", code, "--no-cache", "--no-logo", str(root / "pyproject.toml")],
        cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )


def test_the_package_keeps_its_floors():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "eca_deploy floors KEPT" in result.stdout


@pytest.fixture
def package_copy(tmp_path):
    """A copy of the package and its pyproject, to plant imports in."""
    shutil.copytree(ROOT / "eca_deploy", tmp_path / "eca_deploy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def plant(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(f"\n{line}\n")


def test_an_import_running_back_up_breaks_the_contract(package_copy):
    plant(package_copy / "eca_deploy" / "graph" / "__init__.py", "import eca_deploy.pipeline")
    result = lint_imports(package_copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "eca_deploy floors BROKEN" in result.stdout
    assert "eca_deploy.graph is not allowed to import eca_deploy.pipeline" in result.stdout


def test_framework_folders_never_import_each_other(package_copy):
    """An optional floor (a framework folder not there yet) is checked as soon as it exists."""
    plant(package_copy / "eca_deploy" / "runtime" / "triton" / "__init__.py",
          "import eca_deploy.runtime.tensorrt.backend")
    result = lint_imports(package_copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "eca_deploy.runtime.triton is not allowed to import eca_deploy.runtime.tensorrt" in result.stdout
