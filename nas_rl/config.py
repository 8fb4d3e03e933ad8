"""Building roles from config: the one place that calls ``hydra.utils.instantiate``."""

from __future__ import annotations

import collections.abc
import functools
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from nas_rl.errors import ConfigError

#: What a setting whose type hint is one of these scalars accepts, in the words of an error message: one, many.
_SCALAR_WORDS = {int: ("an integer", "integers"), float: ("a number", "numbers"), bool: ("true or false", "booleans")}
_UNREADABLE = object()


def build(node: DictConfig | dict[str, Any], key: str, **kwargs: Any) -> Any:
    """Instantiate the ``_target_`` config at ``key``; a bad setting raises ConfigError naming it.

    Before anything is built, every argument whose target declares it ``int``, ``float`` or ``bool`` (or an
    optional one, or a list of them) is checked for its type, so ``accuracy.epochs=abc`` is refused as
    ``accuracy.epochs='abc'`` rather than failing somewhere inside a constructor. A ConfigError raised inside
    a constructor surfaces as itself; a TypeError or ValueError becomes a ConfigError naming ``key``.
    ``_convert_="all"`` hands plain dicts and lists to libraries that check ``isinstance(x, dict)`` (SB3).
    """
    remap_targets(node._get_root() if isinstance(node, DictConfig) else node)
    check_argument_types(node, key, kwargs)
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        if isinstance(cause, (TypeError, ValueError)):
            first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise ConfigError(f"{key}: {first_line}") from cause
        raise


def check_argument_types(node: Any, key: str, overrides: Mapping[str, Any] | None = None) -> None:
    """Refuse an argument of a ``_target_`` node (and of the nodes nested in it that Hydra builds too) whose
    value does not have the int / float / bool type its target's signature declares."""
    if not isinstance(node, Mapping):
        return
    hints = _scalar_hints(_get(node, "_target_")) if "_target_" in node else {}
    recursive = _get(node, "_recursive_") is not False
    values = {name: _get(node, name) for name in node if not (str(name).startswith("_") and str(name).endswith("_"))}
    values.update(overrides or {})
    for name, value in values.items():
        if isinstance(value, Mapping):
            if recursive:
                check_argument_types(value, f"{key}.{name}")
            continue
        if name not in hints or value is _UNREADABLE:
            continue
        if OmegaConf.is_config(value):
            try:
                value = OmegaConf.to_container(value, resolve=True)
            except Exception:
                continue  # instantiation reports it
        accepted, what = _accepts(hints[name], value)
        if not accepted:
            raise ConfigError(f"{key}.{name}={value!r} is not accepted: use {what}")


def _get(node: Mapping[str, Any], name: Any) -> Any:
    """``node[name]``, resolved; ``_UNREADABLE`` when it cannot be read yet (``???``, a failing interpolation):
    instantiation reports those itself."""
    try:
        return node[name]
    except Exception:
        return _UNREADABLE


def _scalar_hints(target: Any) -> dict[str, Any]:
    """The parameters of ``target`` (a dotted path or a callable) annotated with int / float / bool, optional or
    in a list; empty when the target or its annotations cannot be resolved (then nothing is checked)."""
    try:
        function = get_object(target) if isinstance(target, str) else target
        signature_of = function.__init__ if isinstance(function, type) else function  # type: ignore[misc]
        hints = typing.get_type_hints(signature_of)
    except Exception:
        return {}
    return {name: hint for name, hint in hints.items() if name != "return" and _describe(hint) is not None}


def _describe(hint: Any) -> str | None:
    """What a value of ``hint`` is in words, if the hint is a checked one (else None)."""
    scalars, optional, sequence = _unpack(hint)
    if not scalars:
        return None
    if sequence:
        words = f"a list of {' or '.join(_SCALAR_WORDS[s][1] for s in scalars)}"
    else:
        words = " or ".join(_SCALAR_WORDS[s][0] for s in scalars)
    return f"null or {words}" if optional else words


