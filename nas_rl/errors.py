"""Exceptions shared across roles, and the one form of a refused setting.

Only ConfigError and DataError become one-line user errors at the entry points; any other exception is a bug
and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


class EvaluationFailed(Exception):
    """An architecture could not be evaluated (diverging training, failed conversion, ...).

    The env records it with status ``failed``, the message as its reason and reward 0, and the search goes on.
    """


class ConfigError(ValueError):
    """A setting has a value that is not accepted; the message names the key, the value and what is accepted.

    A role's constructor names its own parameter (``epochs=0 is not accepted: use a number > 0``);
    :func:`nas_rl.config.build` puts the full config path in front (``accuracy.calibration.epochs=0 ...``).
    """


class DataError(ConfigError):
    """A file the user pointed at (dataset, table, checkpoint) is missing, unreadable or not what it must be."""


def not_accepted(setting: str, value: Any, accepted: str) -> ConfigError:
    """The one message form of a refused setting: ``setting=value is not accepted: use accepted``."""
    shown = list(value) if isinstance(value, tuple) else value
    return ConfigError(f"{setting}={shown!r} is not accepted: use {accepted}")


def require(ok: bool, setting: str, value: Any, accepted: str) -> None:
    """Raise :func:`not_accepted` unless ``ok``."""
    if not ok:
        raise not_accepted(setting, value, accepted)
