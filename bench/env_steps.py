"""Env steps per second of random actions on the tabular env, per evaluator and store configuration.

    python bench/env_steps.py [--table NAME|FILE.npz | --synthetic] [--seconds 3] [--repeats 3]

Every configuration is the Tabular env made through ``gym.make`` (so with Gymnasium's order-enforcing and
passive-checker wrappers), stepped with ``env.action_space.sample()`` and reset when an episode ends; the
best of ``--repeats`` runs of ``--seconds`` each is reported (other processes only ever slow a run down).
``--synthetic`` measures on a made-up table of the default tabular space (values do not change the speed),
for use before the real table is built. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym

#: (label, gym.make keyword arguments besides the table)
CONFIGURATIONS: list[tuple[str, dict[str, Any]]] = [
    ("TabularEvaluator, no history (Tabular-v0's default)", {}),
    ("TabularEvaluator, history in a :memory: store", {"evaluator": {"history": True}}),
    ("plain Evaluator + :memory: store (the evaluator of MnasNet-v0)", {"evaluator": None}),
    ("plain Evaluator + SQLite file store (a search run)", {"evaluator": None, "store": "FILE"}),
]


def steps_per_second(env: gym.Env, seconds: float) -> tuple[float, float]:
    """(steps/s, architectures/s) of random actions for ``seconds``."""
    env.reset(seed=0)
    env.action_space.seed(0)
    steps = episodes = 0
    sample, step = env.action_space.sample, env.step
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(200):
            _, _, terminated, truncated, _ = step(sample())
            steps += 1
            if terminated or truncated:
                episodes += 1
                env.reset()
    elapsed = time.perf_counter() - start
    return steps / elapsed, episodes / elapsed


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="tabular-digits-v0", help="a shipped table's name or a packed table's path")
    parser.add_argument("--synthetic", action="store_true", help="a made-up table of search_space=tabular")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        from nas_rl.benchmark import load_table
        from nas_rl.tools.build_table import write_synthetic_table

        table = args.table
        if args.synthetic:
            table = str(write_synthetic_table(Path(scratch) / "synthetic.npz"))

        loaded = load_table(table)
        length = loaded.space.num_decisions
        print(f"table {loaded.name} ({loaded.space.size} architectures, {length} tokens per episode), "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start, best of {args.repeats} x "
              f"{args.seconds:g} s\n")  # fmt: skip
        print("| configuration | steps/s | architectures/s | µs/step |")
        print("|---|---:|---:|---:|")
        for label, kwargs in CONFIGURATIONS:
            kwargs = dict(kwargs)
            if kwargs.get("store") == "FILE":
                kwargs["store"] = str(Path(scratch) / f"store-{len(rows)}.sqlite")
            best = (0.0, 0.0)
            for _ in range(args.repeats):
                env = gym.make("nas_rl/Tabular-v0", table=table, **kwargs)
                best = max(best, steps_per_second(env, args.seconds))
                env.close()
            rows.append({"configuration": label, "steps_per_second": best[0], "architectures_per_second": best[1]})
            print(f"| {label} | {best[0]:,.0f} | {best[1]:,.0f} | {1e6 / best[0]:.1f} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
