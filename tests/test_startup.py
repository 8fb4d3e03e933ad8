"""A wrong command line is refused before the heavy libraries are imported (bench/startup.py has the times).

Checked by what the process had imported when it exited, not by timing: torch, TensorFlow, Stable-Baselines3,
scikit-learn and matplotlib take seconds to import, and a command that names a group option, a key or a new
top-level key wrongly is refused from the composed config alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocess runs of the entry point

HEAVY = ("torch", "tensorflow", "stable_baselines3", "sb3_contrib", "sklearn", "matplotlib")
#: Runs ``main`` with the arguments after ``-c CODE`` and prints, at exit, the heavy modules it imported.
CODE = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('imported:', sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr))\n"
    "from nas_rl.cli import {main}\n"
    "{main}()\n"
)


def run(main: str, arguments: list[str], cwd: Path) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-c", CODE.format(heavy=HEAVY, main=main), *arguments], cwd=cwd,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    lines = done.stderr.strip().splitlines()
    imported = next(line for line in lines if line.startswith("imported: "))
    message = "\n".join(line for line in lines if not line.startswith("imported: "))
    return done.returncode, message, imported


def test_importing_the_entry_points_imports_no_heavy_library(tmp_path: Path) -> None:
    code = f"import sys, nas_rl.cli; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("main", "arguments", "named"),
    [
        ("search_main", ["controller=nope"], "controller=nope is not accepted"),
        ("search_main", ["search.nope=1"], "search.nope=1 is not accepted"),
        ("search_main", ["+foo=1", "search.budget=0"], "+foo=1 is not accepted"),
        ("search_main", ["-m", "seed=0,1", "latency=nope"], "latency=nope is not accepted"),
        ("profile_main", ["device=host_gpu"], "device=host_gpu is not accepted"),
        ("supernet_main", ["dataset=nope"], "dataset=nope is not accepted"),
    ],
)
def test_a_wrong_command_line_is_refused_before_any_heavy_import(main, arguments, named, tmp_path: Path) -> None:
    code, message, imported = run(main, arguments, tmp_path)
    assert code == 2 and len(message.splitlines()) == 1 and named in message, message
    assert imported == "imported: []", imported
