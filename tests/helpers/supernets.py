"""A tiny supernet training: the tiny space on a digits subset, with fast settings."""

from __future__ import annotations

from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from tests.helpers.tiny import TINY_OVERRIDES

#: The tiny space of tests/helpers/tiny.py as overrides, the data and fast supernet settings.
SPACE_OVERRIDES = [o for o in TINY_OVERRIDES if o.startswith("search_space.")]
MAX_SAMPLES = 400
DATA_OVERRIDES = [f"dataset.max_samples={MAX_SAMPLES}"]
FAST = ["supernet.batch_size=32", "supernet.threads=1", "supernet.progress=false", "supernet.calibration_images=64"]


def train_config(*overrides: str) -> DictConfig:
    """The composed ``train_supernet`` config of the tiny space on a digits subset."""
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        return compose("train_supernet", overrides=[*SPACE_OVERRIDES, *DATA_OVERRIDES, *FAST, *overrides])
