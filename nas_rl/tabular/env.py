"""The Tabular env from a table: the env spec ``Tabular-v0.yaml`` wired with the fast-path evaluator."""

from __future__ import annotations

import os
from importlib import resources
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nas_rl.config import build
from nas_rl.envs.nas_env import NasEnv
from nas_rl.evaluator import Evaluator
from nas_rl.reward import MnasReward
from nas_rl.store import EvaluationStore
from nas_rl.tabular.table import Table, load_table

SPEC_NAME = "Tabular-v0"


def latency_midrange(table: Table) -> float:
    """The middle of the table's latency range: (fastest + slowest median latency) / 2, in ms."""
    low, high = table.latency_range()
    return (low + high) / 2


def table_reward(
    table: str | os.PathLike[str], target_ms: float | None = None, alpha: float = -0.07, beta: float = -0.07
) -> MnasReward:
    """The MnasNet reward at ``target_ms``, or (None) at :func:`latency_midrange` of ``table``."""
    if target_ms is None:
        target_ms = latency_midrange(load_table(table, "reward.table"))
    return MnasReward(target_ms=float(target_ms), alpha=alpha, beta=beta)


def load_tabular_spec() -> DictConfig:
    """``envs/Tabular-v0.yaml`` once it is shipped, else the template next to this module."""
    from nas_rl.envs.registry import load_spec, spec_names

    if SPEC_NAME in spec_names():
        return load_spec(SPEC_NAME)
    return OmegaConf.create((resources.files("nas_rl.tabular") / f"{SPEC_NAME}.yaml").read_text())


def build_tabular_env(cfg: DictConfig, store: EvaluationStore, run_id: str) -> NasEnv:
    """NasEnv from an env spec whose optional ``evaluator`` section names the evaluator class."""
    parts = {
        "accuracy": build(cfg.accuracy, "accuracy"),
        "latency": build(cfg.latency, "latency"),
        "reward": build(cfg.reward, "reward"),
        "store": store,
        "run_id": run_id,
    }
    if cfg.get("evaluator"):
        # A partial, called with the roles: instantiate() would turn the (dataclass) reward into a config.
        evaluator = build(OmegaConf.merge(cfg.evaluator, {"_partial_": True}), "evaluator")(**parts)
    else:
        evaluator = Evaluator(**parts)
    return NasEnv(build(cfg.search_space, "search_space"), evaluator, **cfg.get("env", {}))


def make_tabular_env(
    table: str | os.PathLike[str] | None = None, store: str = ":memory:", run_id: str = "gym", **overrides: Any
) -> NasEnv:
    """The Tabular env on ``table`` (default: the spec's shipped table); keyword arguments override spec fields
    (nested dicts merge), as ``gym.make`` keyword arguments do."""
    cfg = load_tabular_spec()
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise ValueError(f"{SPEC_NAME}: unknown spec field(s) {unknown}; fields: {sorted(cfg)}")
    if table is not None:
        overrides["table"] = str(table)
    cfg = OmegaConf.merge(cfg, OmegaConf.create(overrides))
    return build_tabular_env(cfg, EvaluationStore(store), run_id)
