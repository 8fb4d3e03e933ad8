"""Building roles from config: the one place that turns a ``_target_`` config into an object, and validates it."""

from __future__ import annotations

import collections.abc
import functools
import inspect
import numbers
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue, OmegaConfBaseException

from nas_rl._util import first_line
from nas_rl.errors import ConfigError, not_accepted, require

#: What a setting whose type hint is one of these scalars accepts, in the words of an error message: one, many.
_SCALAR_WORDS = {int: ("an integer", "integers"), float: ("a number", "numbers"), bool: ("true or false", "booleans")}
_UNREADABLE = object()


def build(node: DictConfig | dict[str, Any], key: str, **kwargs: Any) -> Any:
    """Instantiate the ``_target_`` config at ``key``: the one validator of settings.

    Each ``_target_`` node (nested ones too) is checked once against its target's signature, which is the
    schema: a key the target does not take, or a value whose type is not the ``int`` / ``float`` / ``bool``
    (optional, or a list of them) it declares, is refused naming its full path, before anything is built.
    Nested targets are built first, each under its own path, so a ConfigError a constructor raises about
    its own parameter (``epochs=0 ...``) surfaces as ``accuracy.calibration.epochs=0 ...``. Any other
    exception a constructor raises is a bug and propagates with its traceback.
    Settings arrive as plain dicts and lists (libraries such as SB3 check ``isinstance(x, dict)``).
    A value that cannot be read (``???`` left unset, a broken interpolation) is refused naming the key where it is
    missing (see :func:`unreadable_value`).
    """
    remap_targets(node._get_root() if isinstance(node, DictConfig) else node)
    try:
        check_argument_types(node, key, kwargs)
        return _build(node, key, kwargs)
    except (MissingMandatoryValue, InterpolationResolutionError) as error:
        raise unreadable_value(error) from None


#: The key named by OmegaConf's message about a ``???`` value: where the value is missing (an interpolation's
#: error reports it in its message and the key that reads it as its ``full_key``).
_MISSING_KEY = re.compile(r"Missing mandatory value: ?([\w.\[\]-]+)")


def unreadable_value(error: OmegaConfBaseException) -> ConfigError:
    """One line for a config value that cannot be read: a ``???`` left unset names the key where it is unset
    (``dataset.num_classes``), not the key that interpolates it (``search_space.num_classes``), and says how to set
    it; any other error names the key and OmegaConf's first line."""
    reader = str(getattr(error, "full_key", "") or "")
    match = _MISSING_KEY.search(str(error))
    if match or isinstance(error, MissingMandatoryValue):
        missing = match.group(1) if match else reader
        via = f"; {reader} reads it" if reader and reader != missing else ""
        return ConfigError(f"{missing} is not set (its value is ???): pass {missing}=<value>{via}")
    line = first_line(error)
    return ConfigError(f"{reader}: {line}" if reader else line)


def _build(node: Any, key: str, kwargs: Mapping[str, Any]) -> Any:
    check_known_settings(node, key, kwargs)
    recursive = _get(node, "_recursive_") is not False
    names = [name for name in _settings(node) if name not in kwargs]
    children = {name: _built_value(node[name], _path(node, name, key)) for name in names
                if recursive and _holds_target(node[name])}  # fmt: skip
    settings = {name: _plain(node[name]) for name in names if name not in children}
    args = _plain(node["_args_"]) if "_args_" in node else []
    target = _get(node, "_target_")
    try:
        function = get_object(target)
    except Exception as error:
        raise not_accepted(f"{key}._target_", target, f"an importable class or function ({first_line(error)})") from None
    if _get(node, "_partial_") is True:
        return functools.partial(function, *args, **settings, **children, **kwargs)
    try:
        return function(*args, **settings, **children, **kwargs)
    except ConfigError as error:
        raise type(error)(placed(str(error), key)) from None


def _built_value(value: Any, key: str) -> Any:
    """``value`` (a setting that holds a ``_target_`` somewhere) with every target in it built under its path."""
    if OmegaConf.is_dict(value) or isinstance(value, Mapping):
        if "_target_" in value:
            return _build(value, key, {})
        return {name: _built_value(value[name], f"{key}.{name}") if _holds_target(value[name]) else _plain(value[name])
                for name in value}  # fmt: skip
    return [_built_value(item, f"{key}[{index}]") if _holds_target(item) else _plain(item)
            for index, item in enumerate(value)]  # fmt: skip


def _path(node: Any, name: str, key: str) -> str:
    """The config path a user sets ``node[name]`` at: ``key.name``, or for ``${dataset}`` the path ``dataset``."""
    if OmegaConf.is_dict(node):
        raw = OmegaConf.to_container(node, resolve=False).get(name)  # type: ignore[union-attr]
        match = re.fullmatch(r"\$\{([A-Za-z_][\w.]*)\}", raw) if isinstance(raw, str) else None
        if match:
            return match.group(1)
    return f"{key}.{name}"


def _holds_target(value: Any) -> bool:
    if OmegaConf.is_dict(value) or isinstance(value, Mapping):
        if OmegaConf.is_config(value) and (value._is_none() or value._is_interpolation()):
            return False
        return "_target_" in value or any(_holds_target(value[name]) for name in value)
    if OmegaConf.is_list(value) or isinstance(value, (list, tuple)):
        if OmegaConf.is_config(value) and (value._is_none() or value._is_interpolation()):
            return False
        return any(_holds_target(item) for item in value)
    return False


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _settings(node: Any) -> list[str]:
    """The names of a node's settings (its keys, without Hydra's ``_target_``-style ones)."""
    return [str(name) for name in node if not (str(name).startswith("_") and str(name).endswith("_"))]


#: A constructor's message about its own parameter: ``name=...`` or ``name[index]=...`` (no dotted path yet).
_RELATIVE = re.compile(r"^[A-Za-z_]\w*(\[\d+\])*[=:]")


def placed(message: str, key: str) -> str:
    """``message`` with ``key.`` in front when it names a parameter of the node at ``key`` without its path."""
    return f"{key}.{message}" if _RELATIVE.match(message) else message


def check_known_settings(node: Any, key: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse a key of a ``_target_`` node that its target does not take (unless it takes ``**kwargs``)."""
    parameters = target_parameters(_get(node, "_target_"))
    if parameters is None:
        return
    unknown = [name for name in [*_settings(node), *kwargs] if name not in parameters]
    if unknown:
        raise not_accepted(f"{key}.{unknown[0]}", _get(node, unknown[0]) if unknown[0] in node else kwargs[unknown[0]],
                           f"a setting of {_get(node, '_target_')}: {', '.join(parameters) or 'none'}")


def target_parameters(target: Any) -> list[str] | None:
    """The keyword parameters of ``target``; None when it takes ``**kwargs`` or cannot be inspected."""
    try:
        function = get_object(target) if isinstance(target, str) else target
        signature = inspect.signature(function)
    except Exception:
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [name for name, p in signature.parameters.items() if p.kind in kinds and name != "self"]


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
        require(accepted, f"{key}.{name}", value, what)


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
