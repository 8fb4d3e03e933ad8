"""The real test of a one-shot controllers bench: each controller's best architecture trained stand-alone.

    python bench/controllers_real_test.py [--results outputs/bench/oneshot/oneshot.json]
                                          [--controllers mnasnet,random] [--epochs 5] [--seeds 0,1,2] [--threads 1]
                                          [--per-run] [--cache FILE]

Reads ``bench/controllers_oneshot.py``'s ``oneshot.json`` or its summaries file. For each controller, the
architecture with the best reward over all its runs (the supernet's accuracy) is trained stand-alone with the
reference recipe of ``nas-rl-accuracy-report`` (proxy training, ``--epochs`` epochs, once per seed) and scored
with the env's latency table and reward. Prints a markdown table: per controller, the architecture's reward on
the supernet, its stand-alone accuracy (mean, and each seed), its latency, and its reward with the stand-alone
accuracy (mean, and the range over the seeds).

The best of thousands of scored architectures is also the one the supernet's error favours most, so one
architecture per controller says little. ``--per-run`` trains every run's best architecture instead (each with
the seeds) and compares controllers across runs: the mean stand-alone reward of their runs' winners, with its
95% t-interval. ``--cache`` keeps each (architecture, epochs, seed)'s accuracy in a JSON file, so a stopped
test resumes and an architecture two runs share trains once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from controllers import interval  # noqa: E402  (bench/controllers.py; bench/ is not a package)

import nas_rl  # noqa: F401  (registers the ids)
from nas_rl.accuracy.proxy import ProxyTraining


def best_reward(run: dict) -> float:
    """A run's best reward: from its summary, or from its proposals."""
    return run["best"] if "best" in run else max(run["rewards"])


def best_arch(runs: list[dict]) -> tuple[str, float]:
    """The architecture with the highest reward over ``runs``, and that reward."""
    reward, arch = max((best_reward(run), run["best_arch"]) for run in runs)
    return arch, reward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("outputs/bench/oneshot/oneshot.json"))
    parser.add_argument("--controllers", default="mnasnet,random")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--per-run", action="store_true", help="every run's best architecture, across runs")
    parser.add_argument("--cache", type=Path, help="JSON file of accuracies already trained (read and extended)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = json.loads(args.results.read_text())
    env = gym.make(results.get("env", "nas_rl/MnasNet-OneShot-v0"))
    evaluator, space = env.unwrapped.evaluator, env.unwrapped.search_space
    seeds = [int(s) for s in args.seeds.split(",")]
    cache = json.loads(args.cache.read_text()) if args.cache and args.cache.is_file() else {}

    def stand_alone(text: str) -> list[float]:
        """The architecture's accuracy after ``--epochs`` epochs of proxy training, once per seed (cached)."""
        accuracies = []
        for seed in seeds:
            key = f"{text} epochs={args.epochs} seed={seed}"
            if key not in cache:
                cache[key] = ProxyTraining(evaluator.accuracy.dataset, epochs=args.epochs, seed=seed,
                                           threads=args.threads).accuracy(space.parse(text))  # fmt: skip
                if args.cache:
                    args.cache.write_text(json.dumps(cache, indent=1))
            accuracies.append(cache[key])
        return accuracies

    if args.per_run:
        per_run(results, args.controllers.split(","), stand_alone, evaluator, space, seeds, args.epochs)
        env.close()
        return
    print(f"{results.get('env')}: best architecture of each controller ({args.results}), trained stand-alone for "
          f"{args.epochs} epochs with seeds {seeds}\n")  # fmt: skip
    print("| controller | runs | reward (supernet) | stand-alone accuracy: mean (seeds) | latency ms | "
          "reward (stand-alone): mean [min, max] | architecture |")  # fmt: skip
    print("|---|---:|---:|---|---:|---|---|")
    for name in args.controllers.split(","):
        runs = results["runs"][name]
        text, supernet_reward = best_arch(runs)
        arch = space.parse(text)
        accuracies = stand_alone(text)
        latency = evaluator.latency.latency_ms(arch)
        rewards = [evaluator.reward(accuracy, latency) for accuracy in accuracies]
        each = ", ".join(f"{a:.3f}" for a in accuracies)
        print(f"| {name} | {len(runs)} | {supernet_reward:.4f} | {np.mean(accuracies):.3f} ({each}) | {latency:.3f} | "
              f"{np.mean(rewards):.4f} [{min(rewards):.4f}, {max(rewards):.4f}] | `{text}` |", flush=True)  # fmt: skip
    env.close()


def per_run(results: dict, names: list[str], stand_alone: Any, evaluator: Any, space: Any, seeds: list[int],
            epochs: int) -> None:  # fmt: skip
    """Print, per controller, its runs' winners on the supernet and stand-alone: means with 95% t-intervals."""
    print(f"{results.get('env')}: each run's best architecture trained stand-alone for {epochs} epochs with seeds "
          f"{seeds} (its reward: the mean over the seeds)\n")  # fmt: skip
    print("| controller | runs | reward (supernet): mean [95%] | reward (stand-alone): mean [95%] | "
          "stand-alone, each run |")  # fmt: skip
    print("|---|---:|---|---|---|")
    for name in names:
        on_supernet, alone = [], []
        for run in results["runs"][name]:
            arch = space.parse(run["best_arch"])
            latency = evaluator.latency.latency_ms(arch)
            on_supernet.append(best_reward(run))
            alone.append(float(np.mean([evaluator.reward(a, latency) for a in stand_alone(run["best_arch"])])))
        cells = [f"{m:.4f}" + ("" if np.isnan(lo) else f" [{lo:.4f}, {hi:.4f}]")
                 for m, lo, hi in (interval(on_supernet), interval(alone))]  # fmt: skip
        each = ", ".join(f"{value:.3f}" for value in alone)
        print(f"| {name} | {len(alone)} | {cells[0]} | {cells[1]} | {each} |", flush=True)


if __name__ == "__main__":
    main()
