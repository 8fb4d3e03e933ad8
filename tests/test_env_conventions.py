"""The env follows Gymnasium's and SB3's conventions where third-party RL code relies on them (issue 14):
render_mode and unknown keywords, masks in info, fixed info keys and types, a flat Box observation, the
RecurrentPPO recipe, store=, section replacement and built roles, nondeterministic ids, the "nas_rl:" id form."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import nas_rl  # noqa: F401  (registers the ids)
from nas_rl.envs.nas_env import PENDING_INFO, NasEnv
from nas_rl.envs.registry import load_spec, spec_names
from nas_rl.errors import ConfigError
from nas_rl.evaluation.evaluator import Evaluator
from nas_rl.evaluation.reward import MnasReward
from nas_rl.evaluation.store import EvaluationStore
from tests.helpers.doubles import ChannelLatencyDouble, HashAccuracyDouble
from tests.helpers.tiny import tiny_space

#: Every info key, on every step, and the type of its value.
INFO_TYPES = {
    "arch": str, "tokens": tuple, "status": str, "error": str, "cached": bool, "action_mask": np.ndarray,
    "accuracy": np.float64, "latency_ms": np.float64, "reward": np.float64, "eval_seconds": np.float64,
}  # fmt: skip
#: Latency models that measure on a device: their envs answer differently for the same network.
MEASURED_LATENCY = ("nas_rl.latency.litert.LiteRTLatency",)


def make_env(accuracy=None, **settings) -> NasEnv:
    evaluator = Evaluator(
        accuracy or HashAccuracyDouble(), ChannelLatencyDouble(), MnasReward(1.0), EvaluationStore(":memory:")
    )
    return NasEnv(tiny_space(), evaluator, **settings)


def check_info(info: dict, env: NasEnv) -> None:
    assert {key: type(value) for key, value in info.items()} == INFO_TYPES, info
    assert info["action_mask"].dtype == np.int8 and info["action_mask"].shape == (env.action_space.n,)


# 1. render_mode and unknown keywords -------------------------------------------------------------------------


@pytest.mark.parametrize("name", spec_names())
def test_make_accepts_the_render_modes_and_refuses_unknown_keywords_with_a_type_error(name: str) -> None:
    env_id = f"nas_rl/{name}"
    assert gym.make(env_id, render_mode=None).render_mode is None
    env = gym.make(env_id, render_mode="ansi")
    env.reset(seed=0)
    env.step(0)
    assert env.render() == f"position 1/{env.unwrapped.search_space.num_decisions}: tokens [0]"
    with pytest.raises(TypeError, match="unexpected keyword argument 'x'") as refused:
        gym.make(env_id, x=1)
    assert isinstance(refused.value, ConfigError)  # and so a ValueError, as before
    with pytest.raises(TypeError, match="render_mode='rgb_array' is not accepted: use None or one of"):
        gym.make(env_id, render_mode="rgb_array")  # SB3's make_vec_env asks for it, and retries on a TypeError
    with pytest.raises(ConfigError, match="env.colour='red' is not an env setting; settings: invalid_action"):
        gym.make(env_id, env={"colour": "red"})


def test_gym_make_vec_with_render_mode_none() -> None:
    vec = gym.make_vec("nas_rl/Tabular-v0", num_envs=2, render_mode=None)
    _, info = vec.reset(seed=0)
    assert info["action_mask"].shape == (2, vec.single_action_space.n)
    vec.close()


# 2. action masks in info and, optionally, in the observation ---------------------------------------------------


def test_info_carries_the_next_decisions_mask_for_action_space_sample() -> None:
    env = make_env()
    env.action_space.seed(0)
    _, info = env.reset(seed=0)
    terminated, position = False, 0
    while not terminated:
        assert np.array_equal(info["action_mask"], env.action_masks().astype(np.int8))
        action = env.action_space.sample(mask=info["action_mask"])
        assert action < env.search_space.num_choices(position)  # sampled among the valid choices only
        _, _, terminated, _, info = env.step(action)
        position += 1
    assert info["action_mask"].all() and env.action_masks().all()  # over: all valid (never all invalid)
    assert env.action_masks().dtype == bool  # sb3-contrib's MaskablePPO reads it by name


def test_mask_in_obs_adds_the_mask_as_an_observation_key() -> None:
    env = make_env(mask_in_obs=True)
    assert env.observation_space["action_mask"] == spaces.MultiBinary(int(env.action_space.n))
    obs, info = env.reset(seed=0)
    for action in [0] * 41:
        assert np.array_equal(obs["action_mask"], info["action_mask"]) and obs in env.observation_space
        obs, _, _, _, info = env.step(action)
    assert make_env().observation_space.keys() == {"tokens", "position"}
    with pytest.raises(ConfigError, match=r"env.mask_in_obs='yes' is not accepted: use true or false"):
        make_env(mask_in_obs="yes")


# 3. the same info keys on every step, numpy numbers ------------------------------------------------------------


def test_every_info_has_the_same_keys_and_types_pending_ok_and_failed() -> None:
    class FailsOnK5(HashAccuracyDouble):
        def accuracy(self, arch):
            if "_k5_" in arch.to_string():
                from nas_rl.errors import EvaluationFailed

                raise EvaluationFailed("diverged")
            return super().accuracy(arch)

    env = make_env(accuracy=FailsOnK5())
    _, info = env.reset(seed=0)
    check_info(info, env)
    assert {k: v for k, v in info.items() if k != "action_mask"} == PENDING_INFO
    for action in [0] * 41:
        _, _, _, _, info = env.step(action)
        check_info(info, env)
        assert (info["status"], info["arch"], info["error"], info["reward"]) == ("pending", "", "", 0.0)
    _, reward, terminated, _, ok = env.step(0)
    check_info(ok, env)
    assert terminated and ok["status"] == "ok" and ok["error"] == "" and ok["reward"] == reward > 0
    assert ok["accuracy"] > 0 and ok["latency_ms"] > 0 and ok["eval_seconds"] >= 0 and not ok["cached"]
    env.reset(seed=0)
    for action in [0, 1] + [0] * 40:  # kernel 5 in the first stage: the double fails it
        _, reward, _, _, failed = env.step(action)
    check_info(failed, env)
    assert (failed["status"], failed["error"], failed["reward"], reward) == ("failed", "diverged", 0.0, 0.0)
    assert np.isnan(failed["accuracy"]) and np.isnan(failed["latency_ms"])  # the evaluation produced none


def test_an_off_policy_trainer_that_stores_infos_in_its_replay_buffer() -> None:
    """DQN on Tabular-v0 with a replay buffer that keeps each transition's info as typed columns (what trainers
    that learn from or log info do): every step's info must have every key, with a storable numeric value."""
    from stable_baselines3 import DQN
    from stable_baselines3.common.buffers import DictReplayBuffer

    numbers = ("accuracy", "latency_ms", "reward", "eval_seconds")

    class InfoReplayBuffer(DictReplayBuffer):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            shape = (self.buffer_size, self.n_envs)
            self.info = {key: np.zeros(shape, dtype=np.float64) for key in numbers}
            self.info["cached"] = np.zeros(shape, dtype=bool)
            self.info["status"] = np.zeros(shape, dtype="<U7")
            self.info["action_mask"] = np.zeros((*shape, self.action_space.n), dtype=np.int8)

        def add(self, obs, next_obs, action, reward, done, infos) -> None:
            for slot, info in enumerate(infos):
                for key, column in self.info.items():
                    column[self.pos, slot] = info[key]
            super().add(obs, next_obs, action, reward, done, infos)

    model = DQN("MultiInputPolicy", gym.make("nas_rl/Tabular-v0"), learning_starts=10, train_freq=1, buffer_size=100,
                replay_buffer_class=InfoReplayBuffer, seed=0)  # fmt: skip
    model.learn(total_timesteps=60)
    buffer = model.replay_buffer
    done, status = buffer.dones[:60, 0].astype(bool), buffer.info["status"][:60, 0]
    assert done.sum() == 12 and (status[done] == "ok").all() and (status[~done] == "pending").all()
    assert np.allclose(buffer.info["reward"][:60, 0][done], buffer.rewards[:60, 0][done])  # those are float32
    assert np.isfinite(buffer.info["accuracy"][:60]).all()


