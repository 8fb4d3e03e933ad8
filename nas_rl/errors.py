"""Exceptions shared across roles. Only ConfigError and DataError become one-line user errors at the entry points."""


class EvaluationFailed(Exception):
    """An architecture could not be evaluated (diverging training, failed conversion, ...).

    The env records it with status ``failed``, the message as its reason and reward 0, and the search goes on.
    """


class ConfigError(ValueError):
    """A setting has a value that is not accepted; the message names the key, the value and what is accepted."""


class DataError(ValueError):
    """A file the user pointed at (dataset, table, checkpoint) is missing, unreadable or not what it must be."""
