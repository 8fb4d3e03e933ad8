"""MnasNet reward: both constraint branches and the target itself."""

from __future__ import annotations

import pytest

from nas_rl.errors import ConfigError
from nas_rl.reward import MnasReward


def test_soft_constraint_rewards_faster_and_penalises_slower() -> None:
    reward = MnasReward.preset("soft", target_ms=10.0)
    assert reward(0.8, 10.0) == pytest.approx(0.8)
    assert reward(0.8, 5.0) == pytest.approx(0.8 * 0.5**-0.07)
    assert reward(0.8, 20.0) == pytest.approx(0.8 * 2.0**-0.07)
    assert reward(0.8, 5.0) > reward(0.8, 10.0) > reward(0.8, 20.0)


def test_hard_constraint_is_flat_below_target_and_steep_above() -> None:
    reward = MnasReward.preset("hard", target_ms=10.0)
    assert reward(0.8, 1.0) == pytest.approx(0.8)
    assert reward(0.8, 10.0) == pytest.approx(0.8)
    assert reward(0.8, 20.0) == pytest.approx(0.4)


@pytest.mark.parametrize(("field", "value"), [("target_ms", -1.0), ("target_ms", 0.0), ("alpha", 0.5)])
def test_invalid_settings_name_the_key(field: str, value: float) -> None:
    kwargs = {"target_ms": 10.0, field: value}
    with pytest.raises(ConfigError, match=f"reward.{field}"):
        MnasReward(**kwargs)
