"""Entry points: thin ``@hydra.main`` functions that compose, validate and hand over to the library."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nas_rl.errors import ConfigError

CONFIG_MODULE = "nas_rl.conf"
EXIT_BAD_CONFIG = 2


def group_options(group: str) -> list[str]:
    """The options of a config group, as file names under ``conf/<group>/``."""
    folder = resources.files(CONFIG_MODULE) / group
    if not folder.is_dir():
        return []
    return sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml"))


def _fail(message: str) -> None:
    print(f"nas-rl: error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_CONFIG)


def _explain(error: Exception, override: str) -> str:
    """One line for a composition error: the key, the value and what is accepted."""
    if isinstance(error, MissingConfigException) and "=" in override:
        key, value = override.lstrip("+~").split("=", 1)
        group = key.split("@")[0]
        options = group_options(group)
        if options:
            return f"{key}={value} is not accepted: {group} is one of {', '.join(options)}"
    message = str(error)
    if "not in struct" in message and "=" in override:
        key, value = override.split("=", 1)
        return f"{key}={value} is not accepted: {key} is not a key of the config (to add a new key: +{key}={value})"
    first_line = message.strip().splitlines()[0]
    return f"override {override!r}: {first_line}"


def validate_overrides(config_name: str, overrides: list[str]) -> None:
    """Compose the config with each override (each value of a sweep) and build its cheap parts, so a wrong
    key or value stops the command with one line before any run or sweep job starts."""
    from hydra import compose, initialize_config_module

    from nas_rl.search import check_search_settings

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except HydraException as error:
        _fail(str(error).strip().splitlines()[0])
    singles: list[str] = []
    for override, text in zip(parsed, overrides):
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [None]
        prefix = text.split("=", 1)[0]
        singles.extend(text if value is None else f"{prefix}={value}" for value in values)
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        for override in singles or [None]:
            try:
                cfg = compose(config_name, overrides=[override] if override else [], return_hydra_config=True)
            except (HydraException, OmegaConfBaseException) as error:
                _fail(_explain(error, override or ""))
            HydraConfig.instance().set_config(cfg)
            try:
                check_search_settings(cfg)
                _check_values(cfg)
            except ConfigError as error:
                _fail(str(error))


def _check_values(cfg: DictConfig) -> None:
    """Build the roles whose constructors validate settings without costly work."""
    from nas_rl.config import build

    for key in ("search_space", "reward", "latency", "controller"):
        build(cfg[key], key)
    accuracy = OmegaConf.to_container(cfg.accuracy, resolve=True)
    if isinstance(accuracy, dict) and "dataset" in accuracy:
        accuracy["dataset"] = None  # loading data is not cheap; its loader checks paths itself
        try:
            build(OmegaConf.create(accuracy), "accuracy")
        except (AttributeError, TypeError):
            pass  # an estimator that needs its data to construct is checked in the run


@hydra.main(config_path="pkg://nas_rl.conf", config_name="config", version_base="1.3")
def _search(cfg: DictConfig) -> None:
    from nas_rl.search import print_summary, run_search

    try:
        result = run_search(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as error:
        _fail(str(error))
    print_summary(result)


def search_main() -> None:
    """``nas-rl``: run a search (``-m`` for a sweep) with Hydra overrides."""
    overrides = [arg for arg in sys.argv[1:] if not arg.startswith("-") and "=" in arg]
    if not any(arg in ("--help", "-h", "--cfg", "-c", "--info", "--hydra-help") for arg in sys.argv[1:]):
        validate_overrides("config", [o for o in overrides if not o.startswith("hydra.")])
    _search()


if __name__ == "__main__":
    search_main()
