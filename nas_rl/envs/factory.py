"""Wire the roles of one env from a config (an ``envs/`` spec or the composed Hydra config)."""

from __future__ import annotations

from omegaconf import DictConfig

from nas_rl.config import build
from nas_rl.envs.nas_env import NasEnv
from nas_rl.evaluator import Evaluator
from nas_rl.store import EvaluationStore


def build_env(cfg: DictConfig, store: EvaluationStore, run_id: str) -> NasEnv:
    """NasEnv from the ``search_space``, ``accuracy``, ``latency``, ``reward`` and ``env`` sections of ``cfg``."""
    evaluator = Evaluator(
        accuracy=build(cfg.accuracy, "accuracy"),
        latency=build(cfg.latency, "latency"),
        reward=build(cfg.reward, "reward"),
        store=store,
        run_id=run_id,
    )
    return NasEnv(build(cfg.search_space, "search_space"), evaluator, **cfg.get("env", {}))
