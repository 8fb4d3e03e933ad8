"""Every option of every config group composes and builds, as lightning-hydra-template's test_configs does.

The options are read from ``conf/``: a new controller, estimator, latency model or space (one module plus one
YAML) is covered here with no edit, unless it needs a file to build (a dataset folder, a table, a checkpoint):
``inputs`` below gives those.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from nas_rl.cli import CONFIG_MODULE, group_options
from nas_rl.config import build
from nas_rl.controllers.base import Controller
from nas_rl.envs.factory import build_env
from nas_rl.envs.nas_env import NasEnv
from nas_rl.evaluation.store import EvaluationStore
from nas_rl.tools.train_supernet import run as train_supernet
from tests.helpers.data import write_cifar10, write_image_folder
from tests.helpers.luts import small_space, write_synthetic_table
from tests.helpers.supernets import DATA_OVERRIDES, SPACE_OVERRIDES, train_config

TOOL_CONFIGS = ("profile", "latency_report", "accuracy_report", "train_supernet")
MNASNET = "nas_rl.spaces.mnasnet.MnasNetSpace"


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} settings resolve as in a run
    return cfg


def choices(name: str) -> dict[str, Any]:
    """The config groups a top-level config composes (``group`` or ``group@package``) and their defaults."""
    runtime = compose_config(name, []).hydra.runtime.choices
    return {key: value for key, value in runtime.items() if not key.startswith("hydra/")}


def search_options() -> list[tuple[str, str]]:
    return [(group, option) for group in choices("config") for option in group_options(group)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], list[str]]:
    """The files some options need, made once: a CIFAR-10 folder, an .npz, an image folder, a latency table of
    the tiny space, a tiny trained supernet."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    npz = root / "data.npz"
    np.savez(npz, x=rng.integers(0, 256, (50, 1, 8, 8), dtype=np.uint8), y=np.arange(50) % 10)
    lut = write_synthetic_table(root / "lut.jsonl", small_space(), networks=12).path
    supernet = root / "supernet"
    train_supernet(train_config("supernet.epochs=1"), supernet)
    return {
        ("dataset", "cifar10"): [f"dataset.root={write_cifar10(root / 'cifar')}"],
        ("dataset", "npz"): [f"dataset.path={npz}", "dataset.num_classes=10", "dataset.in_channels=1"],
        ("dataset", "image_folder"): [f"dataset.root={write_image_folder(root / 'images', {'a': 5, 'b': 5})}",
                                      "dataset.num_classes=2"],  # fmt: skip
        ("latency", "lut"): [f"latency.path={lut}"],
        ("latency", "predictor"): [f"latency.path={lut}", "latency.min_samples=5"],
        ("latency", "flops"): [f"latency.path={lut}"],
        ("accuracy", "supernet"): [f"accuracy.checkpoint={supernet}", *DATA_OVERRIDES],
        ("accuracy", "tabular"): ["search_space=tabular"],  # a table answers only for its own space
        ("latency", "tabular"): ["search_space=tabular"],
        ("latency_report", ""): [f"table={lut}", "search_space.num_classes=10", "search_space.in_channels=1"],
    }


@pytest.mark.parametrize(("group", "option"), search_options())
def test_every_option_of_the_search_config_composes_and_builds(group: str, option: str, inputs: dict) -> None:
    overrides = [f"{group}={option}", *inputs.get((group, option), [])]
    if compose_config("config", overrides).search_space._target_ == MNASNET:
        overrides = [*SPACE_OVERRIDES, *overrides]  # the tiny MnasNet space keeps builds fast
    cfg = compose_config("config", overrides)
    assert cfg.hydra.runtime.choices[group] == option
    env = build_env(cfg, EvaluationStore(":memory:"), "configs")
    assert isinstance(env, NasEnv)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert isinstance(build(cfg.controller, "controller"), Controller)


@pytest.mark.parametrize("name", TOOL_CONFIGS)
def test_every_tool_config_composes_and_builds_its_roles(name: str, inputs: dict) -> None:
    cfg = compose_config(name, [*SPACE_OVERRIDES, *inputs.get((name, ""), [])])
    built = 0
    for key in cfg:
        node = cfg[key]
        if key == "hydra" or not isinstance(node, DictConfig):
            continue
        if "_target_" in node:
            assert build(node, key) is not None
            built += 1
        else:
            for sub in [s for s in node if isinstance(node[s], DictConfig) and "_target_" in node[s]]:
                assert build(node[sub], f"{key}.{sub}") is not None
                built += 1
    assert built >= 2, f"{name}: expected its roles (search space, device, models, ...) to build"


def test_every_group_folder_is_a_group_of_some_config() -> None:
    """A YAML folder that no config composes would be an option no command can select."""
    folders = {f.name for f in resources.files(CONFIG_MODULE).iterdir() if f.is_dir() and not f.name.startswith("_")}
    used = {key.split("@")[0] for name in ("config", *TOOL_CONFIGS) for key in choices(name)}
    assert folders - used == set()
    assert {"search_space", "dataset", "accuracy", "latency", "reward", "controller", "device", "supernet"} <= used


def test_a_tool_option_not_in_the_search_config_is_covered_here() -> None:
    """The groups only tools compose (device, supernet) have their options built by the tool test above."""
    tool_groups = {key for name in TOOL_CONFIGS for key in choices(name)} - set(choices("config"))
    for group in tool_groups:
        assert group_options(group.split("@")[0]), group


