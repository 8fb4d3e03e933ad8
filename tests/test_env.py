"""NasEnv: the env contract, checkers, masks, invalid actions, pickling and registration."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import nas_rl  # noqa: F401  (registers the ids)
from nas_rl.envs.nas_env import NasEnv
from nas_rl.envs.registry import spec_names
from nas_rl.errors import ConfigError
from nas_rl.evaluation.evaluator import Evaluator
from nas_rl.evaluation.reward import MnasReward
from nas_rl.evaluation.store import EvaluationStore
from tests.helpers.doubles import ChannelLatencyDouble, HashAccuracyDouble
from tests.helpers.tiny import tiny_space


def make_env(**kwargs) -> NasEnv:
    evaluator = Evaluator(HashAccuracyDouble(), ChannelLatencyDouble(), MnasReward(1.0), EvaluationStore(":memory:"))
    return NasEnv(tiny_space(), evaluator, **kwargs)


def run_episode(env: NasEnv, actions) -> tuple[float, dict]:
    env.reset(seed=0)
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
    assert terminated and not truncated
    return reward, info


def test_env_passes_gymnasium_and_sb3_checkers() -> None:
    gym_check_env(make_env())
    sb3_check_env(make_env())
    gym_check_env(make_env(render_mode="ansi"))


def test_terminal_step_reports_the_evaluation_and_others_pay_nothing() -> None:
    env = make_env()
    obs, _ = env.reset(seed=0)
    assert obs["position"] == 0 and not obs["tokens"].any()
    _, reward, terminated, _, info = env.step(1)
    assert (reward, terminated, info["status"], info["arch"]) == (0.0, False, "pending", "")
    reward, info = run_episode(env, [0] * 42)
    assert set(info) >= {"arch", "accuracy", "latency_ms", "reward", "cached", "eval_seconds", "status"}
    assert info["reward"] == reward > 0 and info["status"] == "ok"
    assert run_episode(env, [0] * 42)[1]["cached"]


def test_invalid_actions_wrap_or_clip() -> None:
    # Position 1 (kernel) has 2 choices: action 3 wraps to 1, clips to 1; action 2 wraps to 0, clips to 1.
    wrapped = run_episode(make_env(invalid_action="wrap"), [0, 2] + [0] * 40)[1]["tokens"]
    clipped = run_episode(make_env(invalid_action="clip"), [0, 2] + [0] * 40)[1]["tokens"]
    assert wrapped[1] == 0 and clipped[1] == 1
    with pytest.raises(ConfigError, match="env.invalid_action"):
        make_env(invalid_action="crash")


def test_action_masks_follow_the_position() -> None:
    env = make_env()
    env.reset(seed=0)
    assert env.action_masks().tolist() == [True, True, True, True]
    env.step(0)
    assert env.action_masks().tolist() == [True, True, False, False]


def test_env_pickles_and_runs_after_unpickling() -> None:
    env = make_env()
    clone = pickle.loads(pickle.dumps(env))
    assert run_episode(clone, [1] * 42)[1]["status"] == "ok"


def test_registered_id_builds_the_spec_with_overrides() -> None:
    env = gym.make("nas_rl/MnasNet-v0", reward={"target_ms": 3.0})
    base = env.unwrapped
    assert base.evaluator.reward.target_ms == 3.0
    assert base.search_space.num_decisions == 42
    assert isinstance(env.observation_space, gym.spaces.Dict)
    with pytest.raises(TypeError, match="unexpected keyword argument 'rewards'"):
        gym.make("nas_rl/MnasNet-v0", rewards={"target_ms": 3.0})


def play(env: NasEnv, actions, seed: int | None) -> tuple[str, tuple[int, ...], float]:
    obs, info = env.reset(seed=seed)
    assert obs["position"] == 0 and not obs["tokens"].any() and info["status"] == "pending"  # always the initial one
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
    assert terminated and not truncated
    return info["arch"], info["tokens"], reward


def test_reset_seed_draws_nothing_an_episode_depends_only_on_its_actions() -> None:
    """The env has no randomness of its own (the estimators seed themselves): whatever the seed, reset returns
    the initial observation and the same actions give the same architecture and reward, from fresh stores."""
    actions = [int(a) for a in np.random.default_rng(5).integers(4, size=42)]
    outcomes = [play(make_env(), actions, seed) for seed in (0, 1, 12345, None)]
    assert all(outcome == outcomes[0] for outcome in outcomes), outcomes
    space = tiny_space()
    wrapped = tuple(action % space.num_choices(position) for position, action in enumerate(actions))
    assert outcomes[0][:2] == (space.decode(wrapped).to_string(), wrapped)  # the actions, under the wrap policy
    env = make_env()
    env.reset(seed=3)
    env.step(2)  # an episode left half-played: reset starts over
    env.step(1)
    other = play(env, [(action + 1) % 4 for action in actions], seed=4)
    assert other[0] != outcomes[0][0]


def test_mnasnet_v0_spec_is_the_default_search_env() -> None:
    """The registered id and `nas-rl` with no overrides search the same env (change either: add MnasNet-v1)."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from nas_rl.envs.registry import load_spec

    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config")
    spec = load_spec("MnasNet-v0")
    for key in ("search_space", "dataset", "accuracy", "reward", "env"):
        assert OmegaConf.to_container(spec[key]) == OmegaConf.to_container(cfg[key]), key
    # The search reads its device from the device group, the released spec names threads and precision itself.
    from nas_rl.config import build

    assert build(spec.latency, "latency").fingerprint() == build(cfg.latency, "latency").fingerprint()


def test_oneshot_v2_is_v1_with_a_cheaper_score() -> None:
    """MnasNet-OneShot-v2 changes v1's accuracy settings only, and only the two that make it cheaper (README)."""
    from omegaconf import OmegaConf

    from nas_rl.envs.registry import load_spec

    v1, v2 = (OmegaConf.to_container(load_spec(f"MnasNet-OneShot-v{n}")) for n in (1, 2))
    assert {key: value for key, value in v1.items() if key != "accuracy"} == {
        key: value for key, value in v2.items() if key != "accuracy"
    }
    changed = {
        key
        for key in v1["accuracy"].keys() | v2["accuracy"].keys()
        if v1["accuracy"].get(key) != v2["accuracy"].get(key)
    }
    assert changed == {"finetune_steps", "validation_subset"}
    assert (
        v1["accuracy"]["finetune_steps"],
        v2["accuracy"]["finetune_steps"],
        v2["accuracy"]["validation_subset"],
    ) == (5, 4, 180)


@pytest.mark.parametrize(
    "settings", [{}, {"mask_in_obs": True}, {"flat_obs": True}, {"flat_obs": True, "mask_in_obs": True}]
)
@pytest.mark.parametrize("name", spec_names())
def test_every_registered_id_passes_the_checkers(name: str, settings: dict) -> None:
    """Each envs/<name>.yaml, as gym.make builds it, through both checkers with their default settings (Gymnasium's
    re-makes the env with every render mode). Cheap for MnasNet-v0 too: the checkers never reach a terminal step."""
    env_id = f"nas_rl/{name}"
    assert env_id in gym.registry
    gym_check_env(gym.make(env_id, env=settings).unwrapped)
    sb3_check_env(gym.make(env_id, env=settings).unwrapped)