# 4. a flat Box observation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_in_obs", [False, True])
def test_flat_obs_is_the_flattened_dict_observation(mask_in_obs: bool) -> None:
    flat, plain = make_env(flat_obs=True, mask_in_obs=mask_in_obs), make_env(mask_in_obs=mask_in_obs)
    assert flat.observation_space == spaces.Box(0, 1, (spaces.flatdim(plain.observation_space),), np.float32)
    actions = [int(a) for a in np.random.default_rng(0).integers(4, size=42)]
    for _ in range(2):  # twice: reset starts the flat observation over
        observations = [(flat.reset(seed=0)[0], plain.reset(seed=0)[0])]
        observations += [(flat.step(a)[0], plain.step(a)[0]) for a in actions]
        for flat_obs, dict_obs in observations:
            assert flat_obs in flat.observation_space
            assert np.array_equal(flat_obs, spaces.flatten(plain.observation_space, dict_obs))
    assert flat.dict_observation_space == plain.observation_space


def test_vec_normalize_takes_the_flat_observation() -> None:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    with pytest.raises(ValueError, match="VecNormalize"):
        VecNormalize(make_vec_env("nas_rl/Tabular-v0", n_envs=2))  # the Dict of discrete spaces: refused
    vec = VecNormalize(make_vec_env("nas_rl/Tabular-v0", n_envs=2, env_kwargs={"env": {"flat_obs": True}}))
    obs = vec.reset()
    for _ in range(10):
        obs, _, _, _ = vec.step(np.array([vec.action_space.sample() for _ in range(2)]))
    assert obs.shape == (2, vec.observation_space.shape[0]) and vec.obs_rms.count > 20
    assert not np.isin(obs, [0.0, 1.0]).all()  # normalised, no longer one-hot
    vec.close()


# 5. RecurrentPPO ------------------------------------------------------------------------------------------------


