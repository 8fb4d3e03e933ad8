"""Controllers on nas_rl/MnasNet-OneShot-v1: the best reward found after a budget of architectures, over seeds.

    python bench/controllers_oneshot.py [--env nas_rl/MnasNet-OneShot-v1] [--controllers mnasnet,random,evolution]
                                        [--seeds 10] [--first-seed 100] [--budget 500] [--checkpoints 100,250,500]
                                        [--store FILE] [--out DIR] [--threads 1] [--workers 0] [--accuracy JSON]
                                        [--table] [--summaries FILE] [--set KEY=VALUE ...] [--envs-per-worker 1]
                                        [--join FILE ...] [--versus CONTROLLER]

Each controller of ``conf/controller/`` searches the one-shot env (supernet accuracy, shipped latency table,
soft reward at the spec's target) for ``--budget`` architectures with seeds first..first+N-1. The table shows, at
each checkpoint, the best reward found so far (mean over seeds, 95% t-interval), the regret against the best
reward any run found, and the mean reward of each run's last 100 proposals (has the controller learnt to
propose better architectures?). A second table compares controllers at equal cost: the best reward within a run's
first N distinct architectures (a repeat is a store hit), N at each checkpoint.

Runs go seed by seed, every controller at each seed, and ``--out``'s ``oneshot.json`` (every run's proposals and
rewards in order) and ``--summaries`` (default ``--out``'s ``summaries.json``: per run what the tables need, about
2 KB a run, small enough to commit) are rewritten after each run, so a stopped bench keeps what it finished, and a
rerun runs only the (controller, seed) pairs that neither holds: a study longer than a session goes on from a
committed summaries file. Runs join only runs of the same controller config (each keeps its digest), so a changed
default cannot mix into a study unseen. ``--table`` prints the tables of those runs and runs nothing. Evaluations are
deterministic, so all runs share one evaluation store (``--store``): an architecture one run evaluated is a cache hit
for the next, which changes no reward (and a rerun with the same store redoes finished runs from cache hits). Torch
(the supernet's scoring) runs with ``--threads`` threads. ``--workers N`` evaluates on a Dask LocalCluster of N
single-thread worker processes instead (``cluster=dask``), with the controllers keeping N architectures in evaluation
at once (``controller.n_envs=N``). ``--accuracy '{"calibration_images": 256}'`` merges settings into the spec's
accuracy section; ``--set algorithm.ent_coef=0.01`` overrides a key of the controllers' configs.
``--envs-per-worker K`` steps up to K envs per worker in the SB3 controllers, each rollout as many times shorter (the
same architectures per update; a rollout of one architecture, a2c's, is not cut), so that each step gives the workers
more architectures to share (less waiting for the slowest) and each of the controller's forward passes serves more
architectures.

``--join FILE ...`` adds the runs of other summaries files (the same env, budget and checkpoints, scored by the same
accuracy; another ``--set``, say) to the tables, a controller already shown taking its file's name in brackets.
``--versus NAME`` adds a table of the differences between that controller's best reward found and each other's at
every checkpoint: the mean difference, its 95% interval (Welch's t-test over the runs) and on how many of the seeds
both ran it is ahead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from controllers import TimedEnv, controller_config, interval  # noqa: E402  (bench/controllers.py; bench/ is not a package)

from nas_rl.config import build
from nas_rl.envs.registry import load_spec
from nas_rl.evaluation.cluster import DaskExecutor
from nas_rl.evaluation.store import fingerprint_of


def run_config(name: str, tokens: int, overrides: tuple[str, ...] = (), workers: int = 0,
               envs_per_worker: int = 1) -> Any:  # fmt: skip
    """The controller's config for a run on ``workers`` Dask workers (0: in this process).

    On a cluster an SB3 controller steps ``envs_per_worker`` envs per worker, with its rollouts cut by as much
    so that an update still sees the same number of architectures (``rollout_archs`` x ``n_envs``); fewer when
    its ``rollout_archs`` cannot be cut that finely (``n_envs`` over the workers says how many)."""
    config = controller_config(name, None, tokens, overrides)
    if workers:
        config.n_envs = workers
        if config.get("rollout_archs") and envs_per_worker > 1:
            rollout = int(config.rollout_archs)
            # the most envs per worker, up to the asked, that leave an update as many architectures (a2c's
            # rollout of 1 architecture cannot be cut: it steps one env per worker)
            envs_per_worker = max(k for k in range(1, envs_per_worker + 1) if rollout % k == 0)
            config.n_envs = workers * envs_per_worker
            config.rollout_archs = rollout // envs_per_worker
    return config


def config_digest(config: Any) -> str:
    """A short digest of a composed controller config: runs of one controller join a study only when it is equal,
    so a changed default (or ``--set``) cannot mix into the runs of the old one unseen."""
    from omegaconf import OmegaConf

    return fingerprint_of(OmegaConf.to_container(config, resolve=True))


def run_one(env_id: str, name: str, seed: int, budget: int, store: str, accuracy: dict[str, Any],
            executor: Any = None, overrides: tuple[str, ...] = (), envs_per_worker: int = 1,
            scored_by: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """One search: every proposal's reward and architecture in order, the best one, the wall time, the
    fingerprint of the accuracy that scored it (``accuracy``: for a supernet, its checkpoint's digest) and the
    digest of the controller's config (``run_config``). With ``scored_by`` (the fingerprint of runs it joins)
    another accuracy is refused before the search.
    """
    # Each run its own run id in the shared store, so its episodes can be read back apart from the others'.
    run_id = f"{name}-seed{seed}" + ("-" + "-".join(overrides) if overrides else "")
    env = TimedEnv(gym.make(env_id, store=store, accuracy=accuracy, executor=executor, run_id=run_id))
    fingerprint = json.loads(json.dumps(env.unwrapped.evaluator.accuracy.fingerprint()))  # a registered id's
    # supernet is trained on first use, on this machine: another machine's scores other rewards
    if scored_by is not None and fingerprint != scored_by:
        env.close()
        raise SystemExit(f"{env_id} scores with accuracy {fingerprint}, not with the {scored_by} of the runs it would "
                         "join: give another --summaries (and --out)")  # fmt: skip
    tokens = env.unwrapped.search_space.num_decisions
    workers = executor.workers if executor is not None else 0
    config = run_config(name, tokens, overrides, workers, envs_per_worker)
    controller = build(config, "controller")
    rewards: list[float] = []
    archs: list[str] = []

    def record(info: dict[str, Any]) -> None:
        rewards.append(float(info["reward"]))
        archs.append(str(info["arch"]))

    start = time.perf_counter()
    controller.search(env, budget=budget, seed=seed, on_evaluation=record)
    seconds = time.perf_counter() - start
    env.close()
    best = int(np.argmax(rewards))
    return {
        "seed": seed,
        "rewards": rewards,
        "archs": archs,
        "best_arch": archs[best],
        "seconds": seconds,
        "env_seconds": env.seconds,
        "accuracy": fingerprint,
        "envs_per_worker": config.n_envs // workers if workers else 1,
        "controller": config_digest(config),
    }


def best_found(summaries: dict[str, list[dict[str, Any]]]) -> float:
    return max(run["best"] for runs in summaries.values() for run in runs)


def summary(run: dict[str, Any], checkpoints: list[int], space: Any) -> dict[str, Any]:
    """What the tables need of a finished run, about 2 KB whatever the budget: small enough to commit, so that a study
    longer than a session keeps its finished runs (``--summaries``) when the full proposals are not kept.

    The best reward found at each checkpoint and within that many distinct architectures, the mean reward and
    the decisions' entropy over the last 100 proposals, the distinct architectures, the time, the fingerprint of
    the accuracy that scored them and the digest of the controller's config (a run that would join runs of
    another is refused), the envs per worker it stepped. Runs saved before the bench kept every proposal have no
    entropy, distinct count or equal-cost cells (None)."""
    rewards, archs = run["rewards"], run.get("archs")
    found = np.maximum.accumulate(rewards)
    return {
        "seed": run["seed"],
        "proposals": len(rewards),
        "best": float(found[-1]),
        "best_arch": run.get("best_arch"),
        "found": {str(c): float(found[min(c, len(found)) - 1]) for c in checkpoints},
        "within": {str(c): best_within_distinct(rewards, archs, c) if archs else None for c in checkpoints},
        "recent": float(np.mean(rewards[-100:])),
        "entropy": {k: round(v, 4) for k, v in decision_entropy(archs[-100:], space).items()} if archs else None,
        "distinct": len(set(archs)) if archs else None,
        "seconds": run["seconds"],
        "accuracy": run.get("accuracy"),
        "envs_per_worker": run.get("envs_per_worker"),
        "controller": run.get("controller"),
    }


def decision_entropy(archs: list[str], space: Any) -> dict[str, float]:
    """How broadly a run still samples, per decision with a choice: its entropy over ``archs`` divided by that of a
    uniform choice (1: uniform, 0: every architecture takes the same token)."""
    tokens = np.array([space.encode(space.parse(arch)) for arch in archs])
    shares = {}
    for position, decision in enumerate(space.decisions):
        if decision.num_choices > 1:
            counts = np.bincount(tokens[:, position])
            p = counts[counts > 0] / len(archs)
            shares[decision.name] = float(-(p * np.log(p)).sum() / np.log(min(decision.num_choices, len(archs))))
    return shares


def by_block(summaries: dict[str, list[dict[str, Any]]], space: Any) -> str:
    """Per controller and block: the decisions' entropy over each run's last 100 proposals, mean over the block's
    decisions and the runs; which decisions a controller has settled, and which it still samples broadly."""
    blocks: dict[str, list[str]] = {}
    for decision in space.decisions:
        blocks.setdefault(decision.name.split(".")[0], []).append(decision.name)
    lines = [f"| controller | runs | {' | '.join(blocks)} |", "|---|---:|" + "---:|" * len(blocks)]
    for name, runs in summaries.items():
        shares = [run["entropy"] for run in runs if run["entropy"] is not None]
        if shares:
            cells = [np.mean([s[d] for s in shares for d in names if d in s]) for names in blocks.values()]
            lines.append(f"| {name} | {len(shares)} | {' | '.join(f'{c:.2f}' for c in cells)} |")
    return "\n".join(lines)


def cell(values: np.ndarray) -> str:
    mean, low, high = interval(values)
    return f"{mean:.4f}" + ("" if np.isnan(low) else f" [{low:.4f}, {high:.4f}]")


def markdown(summaries: dict[str, list[dict[str, Any]]], checkpoints: list[int], best: float) -> str:
    """Per controller: the best reward found at each checkpoint, the regret at the last, the mean reward of the
    last 100 proposals (whether the controller has learnt to propose better architectures), how broadly those
    100 still sample (:func:`decision_entropy` averaged over the decisions; runs saved without their proposals
    show none), how many distinct architectures a run proposed (what it cost: a repeat is a store hit) and the
    time. From the runs' :func:`summary`."""
    head = " | ".join(f"best @{c}" for c in checkpoints)
    lines = [f"| controller | runs | {head} | regret @{checkpoints[-1]} | mean of the last 100 | "
             "token entropy of the last 100 | distinct architectures | s/architecture |",
             "|---|---:|" + "---:|" * (len(checkpoints) + 5)]  # fmt: skip
    for name, runs in summaries.items():
        if not runs:
            continue
        found = np.array([[r["found"][str(c)] for c in checkpoints] for r in runs])
        cells = [cell(found[:, i]) for i in range(len(checkpoints))]
        regret = cell(best - found[:, -1])
        recent = cell(np.array([r["recent"] for r in runs]))
        kept = all(r["entropy"] is not None for r in runs)  # runs saved before the bench kept every proposal have none
        spread = cell(np.array([np.mean(list(r["entropy"].values())) for r in runs])) if kept else "n/a"
        distinct = f"{np.mean([r['distinct'] for r in runs]):.0f}" if kept else "n/a"
        seconds = sum(r["seconds"] for r in runs) / sum(r["proposals"] for r in runs)
        lines.append(f"| {name} | {len(runs)} | {' | '.join(cells)} | {regret} | {recent} | {spread} | {distinct} "
                     f"| {seconds:.3f} |")  # fmt: skip
    return "\n".join(lines)


