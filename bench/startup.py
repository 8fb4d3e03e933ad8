"""How long a wrong command line takes to be refused, against the import time of the heavy libraries.

Each command below is wrong and must end with one line and exit code 2; the time is the wall time of the whole
process (interpreter start, imports, composing the config, the check), the median of ``--runs`` runs, and the
heavy libraries the process had imported when it exited are listed. For comparison: the time to import torch,
TensorFlow and nas_rl.cli alone. ``--source DIR`` runs another checkout's ``nas_rl`` (e.g. an earlier commit
unpacked with ``git archive``), so a change can be measured before and after:

    python bench/startup.py                                   # this checkout
    mkdir /tmp/before && git archive HEAD | tar -x -C /tmp/before && python bench/startup.py --source /tmp/before

Run it on a quiet machine: the numbers are wall times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The libraries whose import a refused command line should not pay for.
HEAVY = ("torch", "tensorflow", "stable_baselines3", "sklearn", "matplotlib")
#: Runs an entry point with the arguments after ``-c CODE``, then lists the heavy modules it imported.
ENTRY = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('imported:', ','.join(m for m in {heavy!r} if m in sys.modules) or '-',"
    " file=sys.stderr))\n"
    "from nas_rl.cli import {main}\n"
    "sys.argv[0] = {prog!r}\n"
    "{main}()\n"
)
#: (entry point, its arguments, what is wrong). ``search.budget=0`` keeps a release that accepts ``+foo=1``
#: from starting a search: it is refused too, later.
COMMANDS = [
    ("nas-rl", ["controller=nope"], "a group option that does not exist"),
    ("nas-rl", ["search.nope=1"], "a key that does not exist"),
    ("nas-rl", ["+foo=1", "search.budget=0"], "a new top-level key nothing reads"),
    ("nas-rl", ["search.budget=0"], "a value the search refuses"),
    ("nas-rl", ["reward.target_ms=-1"], "a value a role's constructor refuses"),
    ("nas-rl", ["accuracy.epochs=0"], "a value of the accuracy role (imports torch)"),
    ("nas-rl-profile", ["profile.nope=1"], "a key that does not exist (a tool)"),
]
MAINS = {"nas-rl": "search_main", "nas-rl-profile": "profile_main"}
IMPORTS = [("python -c pass", "pass"), ("import nas_rl.cli", "import nas_rl.cli"), ("import torch", "import torch"),
           ("import tensorflow", "import tensorflow")]  # fmt: skip


def timed(argv: list[str], env: dict[str, str], cwd: Path, runs: int) -> tuple[float, subprocess.CompletedProcess]:
    """Median wall time of ``runs`` runs of ``argv`` (seconds), and the last run's result."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
        times.append(time.perf_counter() - start)
    return statistics.median(times), done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per command (the median is shown)")
    parser.add_argument("--source", type=Path, default=None, help="a checkout whose nas_rl to run (default: this one)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(args.source.resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    label = str(args.source) if args.source else "this checkout"
    print(f"wrong command lines refused ({label}; median of {args.runs} runs, wall time of the whole process)\n")
    print("| command | what is wrong | seconds | exit | heavy libraries imported | first line of stderr |")
    print("|---|---|---:|---:|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for prog, arguments, wrong in COMMANDS:
            code = ENTRY.format(heavy=HEAVY, main=MAINS[prog], prog=prog)
            seconds, done = timed([sys.executable, "-c", code, *arguments], env, Path(folder), args.runs)
            lines = done.stderr.strip().splitlines()
            imported = next((line.split(": ", 1)[1] for line in lines if line.startswith("imported: ")), "?")
            message = next((line for line in lines if not line.startswith("imported: ")), "")
            message = message if len(message) <= 90 else message[:87] + "..."
            print(f"| `{prog} {' '.join(arguments)}` | {wrong} | {seconds:.2f} | {done.returncode} | {imported} | "
                  f"{message} |")  # fmt: skip
        print("\nimport time alone (median of the same runs, wall time of `python -c ...`)\n")
        print("| command | seconds |")
        print("|---|---:|")
        for name, statement in IMPORTS:
            seconds, done = timed([sys.executable, "-c", statement], env, Path(folder), args.runs)
            print(
                f"| `{name}` | {seconds:.2f} |" + ("" if done.returncode == 0 else f" (failed: exit {done.returncode})")
            )


if __name__ == "__main__":
    main()
