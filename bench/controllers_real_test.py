"""The real test of a one-shot controllers bench: each controller's best architecture trained stand-alone.

    python bench/controllers_real_test.py [--results outputs/bench/oneshot/oneshot.json]
                                          [--controllers mnasnet,random] [--epochs 5] [--seeds 0,1,2] [--threads 1]

Reads ``bench/controllers_oneshot.py``'s ``oneshot.json``. For each controller, the architecture with the best
reward over all its runs (the supernet's accuracy) is trained stand-alone with the reference recipe of
``nas-rl-accuracy-report`` (proxy training, ``--epochs`` epochs, once per seed) and scored with the env's latency
table and reward. Prints a markdown table: per controller, the architecture's reward on the supernet, its
stand-alone accuracy (mean, and each seed), its latency, and its reward with the stand-alone accuracy (mean, and
the range over the seeds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import nas_rl  # noqa: F401  (registers the ids)
from nas_rl.accuracy.proxy import ProxyTraining


def best_arch(runs: list[dict]) -> tuple[str, float]:
    """The architecture with the highest reward over ``runs``, and that reward."""
    reward, arch = max((max(run["rewards"]), run["best_arch"]) for run in runs)
    return arch, reward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("outputs/bench/oneshot/oneshot.json"))
    parser.add_argument("--controllers", default="mnasnet,random")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = json.loads(args.results.read_text())
    env = gym.make(results.get("env", "nas_rl/MnasNet-OneShot-v0"))
    evaluator, space = env.unwrapped.evaluator, env.unwrapped.search_space
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{results.get('env')}: best architecture of each controller ({args.results}), trained stand-alone for "
          f"{args.epochs} epochs with seeds {seeds}\n")  # fmt: skip
    print("| controller | runs | reward (supernet) | stand-alone accuracy: mean (seeds) | latency ms | "
          "reward (stand-alone): mean [min, max] | architecture |")  # fmt: skip
    print("|---|---:|---:|---|---:|---|---|")
    for name in args.controllers.split(","):
        runs = results["runs"][name]
        text, supernet_reward = best_arch(runs)
        arch = space.parse(text)
        accuracies = [ProxyTraining(evaluator.accuracy.dataset, epochs=args.epochs, seed=seed,
                                    threads=args.threads).accuracy(arch) for seed in seeds]  # fmt: skip
        latency = evaluator.latency.latency_ms(arch)
        rewards = [evaluator.reward(accuracy, latency) for accuracy in accuracies]
        each = ", ".join(f"{a:.3f}" for a in accuracies)
        print(f"| {name} | {len(runs)} | {supernet_reward:.4f} | {np.mean(accuracies):.3f} ({each}) | {latency:.3f} | "
              f"{np.mean(rewards):.4f} [{min(rewards):.4f}, {max(rewards):.4f}] | `{text}` |", flush=True)  # fmt: skip
    env.close()


if __name__ == "__main__":
    main()
