"""Evaluation throughput on a Dask LocalCluster of 1 and 2 workers, and what a task costs over a local evaluation.

    python bench/cluster_throughput.py [--archs 8] [--repeats 3] [--tiny] [HYDRA_OVERRIDE ...]

Real evaluations of the search config's roles (default: proxy training on digits, 1 torch thread, and latency
measured through LiteRT, 1 thread; trailing arguments are Hydra overrides of the search config, ``--tiny`` the
test suite's tiny space and a sliver of an epoch). ``--archs`` distinct architectures of the space (seeded) are
evaluated on ``cluster=dask`` LocalClusters of 1 and then 2 worker processes of one thread each, all submitted at
once as a controller's batch; each cluster is started and warmed up first (each worker evaluates one architecture
not timed: imports, the roles built from their configs, the data resized), and those times are shown apart. The
goal on an idle 2-core machine is 1.8x the 1-worker rate with 2 workers.

Overhead: one architecture evaluated ``--repeats`` times in this process (LocalExecutor, as ``cluster=local``) and
as single tasks on the warm 1-worker cluster; the task's wall time (submit to result in the driver) minus the
worker's own evaluation time is what Dask adds per task (scheduling, moving arguments and the result). The
fastest run of each is reported (other processes on shared cores only ever slow a run down).
Prints markdown tables; run it on an idle machine (the load average is printed).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from hydra import compose, initialize_config_module

from nas_rl.config import build
from nas_rl.evaluation.cluster import DaskExecutor
from nas_rl.evaluation.executor import Executor, LocalExecutor

#: --tiny: the test suite's tiny configuration (seven one-layer blocks of 8-32 channels at 16x16, 0.1 epoch).
TINY = ["search_space.resolution=16", "search_space.stem_channels=8", "search_space.head_channels=32",
        "search_space.base_widths=[8,8,8,16,16,24,32]", "search_space.base_repeats=[1,1,1,1,1,1,1]",
        "accuracy.epochs=0.1", "latency.min_seconds=0.1", "latency.min_runs=10", "latency.warmup_min_seconds=0.05"]  # fmt: skip


def timed_batch(executor: Executor, archs: list, roles: tuple) -> tuple[float, list]:
    """Wall seconds to evaluate ``archs`` submitted at once, and their evaluations."""
    start = time.perf_counter()
    handles = {index: executor.submit(arch, "bench", *roles) for index, arch in enumerate(archs)}
    evaluations = [evaluation for _, evaluation in executor.as_completed(handles)]
    return time.perf_counter() - start, evaluations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=8, help="architectures timed per cluster")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the overhead probe")
    parser.add_argument("--tiny", action="store_true", help="the test suite's tiny space and 0.1 epoch")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the search config")
    args = parser.parse_args()
    overrides = [*(TINY if args.tiny else []), *args.overrides]
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    space = build(cfg.search_space, "search_space")
    roles = (build(cfg.accuracy, "accuracy"), build(cfg.latency, "latency"))
    rng, found = np.random.default_rng(0), {}
    while len(found) < args.archs + 3:  # the timed ones, two warm-ups, the overhead probe
        arch = space.decode(space.sample(rng))
        found[arch.to_string()] = arch
    *timed, warm_a, warm_b, probe = found.values()
    print(f"{args.archs} architectures ({' '.join(overrides) or 'the default search'}): {type(space).__name__}, "
          f"{type(roles[0]).__name__}, {type(roles[1]).__name__}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f} at start\n")  # fmt: skip

    local = LocalExecutor()
    timed_batch(local, [warm_a], roles)  # warm-up, as on the workers: imports, resized data
    local_runs = [timed_batch(local, [probe], roles)[0] for _ in range(args.repeats)]

    rows, rates, overhead = [], {}, None
    for workers in (1, 2):
        start = time.perf_counter()
        with DaskExecutor(workers=workers, threads_per_worker=1) as executor:
            for key, role in zip(("accuracy", "latency"), roles):  # the workers build each role from its config
                executor.describe_role(role, cfg[key], key)
            executor.client.wait_for_workers(workers)
            started = time.perf_counter() - start
            warm_up, _ = timed_batch(executor, [warm_a, warm_b][:workers], roles)
            wall, evaluations = timed_batch(executor, timed, roles)
            failed = sum(evaluation.status != "ok" for evaluation in evaluations)
            if workers == 1:
                probes = [timed_batch(executor, [probe], roles) for _ in range(args.repeats)]
                best_wall, (best,) = min(probes, key=lambda run: run[0])
                overhead = (min(local_runs), best_wall, best.eval_seconds or 0.0)
        rates[workers] = args.archs / wall * 60
        rows.append(f"| {workers} | {started:.1f} | {warm_up:.1f} | {wall:.1f} | {rates[workers]:.1f} | "
                    f"{rates[workers] / rates[1]:.2f}x | {failed} |")  # fmt: skip
    print("| workers | cluster start (s) | warm-up (s) | wall (s) | architectures / min | vs 1 worker | failed |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    assert overhead is not None
    local_s, task_s, worker_s = overhead
    print(f"\nOne architecture, fastest of {args.repeats}:\n")
    print(
        "| local evaluation (ms) | as a task on 1 worker (ms) | of which the worker's evaluation (ms) | "
        "task overhead (ms) | vs local (ms) |"
    )
    print("|---:|---:|---:|---:|---:|")
    print(
        f"| {local_s * 1e3:.0f} | {task_s * 1e3:.0f} | {worker_s * 1e3:.0f} | {(task_s - worker_s) * 1e3:.0f} | "
        f"{(task_s - local_s) * 1e3:+.0f} |"
    )


if __name__ == "__main__":
    main()