def test_recurrent_ppo_runs_on_the_flat_observation_or_with_the_flat_token_extractor() -> None:
    """SB3 sizes a MultiDiscrete observation as ``sum(nvec)``, a numpy integer that ``torch.nn.LSTM`` refuses (an
    upstream bug: nvec is a numpy array whatever the env passes); the README's two ways around it."""
    from sb3_contrib import RecurrentPPO

    from nas_rl.controllers.lstm_extractor import FlatTokenExtractor

    flat = RecurrentPPO("MlpLstmPolicy", gym.make("nas_rl/Tabular-v0", env={"flat_obs": True}), n_steps=10,
                        batch_size=10, seed=0)  # fmt: skip
    flat.learn(20)
    extractor = {"features_extractor_class": FlatTokenExtractor}
    dict_obs = RecurrentPPO("MultiInputLstmPolicy", gym.make("nas_rl/Tabular-v0"), n_steps=10, batch_size=10, seed=0,
                            policy_kwargs=extractor)  # fmt: skip
    dict_obs.learn(20)
    assert flat.num_timesteps == dict_obs.num_timesteps == 20


# 6. store= ------------------------------------------------------------------------------------------------------


def test_a_store_given_to_make_is_filled(tmp_path: Path) -> None:
    from nas_rl.controllers.base import play_tokens

    env = gym.make("nas_rl/Tabular-v0", store=tmp_path / "x.sqlite", run_id="mine")
    for tokens in ([0] * 5, [1] * 5, [0] * 5):
        play_tokens(env, tokens)
    env.close()
    store = EvaluationStore(tmp_path / "x.sqlite")
    assert store.count_episodes("mine") == 3 and len(list(store.evaluations())) == 2
    quiet = gym.make("nas_rl/Tabular-v0", store=tmp_path / "y.sqlite", evaluator={"history": False})
    play_tokens(quiet, [0] * 5)  # history off, as asked: the fast path, the store never opened
    assert not (tmp_path / "y.sqlite").exists()


# 7. replacing a section, built roles -----------------------------------------------------------------------------


def test_a_section_with_another_target_replaces_the_spec_section() -> None:
    flops = {"_target_": "nas_rl.latency.flops_latency.FlopsLatency", "resolution": 32, "ms_per_mac": 1e-6}
    latency = gym.make("nas_rl/MnasNet-v0", latency=flops).unwrapped.evaluator.latency
    assert type(latency).__name__ == "FlopsLatency" and latency.resolution == 32
    same_target = gym.make("nas_rl/MnasNet-v0", latency={"_target_": load_spec("MnasNet-v0").latency._target_,
                                                         "min_runs": 7})  # fmt: skip
    assert same_target.unwrapped.evaluator.latency.min_runs == 7  # merged: the other fields stay the spec's


def test_built_roles_pass_through_unbuilt() -> None:
    accuracy, latency, space = HashAccuracyDouble(), ChannelLatencyDouble(), tiny_space()

    def reward(acc: float, latency_ms: float) -> float:
        return acc / 2

    env = gym.make("nas_rl/Tabular-v0", search_space=space, accuracy=accuracy, latency=latency, reward=reward,
                   evaluator=None)  # fmt: skip
    base = env.unwrapped
    assert (base.search_space, base.evaluator.accuracy, base.evaluator.latency) == (space, accuracy, latency)
    env.reset(seed=0)
    for _ in range(space.num_decisions):
        _, paid, terminated, _, info = env.step(0)
    assert terminated and accuracy.calls == 1 and paid == info["accuracy"] / 2
    with pytest.raises(
        TypeError, match=r"accuracy=.* is not accepted: use a config mapping or a built AccuracyEstimator"
    ):
        gym.make("nas_rl/Tabular-v0", accuracy=ChannelLatencyDouble())
    with pytest.raises(TypeError, match=r"reward=.* is not accepted: use config values"):
        gym.make("nas_rl/Tabular-v0", reward={"target_ms": object()})


# 8. nondeterministic ids -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", spec_names())
def test_ids_with_measured_latency_are_registered_nondeterministic(name: str) -> None:
    measured = load_spec(name).latency._target_ in MEASURED_LATENCY
    assert gym.spec(f"nas_rl/{name}").nondeterministic is measured
    assert "nondeterministic" not in load_spec(name)  # registry metadata: never built, never a make() keyword
    with pytest.raises(TypeError, match="unexpected keyword argument 'nondeterministic'"):
        gym.make(f"nas_rl/{name}", nondeterministic=False)


# 9. the "nas_rl:" id form ----------------------------------------------------------------------------------------


def test_a_fresh_process_makes_the_env_from_the_module_qualified_id() -> None:
    """What a spawned vector-env worker does: it has not imported nas_rl, so only "nas_rl:nas_rl/<name>" finds it."""
    script = (
        "import sys, gymnasium as gym\n"
        "assert 'nas_rl' not in sys.modules\n"
        "env = gym.make('nas_rl:nas_rl/Tabular-v0')\n"
        "obs, info = env.reset(seed=0)\n"
        "print(env.unwrapped.search_space.num_decisions, info['status'])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["5", "pending"]
