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
from omegaconf.errors import ConfigAttributeError, OmegaConfBaseException

from nas_rl._util import first_line
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
    key, _, value = override.lstrip("+~").partition("=")
    if isinstance(error, MissingConfigException) and error.options and value:
        group = key.split("@")[0]
        return f"{key}={value} is not accepted: {group} is one of {', '.join(error.options)}"
    if isinstance(error.__cause__, ConfigAttributeError) and value:
        return f"{key}={value} is not accepted: {key} is not a key of the config (to add a new key: +{key}={value})"
    line = first_line(error)
    return f"override {override!r}: {line}" if override else line


def validate_overrides(config_name: str, overrides: list[str]) -> None:
    """Compose the config with each override (each value of a sweep) and build its cheap parts, so a wrong
    key or value stops the command with one line before any run or sweep job starts."""
    from hydra import compose, initialize_config_module

    from nas_rl.runs.search import check_search_settings

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except HydraException as error:
        _fail(first_line(error))
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
        for combination in combinations:
            try:
                cfg = compose(config_name, overrides=combination, return_hydra_config=True)
            except (HydraException, OmegaConfBaseException) as error:
                _fail(_explain(error, _culprit(error, combination)))
            HydraConfig.instance().set_config(cfg)
            try:
                check_search_settings(cfg)
                _check_values(cfg)
            except ConfigError as error:
                _fail(str(error))
            except OmegaConfBaseException as error:  # e.g. a mandatory ??? value left unset
                _fail(first_line(error))


def _culprit(error: Exception, overrides: list[str]) -> str:
    """The override a composition error is about (the one whose key or value its message quotes)."""
    message = str(error)
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if f"'{key}'" in message or f"'{key.split('.')[0]}/{value}'" in message:
            return override
    return overrides[0] if len(overrides) == 1 else ""


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
    overrides = [arg for arg in sys.argv[1:] if not arg.startswith("-") and "=" in arg]
    if not any(arg in ("--help", "-h", "--cfg", "-c", "--info", "--hydra-help") for arg in sys.argv[1:]):
        validate_overrides("config", [o for o in overrides if not o.startswith("hydra.")])
    _search()


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
def accuracy_report_main(cfg: DictConfig) -> None:
    """``nas-rl-accuracy-report``: correlations of every zero-cost proxy with proxy-trained accuracy on
    ``report.archs`` random architectures; table, CSV and scatter plot in the run dir."""
    from nas_rl.tools.accuracy_report import run_report

    try:
        run_report(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as error:
        _fail(str(error))



def _check_tool_overrides(config_name: str, keys: tuple[str, ...]) -> None:
    """Compose ``config_name`` with each command-line override and build the roles at ``keys``: a wrong key or
    value stops the command with one line before any measurement starts."""
    from hydra import compose, initialize_config_module

    from nas_rl.config import build

    if any(arg in ("--help", "-h", "--cfg", "-c", "--info", "--hydra-help") for arg in sys.argv[1:]):
        return
    overrides = [a for a in sys.argv[1:] if not a.startswith("-") and "=" in a and not a.startswith("hydra.")]
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        for override in overrides + [None]:  # each alone names the culprit; then all together (settings that
            try:  # must agree, such as a skeleton's lists, are checked only together)
                cfg = compose(config_name, overrides=[override] if override else overrides, return_hydra_config=True)
            except (HydraException, OmegaConfBaseException) as error:
                _fail(_explain(error, override or " ".join(overrides)))
        HydraConfig.instance().set_config(cfg)
        try:
            for key in keys:
                build(cfg[key], key)
        except ConfigError as error:
            _fail(str(error))


@hydra.main(config_path="pkg://nas_rl.conf", config_name="profile", version_base="1.3")
def _profile(cfg: DictConfig) -> None:
    from nas_rl.tools.profile import run_profile

    try:
        run_profile(cfg)
    except ConfigError as error:
        _fail(str(error))


def profile_main() -> None:
    """``nas-rl-profile device=<name> search_space=<name>``: write (or resume) a device's latency table."""
    _check_tool_overrides("profile", ("search_space", "device"))
    _profile()


@hydra.main(config_path="pkg://nas_rl.conf", config_name="latency_report", version_base="1.3")
def _latency_report(cfg: DictConfig) -> None:
    from nas_rl.tools.latency_report import run_report

    try:
        run_report(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as error:
        _fail(str(error))


def latency_report_main() -> None:
    """``nas-rl-latency-report``: every latency model against LiteRT measurements of held-out architectures."""
    _check_tool_overrides("latency_report", ("search_space", "device"))
    _latency_report()


@hydra.main(config_path="pkg://nas_rl.conf", config_name="train_supernet", version_base="1.3")
def _train_supernet(cfg: DictConfig) -> None:
    from nas_rl.tools.train_supernet import run

    try:
        card = run(cfg, Path(cfg.out))
    except ConfigError as error:
        _fail(str(error))
    largest, smallest = card["val_accuracy"]["largest"], card["val_accuracy"]["smallest"]
    print(f"nas-rl-supernet: {card['epochs_done']} epoch(s) in {cfg.out}; validation accuracy: largest subnet "
          f"{largest:.4f}, smallest {smallest:.4f}")


def supernet_main() -> None:
    """``nas-rl-supernet [search_space.*=...] [dataset=...]``: train (or resume) the weight-sharing supernet."""
    _check_tool_overrides("train_supernet", ("search_space", "supernet"))
    _train_supernet()


if __name__ == "__main__":
    search_main()
