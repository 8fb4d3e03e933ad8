"""Controllers from their Hydra configs: each spends exactly its budget through the env and the store."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

from nas_rl.cli import group_options
from nas_rl.config import build
from nas_rl.envs.nas_env import NasEnv
from nas_rl.evaluator import Evaluator
from nas_rl.reward import MnasReward
from nas_rl.store import EvaluationStore
from tests.conftest import ChannelLatencyDouble, HashAccuracyDouble, tiny_space


def build_controller(name: str):
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"controller={name}"])
    return build(cfg.controller, "controller")


@pytest.mark.parametrize("name", group_options("controller"))
def test_controller_spends_its_budget(name: str) -> None:
    store = EvaluationStore(":memory:")
    env = NasEnv(tiny_space(), Evaluator(HashAccuracyDouble(), ChannelLatencyDouble(), MnasReward(1.0), store, "run"))
    seen = []
    build_controller(name).search(env, budget=6, seed=0, on_evaluation=seen.append)
    assert len(seen) == 6
    assert all(info["status"] == "ok" and info["reward"] > 0 for info in seen)
    assert store.count_episodes("run") == 6
