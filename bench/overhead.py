"""Per-architecture overhead of env, store and controller on the tabular env, against one real proxy evaluation.

    python bench/overhead.py [--table NAME|FILE.npz | --synthetic] [--budget 200] [--controllers a,b,...]
                             [--arch-index I] [--threads 1]

Overheads, in ms per evaluated architecture:

- env: stepping an architecture's tokens through the Tabular env (``gym.make``'s wrappers, TabularEvaluator
  answering from memory, no history), for ``--budget`` random architectures;
- store: what keeping the history in a SQLite file adds (TabularEvaluator with ``history=True``, as a search run
  writes it), same architectures;
- controller: each controller's search of ``--budget`` evaluations (seed 0) minus the time spent in the env,
  after an untimed 2-evaluation warm-up run.

They are compared with one real evaluation of table architecture ``--arch-index`` under the table's own recipe
(proxy training, then TFLite conversion and LiteRT timing; TensorFlow is imported before the clock starts) and
with the median cost the table recorded per architecture when it was built. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from controllers import TimedEnv, reward_target, run_one  # noqa: E402  (bench/ is not a package)


def env_seconds_per_arch(table: str, target_ms: float, budget: int, store: str | None) -> float:
    """Seconds per architecture of stepping ``budget`` random architectures (history in ``store`` if given)."""
    import gymnasium as gym

    from nas_rl.controllers.base import play_tokens

    kwargs: dict[str, Any] = {"reward": {"target_ms": target_ms}}
    if store is not None:
        kwargs.update(store=store, evaluator={"history": True})
    env = TimedEnv(gym.make("nas_rl/Tabular-v0", table=table, **kwargs))
    space = env.get_wrapper_attr("search_space")
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    for _ in range(budget):
        play_tokens(env, space.sample(rng))
    env.close()
    return env.seconds / budget


def proxy_evaluation(table: Any, index: int) -> dict[str, float]:
    """Seconds of one real evaluation (proxy training, then LiteRT latency) of table row ``index``."""
    from omegaconf import OmegaConf

    from nas_rl.config import build
    from nas_rl.tools.build_table import load_recipe

    config = table.meta["recipe"].get("config")
    cfg = OmegaConf.create(config) if config else load_recipe()  # a synthetic table: the default recipe
    accuracy, latency = build(cfg.accuracy, "accuracy"), build(cfg.latency, "latency")
    arch = table.space.decode(table.columns["tokens"][index].tolist())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow  # noqa: F401  (its import is not part of an evaluation)

    accuracy.tensors()  # the data is loaded once per search, not per evaluation
    start = time.perf_counter()
    value = accuracy.accuracy(arch)
    trained = time.perf_counter()
    stats = latency.measure(arch)
    measured = time.perf_counter()
    return {"arch": arch.to_string(), "accuracy": value, "latency_ms": stats.median_ms,
            "accuracy_seconds": trained - start, "latency_seconds": measured - trained}  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from nas_rl.cli import group_options

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="tabular-digits-v0", help="a shipped table's name or a packed table's path")
    parser.add_argument("--synthetic", action="store_true", help="a made-up table of search_space=tabular")
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--controllers", default=",".join(group_options("controller")))
    parser.add_argument("--arch-index", type=int, default=None, help="table row evaluated for real (default: middle)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the controllers")
    args = parser.parse_args(argv)
    import torch

    from nas_rl.benchmark import load_table
    from nas_rl.tools.build_table import write_synthetic_table

    with tempfile.TemporaryDirectory() as scratch:
        table_ref = str(write_synthetic_table(Path(scratch) / "synthetic.npz")) if args.synthetic else args.table
        table = load_table(table_ref)
        target_ms = reward_target(table, "midrange")
        print(f"table {table.name}: {table.space.size} architectures, {args.budget} evaluations per measurement, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start\n")  # fmt: skip
        rows = [("env (TabularEvaluator, no history)", env_seconds_per_arch(table_ref, target_ms, args.budget, None))]
        with_store = env_seconds_per_arch(table_ref, target_ms, args.budget, str(Path(scratch) / "history.sqlite"))
        rows.append(("store (history rows in a SQLite file)", max(0.0, with_store - rows[0][1])))
        torch.set_num_threads(args.threads)
        tokens = table.space.num_decisions
        for name in [n for n in args.controllers.split(",") if n]:
            run_one(name, 0, 2, table_ref, target_ms, None, tokens)  # warm-up: imports, first calls
            run = run_one(name, 0, args.budget, table_ref, target_ms, None, tokens)
            rows.append((f"controller: {name}", (run["seconds"] - run["env_seconds"]) / len(run["rewards"])))
    index = table.space.size // 2 if args.arch_index is None else args.arch_index
    real = proxy_evaluation(table, index)
    real_seconds = real["accuracy_seconds"] + real["latency_seconds"]
    recorded = float(np.median(table.columns["accuracy_seconds"] + table.columns["latency_seconds"]))
    print("| per evaluated architecture | ms | share of one proxy evaluation |")
    print("|---|---:|---:|")
    for label, seconds in rows:
        print(f"| {label} | {seconds * 1e3:.3f} | {seconds / real_seconds:.2e} |")
    print(f"| one proxy evaluation, measured now ({real['arch']}: training {real['accuracy_seconds']:.2f} s + "
          f"LiteRT {real['latency_seconds']:.2f} s) | {real_seconds * 1e3:.0f} | 1 |")  # fmt: skip
    if table.meta["recipe"]["accuracy"].get("kind") != "synthetic":
        print(f"| one proxy evaluation, median recorded in the table | {recorded * 1e3:.0f} | {recorded / real_seconds:.2f} |")
    return [{"component": label, "seconds": seconds} for label, seconds in rows] + [
        {"component": "proxy evaluation", "seconds": real_seconds, **real}, {"component": "recorded", "seconds": recorded}
    ]


if __name__ == "__main__":
    main()
