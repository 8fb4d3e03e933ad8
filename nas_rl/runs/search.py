"""A search run: wire the roles from the composed config, run the controller, write the run's outputs."""

from __future__ import annotations

import csv
import json
import logging
import math
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from nas_rl._util import atomic_write, first_line, write_text_atomically
from nas_rl.accuracy.base import TrainableEstimator
from nas_rl.config import build
from nas_rl.controllers.base import Controller
from nas_rl.envs.factory import build_env
from nas_rl.errors import ConfigError, DataError
from nas_rl.evaluation.cluster import ClusterLost, DaskExecutor
from nas_rl.evaluation.executor import Executor, LocalExecutor
from nas_rl.evaluation.store import EvaluationStore
from nas_rl.runs import run_folder
from nas_rl.runs.run_folder import (
    RunIdentity,
    locate_store,
    locked,
    read_identity,
    recorded_overrides,
    reported_episodes,
    started_in,
    write_identity,
    writing,
)
from nas_rl.runs.run_report import print_summary  # noqa: F401  (re-exported: the summary table lives in report.py)

logger = logging.getLogger(__name__)

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


#: Config sections that decide what an evaluation returns and what it pays: a resumed run may not change them.
EVALUATION_KEYS = ("search_space", "dataset", "device", "accuracy", "latency", "reward")
#: Single settings a resumed run may not change either: the seed its controller draws from (``seed + done``),
#: and the store that holds its history.
HISTORY_KEYS = ("seed", "search.store")
#: The controller settings a resume applies. Its other settings (its class, the SB3 algorithm and its
#: hyper-parameters, the policy, rollout sizes, the population size) are what its checkpoint was made with and
#: would be silently ignored when it is loaded, or would describe a different run: a change is refused.
RESUMABLE_CONTROLLER_KEYS = ("controller.n_envs", "controller.vec_env", "controller.sample_size")
#: Kept for callers that import it from here.
RUN_FILE = run_folder.RUN_FILE
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


def resume_config(run_dir: Path, overrides: list[str], identity: RunIdentity | None = None) -> DictConfig:
    """The saved config of the run in ``run_dir`` with the settings this command's ``overrides`` change.

    What a command changes is judged on composed configs: the config composed from the run's own overrides
    (``run.json``'s, else Hydra's ``.hydra/overrides.yaml``) is compared with the one composed from those plus
    ``overrides``, key by key, as written and as resolved. So a group choice (``experiment=tabular``) counts as
    every value it changes, and a key other settings interpolate (``tabular.table``) as the values that follow it.

    - Refused, naming the keys: a change, to a value other than the run's, of what was evaluated and paid
      (EVALUATION_KEYS), of the seed or the store (HISTORY_KEYS), or of a controller setting other than
      RESUMABLE_CONTROLLER_KEYS (its checkpoint holds the others).
    - Applied to the saved config: everything else (``search.budget=N`` to extend the run, ``search.export``,
      ``search.progress``, ``controller.sample_size``, ``controller.n_envs``, ...).

    The store is the recorded ``search.store``, or the same file inside ``run_dir`` when the run folder moved
    (:func:`~nas_rl.runs.run_folder.locate_store`); ``search.store=PATH`` is accepted only to point at the run's
    store where it lies now, when the recorded path no longer exists. Needs Hydra initialised (inside
    ``@hydra.main``, or ``initialize_config_module``).

    :raises ConfigError: one line: not a run, a refused change, a store that is gone, overrides that do not compose.
    """
    identity = identity or read_identity(run_dir)
    saved = _saved_config(run_dir)
    before, after = _compose_with_run_overrides(run_dir, identity, overrides)
    changed = _changed_keys(before, after)
    now, old = _resolved_leaves(after), _resolved_leaves(saved)
    given_store = now.get("search.store") if "search.store" in changed else None
    refused = [key for key in changed if _is_fixed(key) and now.get(key, _ABSENT) != old.get(key, _ABSENT)
               and not (key == "search.store" and given_store is not None)]  # fmt: skip
    if refused:
        raise ConfigError(
            f"resume={run_dir} is refused: {_describe(refused)} would differ from the run's config (what it "
            "evaluated and paid, its seed or store, or what its controller's checkpoint holds); a resume may change "
            f"{', '.join(RESUMABLE_CONTROLLER_KEYS)} and any key outside {', '.join(EVALUATION_KEYS + HISTORY_KEYS)}, "
            "controller (e.g. search.budget=N to extend the run)"
        )
    store = _run_store(run_dir, saved, identity)
    if given_store is not None:
        store = _moved_store(run_dir, store, Path(str(given_store)))
    if not store.exists() and _evaluated(run_dir):
        raise ConfigError(
            f"resume={run_dir} is not accepted: the run has evaluated architectures but its evaluation store {store} "
            "does not exist; put the store back there, or pass search.store=PATH where it lies now"
        )
    for key in changed:
        if not _is_fixed(key):
            _set(saved, key, now.get(key, _ABSENT))  # (search.store: set below, to the run's store)
    saved.search.store = str(store)
    saved.resume = str(run_dir)
    return saved


