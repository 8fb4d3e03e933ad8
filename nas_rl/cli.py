"""Entry points: thin ``@hydra.main`` functions that compose, validate and hand over to the library.

Each entry point checks its command line before it imports anything heavy: a wrong key or value costs the time
to compose the config, not the seconds torch and TensorFlow take to import (bench/startup.py). The library's
modules are imported inside the functions that use them, and the run's only after its config composes.
Each entry point names itself in its one-line errors (``nas-rl-profile: error: ...``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from nas_rl._util import first_line
from nas_rl.errors import ConfigError

CONFIG_MODULE = "nas_rl.conf"
EXIT_BAD_CONFIG = 2
#: Flags with which Hydra only prints (help, the composed config, info): the command line is not validated.
PRINT_ONLY = ("--help", "-h", "--cfg", "-c", "--info", "--hydra-help")


def group_options(group: str) -> list[str]:
    """The options of a config group, as file names under ``conf/<group>/``."""
    folder = resources.files(CONFIG_MODULE) / group
    if not folder.is_dir():
        return []
    return sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml"))


def _fail(message: str, prog: str = "nas-rl") -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_CONFIG)


def _command_line_overrides() -> list[str]:
    """This command's Hydra overrides (``key=value`` arguments), less Hydra's own ``hydra.*`` settings."""
    overrides = [arg for arg in sys.argv[1:] if not arg.startswith("-") and "=" in arg]
    return [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]


def validate_overrides(
    config_name: str,
    overrides: list[str],
    prog: str = "nas-rl",
    checks: tuple[Callable[[DictConfig], None], ...] | None = None,
) -> None:
    """Compose the config with each override (each value of a sweep) and check its cheap parts, so a wrong key or
    value stops the command with one line before any run or sweep job starts.

    Every combination is composed before any is checked, and each check runs on every combination before the
    next check: a wrong value in a sweep is found before the first combination's roles import their libraries.

    :param checks: what to check on each composed config, in order (settings, then building the roles whose
        constructors validate settings cheaply); None: the search's checks.
    """
    from hydra import initialize_config_module

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except HydraException as error:
        _fail(first_line(error), prog)
    # Every value of every sweep is checked once, with the other overrides at their first value.
    choices: list[list[str]] = []
    for override, text in zip(parsed, overrides):
        prefix = text.split("=", 1)[0]
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [None]
        choices.append([text if value is None else f"{prefix}={value}" for value in values])
    base = [options[0] for options in choices]
    combinations = [base] + [
        base[:index] + [option] + base[index + 1 :]
        for index, options in enumerate(choices)
        for option in options[1:]
    ]
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        configs = []
        for combination in combinations:
            try:
                configs.append(_compose(config_name, combination))
                _check_added_keys(config_name, configs[-1], combination)
            except ConfigError as error:
                _fail(str(error), prog)
        for check in (_check_search_settings, _check_values) if checks is None else checks:
            for cfg in configs:
                HydraConfig.instance().set_config(cfg)
                try:
                    check(cfg)
                except ConfigError as error:
                    _fail(str(error), prog)
                except OmegaConfBaseException as error:  # e.g. a mandatory ??? value left unset
                    from nas_rl.config import unreadable_value

                    _fail(str(unreadable_value(error)), prog)


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    """The config composed with ``overrides``; a composition error as a ConfigError naming its override."""
    from hydra import compose

    try:
        return compose(config_name, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as error:
        culprit = _culprit(error, config_name, overrides)
        others = [o for o in overrides if o != culprit]
        raise ConfigError(_explain(error, culprit, config_name, others)) from None


def _composed_or_none(config_name: str, overrides: list[str]) -> DictConfig | None:
    from hydra import compose

    try:
        return compose(config_name, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException):
        return None


def _culprit(error: Exception, config_name: str, overrides: list[str]) -> str:
    """The override a composition error is about: the one whose key or value its message quotes, else the last
    of the shortest list of the first overrides that fails to compose."""
    message = str(error)
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if f"'{key}'" in message or f"'{key.split('@')[0]}/{value}'" in message:
            return override
    if len(overrides) == 1:
        return overrides[0]
    for count in range(1, len(overrides)):
        if _composed_or_none(config_name, overrides[:count]) is None:
            return overrides[count - 1]
    return overrides[-1] if overrides else ""


def _explain(error: Exception, override: str, config_name: str, others: list[str]) -> str:
    """One line for a composition error: the key, the value and what is accepted."""
    key, equals, value = override.lstrip("+~").partition("=")
    message = str(error)
    if isinstance(error, MissingConfigException) and error.options and value:
        group = key.split("@")[0]
        return f"{key}={value} is not accepted: {group} is one of {', '.join(error.options)}"
    if isinstance(error.__cause__, (ConfigAttributeError, ConfigKeyError)) and equals and "Could not override" in message:
        return _not_a_key(key, value, _composed_or_none(config_name, others))
    if override.startswith("+") and not override.startswith("++") and "An item is already at" in message:
        return f"{override} is not accepted: {key} is a key of the config already; use {key}={value} (+ adds a new key)"
    if override.startswith("+") and "Multiple values for" in message:
        return f"{override} is not accepted: {key} is a config group of this config already; use {key}={value}"
    line = first_line(error)
    return f"override {override!r}: {line}" if override else line


def _not_a_key(key: str, value: str, base: DictConfig | None) -> str:
    """Why ``key=value`` names no key of ``base`` (the config without it), and what to use instead."""
    head = f"{key}={value} is not accepted"
    if base is None:
        return f"{head}: {key} is not a key of the config (to add a new key: +{key}={value})"
    parts = key.split(".")
    node: Any = base
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth])
        if not isinstance(node, DictConfig):
            return f"{head}: {where} is a value ({_shown(node)}), not a section with keys; use {where}=<value>"
        if part not in node:
            return f"{head}: {_missing_key_hint(base, parts[: depth + 1], f'+{key}={value}')}"
        try:
            node = node[part]
        except OmegaConfBaseException:
            node = None
    return f"{head}: {key} is not a key of the config (to add a new key: +{key}={value})"


def _shown(value: Any) -> str:
    return repr(OmegaConf.to_container(value, resolve=False) if OmegaConf.is_config(value) else value)


def _missing_key_hint(base: DictConfig, parts: list[str], plus: str) -> str:
    """``parts[:-1]`` (a section of ``base``) has no key ``parts[-1]``: its keys, and whether ``+`` can add one
    (only where a ``_target_`` reads the section: a key of a plain section or a new top-level key is read by
    nothing, and ``+`` is refused there)."""
    from nas_rl.config import target_parameters

    name, where = parts[-1], ".".join(parts[:-1])
    section = OmegaConf.select(base, where) if where else base
    keys = ", ".join(_keys(section)) or "none"
    what = f"{where} has no key {name!r}" if where else f"the config has no top-level key {name!r}"
    target = section.get("_target_") if isinstance(section, DictConfig) else None
    if target is not None:
        parameters = target_parameters(target)
        if parameters is not None and name not in parameters:
            return f"{what} and {target} takes no setting {name!r}; its settings: {', '.join(parameters) or 'none'}"
        return f"{what} (its keys: {keys}); {target} takes it: to add it, {plus}"
    if _read_by_a_target(base, parts):
        return f"{what} (its keys: {keys}); to add a new key, {plus}"
    there = "a new key there" if where else "a new top-level key"
    return f"{what}; use one of its keys: {keys} ({there}, {plus}, is refused: nothing reads it)"


def _read_by_a_target(cfg: DictConfig, parts: list[str]) -> bool:
    """Whether a section above the key ``parts`` (its parent or further up) has a ``_target_``: that target is given
    the key (and :func:`nas_rl.config.build` checks that it takes it)."""
    node: Any = cfg
    for part in parts[:-1]:
        try:
            node = node[part] if isinstance(node, DictConfig) and part in node else None
        except OmegaConfBaseException:
            return True  # an unreadable section is left to the checks that read it
        if not isinstance(node, DictConfig):
            return False
        if "_target_" in node:
            return True
    return False


def _check_added_keys(config_name: str, cfg: DictConfig, overrides: list[str]) -> None:
    """Refuse ``+key=value`` (or ``++key=value`` for a key the config lacks) adding a key that nothing reads: a new
    top-level key, or a new key of a section no ``_target_`` reads (``search``, ``env``, ...). Keys in a target's
    section are left to :func:`nas_rl.config.build`, group options (``+group=option``) to Hydra, and Hydra's own
    ``hydra.*`` keys to Hydra."""
    for override in overrides:
        if not override.startswith("+"):
            continue
        key, _, value = override.lstrip("+").partition("=")
        if key.startswith("hydra") or "@" in key or "/" in key or group_options(key):
            continue
        parts = key.split(".")
        if _read_by_a_target(cfg, parts):
            continue
        if override.startswith("++"):
            before = _composed_or_none(config_name, [o for o in overrides if o != override])
            if before is not None and OmegaConf.select(before, key, default=_ABSENT) is not _ABSENT:
                continue  # ++ set an existing key
        where = ".".join(parts[:-1])
        section = OmegaConf.select(cfg, where) if where else cfg
        keys = ", ".join(k for k in _keys(section) if k != parts[-1]) or "none"
        if where:
            what = f"a new key {parts[-1]!r} of {where}; use one of its keys"
        else:
            what = f"a new top-level key {key!r}; use a key of the config"
        raise ConfigError(f"{override} is not accepted: nothing reads {what}: {keys}")


_ABSENT = object()


def _keys(section: Any) -> list[str]:
    """The keys a user sets in ``section`` (none for a value): without ``_target_``-style keys and ``hydra``."""
    if not isinstance(section, DictConfig):
        return []
    return [str(k) for k in section.keys() if not (str(k).startswith("_") and str(k).endswith("_")) and k != "hydra"]


def _check_search_settings(cfg: DictConfig) -> None:
    from nas_rl.runs.search import check_search_settings

    check_search_settings(cfg)


def _check_values(cfg: DictConfig) -> None:
    """Build the roles whose constructors validate settings without costly work (the cluster's connects only on
    first use; the controller, whose module imports Stable-Baselines3 and torch, last)."""
    from nas_rl.config import build

    for key in ("search_space", "reward", "latency", "cluster"):
        if cfg.get(key) is not None:
            build(cfg[key], key)
    _check_accuracy(cfg)
    build(cfg["controller"], "controller")


def _check_accuracy(cfg: DictConfig) -> None:
    """Build the accuracy estimator without its dataset (loading data is not cheap; its loader checks paths)."""
    from nas_rl.config import build

    accuracy = OmegaConf.to_container(cfg.accuracy, resolve=True)
    if isinstance(accuracy, dict) and "dataset" in accuracy:
        accuracy["dataset"] = None
        try:
            build(OmegaConf.create(accuracy), "accuracy")
        except (AttributeError, TypeError) as error:
            # An estimator that reads its data while constructing failed on the None given for it: its
            # settings were checked before that; the run checks the rest. Anything else is a bug.
            if "NoneType" not in str(error):
                raise


@hydra.main(config_path="pkg://nas_rl.conf", config_name="config", version_base="1.3")
def _search(cfg: DictConfig) -> None:
    from hydra.errors import CompactHydraException
    from hydra.types import RunMode

    from nas_rl.runs.search import print_summary, run_search

    try:
        hydra_cfg = HydraConfig.get()
        overrides = [o for o in hydra_cfg.overrides.task if not o.lstrip("+~").startswith("resume=")]
        result = run_search(cfg, Path(hydra_cfg.runtime.output_dir), overrides)
    except ConfigError as error:
        _fail(str(error))
    print_summary(result)
    if result.export_error:
        # Everything else is written; the run still fails, since its deliverable (the checked export) is wrong.
        message = (
            f"nas-rl: error: the export of the best architecture failed: {result.export_error} (all other "
            f"outputs are in {result.run_dir}; best.json has the details)"
        )
        if hydra_cfg.mode == RunMode.MULTIRUN:  # let the sweep's other jobs run; Hydra exits 1 after them
            raise CompactHydraException(message)
        print(message, file=sys.stderr)
        sys.exit(1)


def search_main() -> None:
    """``nas-rl``: run a search (``-m`` for a sweep) with Hydra overrides."""
    from nas_rl.runs.run_folder import resumed_run_overrides

    # resume=RUN: the command's overrides are composed on those RUN was started with (run_search then refuses the
    # ones that would change what RUN evaluated), so a key of RUN's own config (its controller's) is one here too.
    sys.argv[1:1] = resumed_run_overrides(_command_line_overrides())
    if not any(arg in PRINT_ONLY for arg in sys.argv[1:]):
        validate_overrides("config", _command_line_overrides())
        _check_run_folder()
    _search()


def _check_run_folder() -> None:
    """Hydra makes the run (or sweep) folder before the search starts, and fails there with a traceback: refuse a
    folder that cannot be written first, in one line."""
    from nas_rl.runs.run_folder import check_writable_folder

    key = "hydra.sweep.dir=" if any(arg in ("-m", "--multirun") for arg in sys.argv[1:]) else "hydra.run.dir="
    given = [arg.split("=", 1)[1] for arg in sys.argv[1:] if arg.startswith(key)]
    try:
        check_writable_folder(Path(given[-1] if given else "outputs"))
    except ConfigError as error:
        _fail(str(error))


def report_main(argv: list[str] | None = None) -> None:
    """``nas-rl-report RUN_DIR [RUN_DIR ...]``: one run's summary and plots, or a comparison of several runs
    (a sweep folder stands for its job folders)."""
    import argparse

    from nas_rl.runs.run_report import find_runs, report

    parser = argparse.ArgumentParser(
        prog="nas-rl-report",
        description="One run: print its summary and (re)write pareto.csv, pareto.png and progress.png. Several "
        "runs, or a sweep folder (outputs/multirun/DATE/TIME: its finished jobs): print a comparison table and "
        "write comparison.csv and comparison.png. Files among several paths (a glob's multirun.yaml) are skipped.",
    )
    parser.add_argument(
        "run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="a folder written by nas-rl, or a sweep folder"
    )
    parser.add_argument(
        "--out", type=Path, default=None, metavar="DIR",
        help="where to write (default: the run folder for one run, the sweep folder for one sweep, else the "
        "current folder)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        run_dirs, notes = find_runs(args.run_dirs)
        for note in notes:
            print(f"nas-rl-report: note: {note}", file=sys.stderr)
        out = args.out
        if out is None and len(args.run_dirs) == 1 and len(run_dirs) > 1:
            out = args.run_dirs[0]  # one sweep folder: its comparison goes next to its jobs
        report(run_dirs, out)
    except ConfigError as error:
        print(f"nas-rl-report: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_CONFIG)


@hydra.main(config_path="pkg://nas_rl.conf", config_name="accuracy_report", version_base="1.3")
def _accuracy_report(cfg: DictConfig) -> None:
    from nas_rl.tools.accuracy_report import run_report

    try:
        run_report(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as error:
        _fail(str(error), "nas-rl-accuracy-report")


def accuracy_report_main() -> None:
    """``nas-rl-accuracy-report``: correlations of every zero-cost proxy with proxy-trained accuracy on
    ``report.archs`` random architectures; table, CSV and scatter plot in the run dir."""

    def check(cfg: DictConfig) -> None:
        from nas_rl.config import build

        build(cfg.search_space, "search_space")
        _check_accuracy(cfg)

    _check_tool_overrides("accuracy_report", "nas-rl-accuracy-report", check)
    _accuracy_report()


def _check_tool_overrides(config_name: str, prog: str, check: Callable[[DictConfig], None]) -> None:
    """Validate a tool's command line as :func:`validate_overrides` does the search's, with the tool's check."""
    if not any(arg in PRINT_ONLY for arg in sys.argv[1:]):
        validate_overrides(config_name, _command_line_overrides(), prog, (check,))


