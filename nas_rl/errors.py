"""Exceptions shared across roles, and the check behind their "accepted: an integer" messages."""

import numbers
from typing import Any


class EvaluationFailed(Exception):
    """An architecture could not be evaluated (diverging training, failed conversion, ...).

    The env records it with status ``failed``, the message as its reason and reward 0, and the search goes on.
    """


class ConfigError(ValueError):
    """A setting has a value that is not accepted; the message names the key, the value and what is accepted."""


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer setting (numpy integers included; ``True``/``False`` are not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