def _unpack(hint: Any) -> tuple[tuple[type, ...], bool, bool]:
    """(scalar types, None allowed, is a list/tuple of them) for a checked hint; no scalars for any other."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    optional = False
    if origin in (typing.Union, types.UnionType):
        optional = type(None) in args
        members = [a for a in args if a is not type(None)]
        if len(members) != 1:
            scalars = tuple(m for m in members if m in _SCALAR_WORDS)
            return (scalars, optional, False) if len(scalars) == len(members) else ((), False, False)
        hint = members[0]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _SCALAR_WORDS:
        return (hint,), optional, False
    if origin in (list, tuple, collections.abc.Sequence):
        items = {a for a in args if a is not Ellipsis}
        if len(items) == 1 and next(iter(items)) in _SCALAR_WORDS:
            return (next(iter(items)),), optional, True
    return (), False, False


def _accepts(hint: Any, value: Any) -> tuple[bool, str]:
    scalars, optional, sequence = _unpack(hint)
    what = _describe(hint) or ""
    if value is None:
        return optional, what
    if sequence:
        if not isinstance(value, (list, tuple)):
            return False, what
        return all(_is_scalar(item, scalars) for item in value), what
    return _is_scalar(value, scalars), what


def _is_scalar(value: Any, scalars: tuple[type, ...]) -> bool:
    """Whether ``value`` is one of ``scalars``; a bool is not an int here, an int is a float (as in typing)."""
    if isinstance(value, bool):
        return bool in scalars
    if int in scalars and isinstance(value, numbers.Integral):
        return True
    return float in scalars and isinstance(value, numbers.Real)


def deferred(config: Any, key: str = "dataset") -> Callable[[], Any]:
    """A function that builds ``config`` when called (``latency=litert`` loads the run's dataset only for int8)."""
    return functools.partial(_build_or_none, config, key)


def _build_or_none(config: Any, key: str) -> Any:
    return None if config is None else build(config, key)


#: ``_target_`` paths of releases before the layered layout (saved run configs and env specs name them), and
#: where each one lives now. A released path keeps working: the one build helper reads it through this map.
MOVED_TARGETS = {
    "nas_rl.accuracy.datasets.": "nas_rl.data.datasets.",
    "nas_rl.accuracy.tabular.": "nas_rl.benchmark.estimators.",
    "nas_rl.latency.tabular.": "nas_rl.benchmark.estimators.",
    "nas_rl.tabular.table.": "nas_rl.benchmark.table.",
    "nas_rl.tabular.evaluator.": "nas_rl.evaluation.table_evaluator.",
    "nas_rl.tabular.env.": "nas_rl.evaluation.reward.",
    "nas_rl.reward.": "nas_rl.evaluation.reward.",
    "nas_rl.data.datasets.DeferredDataset": "nas_rl.config.deferred",
    "nas_rl.accuracy.datasets.DeferredDataset": "nas_rl.config.deferred",
}


def current_target(target: str) -> str:
    """Where a (possibly pre-layers) ``_target_`` path lives in this release."""
    for old, new in sorted(MOVED_TARGETS.items(), key=lambda item: -len(item[0])):
        if target == old or (old.endswith(".") and target.startswith(old)):
            return new + target[len(old):] if old.endswith(".") else new
    return target


def remap_targets(node: Any) -> None:
    """Rewrite, in place, every ``_target_`` of ``node`` (a config, or a plain dict or list) that names a
    pre-layers path to :func:`current_target`'s."""
    if OmegaConf.is_config(node) and (node._is_none() or node._is_missing() or node._is_interpolation()):
        return
    if OmegaConf.is_dict(node) or isinstance(node, dict):
        items = list(node.items_ex(resolve=False) if OmegaConf.is_config(node) else node.items())
        for key, value in items:
            if key == "_target_" and isinstance(value, str) and current_target(value) != value:
                node[key] = current_target(value)
            elif not isinstance(value, str):
                remap_targets(value)
    elif OmegaConf.is_list(node) or isinstance(node, list):
        for value in node:
            remap_targets(value)