def _building(*keys: str) -> Callable[[DictConfig], None]:
    """A check that builds the roles at ``keys`` (whose constructors validate settings cheaply)."""

    def check(cfg: DictConfig) -> None:
        from nas_rl.config import build

        for key in keys:
            build(cfg[key], key)

    return check


@hydra.main(config_path="pkg://nas_rl.conf", config_name="profile", version_base="1.3")
def _profile(cfg: DictConfig) -> None:
    from nas_rl.tools.profile import run_profile

    try:
        run_profile(cfg)
    except ConfigError as error:
        _fail(str(error), "nas-rl-profile")


def profile_main() -> None:
    """``nas-rl-profile device=<name> search_space=<name>``: write (or resume) a device's latency table."""
    _check_tool_overrides("profile", "nas-rl-profile", _building("search_space", "device"))
    _profile()


@hydra.main(config_path="pkg://nas_rl.conf", config_name="latency_report", version_base="1.3")
def _latency_report(cfg: DictConfig) -> None:
    from nas_rl.tools.latency_report import run_report

    try:
        run_report(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as error:
        _fail(str(error), "nas-rl-latency-report")


def latency_report_main() -> None:
    """``nas-rl-latency-report``: every latency model against LiteRT measurements of held-out architectures."""
    _check_tool_overrides("latency_report", "nas-rl-latency-report", _building("search_space", "device"))
    _latency_report()


@hydra.main(config_path="pkg://nas_rl.conf", config_name="train_supernet", version_base="1.3")
def _train_supernet(cfg: DictConfig) -> None:
    from nas_rl.tools.train_supernet import run

    try:
        card = run(cfg, Path(cfg.out))
    except ConfigError as error:
        _fail(str(error), "nas-rl-supernet")
    largest, smallest = card["val_accuracy"]["largest"], card["val_accuracy"]["smallest"]
    print(f"nas-rl-supernet: {card['epochs_done']} epoch(s) in {cfg.out}; validation accuracy: largest subnet "
          f"{largest:.4f}, smallest {smallest:.4f}")


def supernet_main() -> None:
    """``nas-rl-supernet [search_space.*=...] [dataset=...]``: train (or resume) the weight-sharing supernet."""
    _check_tool_overrides("train_supernet", "nas-rl-supernet", _building("search_space", "supernet"))
    _train_supernet()


if __name__ == "__main__":
    search_main()
