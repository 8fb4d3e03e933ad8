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

from nas_rl.accuracy.base import TrainableEstimator
from nas_rl.config import build
from nas_rl.envs.factory import build_env
from nas_rl.errors import ConfigError
from nas_rl.evaluation.store import EvaluationStore
from nas_rl.runs.run_report import print_summary  # noqa: F401  (re-exported: the summary table lives in report.py)

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
    #: The export of the best architecture (``best.json``'s ``export``); None when not exported.
    export: dict[str, Any] | None = None

    @property
    def export_error(self) -> str | None:
        """Why the export failed (a mismatch of the exported files with PyTorch included); None if it did not."""
        return None if self.export is None else self.export.get("error")


#: Config sections that decide what an evaluation returns: a resumed run may not change them.
EVALUATION_KEYS = ("search_space", "dataset", "accuracy", "latency")
#: Single settings a resumed run may not change either: the store holds the run's history.
HISTORY_KEYS = ("search.store",)
RUN_FILE = "run.json"
CONTROLLER_CHECKPOINT = "controller"
CONFIG_NAME = "config"


def check_search_settings(cfg: DictConfig) -> None:
    budget = cfg.search.budget
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise ConfigError(f"search.budget={budget!r} is not accepted: use an integer >= 1 (architectures to propose)")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed!r} is not accepted: use an integer >= 0")
    every = cfg.search.get("checkpoint_every", 1)
    if not isinstance(every, int) or every < 1:
        raise ConfigError(f"search.checkpoint_every={every!r} is not accepted: use an integer >= 1")


def resume_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The saved config of the run in ``run_dir`` with the settings this command's ``overrides`` change.

    What a command changes is judged on composed configs, so a group choice (``experiment=tabular``,
    ``accuracy=zero_cost``) counts as every value it changes: the config composed from the run's own
    overrides (``.hydra/overrides.yaml``) is compared with the one composed from those plus ``overrides``.
    A change of an evaluation setting (EVALUATION_KEYS) or of the store (HISTORY_KEYS) to a value other
    than the run's is refused, naming the keys, since the stored evaluations would no longer answer for the
    run; other changes (``search.budget`` to extend the run, controller settings, ...) are applied.
    Needs Hydra initialised (inside ``@hydra.main``, or ``initialize_config_module``).
    """
    if not (run_dir / RUN_FILE).is_file() or not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"resume={run_dir} is not accepted: not a nas-rl run directory (no {RUN_FILE} and config.yaml)")
    saved = OmegaConf.load(run_dir / "config.yaml")
    if not isinstance(saved, DictConfig):
        raise ConfigError(f"resume={run_dir} is not accepted: {run_dir / 'config.yaml'} is not a run's config (a mapping)")
    before, after = _compose_with_run_overrides(run_dir, overrides)
    changed = _changed_keys(before, after)
    refused = [key for key in changed if _is_evaluation_key(key) and _value(after, key) != _value(saved, key)]
    if refused:
        raise ConfigError(
            f"resume={run_dir} is refused: {_describe(refused)} would differ from the run's config, changing its "
            f"evaluations or its store; accepted: the run's values of {', '.join(EVALUATION_KEYS + HISTORY_KEYS)}, "
            "any other key (e.g. search.budget=N to extend the run)"
        )
    for key in changed:
        if not _is_evaluation_key(key):
            _set(saved, key, _value(after, key))
    saved.resume = str(run_dir)
    return saved


def _compose_with_run_overrides(run_dir: Path, overrides: list[str]) -> tuple[DictConfig, DictConfig]:
    """The config composed from the run's own overrides, and from those plus ``overrides``."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    file = run_dir / ".hydra" / "overrides.yaml"  # Hydra writes it; a run made without Hydra has none
    recorded: Any = OmegaConf.load(file) if file.is_file() else []
    previous = [str(o) for o in recorded if not str(o).lstrip("+~").startswith(("resume=", "hydra.", "hydra/"))]
    try:
        return compose(CONFIG_NAME, previous), compose(CONFIG_NAME, previous + overrides)
    except (HydraException, OmegaConfBaseException):
        # The run's overrides no longer compose (the package changed since): judge this command's alone.
        return compose(CONFIG_NAME, []), compose(CONFIG_NAME, overrides)


