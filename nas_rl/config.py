"""Building roles from config: the one place that calls ``hydra.utils.instantiate``."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nas_rl.errors import ConfigError


def build(node: DictConfig | dict[str, Any], key: str, **kwargs: Any) -> Any:
    """Instantiate the ``_target_`` config at ``key``; a ConfigError raised inside surfaces as itself.

    ``_convert_="all"`` hands plain dicts and lists to libraries that check ``isinstance(x, dict)`` (SB3).
    """
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        if isinstance(cause, TypeError) and "argument" in str(cause):
            raise ConfigError(f"{key}: {cause}") from None
        raise


def to_container(node: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
