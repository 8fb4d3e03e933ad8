"""MnasNet reward: both constraint branches of the shipped YAMLs, and the target itself."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

from nas_rl.config import build
from nas_rl.errors import ConfigError
from nas_rl.evaluation.reward import MnasReward


def shipped_reward(option: str, target_ms: float) -> MnasReward:
    """The reward ``conf/reward/<option>.yaml`` builds at ``target_ms``."""
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"reward={option}", f"reward.target_ms={target_ms}"])
    return build(cfg.reward, "reward")


def test_soft_constraint_rewards_faster_and_penalises_slower() -> None:
    reward = shipped_reward("soft", target_ms=10.0)
    assert reward(0.8, 10.0) == pytest.approx(0.8)
    assert reward(0.8, 5.0) == pytest.approx(0.8 * 0.5**-0.07)
    assert reward(0.8, 20.0) == pytest.approx(0.8 * 2.0**-0.07)
    assert reward(0.8, 5.0) > reward(0.8, 10.0) > reward(0.8, 20.0)


def test_hard_constraint_is_flat_below_target_and_steep_above() -> None:
    reward = shipped_reward("hard", target_ms=10.0)
    assert reward(0.8, 1.0) == pytest.approx(0.8)
    assert reward(0.8, 10.0) == pytest.approx(0.8)
    assert reward(0.8, 20.0) == pytest.approx(0.4)


@pytest.mark.parametrize(("field", "value"), [("target_ms", -1.0), ("target_ms", 0.0), ("alpha", 0.5)])
def test_invalid_settings_name_the_key(field: str, value: float) -> None:
    """The constructor names its parameter; building from config names the full path."""
    kwargs = {"target_ms": 10.0, field: value}
    with pytest.raises(ConfigError, match=f"^{field}={value} is not accepted: use "):
        MnasReward(**kwargs)
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"reward.{field}={value}"])
    with pytest.raises(ConfigError, match=f"^reward.{field}={value} is not accepted: use "):
        build(cfg.reward, "reward")