def best_within_distinct(rewards: list[float], archs: list[str], distinct: int) -> float | None:
    """The best reward a run had found by the time it had evaluated ``distinct`` different architectures (its
    repeats are store hits and cost nothing), or None when it never evaluated that many."""
    seen: set[str] = set()
    best = -np.inf
    for reward, arch in zip(rewards, archs):
        if arch not in seen and len(seen) == distinct:
            return float(best)
        seen.add(arch)
        best = max(best, reward)
    return float(best) if len(seen) == distinct else None


def at_equal_cost(summaries: dict[str, list[dict[str, Any]]], checkpoints: list[int]) -> str:
    """Per controller: the best reward found within the first N distinct architectures evaluated, over the runs
    that evaluated N (how many, where not all): controllers compared at what they cost, not at what they proposed."""
    lines = [f"| controller | {' | '.join(f'best within {c} distinct' for c in checkpoints)} |",
             "|---|" + "---:|" * len(checkpoints)]  # fmt: skip
    for name, runs in summaries.items():
        runs = [run for run in runs if run["distinct"] is not None]
        if not runs:
            continue
        cells = []
        for checkpoint in checkpoints:
            found = [r["within"][str(checkpoint)] for r in runs]
            reached = np.array([value for value in found if value is not None])
            text = cell(reached) if len(reached) else "none reached it"
            cells.append(text + (f" ({len(reached)} of {len(runs)} runs)" if 0 < len(reached) < len(runs) else ""))
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def versus(summaries: dict[str, list[dict[str, Any]]], name: str, checkpoints: list[int]) -> str:
    """Per other controller: how far ``name``'s best reward found is ahead of it at each checkpoint, the mean
    difference with its 95% interval (Welch's t-test: the runs are independent, their spreads unequal), and on how
    many of the seeds both ran ``name`` found more at the last checkpoint."""
    from scipy import stats

    def found(runs: list[dict[str, Any]], checkpoint: int) -> np.ndarray:
        return np.array([run["found"][str(checkpoint)] for run in runs])

    ours = summaries[name]
    lines = [f"| {name} against | {' | '.join(f'difference @{c}' for c in checkpoints)} | ahead @{checkpoints[-1]} |",
             "|---|" + "---:|" * (len(checkpoints) + 1)]  # fmt: skip
    for other, runs in summaries.items():
        if other == name or not runs:
            continue
        cells = []
        for checkpoint in checkpoints:
            x, y = found(ours, checkpoint), found(runs, checkpoint)
            difference = float(x.mean() - y.mean())
            if min(len(x), len(y)) < 2:
                cells.append(f"{difference:+.4f}")
                continue
            low, high = stats.ttest_ind(x, y, equal_var=False).confidence_interval(0.95)
            cells.append(f"{difference:+.4f} [{low:+.4f}, {high:+.4f}]")
        theirs = {run["seed"]: run["found"][str(checkpoints[-1])] for run in runs}
        shared = [run for run in ours if run["seed"] in theirs]
        ahead = sum(run["found"][str(checkpoints[-1])] > theirs[run["seed"]] for run in shared)
        lines.append(f"| {other} | {' | '.join(cells)} | {ahead} of {len(shared)} seeds |")
    return "\n".join(lines)


