"""Controllers by their config option, for parametrizing a test over all of them."""

from __future__ import annotations

from importlib import resources

import pytest
from omegaconf import OmegaConf

from nas_rl.cli import CONFIG_MODULE, group_options

SB3_CONTROLLER = "nas_rl.controllers.sb3.SB3Controller"


def trains_sb3(name: str) -> bool:
    """Whether the controller option ``name`` trains a Stable-Baselines3 algorithm (its config's ``_target_``)."""
    path = resources.files(CONFIG_MODULE) / "controller" / f"{name}.yaml"
    return OmegaConf.create(path.read_text())["_target_"] == SB3_CONTROLLER


def controller_params() -> list:
    """Every controller option as a pytest parameter; the ones that train an SB3 algorithm are marked slow."""
    slow = pytest.mark.slow
    return [pytest.param(name, marks=slow) if trains_sb3(name) else name for name in group_options("controller")]
