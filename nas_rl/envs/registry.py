"""Registered env ids: one YAML spec in ``envs/`` (shipped as ``nas_rl.env_specs``) per id."""

from __future__ import annotations

from importlib import resources
from typing import Any

import gymnasium as gym
from omegaconf import DictConfig, OmegaConf

NAMESPACE = "nas_rl"
SPEC_PACKAGE = "nas_rl.env_specs"


def spec_names() -> list[str]:
    """Names (``MnasNet-v0``, ...) of the shipped specs; the env id is ``nas_rl/<name>``."""
    files = resources.files(SPEC_PACKAGE).iterdir()
    return sorted(f.name[: -len(".yaml")] for f in files if f.name.endswith(".yaml"))


def load_spec(name: str) -> DictConfig:
    path = resources.files(SPEC_PACKAGE) / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"no env spec {name!r}; shipped specs: {', '.join(spec_names())}")
    return OmegaConf.create(path.read_text())


def make_env(spec: str, store: str = ":memory:", run_id: str = "gym", **overrides: Any) -> gym.Env:
    """Entry point of every registered id; keyword arguments override spec fields (nested dicts merge)."""
    from nas_rl.envs.factory import build_env
    from nas_rl.evaluation.store import EvaluationStore

    cfg = load_spec(spec)
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise ValueError(f"gym.make({NAMESPACE}/{spec}): unknown spec field(s) {unknown}; fields: {sorted(cfg)}")
    cfg = OmegaConf.merge(cfg, OmegaConf.create(overrides))
    return build_env(cfg, EvaluationStore(store), run_id)


def register_all() -> None:
    for name in spec_names():
        env_id = f"{NAMESPACE}/{name}"
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="nas_rl.envs.registry:make_env", kwargs={"spec": name})
