"""The env under vector envs and common wrappers; parallel evaluation keeps the store consistent."""

from __future__ import annotations

import sqlite3
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from nas_rl.controllers.sb3 import SB3Controller
from nas_rl.envs.nas_env import NasEnv
from nas_rl.evaluation.evaluator import Evaluator
from nas_rl.evaluation.reward import MnasReward
from nas_rl.evaluation.store import EvaluationStore
from tests.helpers.doubles import ChannelLatencyDouble, HashAccuracyDouble
from tests.helpers.tiny import tiny_space


def make_env(store: str) -> NasEnv:
    evaluator = Evaluator(HashAccuracyDouble(), ChannelLatencyDouble(), MnasReward(1.0), EvaluationStore(store), "vec")
    return NasEnv(tiny_space(), evaluator)


def run_vector(vec: gym.vector.VectorEnv, steps: int) -> int:
    vec.reset(seed=0)
    finished = 0
    for _ in range(steps):
        _, _, terminated, _, _ = vec.step(vec.action_space.sample())
        finished += int(np.sum(terminated))
    vec.close()
    return finished


def test_gymnasium_sync_and_async_vector_envs(tmp_path: Path) -> None:
    store = str(tmp_path / "e.sqlite")
    assert run_vector(gym.vector.SyncVectorEnv([partial(make_env, store)] * 2), 42) == 2
    assert run_vector(gym.vector.AsyncVectorEnv([partial(make_env, store)] * 2), 42) == 2
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT COUNT(*) FROM episodes").fetchone()[0] == 4


def test_common_wrappers() -> None:
    env = gym.wrappers.RecordEpisodeStatistics(gym.wrappers.FlattenObservation(make_env(":memory:")))
    obs, _ = env.reset(seed=0)
    assert obs.ndim == 1
    for _ in range(42):
        obs, reward, terminated, _, info = env.step(env.action_space.sample())
    assert terminated and info["episode"]["l"] == 42 and info["episode"]["r"] == reward


def test_sb3_dummy_and_subproc_vec_envs_share_the_store(tmp_path: Path) -> None:
    store = str(tmp_path / "e.sqlite")
    for vec_class in (DummyVecEnv, SubprocVecEnv):
        vec = vec_class([partial(make_env, store)] * 2)
        vec.reset()
        for _ in range(42):
            vec.step(np.array([vec.action_space.sample() for _ in range(2)]))
        vec.close()
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT COUNT(*) FROM episodes").fetchone()[0] == 4
        duplicates = conn.execute("SELECT COUNT(*) FROM evaluations GROUP BY arch, fingerprint HAVING COUNT(*) > 1")
        assert duplicates.fetchall() == []


@pytest.mark.slow
def test_sb3_controller_evaluates_in_parallel_processes(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    store = EvaluationStore(tmp_path / "e.sqlite")
    env = make_env(str(tmp_path / "e.sqlite"))
    controller = SB3Controller(
        partial(PPO, policy="MultiInputPolicy", n_steps=42, batch_size=42), n_envs=2, vec_env="subproc"
    )
    seen = []
    controller.search(env, budget=4, seed=0, on_evaluation=seen.append)
    assert len(seen) == 4
    assert store.count_episodes("vec") >= 4  # the last step may finish one more, kept in the store


@pytest.mark.slow
def test_sb3_controller_steps_several_copies_of_the_env_in_one_process(tmp_path: Path) -> None:
    """controller.n_envs=2 controller.vec_env=dummy: a distinct env per slot (SB3 refuses one instance twice),
    all on the given env's evaluator and store."""
    from stable_baselines3 import PPO

    env = make_env(str(tmp_path / "e.sqlite"))
    algorithm = partial(PPO, policy="MultiInputPolicy", n_steps=42, batch_size=42)
    controller = SB3Controller(algorithm, n_envs=2, vec_env="dummy")
    seen = []
    controller.search(env, budget=4, seed=0, on_evaluation=seen.append)
    slots = [slot.unwrapped for slot in controller.model.get_env().envs]
    assert len(seen) == 4 and len({id(slot) for slot in slots}) == 2 and slots[0] is env
    assert all(slot.evaluator is env.evaluator for slot in slots)
    assert EvaluationStore(tmp_path / "e.sqlite").count_episodes("vec") >= 4


@pytest.mark.parametrize("vec_env_cls", [DummyVecEnv, SubprocVecEnv])
def test_sb3_make_vec_env_on_a_registered_id(vec_env_cls: type) -> None:
    """make_vec_env first asks gym.make for render_mode="rgb_array" and retries without it on a TypeError; the
    SubprocVecEnv workers (forkserver) have not imported nas_rl, so they find the id by its "nas_rl:" form."""
    vec = make_vec_env("nas_rl:nas_rl/Tabular-v0", n_envs=2, vec_env_cls=vec_env_cls)
    vec.reset()
    for _ in range(5):
        _, _, dones, infos = vec.step(np.array([0, 1]))
    assert dones.all() and [info["status"] for info in infos] == ["ok", "ok"]
    vec.close()


def test_gymnasium_vector_infos_stack_into_typed_arrays() -> None:
    """Gymnasium's vector envs batch each info key into an array typed by its first value: a failed evaluation
    (NaN accuracy) next to a good one must fit the same float array, and the masks batch for sample(mask=)."""
    vec = gym.vector.SyncVectorEnv([partial(make_env, ":memory:")] * 2)
    _, info = vec.reset(seed=0)
    assert info["action_mask"].dtype == np.int8 and info["action_mask"].shape == (2, 4)
    assert all(vec.action_space.sample(mask=tuple(info["action_mask"])) < 4)
    for _ in range(42):
        _, _, terminated, _, info = vec.step(np.zeros(2, dtype=np.int64))
    assert terminated.all() and info["accuracy"].dtype == np.float64 and info["cached"].dtype == bool
    vec.close()
