"""Wire the roles of one env from a config (an ``envs/`` spec or the composed Hydra config)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from nas_rl.config import build, placed
from nas_rl.envs.nas_env import NasEnv
from nas_rl.errors import ConfigError
from nas_rl.evaluation.evaluator import Evaluator
from nas_rl.evaluation.executor import Executor
from nas_rl.evaluation.store import EvaluationStore

#: The settings of the ``env`` section: NasEnv's keyword arguments besides the roles.
ENV_SETTINGS = tuple(name for name in inspect.signature(NasEnv).parameters if name not in ("search_space", "evaluator"))


def build_env(
    cfg: DictConfig,
    store: EvaluationStore,
    run_id: str,
    render_mode: str | None = None,
    roles: Mapping[str, Any] | None = None,
    executor: Executor | None = None,
) -> NasEnv:
    """NasEnv from the ``search_space``, ``accuracy``, ``latency``, ``reward`` and ``env`` sections of ``cfg``.

    An optional ``evaluator`` section names another evaluator class (``_target_``, called with the same roles),
    e.g. the tabular fast path of ``envs/Tabular-v0.yaml``; without it, :class:`~nas_rl.evaluation.evaluator.Evaluator`.
    ``roles`` holds already built roles (``search_space``, ``accuracy``, ``latency``, ``reward``): each is used
    as it is instead of building its section. ``executor`` runs the evaluations (the ``cluster`` section's, which
    the caller builds and closes); None: in this process.
    """
    roles = dict(roles or {})

    def role(key: str) -> Any:
        return roles[key] if key in roles else build(cfg[key], key)

    parts = {
        "accuracy": role("accuracy"),
        "latency": role("latency"),
        "reward": role("reward"),
        "store": store,
        "run_id": run_id,
    }
    if executor is not None and executor.concurrent:
        parts["executor"] = executor
        for key in ("accuracy", "latency"):
            if key not in roles:  # built here from its section: a cluster's workers build it from the same config
                executor.describe_role(parts[key], cfg[key], key)
    if cfg.get("evaluator"):
        # A partial, called with the roles: instantiate() would turn the (dataclass) reward into a config.
        with open_dict(cfg.evaluator):  # a composed (struct) config has no _partial_ key to set
            partial = OmegaConf.merge(cfg.evaluator, {"_partial_": True})
        assert isinstance(partial, DictConfig)
        evaluator_class = build(partial, "evaluator")
        if "executor" in parts and "executor" not in inspect.signature(evaluator_class).parameters:
            raise ConfigError(
                f"cluster=dask is not accepted with evaluator._target_={cfg.evaluator._target_}, which answers in this "
                "process (from a table) and takes no executor: use cluster=local"
            )
        try:
            evaluator = evaluator_class(**parts)
        except ConfigError as error:  # the constructor names its own parameter: put the section in front
            raise type(error)(placed(str(error), "evaluator")) from None
    else:
        evaluator = Evaluator(**parts)
    settings = dict(cfg.get("env") or {})
    unknown = sorted(set(settings) - set(ENV_SETTINGS))
    if unknown:
        raise ConfigError(
            f"env.{unknown[0]}={settings[unknown[0]]!r} is not an env setting; settings: {', '.join(ENV_SETTINGS)}"
        )
    if render_mode is not None:
        settings["render_mode"] = render_mode
    return NasEnv(role("search_space"), evaluator, **settings)