def _saved_config(run_dir: Path) -> DictConfig:
    path = run_dir / run_folder.CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"resume={run_dir} is not accepted: not a nas-rl run directory (no {path.name})")
    try:
        saved = OmegaConf.load(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise DataError(f"{path} is not readable as a run's config ({first_line(error)}); expected the YAML "
                        "mapping nas-rl wrote when the run started") from None  # fmt: skip
    if not isinstance(saved, DictConfig) or not isinstance(saved.get("search"), DictConfig):
        raise DataError(f"{path} is not a run's config: expected the YAML mapping nas-rl wrote (with search.*)")
    return saved


def _run_store(run_dir: Path, saved: DictConfig, identity: RunIdentity) -> Path:
    recorded = saved.search.get("store")
    if not isinstance(recorded, str) or not recorded:
        raise DataError(f"{run_dir / run_folder.CONFIG_FILE} has no search.store: expected the path of the run's "
                        "evaluation store")  # fmt: skip
    return locate_store(run_dir, recorded, started_in(run_dir, identity))


def _moved_store(run_dir: Path, store: Path, given: Path) -> Path:
    """``search.store=given`` on a resume: the run's store where it now lies (accepted), or a change (refused)."""
    if given.resolve() == store.resolve() or (not store.exists() and given.is_file()):
        return given
    raise ConfigError(
        f"resume={run_dir} is refused: search.store={given} would differ from the run's store {store}, which holds "
        "its history; accepted: the run's store, or where it lies now if it was moved (then it must exist)"
    )


def _evaluated(run_dir: Path) -> bool:
    """Whether a run left signs of evaluated architectures (its outputs, or a controller checkpoint)."""
    return (run_dir / "evaluations.csv").is_file() or any(run_dir.glob(f"{CONTROLLER_CHECKPOINT}.*"))


def _compose_with_run_overrides(
    run_dir: Path, identity: RunIdentity, overrides: list[str]
) -> tuple[DictConfig, DictConfig]:
    """The config composed from the run's own overrides, and from those plus ``overrides``."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    previous = recorded_overrides(run_dir, identity)
    # The entry point puts the run's overrides before the command's (resumed_run_overrides): once is enough
    # (Hydra refuses a deletion, ~key, given twice).
    overrides = [o for o in overrides if o not in previous]
    failure: Exception | None = None
    # When the command's settings do not compose on the run's overrides (another search space, whose keys the
    # run's overrides set), or those no longer compose (the package changed since), the command's are judged alone.
    for base in (previous, []) if previous else ([],):
        try:
            return compose(CONFIG_NAME, base), compose(CONFIG_NAME, base + overrides)
        except (HydraException, OmegaConfBaseException) as error:
            failure = error
    raise ConfigError(
        f"resume={run_dir} with {' '.join(overrides)} is not accepted: {first_line(failure or '')} (composed on the "
        f"run's own overrides: {' '.join(previous) or 'none'})"
    ) from None


def _changed_keys(before: DictConfig, after: DictConfig) -> list[str]:
    """Dotted keys of the leaves (lists count as leaves) that differ, appear or disappear, as written or resolved."""
    changed: set[str] = set()
    pairs = ((_leaves(OmegaConf.to_container(before)), _leaves(OmegaConf.to_container(after))),
             (_resolved_leaves(before), _resolved_leaves(after)))  # fmt: skip
    for old, new in pairs:
        changed |= {key for key in old.keys() | new.keys() if old.get(key, _ABSENT) != new.get(key, _ABSENT)}
    return sorted(changed - {"resume"})


_ABSENT = object()


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict) or not node:
        return {prefix[:-1]: node}
    leaves: dict[str, Any] = {}
    for key, value in node.items():
        leaves.update(_leaves(value, f"{prefix}{key}."))
    return leaves


def _resolved_leaves(cfg: DictConfig) -> dict[str, Any]:
    """The leaves with their resolved values; one that cannot be resolved here (``${hydra:...}`` outside a Hydra
    job) as written."""
    from omegaconf.errors import OmegaConfBaseException

    resolved: dict[str, Any] = {}
    for key, written in _leaves(OmegaConf.to_container(cfg)).items():
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=False)
            resolved[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        except OmegaConfBaseException:
            resolved[key] = written
    return resolved


def _describe(keys: list[str]) -> str:
    """The keys, a section with more than three of them (a group choice) as ``section.* (N keys)``."""
    sections: dict[str, list[str]] = {}
    for key in keys:
        sections.setdefault(key.split(".")[0], []).append(key)
    return ", ".join(
        ", ".join(group) if len(group) <= 3 else f"{name}.* ({len(group)} keys)" for name, group in sections.items()
    )


def _is_fixed(key: str) -> bool:
    """Whether a resume may not change ``key`` (see :func:`resume_config`)."""
    section = key.split(".")[0]
    if section == "controller":
        return key not in RESUMABLE_CONTROLLER_KEYS
    return section in EVALUATION_KEYS or key in HISTORY_KEYS


def _set(cfg: DictConfig, key: str, value: Any) -> None:
    """Set the leaf at ``key``; ``_ABSENT`` (the new composition lacks it) removes it."""
    parent_key, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if value is _ABSENT:
        if OmegaConf.is_dict(parent) and name in parent:
            del parent[name]
    else:
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)


def run_search(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> SearchResult:
    """Run the configured controller for ``search.budget`` architectures and write the outputs to ``run_dir``.

    With ``resume=RUN_DIR`` it continues that run instead: the architectures already in the store's history
    count against the budget, and the controller restarts from its last checkpoint. ``overrides`` are the
    command's Hydra overrides other than ``resume=`` (see :func:`resume_config`); a new run records them.

    The run folder is locked for the whole run (``run.lock``; a second process is refused), and the run's
    identity (``config.yaml``, then ``run.json``) is written before anything costly, so a run killed at any
    point can be resumed. Every output is written atomically (a reader or a kill never leaves half a file).
    An export that fails is recorded in ``best.json`` and the result (:attr:`SearchResult.export_error`);
    every other output is written first.

    :raises ConfigError: one line, for a refused setting or resume, a run folder in use, or an output that
        cannot be written.
    """
    resuming = bool(cfg.get("resume"))
    identity = None
    if resuming:
        run_dir = Path(cfg.resume)
        identity = read_identity(run_dir)
    with locked(run_dir):
        if resuming:
            cfg = resume_config(run_dir, overrides or [], identity)
            check_search_settings(cfg)
            # The command's new settings are checked before the run's config is rewritten with them.
            controller = build(cfg.controller, "controller")
            identity = _record_identity(run_dir, cfg, identity, overrides)
        else:
            check_search_settings(cfg)
            # First (before the controller, whose SB3 module imports torch): from here on the run can be resumed.
            identity = _record_identity(run_dir, cfg, identity, overrides)
            controller = build(cfg.controller, "controller")
        return _run(cfg, run_dir, identity.run_id, controller, resuming)


def _record_identity(
    run_dir: Path, cfg: DictConfig, identity: RunIdentity | None, overrides: list[str] | None
) -> RunIdentity:
    """Write ``config.yaml``, then ``run.json`` (a run with run.json has its config): the run's identity, new or
    carried over (with the folder it is in now)."""
    here = str(run_dir.resolve())
    if identity is None:
        identity = RunIdentity(f"{run_dir.name}-{uuid.uuid4().hex[:8]}", here, None if overrides is None else
                               tuple(o for o in overrides if not o.lstrip("+~").startswith("resume=")))  # fmt: skip
    else:
        identity = replace(identity, run_dir=here)
    with writing(run_dir / run_folder.CONFIG_FILE):
        write_text_atomically(run_dir / run_folder.CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    write_identity(run_dir, identity)
    return identity


def idle_workers(executor: Executor, controller: Controller) -> str | None:
    """The warning for a LocalCluster with more worker threads than the architectures the controller keeps in
    evaluation at once (the rest would wait through the whole search), or None."""
    if not isinstance(executor, DaskExecutor) or executor.address is not None:
        return None  # a scheduler elsewhere: its workers are not known until it is reached
    slots = executor.workers * executor.threads_per_worker
    if controller.n_envs >= slots:
        return None
    return (
        f"cluster=dask starts {executor.workers} worker process(es) of {executor.threads_per_worker} thread(s), but "
        f"controller.n_envs={controller.n_envs} keeps only that many architectures in evaluation at once, so "
        f"{slots - controller.n_envs} of its {slots} worker threads wait: set controller.n_envs={slots} or more "
        '(README, "Past one machine")'
    )


def _run(cfg: DictConfig, run_dir: Path, run_id: str, controller: Controller, resuming: bool) -> SearchResult:
    # The cluster's settings are checked before the roles load data; it connects on the first evaluation.
    executor = build(cfg.cluster, "cluster") if cfg.get("cluster") else LocalExecutor()
    warning = idle_workers(executor, controller)
    if warning is not None:
        logger.warning(warning)
    try:
        return _run_on(executor, cfg, run_dir, run_id, controller, resuming)
    except ClusterLost as error:
        raise ClusterLost(f"{error}: continue the run with resume={run_dir}") from None
    finally:
        executor.close()


def _run_on(
    executor: Executor, cfg: DictConfig, run_dir: Path, run_id: str, controller: Controller, resuming: bool
) -> SearchResult:
    store = EvaluationStore(cfg.search.store)
    env = build_env(cfg, store, run_id, executor=executor)
    checkpoint = run_dir / CONTROLLER_CHECKPOINT
    if resuming:
        controller.load(checkpoint)
    budget, done = int(cfg.search.budget), store.count_episodes(run_id)
    every = int(cfg.search.get("checkpoint_every", 1))
    log = EvaluationLog(run_dir / "tensorboard", store.episodes(run_id))
    bar = tqdm(total=budget, initial=min(done, budget), desc="architectures", unit="arch",
               disable=not cfg.search.progress, dynamic_ncols=True)  # fmt: skip

    def save_controller() -> None:
        with writing(checkpoint):
            controller.save(checkpoint)

    def on_evaluation(info: dict[str, Any]) -> None:
        log.add(info)
        bar.set_postfix(best=f"{log.best_reward:.4f}", last=info["status"], cached=info["cached"], refresh=False)
        bar.update(1)
        if log.count % every == 0:
            save_controller()

    try:
        if done < budget:
            controller.search(env, budget=budget - done, seed=int(cfg.seed) + done, on_evaluation=on_evaluation,
                              log_dir=run_dir / "tensorboard")  # fmt: skip
            save_controller()
        result = write_outputs(store, run_id, run_dir, target_ms=cfg.reward.get("target_ms"), budget=budget)
        if cfg.search.get("export", True):
            result.export = export_best_architecture(env, result)
    finally:
        bar.close()
        log.close()
        env.close()
    return result


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


def write_outputs(
    store: EvaluationStore, run_id: str, run_dir: Path, target_ms: float | None = None, budget: int | None = None
) -> SearchResult:
    """``evaluations.csv`` (every architecture of the run: the first ``budget`` of its history), ``best.json`` and
    the plots, from the store's history; each file written atomically.

    :raises ConfigError: an output cannot be written (one line naming it).
    """
    from nas_rl.runs.run_report import summarize, write_run_plots

    episodes = reported_episodes(store.episodes(run_id), budget)
    path = run_dir / "evaluations.csv"
    with writing(path), atomic_write(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for number, row in enumerate(episodes, start=1):
            writer.writerow({**row, "episode": number})
    best, summary = summarize(episodes)
    best_record = None if best is None else {key: best[key] for key in CSV_FIELDS if key in best}
    with writing(run_dir / "best.json"):
        write_text_atomically(run_dir / "best.json", json.dumps({"best": best_record, **summary, "run_id": run_id},
                                                                indent=2))  # fmt: skip
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
    with writing(best_json):
        write_text_atomically(best_json, json.dumps({**json.loads(best_json.read_text()), "export": export}, indent=2))
    return export