def joined(summaries: dict[str, list[dict[str, Any]]], files: list[Path], study: dict[str, Any]
           ) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """``summaries`` with the runs of other summaries ``files`` beside them, a controller already there named after
    its file (``mnasnet (oneshot-v2-2000)``); refused unless they are of the same ``study`` (env, budget,
    checkpoints) and every run was scored by the same accuracy (for a supernet, the same checkpoint)."""
    shown = dict(summaries)
    for file in files:
        if not file.is_file():
            raise SystemExit(f"--join {file}: no such file; expected a summaries file this bench wrote")
        kept = json.loads(file.read_text())
        theirs = {key: kept.get(key) for key in study}
        if theirs != study:
            raise SystemExit(f"--join {file} holds runs of {theirs}, not of {study}: only runs of the same study join")
        for name, runs in kept["runs"].items():
            if runs:
                shown[name if not shown.get(name) else f"{name} ({file.stem})"] = runs
    scored = {json.dumps(run["accuracy"], sort_keys=True) for runs in shown.values() for run in runs if run["accuracy"]}
    if len(scored) > 1:
        raise SystemExit(f"--join: the runs were scored by {len(scored)} accuracies ({' / '.join(sorted(scored))}), "
                         "expected one: their rewards cannot be compared")  # fmt: skip
    return shown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="nas_rl/MnasNet-OneShot-v1", help="a registered one-shot id")
    parser.add_argument("--controllers", default="mnasnet,random,evolution")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=100)
    parser.add_argument("--budget", type=int, default=500)
    parser.add_argument("--checkpoints", default="100,250,500")
    parser.add_argument("--store", default="outputs/bench/oneshot/evaluations.sqlite")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/oneshot"))
    parser.add_argument("--workers", type=int, default=0, help="Dask LocalCluster worker processes (0: in this one)")
    parser.add_argument("--accuracy", type=json.loads, default={}, help="JSON settings merged into accuracy")
    parser.add_argument("--table", action="store_true", help="only print the table of --out's finished runs")
    parser.add_argument("--summaries", type=Path, default=None,
                        help="the runs' summaries (JSON, small enough to commit; default: --out/summaries.json)")  # fmt: skip
    parser.add_argument("--set", nargs="*", default=[], help="controller overrides, e.g. algorithm.ent_coef=0.01")
    parser.add_argument("--envs-per-worker", type=int, default=1,
                        help="SB3 controllers on --workers: envs per worker, rollouts cut to match")  # fmt: skip
    parser.add_argument("--join", nargs="*", type=Path, default=[],
                        help="other summaries files of the same env, budget and checkpoints, shown in the tables")  # fmt: skip
    parser.add_argument("--versus", default=None, help="a controller of the tables: its differences to each other one")
    args = parser.parse_args(argv)
    checkpoints = [c for c in (int(c) for c in args.checkpoints.split(",")) if c <= args.budget] or [args.budget]
    space = build(load_spec(args.env.split("/")[-1]).search_space, "search_space")
    names = args.controllers.split(",")
    saved, summaries_file = args.out / "oneshot.json", args.summaries or args.out / "summaries.json"
    ours = {"env": args.env, "budget": args.budget, "set": args.set, "envs_per_worker": args.envs_per_worker}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    if saved.exists():  # a stopped bench goes on: its finished runs are kept, not rerun
        finished = json.loads(saved.read_text())
        theirs = {key: finished.get(key, 1 if key == "envs_per_worker" else None) for key in ours}
        if theirs != ours:
            raise SystemExit(f"{saved} holds runs of {theirs}, not of {ours}: give another --out")
        results = {**finished["runs"], **{name: finished["runs"].get(name, []) for name in names}}
    summaries: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    if summaries_file.exists():  # e.g. committed by an earlier session whose --out is gone
        kept = json.loads(summaries_file.read_text())
        theirs = {key: kept.get(key) for key in (*ours, "checkpoints")}
        if theirs != {**ours, "checkpoints": checkpoints}:
            raise SystemExit(f"{summaries_file} holds runs of {theirs}, not of {ours} at checkpoints {checkpoints}: "
                             "give other --summaries (or --checkpoints)")  # fmt: skip
        summaries = {**kept["runs"], **{name: kept["runs"].get(name, []) for name in names}}
    for name, runs in results.items():  # full runs without a summary yet (an --out of an older bench)
        seeds = {run["seed"] for run in summaries.setdefault(name, [])}
        summaries[name] += [summary(run, checkpoints, space) for run in runs if run["seed"] not in seeds]

    def save() -> None:
        summaries_file.parent.mkdir(parents=True, exist_ok=True)
        document = {**ours, "checkpoints": checkpoints, "best": best_found(summaries), "runs": summaries}
        summaries_file.write_text(json.dumps(document, indent=1) + "\n")

    def tables() -> None:
        shown = joined(summaries, args.join, {"env": args.env, "budget": args.budget, "checkpoints": checkpoints})
        if args.versus is not None and not shown.get(args.versus):
            raise SystemExit(f"--versus {args.versus}: no such controller with runs in the tables; they show "
                             f"{', '.join(name for name, runs in shown.items() if runs)}")  # fmt: skip
        best = best_found(shown)
        print(f"\n{args.env}: {args.budget} architectures a run; best reward any run found: {best:.4f}\n")
        print(markdown(shown, checkpoints, best))
        print(f"\nDecision entropy of the last 100 proposals, by block:\n\n{by_block(shown, space)}")
        print(f"\nAt equal cost (distinct architectures evaluated):\n\n{at_equal_cost(shown, checkpoints)}")
        if args.versus is not None:
            print(f"\nDifferences in the best reward found:\n\n{versus(shown, args.versus, checkpoints)}")

    if args.table:
        if not any(summaries.values()):
            raise SystemExit(f"no finished runs in {saved} or {summaries_file}")
        tables()
        return
    for name in names:  # a run joins only runs of its controller's config: refused here, before any search
        ours_config = config_digest(run_config(name, space.num_decisions, tuple(args.set), args.workers,
                                               args.envs_per_worker))  # fmt: skip
        theirs_config = sorted({run.get("controller") for run in summaries[name]} - {None, ours_config})
        if theirs_config:
            raise SystemExit(f"{summaries_file} holds {name} runs of controller config {', '.join(theirs_config)}, "
                             f"not of this {name}'s {ours_config} (its default changed, or --set): give other "
                             "--summaries (and --out)")  # fmt: skip
    import torch

    import nas_rl  # noqa: F401  (registers the ids)

    torch.set_num_threads(args.threads)
    Path(args.store).parent.mkdir(parents=True, exist_ok=True)
    executor = DaskExecutor(workers=args.workers, threads_per_worker=1) if args.workers else None
    accuracy = {**args.accuracy, "threads": 1 if executor else args.threads}
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for name in names:
                if any(run["seed"] == seed for run in summaries[name]):
                    continue
                scored_by = next((r["accuracy"] for runs in summaries.values() for r in runs if r["accuracy"]), None)
                run = run_one(args.env, name, seed, args.budget, args.store, accuracy, executor, tuple(args.set),
                              args.envs_per_worker, scored_by)  # fmt: skip
                results[name].append(run)
                summaries[name].append(summary(run, checkpoints, space))
                saved.write_text(json.dumps({**ours, "runs": results}))
                save()
                print(f"seed {seed} {name}: best {max(run['rewards']):.4f}", flush=True)
    finally:
        if executor is not None:
            executor.close()
    if any(summaries.values()):
        save()
        tables()


if __name__ == "__main__":
    main()
