"""Exceptions shared across roles."""


class EvaluationFailed(Exception):
    """An architecture could not be evaluated (diverging training, failed conversion, ...).

    The env records it with status ``failed``, the message as its reason and reward 0, and the search goes on.
    """


class ConfigError(ValueError):
    """A setting has a value that is not accepted; the message names the key, the value and what is accepted."""
