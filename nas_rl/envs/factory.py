"""Wire the roles of one env from a config (an ``envs/`` spec or the composed Hydra config)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from nas_rl.config import build
from nas_rl.envs.nas_env import NasEnv
from nas_rl.evaluation.evaluator import Evaluator
from nas_rl.evaluation.store import EvaluationStore


def build_env(cfg: DictConfig, store: EvaluationStore, run_id: str) -> NasEnv:
    """NasEnv from the ``search_space``, ``accuracy``, ``latency``, ``reward`` and ``env`` sections of ``cfg``.

    An optional ``evaluator`` section names another evaluator class (``_target_``, called with the same roles),
    e.g. the tabular fast path of ``envs/Tabular-v0.yaml``; without it, :class:`~nas_rl.evaluation.evaluator.Evaluator`.
    """
    roles = {
        "accuracy": build(cfg.accuracy, "accuracy"),
        "latency": build(cfg.latency, "latency"),
        "reward": build(cfg.reward, "reward"),
        "store": store,
        "run_id": run_id,
    }
    if cfg.get("evaluator"):
        # A partial, called with the roles: instantiate() would turn the (dataclass) reward into a config.
        evaluator = build(OmegaConf.merge(cfg.evaluator, {"_partial_": True}), "evaluator")(**roles)
    else:
        evaluator = Evaluator(**roles)
    return NasEnv(build(cfg.search_space, "search_space"), evaluator, **cfg.get("env", {}))
