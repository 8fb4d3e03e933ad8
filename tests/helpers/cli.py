"""Run the installed `nas-rl` entry point as a user does: a subprocess in a folder of the test's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def nas_rl_command() -> list[str]:
    script = Path(sys.executable).parent / "nas-rl"
    if script.exists():
        return [str(script)]
    found = shutil.which("nas-rl")
    return [found] if found else [sys.executable, "-m", "nas_rl.cli"]


def run_cli(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(nas_rl_command() + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
