"""The package's structure: every module imports on its own, imports point down the layers, lint is clean."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import nas_rl

ROOT = Path(__file__).resolve().parents[1]


def all_modules() -> list[str]:
    """Every module of the nas_rl package (the shipped conf/ and envs/ folders hold no code)."""
    names = [m.name for m in pkgutil.walk_packages(nas_rl.__path__, prefix="nas_rl.")]
    return sorted(n for n in names if not n.startswith(("nas_rl.conf", "nas_rl.env_specs")))


def test_every_module_imports_on_its_own() -> None:
    """Each module imported first, in a fresh set of nas_rl modules: a cycle or an import that relies on another
    module having been imported before fails here (one interpreter, so torch and TensorFlow load once)."""
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m == 'nas_rl' or m.startswith('nas_rl.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as error:\n"
        "        failed.append(f'{name}: {type(error).__name__}: {error}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    modules = all_modules()
    assert "nas_rl.runs.search" in modules and "nas_rl.evaluation.store" in modules  # the walk found the tree
    result = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True, text=True, cwd=ROOT,
                            timeout=600, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: install the test extras (pip install -e '.[test]')")
    return path


@pytest.mark.parametrize(
    "command",
    [["lint-imports"], ["ruff", "check", "nas_rl", "tests", "bench"], ["mypy", "nas_rl"]],
    ids=["import-contract", "ruff", "mypy"],
)
def test_static_checks_pass(command: list[str]) -> None:
    """The import contract, ruff and mypy, with their settings in pyproject.toml."""
    result = subprocess.run([_tool(command[0]), *command[1:]], capture_output=True, text=True, cwd=ROOT,
                            timeout=600, check=False)  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
