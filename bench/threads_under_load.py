"""The default search on an idle machine and next to one CPU-bound neighbour, per torch thread count.

    python bench/threads_under_load.py [--budget 4] [--threads 1 0] [--repeats 1]

Runs ``nas-rl search.budget=B accuracy.threads=N`` as a subprocess (its own store, no export), first alone,
then while another process spins one core (``while True: pass``), and prints a markdown table of wall
seconds and the loaded / idle ratio per thread count (0 = torch's default, all cores). On a shared machine
torch's default of one thread per core makes every thread wait for the slowest at each op's barrier, so a
single busy neighbour stalls all of them; one thread per evaluation degrades by the neighbour's share only.
Run it on an otherwise idle machine.
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

SPIN = "while True: pass"


def search_seconds(budget: int, threads: int, out: Path) -> float:
    """Wall seconds of one default search of ``budget`` architectures with ``threads`` torch threads."""
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "nas_rl.cli", f"search.budget={budget}", f"accuracy.threads={threads}",
        f"search.store={out / 'store.sqlite'}", "search.export=false", f"hydra.run.dir={out}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads or os.cpu_count() or 1)}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def timed(budget: int, threads: int, repeats: int, root: Path, loaded: bool) -> float:
    """Median wall seconds over ``repeats`` searches, with a spinning neighbour when ``loaded``."""
    neighbour = subprocess.Popen([sys.executable, "-c", SPIN]) if loaded else None
    try:
        runs = [
            search_seconds(budget, threads, root / f"t{threads}-{'loaded' if loaded else 'idle'}-{r}")
            for r in range(repeats)
        ]
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=4)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"default search, {args.budget} architectures, {os.cpu_count()} cores, median of {args.repeats}\n")
    print("| accuracy.threads | idle s | one busy neighbour s | loaded / idle |")
    print("|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for threads in args.threads:
            idle = timed(args.budget, threads, args.repeats, Path(tmp), loaded=False)
            loaded = timed(args.budget, threads, args.repeats, Path(tmp), loaded=True)
            label = f"{threads}" if threads else "0 (torch default)"
            print(f"| {label} | {idle:.1f} | {loaded:.1f} | {loaded / idle:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
