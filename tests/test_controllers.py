"""Controllers from their Hydra configs: each spends exactly its budget through the env and the store."""

from __future__ import annotations

import gymnasium as gym
import pytest
from hydra import compose, initialize_config_module

import nas_rl  # noqa: F401  (registers the ids)
from nas_rl.cli import group_options
from nas_rl.config import build

#: gym.make overrides of MnasNet-v0 for a real (proxy training + LiteRT) env that evaluates in about a second.
TINY_SPEC = {
    "search_space": {"resolution": 16, "stem_channels": 8, "head_channels": 32,
                     "base_widths": [8, 8, 8, 16, 16, 24, 32], "base_repeats": [1] * 7},
    "accuracy": {"epochs": 0.1, "threads": 1},
    "latency": {"min_seconds": 0.1, "min_runs": 10, "warmup_min_seconds": 0.05},
}  # fmt: skip


def build_controller(name: str):
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"controller={name}"])
    return build(cfg.controller, "controller")


@pytest.mark.parametrize("name", group_options("controller"))
def test_controller_spends_its_budget_on_a_real_env(name: str) -> None:
    env = gym.make("nas_rl/MnasNet-v0", run_id="run", **TINY_SPEC)
    seen = []
    build_controller(name).search(env, budget=2, seed=0, on_evaluation=seen.append)
    assert len(seen) == 2
    assert all(info["status"] == "ok" and 0 < info["reward"] and info["latency_ms"] > 0 for info in seen)
    assert env.unwrapped.evaluator.store.count_episodes("run") == 2


def test_rollout_size_is_counted_in_architectures_of_the_searched_space(tmp_path) -> None:
    """controller.rollout_archs=K: K episodes per PPO update in any space (K x 5 tokens on a 5-decision table)."""
    from nas_rl.errors import ConfigError
    from nas_rl.tabular.table import write_synthetic_table

    table = str(write_synthetic_table(tmp_path / "synthetic.npz"))
    env = gym.make("nas_rl/Tabular-v0", table=table)
    controller = build_controller("mnasnet")
    controller.rollout_archs, controller.minibatch_archs = 3, 1
    seen = []
    controller.search(env, budget=7, seed=0, on_evaluation=seen.append)
    tokens = env.unwrapped.search_space.num_decisions
    assert (controller.model.n_steps, controller.model.batch_size, len(seen)) == (3 * tokens, tokens, 7)
    with pytest.raises(ConfigError, match="controller.rollout_archs=0"):
        type(controller)(controller.algorithm, rollout_archs=0)
