"""Registered env ids: one YAML spec in ``envs/`` (shipped as ``nas_rl.env_specs``) per id.

A spec's sections are the roles' configs; its top-level :data:`REGISTRY_FIELDS` are registration metadata
(``nondeterministic: true`` where latency is measured), read here and never built or overridden.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

if TYPE_CHECKING:
    from nas_rl.envs.nas_env import NasEnv
    from nas_rl.evaluation.executor import Executor

NAMESPACE = "nas_rl"
SPEC_PACKAGE = "nas_rl.env_specs"
#: Top-level spec fields that describe the registration, not the env: passed to ``gym.register``.
REGISTRY_FIELDS = ("nondeterministic",)
#: Sections that ``gym.make`` also accepts as a built object, passed through unbuilt (see :func:`make_env`).
ROLE_SECTIONS = ("search_space", "accuracy", "latency", "reward")


def spec_names() -> list[str]:
    """Names (``MnasNet-v0``, ...) of the shipped specs; the env id is ``nas_rl/<name>``."""
    files = resources.files(SPEC_PACKAGE).iterdir()
    return sorted(f.name[: -len(".yaml")] for f in files if f.name.endswith(".yaml"))


def _spec_text(name: str) -> str:
    path = resources.files(SPEC_PACKAGE) / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"no env spec {name!r}; shipped specs: {', '.join(spec_names())}")
    return path.read_text()


def load_spec(name: str) -> DictConfig:
    """The spec's sections (the env's config), without its registry fields."""
    cfg = OmegaConf.create(_spec_text(name))
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"env spec {name!r} is not a mapping of sections")
    for field in REGISTRY_FIELDS:
        cfg.pop(field, None)
    return cfg


def registry_fields(name: str) -> dict[str, Any]:
    """The spec's registration metadata (``gym.register`` keyword arguments), e.g. ``{"nondeterministic": True}``."""
    raw = yaml.safe_load(_spec_text(name)) or {}
    return {field: raw[field] for field in REGISTRY_FIELDS if field in raw}


def make_env(
    spec: str,
    store: str | os.PathLike[str] | None = None,
    run_id: str = "gym",
    render_mode: str | None = None,
    executor: Executor | None = None,
    **overrides: Any,
) -> NasEnv:
    """Entry point of every registered id: the spec with ``overrides`` (keyword = spec field) applied.

    A mapping merges into its section, unless it names another ``_target_``: then it replaces the section. A
    built role (a :class:`SearchSpace`, :class:`AccuracyEstimator`, :class:`LatencyModel` or reward callable)
    for ``search_space``, ``accuracy``, ``latency`` or ``reward`` is used as it is; other sections' values
    still read the spec's section through interpolations (MnasNet-v0's ``latency.resolution`` is
    ``${search_space.resolution}``): set those too if they differ.

    :param store: an evaluation store file; every proposal is written to it (a spec whose evaluator keeps no
        history by default, Tabular-v0's, gets ``evaluator.history=true`` unless the overrides set it). None:
        a private in-memory store.
    :param run_id: tag of the history rows this env writes.
    :param render_mode: None or one of ``NasEnv.metadata["render_modes"]``.
    :param executor: runs the evaluations, e.g. a :class:`~nas_rl.evaluation.cluster.DaskExecutor` (its workers
        build the roles from the spec's sections); the caller closes it. None: in this process.
    """
    from nas_rl.envs.factory import build_env
    from nas_rl.envs.nas_env import EnvArgumentError
    from nas_rl.evaluation.executor import Executor
    from nas_rl.evaluation.store import EvaluationStore

    if executor is not None and not isinstance(executor, Executor):
        raise EnvArgumentError(
            f"gym.make({NAMESPACE}/{spec}): executor={executor!r} is not accepted: use None (evaluate in this "
            "process) or an nas_rl.evaluation.executor.Executor, e.g. nas_rl.evaluation.cluster.DaskExecutor"
        )
    cfg = load_spec(spec)
    unknown = [key for key in overrides if key not in cfg]
    if unknown:
        raise EnvArgumentError(
            f"gym.make({NAMESPACE}/{spec}) got an unexpected keyword argument {unknown[0]!r} (unknown spec "
            f"field(s) {unknown}); accepted: store, run_id, render_mode, executor and the spec fields {sorted(cfg)}"
        )
    roles = {}
    for key, value in overrides.items():
        if _is_config_value(value):
            if _replaces(cfg.get(key), value):
                cfg[key] = value
            else:
                cfg.merge_with({key: value})
        elif key in ROLE_SECTIONS and not isinstance(value, Mapping):
            roles[key] = _check_role(spec, key, value)
        else:
            raise EnvArgumentError(
                f"gym.make({NAMESPACE}/{spec}): {key}={value!r} is not accepted: use config values (mappings, lists, "
                f"strings, numbers, booleans); a built object is accepted only as a whole {', '.join(ROLE_SECTIONS)}"
            )
    history = OmegaConf.select(cfg, "evaluator.history", default=None)
    evaluator_override = overrides.get("evaluator")
    history_given = isinstance(evaluator_override, Mapping) and "history" in evaluator_override
    if store is not None and history is False and not history_given:
        cfg.evaluator.history = True  # a store was asked for: fill it
    path = ":memory:" if store is None else store
    return build_env(cfg, EvaluationStore(path), run_id, render_mode=render_mode, roles=roles, executor=executor)


def _is_config_value(value: Any) -> bool:
    """Whether OmegaConf can hold ``value`` (a section or a setting), as opposed to a built object."""
    if value is None or isinstance(value, (str, int, float, bool, os.PathLike, DictConfig, ListConfig)):
        return True
    if isinstance(value, Mapping):
        return all(_is_config_value(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_is_config_value(v) for v in value)
    return False


def _replaces(section: Any, value: Any) -> bool:
    """Whether override ``value`` replaces ``section`` rather than merging into it: it names another target."""
    from nas_rl.config import current_target

    if not isinstance(value, Mapping) or "_target_" not in value or not isinstance(section, DictConfig):
        return False
    old = section.get("_target_")
    return old is None or current_target(str(value["_target_"])) != current_target(str(old))


def _check_role(spec: str, key: str, value: Any) -> Any:
    """``value`` if it is a built role of kind ``key``; EnvArgumentError naming what is accepted otherwise."""
    from nas_rl.accuracy.base import AccuracyEstimator
    from nas_rl.envs.nas_env import EnvArgumentError
    from nas_rl.latency.base import LatencyModel
    from nas_rl.spaces.base import SearchSpace

    kinds = {"search_space": SearchSpace, "accuracy": AccuracyEstimator, "latency": LatencyModel}
    accepted = isinstance(value, kinds[key]) if key in kinds else callable(value)
    if not accepted:
        kind = kinds[key].__name__ if key in kinds else "callable (accuracy, latency_ms) -> reward"
        raise EnvArgumentError(
            f"gym.make({NAMESPACE}/{spec}): {key}={value!r} is not accepted: use a config mapping or a built {kind}"
        )
    return value


def register_all() -> None:
    """Register ``nas_rl/<name>`` for every shipped spec, with the spec's registry fields."""
    for name in spec_names():
        env_id = f"{NAMESPACE}/{name}"
        if env_id not in gym.registry:
            gym.register(
                id=env_id, entry_point="nas_rl.envs.registry:make_env", kwargs={"spec": name}, **registry_fields(name)
            )
