"""How busy the workers of a cluster are while an SB3 controller searches: batch sizes side by side.

    python bench/cluster_batches.py [--env nas_rl/MnasNet-OneShot-v0] [--controller mnasnet] [--archs 120]
                                    [--seed 100] [--workers 2] [--envs-per-worker 1,2,4]

For each ``--envs-per-worker`` K, one search of ``--archs`` architectures on a LocalCluster of ``--workers``
one-thread workers, with a fresh store, the controller stepping K envs per worker and its rollouts K times
shorter (``bench/controllers_oneshot.py``'s ``run_one``: the same architectures per update). Dask's task stream
gives each worker's compute; the table shows the wall time, the workers' compute, how busy they were (compute /
(workers x span of their tasks)), and wall time per second of compute (the runs propose different
architectures, which cost differently). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from controllers_oneshot import run_one  # noqa: E402  (bench/ is not a package)


def busy(env: str, controller: str, archs: int, seed: int, workers: int, envs_per_worker: int) -> dict[str, float]:
    """One search on a fresh LocalCluster and store: wall, compute, busy share, median gap between tasks."""
    from distributed import get_task_stream

    from nas_rl.evaluation.cluster import DaskExecutor

    executor = DaskExecutor(workers=workers, threads_per_worker=1)
    try:
        with tempfile.TemporaryDirectory() as folder, get_task_stream(executor.client) as stream:
            start = time.perf_counter()
            run_one(env, controller, seed, archs, str(Path(folder) / "store.sqlite"), {"threads": 1}, executor, (),
                    envs_per_worker)  # fmt: skip
            wall = time.perf_counter() - start
    finally:
        executor.close()
    computes: dict[str, list[tuple[float, float]]] = {}
    for task in stream.data:
        for part in task["startstops"]:
            if part["action"] == "compute":
                computes.setdefault(task["worker"], []).append((part["start"], part["stop"]))
    for spans in computes.values():
        spans.sort()
    compute = sum(stop - begin for spans in computes.values() for begin, stop in spans)
    span = sum(max(stop for _, stop in spans) - spans[0][0] for spans in computes.values())
    gaps = [b[0] - a[1] for spans in computes.values() for a, b in zip(spans, spans[1:])]
    return {"wall": wall, "compute": compute, "busy": compute / span, "gap": float(np.median(gaps))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="nas_rl/MnasNet-OneShot-v0")
    parser.add_argument("--controller", default="mnasnet")
    parser.add_argument("--archs", type=int, default=120)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--envs-per-worker", default="1,2,4")
    args = parser.parse_args()
    import nas_rl  # noqa: F401  (registers the ids)

    print(f"| {args.controller} on {args.workers} workers, {args.archs} architectures | wall (s) | workers' compute (s) "
          "| workers busy | median gap between a worker's tasks (s) | wall / compute |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for k in (int(k) for k in args.envs_per_worker.split(",")):
        row = busy(args.env, args.controller, args.archs, args.seed, args.workers, k)
        print(
            f"| {k} env(s) per worker | {row['wall']:.1f} | {row['compute']:.1f} | {row['busy']:.0%} | "
            f"{row['gap']:.3f} | {row['wall'] / row['compute']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
