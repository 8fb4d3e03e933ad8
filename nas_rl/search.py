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
from tqdm.auto import tqdm

from nas_rl.config import build
from nas_rl.envs.factory import build_env
from nas_rl.errors import ConfigError
from nas_rl.report import print_summary  # noqa: F401  (re-exported: the summary table lives in report.py)
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


#: Config sections that decide what an evaluation returns: a resumed run may not change them.
EVALUATION_KEYS = ("search_space", "dataset", "accuracy", "latency")
RUN_FILE = "run.json"
CONTROLLER_CHECKPOINT = "controller"


def check_search_settings(cfg: DictConfig) -> None:
    budget = cfg.search.budget
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise ConfigError(f"search.budget={budget!r} is not accepted: use an integer >= 1 (architectures to propose)")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed!r} is not accepted: use an integer >= 0")
    every = cfg.search.get("checkpoint_every", 1)
    if not isinstance(every, int) or every < 1:
        raise ConfigError(f"search.checkpoint_every={every!r} is not accepted: use an integer >= 1")


def resume_config(run_dir: Path, cfg: DictConfig, overridden: list[str]) -> DictConfig:
    """The config of the run in ``run_dir`` with this command's overrides of keys outside EVALUATION_KEYS.

    An override that changes an evaluation setting is refused, naming the keys, since the stored
    evaluations would no longer answer for the run.
    """
    if not (run_dir / RUN_FILE).is_file() or not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"resume={run_dir} is not accepted: not a nas-rl run directory (no {RUN_FILE} and config.yaml)")
    saved = OmegaConf.load(run_dir / "config.yaml")
    changed = [
        key
        for key in overridden
        if key.split(".")[0] in EVALUATION_KEYS and OmegaConf.select(saved, key) != OmegaConf.select(cfg, key)
    ]
    if changed:
        raise ConfigError(
            f"resume={run_dir} is refused: {', '.join(sorted(changed))} differ from the run's config and change "
            f"evaluations; accepted: overrides of keys outside {', '.join(EVALUATION_KEYS)}"
        )
    for key in overridden:
        if key.split(".")[0] not in EVALUATION_KEYS and OmegaConf.select(cfg, key) is not None:
            OmegaConf.update(saved, key, OmegaConf.select(cfg, key), force_add=True)
    saved.resume = str(run_dir)
    return saved


def run_search(cfg: DictConfig, run_dir: Path, overridden: list[str] | None = None) -> SearchResult:
    """Run the configured controller for ``search.budget`` architectures and write the outputs to ``run_dir``.

    With ``resume=RUN_DIR`` it continues that run instead: the architectures already in the store's history
    count against the budget, and the controller restarts from its last checkpoint.
    """
    resuming = bool(cfg.get("resume"))
    if resuming:
        run_dir = Path(cfg.resume)
        cfg = resume_config(run_dir, cfg, overridden or [])
    check_search_settings(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = _run_id(run_dir, resuming)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    store = EvaluationStore(cfg.search.store)
    env = build_env(cfg, store, run_id)
    controller = build(cfg.controller, "controller")
    checkpoint = run_dir / CONTROLLER_CHECKPOINT
    if resuming:
        controller.load(checkpoint)
    budget, done = int(cfg.search.budget), store.count_episodes(run_id)
    every = int(cfg.search.get("checkpoint_every", 1))
    log = EvaluationLog(run_dir / "tensorboard", store.episodes(run_id))
    bar = tqdm(total=budget, initial=min(done, budget), desc="architectures", unit="arch",
               disable=not cfg.search.progress, dynamic_ncols=True)  # fmt: skip

    def on_evaluation(info: dict[str, Any]) -> None:
        log.add(info)
        bar.set_postfix(best=f"{log.best_reward:.4f}", last=info["status"], cached=info["cached"], refresh=False)
        bar.update(1)
        if log.count % every == 0:
            controller.save(checkpoint)

    try:
        if done < budget:
            controller.search(env, budget=budget - done, seed=int(cfg.seed) + done, on_evaluation=on_evaluation,
                              log_dir=run_dir / "tensorboard")  # fmt: skip
            controller.save(checkpoint)
    finally:
        bar.close()
        log.close()
    result = write_outputs(store, run_id, run_dir, target_ms=cfg.reward.get("target_ms"))
    if cfg.search.get("export", True):
        export_best_architecture(env, result)
    env.close()
    return result


def _run_id(run_dir: Path, resuming: bool) -> str:
    """The id tagging this run's history rows: kept in run.json so a resumed run continues the same history."""
    path = run_dir / RUN_FILE
    if resuming:
        return json.loads(path.read_text())["run_id"]
    run_id = f"{run_dir.name}-{uuid.uuid4().hex[:8]}"
    path.write_text(json.dumps({"run_id": run_id}))
    return run_id


class EvaluationLog:
    """TensorBoard scalars per proposed architecture: reward, accuracy, latency and the best reward so far."""

    def __init__(self, log_dir: Path, history: list[dict[str, Any]]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir / "search"))
        self.count = len(history)
        self.best_reward = max((row["reward"] for row in history), default=-math.inf)

    def add(self, info: dict[str, Any]) -> None:
        self.count += 1
        self.best_reward = max(self.best_reward, info["reward"])
        self.writer.add_scalar("nas/reward", info["reward"], self.count)
        self.writer.add_scalar("nas/best_reward", self.best_reward, self.count)
        for key in ("accuracy", "latency_ms"):
            if info.get(key) is not None:
                self.writer.add_scalar(f"nas/{key}", info[key], self.count)

    def close(self) -> None:
        self.writer.close()


def write_outputs(store: EvaluationStore, run_id: str, run_dir: Path, target_ms: float | None = None) -> SearchResult:
    """``evaluations.csv`` (every proposed architecture), ``best.json`` and the plots, from the store's history."""
    from nas_rl.report import summarize, write_run_plots

    episodes = store.episodes(run_id)
    with open(run_dir / "evaluations.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for number, row in enumerate(episodes, start=1):
            writer.writerow({**row, "episode": number})
    best, summary = summarize(episodes)
    best_record = None if best is None else {key: best[key] for key in CSV_FIELDS if key in best}
    (run_dir / "best.json").write_text(json.dumps({"best": best_record, **summary, "run_id": run_id}, indent=2))
    write_run_plots(episodes, run_dir, target_ms)
    return SearchResult(run_dir, episodes, best_record, summary)


def export_best_architecture(env: Any, result: SearchResult) -> dict[str, Any] | None:
    """Retrain the best architecture (proxy training is seeded, so this reproduces its weights) and export it
    as best.pt, best.onnx and best.tflite, checked against the PyTorch logits; the outcome goes into best.json."""
    from nas_rl.errors import EvaluationFailed
    from nas_rl.export import export_best

    estimator = env.get_wrapper_attr("evaluator").accuracy
    if result.best is None or not hasattr(estimator, "train"):
        return None  # nothing succeeded, or the accuracy came without training (zero-cost, tabular)
    arch = env.get_wrapper_attr("search_space").parse(result.best["arch"])
    model, accuracy = estimator.train(arch)
    images = estimator.dataset.x_val
    try:
        export = export_best(arch, model, images, result.run_dir, resolution=int(images.shape[-1]))
    except EvaluationFailed as error:
        export = {"error": str(error)}
    export["retrained_accuracy"] = accuracy
    best_json = result.run_dir / "best.json"
    best_json.write_text(json.dumps({**json.loads(best_json.read_text()), "export": export}, indent=2))
    return export