def _changed_keys(before: DictConfig, after: DictConfig) -> list[str]:
    """Dotted keys of the leaves (lists count as leaves) that differ, appear or disappear, unresolved."""
    old, new = _leaves(OmegaConf.to_container(before)), _leaves(OmegaConf.to_container(after))
    keys = (old.keys() | new.keys()) - {"resume"}
    return sorted(key for key in keys if old.get(key, _ABSENT) != new.get(key, _ABSENT))


_ABSENT = object()


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict) or not node:
        return {prefix[:-1]: node}
    leaves: dict[str, Any] = {}
    for key, value in node.items():
        leaves.update(_leaves(value, f"{prefix}{key}."))
    return leaves


def _describe(keys: list[str]) -> str:
    """The keys, a section with more than three of them (a group choice) as ``section.* (N keys)``."""
    sections: dict[str, list[str]] = {}
    for key in keys:
        sections.setdefault(key.split(".")[0], []).append(key)
    return ", ".join(
        ", ".join(group) if len(group) <= 3 else f"{name}.* ({len(group)} keys)" for name, group in sections.items()
    )


def _is_evaluation_key(key: str) -> bool:
    return key.split(".")[0] in EVALUATION_KEYS or key in HISTORY_KEYS


def _value(cfg: DictConfig, key: str) -> Any:
    """The resolved value at ``key`` as plain Python; None where the key is absent."""
    value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _set(cfg: DictConfig, key: str, value: Any) -> None:
    """Set the leaf at ``key``; a leaf the new composition lacks (None) is removed."""
    parent_key, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if value is None and OmegaConf.is_dict(parent) and name in parent:
        del parent[name]
    elif value is not None:
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)


def run_search(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> SearchResult:
    """Run the configured controller for ``search.budget`` architectures and write the outputs to ``run_dir``.

    With ``resume=RUN_DIR`` it continues that run instead: the architectures already in the store's history
    count against the budget, and the controller restarts from its last checkpoint. ``overrides`` are the
    command's Hydra overrides other than ``resume=`` (see :func:`resume_config`).

    An export that fails is recorded in ``best.json`` and the result (:attr:`SearchResult.export_error`);
    every other output is written first.
    """
    resuming = bool(cfg.get("resume"))
    if resuming:
        run_dir = Path(cfg.resume)
        cfg = resume_config(run_dir, overrides or [])
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
    try:
        if cfg.search.get("export", True):
            result.export = export_best_architecture(env, result)
    finally:
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
            if not math.isnan(info[key]):
                self.writer.add_scalar(f"nas/{key}", info[key], self.count)

    def close(self) -> None:
        self.writer.close()


def write_outputs(store: EvaluationStore, run_id: str, run_dir: Path, target_ms: float | None = None) -> SearchResult:
    """``evaluations.csv`` (every proposed architecture), ``best.json`` and the plots, from the store's history."""
    from nas_rl.runs.run_report import summarize, write_run_plots

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
    """Retrain the best architecture (proxy training is seeded, so this reproduces its weights) and export the
    network proxy training trained and scored: the width-scaled copy (``accuracy.width_multiplier``) at the
    proxy-training resolution, checked on that validation batch. Files best.pt, best.onnx and best.tflite;
    the outcome, a failure or mismatch included (``error``), goes into best.json and is returned."""
    from nas_rl.accuracy.proxy import scale_width
    from nas_rl.errors import EvaluationFailed
    from nas_rl.runs.export import export_best

    estimator = env.get_wrapper_attr("evaluator").accuracy
    if result.best is None or not isinstance(estimator, TrainableEstimator):
        return None  # nothing succeeded, or the accuracy came without a network (zero-cost, tabular)
    arch = env.get_wrapper_attr("search_space").parse(result.best["arch"])
    multiplier = float(estimator.width_multiplier)
    trained = scale_width(arch, multiplier)  # what estimator.train builds and scores
    model, accuracy = estimator.train(arch)
    # The validation split as the estimator scored it (resized to accuracy.resolution).
    images = estimator.validation_images()
    facts = {"searched_arch": arch.to_string(), "width_multiplier": multiplier}
    try:
        export = export_best(trained, model, images, result.run_dir, resolution=int(images.shape[-1]),
                             metadata={**facts, "accuracy": accuracy})  # fmt: skip
    except (EvaluationFailed, ValueError) as error:
        export = {"error": str(error)}
    export = {"arch": trained.to_string(), **facts, **export, "retrained_accuracy": accuracy}
    best_json = result.run_dir / "best.json"
    best_json.write_text(json.dumps({**json.loads(best_json.read_text()), "export": export}, indent=2))
    return export
