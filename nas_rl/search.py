"""A search run: wire the roles from the composed config, run the controller, write the run's outputs."""

from __future__ import annotations

import csv
import json
import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from nas_rl.config import build
from nas_rl.envs.factory import build_env
from nas_rl.errors import ConfigError
from nas_rl.store import EvaluationStore

CSV_FIELDS = (
    "episode", "arch", "status", "cached", "accuracy", "latency_ms", "reward", "eval_seconds", "error",
    "latency_mean_ms", "latency_std_ms", "latency_min_ms", "latency_max_ms", "latency_runs",
    "accuracy_seconds", "latency_seconds", "fingerprint",
)  # fmt: skip


@dataclass
class SearchResult:
    """What a finished run found, as written to ``best.json`` and the summary table."""

    run_dir: Path
    episodes: list[dict[str, Any]]
    best: dict[str, Any] | None
    summary: dict[str, Any] = field(default_factory=dict)


def check_search_settings(cfg: DictConfig) -> None:
    budget = cfg.search.budget
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise ConfigError(f"search.budget={budget!r} is not accepted: use an integer >= 1 (architectures to propose)")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed!r} is not accepted: use an integer >= 0")


def run_search(cfg: DictConfig, run_dir: Path) -> SearchResult:
    """Run the configured controller for ``search.budget`` architectures and write the outputs to ``run_dir``."""
    check_search_settings(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    run_id = f"{run_dir.name}-{uuid.uuid4().hex[:8]}"
    store = EvaluationStore(cfg.search.store)
    env = build_env(cfg, store, run_id)
    controller = build(cfg.controller, "controller")
    budget = int(cfg.search.budget)
    bar = tqdm(total=budget, desc="architectures", unit="arch", disable=not cfg.search.progress, dynamic_ncols=True)
    best_reward = -math.inf

    def on_evaluation(info: dict[str, Any]) -> None:
        nonlocal best_reward
        best_reward = max(best_reward, info["reward"])
        bar.set_postfix(best=f"{best_reward:.4f}", last=info["status"], cached=info["cached"], refresh=False)
        bar.update(1)

    try:
        controller.search(env, budget=budget, seed=int(cfg.seed), on_evaluation=on_evaluation)
    finally:
        bar.close()
    result = write_outputs(store, run_id, run_dir)
    env.close()
    return result


def write_outputs(store: EvaluationStore, run_id: str, run_dir: Path) -> SearchResult:
    """``evaluations.csv`` (every proposed architecture) and ``best.json`` from the store's history of the run."""
    episodes = store.episodes(run_id)
    with open(run_dir / "evaluations.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for number, row in enumerate(episodes, start=1):
            writer.writerow({**row, "episode": number})
    ok = [row for row in episodes if row["status"] == "ok"]
    best = max(ok, key=lambda row: row["reward"], default=None)
    summary = {
        "evaluations": len(episodes),
        "cache_hits": sum(int(row["cached"]) for row in episodes),
        "failures": sum(row["status"] == "failed" for row in episodes),
    }
    best_record = None if best is None else {key: best[key] for key in CSV_FIELDS if key in best}
    (run_dir / "best.json").write_text(json.dumps({"best": best_record, **summary, "run_id": run_id}, indent=2))
    return SearchResult(run_dir, episodes, best_record, summary)


def print_summary(result: SearchResult, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"nas-rl search: {result.run_dir}", show_header=False)
    best = result.best or {}
    rows = [
        ("best architecture", best.get("arch", "none (every evaluation failed)")),
        ("accuracy", _fmt(best.get("accuracy"), "{:.4f}")),
        ("latency (median)", _fmt(best.get("latency_ms"), "{:.3f} ms")),
        ("reward", _fmt(best.get("reward"), "{:.4f}")),
        ("evaluations", str(result.summary["evaluations"])),
        ("cache hits", str(result.summary["cache_hits"])),
        ("failures", str(result.summary["failures"])),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def _fmt(value: Any, template: str) -> str:
    return "-" if value is None else template.format(value)
