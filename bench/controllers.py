"""Every controller on the tabular env: normalized regret after a budget of evaluations, over seeds.

    python bench/controllers.py [--table NAME|FILE.npz | --synthetic] [--seeds 20] [--first-seed 100] [--budget 200]
                                [--checkpoints 25,50,100,200] [--controllers mnasnet,ppo,...]
                                [--target midrange|median|MS] [--rollout-archs K] [--out DIR] [--set KEY=VALUE ...]

Each controller of ``conf/controller/`` (as configured there, unless ``--rollout-archs`` or ``--set``) searches
the Tabular env (the fast path, no history) for ``--budget`` evaluations with seeds first..first+N-1, under the
MnasNet soft reward (alpha = beta = -0.07) at ``--target``: by default the middle of the table's latency range.
Normalized regret after t evaluations = (best reward in the table - best reward found in the first t) / (best -
worst reward in the table): 0 once the best architecture was found, 1 for the worst. The table shows its mean over seeds
with a 95% t-interval, and the wall time per evaluation: the whole search, and the part the controller adds
(the search minus the time spent inside the env), after an untimed 2-evaluation warm-up run. ``--out`` gets
``regret.png`` (mean curves, 95% bands) and ``controllers.json`` (every seed's rewards and times). Torch runs
with ``--threads`` threads (default 1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from nas_rl.config import build


class TimedEnv(gym.Wrapper):
    """Accumulates the wall time spent inside ``reset`` and ``step``."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.seconds = 0.0

    def reset(self, **kwargs: Any):
        start = time.perf_counter()
        try:
            return self.env.reset(**kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    def step(self, action: Any):
        start = time.perf_counter()
        try:
            return self.env.step(action)
        finally:
            self.seconds += time.perf_counter() - start

    def action_masks(self) -> np.ndarray:
        return self.env.get_wrapper_attr("action_masks")()


def reward_target(table: Any, target: str) -> float:
    from nas_rl.evaluation.reward import latency_midrange

    if target == "midrange":
        return latency_midrange(table)
    if target == "median":
        ok = table.columns["status"] == "ok"
        return float(np.median(table.columns["latency_median_ms"][ok]))
    return float(target)


def controller_config(name: str, rollout_archs: int | None, tokens: int, overrides: Sequence[str] = ()) -> Any:
    """The controller's composed config; with ``rollout_archs`` SB3 rollouts hold that many architectures;
    ``overrides`` are ``KEY=VALUE`` settings within it (``algorithm.ent_coef=0.01``; a key the config lacks is added),
    the value read as YAML."""
    import yaml
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"controller={name}"])
    algorithm = cfg.controller.get("algorithm")
    if rollout_archs and "rollout_archs" in cfg.controller:
        cfg.controller.rollout_archs = rollout_archs
        if cfg.controller.get("minibatch_archs"):
            cfg.controller.minibatch_archs = min(int(cfg.controller.minibatch_archs), rollout_archs)
    elif rollout_archs and algorithm is not None and "n_steps" in algorithm:
        algorithm.n_steps = rollout_archs * tokens
        if "batch_size" in algorithm:
            algorithm.batch_size = min(int(algorithm.batch_size), algorithm.n_steps)
    for override in overrides:
        if "=" not in override:
            raise SystemExit(f"--set {override!r} is not accepted: use KEY=VALUE, e.g. algorithm.ent_coef=0.01")
        key, value = override.split("=", 1)
        OmegaConf.update(cfg.controller, key, yaml.safe_load(value), merge=False, force_add=True)  # e.g. a PPO keyword
    return cfg.controller


def run_one(name: str, seed: int, budget: int, table: str, target_ms: float, rollout_archs: int | None,
            tokens: int, overrides: Sequence[str] = ()) -> dict[str, Any]:  # fmt: skip
    """One search: every evaluation's reward, the search's wall time and the time spent in the env."""
    env = TimedEnv(gym.make("nas_rl/Tabular-v0", table=table, reward={"target_ms": target_ms}))
    controller = build(controller_config(name, rollout_archs, tokens, overrides), "controller")
    rewards: list[float] = []
    start = time.perf_counter()
    controller.search(env, budget=budget, seed=seed, on_evaluation=lambda info: rewards.append(float(info["reward"])))
    seconds = time.perf_counter() - start
    env.close()
    return {"rewards": rewards, "seconds": seconds, "env_seconds": env.seconds}


def regret_curve(rewards: Sequence[float], best: float, worst: float) -> np.ndarray:
    return (best - np.maximum.accumulate(np.asarray(rewards))) / (best - worst)


def interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t-interval (NaN bounds for fewer than 2 values)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, math.nan, math.nan
    from scipy import stats

    half = float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def plot(curves: dict[str, np.ndarray], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, runs in curves.items():
        x = np.arange(1, runs.shape[1] + 1)
        stats = np.array([interval(runs[:, t]) for t in range(runs.shape[1])])
        axes.plot(x, stats[:, 0], label=name)
        if runs.shape[0] > 1:
            axes.fill_between(x, np.clip(stats[:, 1], 0, 1), np.clip(stats[:, 2], 0, 1), alpha=0.2)
    axes.set_xscale("log")
    axes.set_xlabel("evaluations")
    axes.set_ylabel("normalized regret")
    axes.set_ylim(0, 1)
    axes.set_title(title)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from nas_rl.cli import group_options

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="tabular-digits-v0", help="a shipped table's name or a packed table's path")
    parser.add_argument("--synthetic", action="store_true", help="a made-up table of search_space=tabular")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=100,
                        help="seeds first..first+N-1 (the defaults were tuned on seeds 0..19: report on others)")
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--checkpoints", default="25,50,100,200")
    parser.add_argument("--controllers", default=",".join(group_options("controller")))
    parser.add_argument("--target", default="midrange", help="midrange, median, or a latency in ms")
    parser.add_argument("--rollout-archs", type=int, default=None, help="architectures per SB3 rollout")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/controllers"))
    parser.add_argument("--set", nargs="*", default=[], help="controller overrides, e.g. algorithm.ent_coef=0.01")
    args = parser.parse_args(argv)
    names = [n for n in args.controllers.split(",") if n]
    unknown = sorted(set(names) - set(group_options("controller")))
    if unknown:
        parser.error(f"--controllers: unknown {unknown}; known: {', '.join(group_options('controller'))}")
    checkpoints = [c for c in (int(c) for c in args.checkpoints.split(",")) if c <= args.budget] or [args.budget]
    import torch

    from nas_rl.benchmark import load_table
    from nas_rl.evaluation.reward import MnasReward
    from nas_rl.tools.build_table import write_synthetic_table

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        table_ref = args.table
        if args.synthetic:
            table_ref = str(write_synthetic_table(Path(scratch) / "synthetic.npz"))
        table = load_table(table_ref)
        target_ms = reward_target(table, args.target)
        rewards = table.rewards(MnasReward(target_ms))
        best, worst = float(rewards.max()), float(rewards.min())
        tokens = table.space.num_decisions
        print(f"table {table.name}: {table.space.size} architectures, soft reward at {target_ms:.4g} ms "
              f"({args.target}), rewards {worst:.4f}..{best:.4f}; {args.seeds} seed(s) x {args.budget} evaluations, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start\n")  # fmt: skip
        results: dict[str, Any] = {}
        for name in names:
            run_one(name, 0, 2, table_ref, target_ms, args.rollout_archs, tokens, args.set)  # warm-up: first calls
            runs = [run_one(name, seed, args.budget, table_ref, target_ms, args.rollout_archs, tokens, args.set)
                    for seed in range(args.first_seed, args.first_seed + args.seeds)]  # fmt: skip
            results[name] = runs
    curves = {name: np.stack([regret_curve(r["rewards"], best, worst) for r in runs]) for name, runs in results.items()}
    print(markdown(results, curves, checkpoints))
    args.out.mkdir(parents=True, exist_ok=True)
    plot(curves, args.out / "regret.png", f"{table.name}: soft reward at {target_ms:.3g} ms, {args.seeds} seeds")
    record = {"table": table.name, "digest": table.digest, "target_ms": target_ms, "best_reward": best,
              "worst_reward": worst, "budget": args.budget, "seeds": args.seeds, "first_seed": args.first_seed,
              "runs": results}  # fmt: skip
    (args.out / "controllers.json").write_text(json.dumps(record))
    print(f"\nwrote {args.out / 'regret.png'} and {args.out / 'controllers.json'}")
    return {"curves": curves, **record}


def markdown(results: dict[str, list[dict[str, Any]]], curves: dict[str, np.ndarray], checkpoints: list[int]) -> str:
    head = " | ".join(f"regret @{c}" for c in checkpoints)
    lines = [f"| controller | {head} | ms/evaluation (search) | ms/evaluation (controller) |",
             "|---|" + "---:|" * (len(checkpoints) + 2)]  # fmt: skip
    for name, runs in results.items():
        cells = []
        for c in checkpoints:
            mean, low, high = interval(curves[name][:, c - 1])
            cells.append(f"{mean:.3f}" + ("" if math.isnan(low) else f" [{max(low, 0):.3f}, {min(high, 1):.3f}]"))
        evaluations = sum(len(r["rewards"]) for r in runs)
        total = sum(r["seconds"] for r in runs) / evaluations * 1e3
        added = sum(r["seconds"] - r["env_seconds"] for r in runs) / evaluations * 1e3
        lines.append(f"| {name} | {' | '.join(cells)} | {total:.2f} | {added:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
