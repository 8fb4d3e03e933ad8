"""Batched and asynchronous proposals on a concurrent executor (a double standing in for the cluster), the
cluster's settings refused in one line, role configs checked before anything is sent to a worker, and a search
stopped inside a SubprocVecEnv worker reported in one line. The real Dask cluster is in tests/test_cluster_dask.py."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from nas_rl.config import build
from nas_rl.controllers.evolution import RegularizedEvolution
from nas_rl.controllers.random_search import RandomSearch
from nas_rl.controllers.sb3 import BatchingDummyVecEnv, SB3Controller, _dummy_slots, _same
from nas_rl.envs.nas_env import NasEnv
from nas_rl.errors import ConfigError, DataError
from nas_rl.evaluation import tasks
from nas_rl.evaluation.cluster import DaskExecutor
from nas_rl.evaluation.evaluator import Evaluator, RepeatedFailures
from nas_rl.evaluation.executor import LocalExecutor
from nas_rl.evaluation.reward import MnasReward
from nas_rl.evaluation.store import EvaluationStore
from nas_rl.runs.search import idle_workers
from tests.helpers.doubles import (
    ChannelLatencyDouble,
    ConcurrentExecutorDouble,
    HashAccuracyDouble,
    RaisingAccuracyDouble,
)
from tests.helpers.tiny import tiny_space


def make_env(store: str | Path, executor=None, accuracy=None, **settings) -> NasEnv:
    evaluator = Evaluator(accuracy or HashAccuracyDouble(), ChannelLatencyDouble(), MnasReward(1.0),
                          EvaluationStore(store), "run", executor=executor, **settings)  # fmt: skip
    return NasEnv(tiny_space(), evaluator)


def seen_rows(seen: list[dict]) -> list[tuple]:
    return [(info["arch"], info["status"], bool(info["cached"]), float(info["reward"])) for info in seen]


def stored_rows(store: EvaluationStore) -> list[tuple]:
    return [(row["arch"], row["status"], bool(row["cached"]), float(row["reward"])) for row in store.episodes("run")]


# ------------------------------------------------------------------------------------------ batches


def test_the_envs_of_a_vec_env_step_have_their_candidates_evaluated_together(tmp_path: Path) -> None:
    """controller.n_envs=3 on a cluster: before the step that ends the episodes, their three architectures are
    submitted at once; each env's terminal step then finds its answer, reported fresh (cached=False)."""
    executor = ConcurrentExecutorDouble()
    env = make_env(tmp_path / "e.sqlite", executor)
    vec = BatchingDummyVecEnv([functools.partial(_same, slot) for slot in _dummy_slots(env, 3)], env.evaluator)
    vec.reset()
    rng = np.random.default_rng(0)
    for _ in range(env.search_space.num_decisions):
        assert executor.submitted == []  # nothing is evaluated before the terminal step
        _, _, dones, infos = vec.step(rng.integers(0, env.search_space.max_choices, size=3))
    assert dones.all() and executor.most_in_flight == 3 and len(executor.submitted) == 3
    assert sorted(executor.submitted) == sorted(info["arch"] for info in infos)
    assert [info["cached"] for info in infos] == [False] * 3 and all(info["status"] == "ok" for info in infos)
    assert stored_rows(env.evaluator.store) == seen_rows(infos)


def test_a_batch_evaluates_an_architecture_once_and_reports_it_fresh_once(tmp_path: Path) -> None:
    executor = ConcurrentExecutorDouble()
    evaluator = make_env(tmp_path / "e.sqlite", executor).evaluator
    space, rng = tiny_space(), np.random.default_rng(1)
    first, second = (space.decode(space.sample(rng)) for _ in range(2))
    evaluator.start([first, second, first])
    assert executor.submitted == [first.to_string(), second.to_string()]
    assert set(evaluator.finish([first, second, first])) == {first, second}
    outcomes = [evaluator.evaluate(arch) for arch in (first, first, second)]
    assert [outcome.cached for outcome in outcomes] == [False, True, False]
    evaluator.start([first])  # stored now: nothing to submit
    assert len(executor.submitted) == 2 and evaluator.evaluate(first).cached


@pytest.mark.parametrize("controller", [RandomSearch(n_envs=3), RegularizedEvolution(4, 2, n_envs=3)],
                         ids=["random", "evolution"])  # fmt: skip
def test_random_search_and_evolution_keep_n_envs_candidates_in_flight(controller, tmp_path: Path) -> None:
    executor = ConcurrentExecutorDouble()
    env = make_env(tmp_path / "e.sqlite", executor)
    seen: list[dict] = []
    controller.search(env, budget=11, seed=0, on_evaluation=seen.append)
    assert len(seen) == 11 and executor.most_in_flight == 3 and executor.in_flight == 0
    assert stored_rows(env.evaluator.store) == seen_rows(seen)  # what the controller saw, in its order
    fresh = [info["arch"] for info in seen if not info["cached"]]
    assert sorted(fresh) == sorted(executor.submitted)  # each submitted architecture reported fresh once


def test_one_candidate_in_flight_proposes_exactly_as_before(tmp_path: Path) -> None:
    """n_envs=1 (the default) on a concurrent executor proposes the same architectures as on the local one."""
    runs = []
    for executor in (LocalExecutor(), ConcurrentExecutorDouble()):
        seen: list[dict] = []
        env = make_env(tmp_path / f"{type(executor).__name__}.sqlite", executor)
        RegularizedEvolution(3, 2).search(env, budget=9, seed=4, on_evaluation=seen.append)
        runs.append(seen_rows(seen))
    assert runs[0] == runs[1]


# ------------------------------------------------------------------------------------------ settings


def cluster_config(*overrides: str):
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        return compose("config", overrides=["cluster=dask", *overrides])


def test_the_cluster_options_build_without_connecting() -> None:
    assert isinstance(build(compose_local().cluster, "cluster"), LocalExecutor)
    executor = build(cluster_config().cluster, "cluster")
    assert isinstance(executor, DaskExecutor) and (executor.address, executor.workers, executor.retries) == (None, 2, 2)
    assert executor.allow_targets == ("nas_rl.",)
    assert executor._client is None  # connects on first use


def test_a_local_cluster_with_more_workers_than_architectures_in_evaluation_says_so() -> None:
    """With the default n_envs=1, cluster=dask's second worker would wait through the whole search: a warning
    names the setting; none when the controller keeps every worker busy, nor for a scheduler elsewhere."""
    config = cluster_config("cluster.workers=3")
    executor = build(config.cluster, "cluster")
    warning = idle_workers(executor, build(config.controller, "controller"))
    assert warning is not None and "controller.n_envs=1" in warning and "set controller.n_envs=3" in warning
    assert idle_workers(executor, RandomSearch(n_envs=3)) is None
    assert idle_workers(LocalExecutor(), RandomSearch(n_envs=1)) is None
    remote = build(cluster_config("cluster.address=tcp://127.0.0.1:8786").cluster, "cluster")
    assert idle_workers(remote, RandomSearch(n_envs=1)) is None  # its workers are not known here


def compose_local():
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        return compose("config")


@pytest.mark.parametrize("address", ["tcp://10.1.2.3:8786", "10.1.2.3:8786", "tcp://scheduler.example.org:8786"])
def test_plain_text_to_another_host_is_refused_without_allow_insecure(address: str) -> None:
    with pytest.raises(ConfigError) as refused:
        build(cluster_config(f"cluster.address={address}").cluster, "cluster")
    message = str(refused.value)
    assert message.startswith(f"cluster.address={address} is not accepted") and "\n" not in message
    assert "allow_insecure=true" in message and "run code on the workers" in message
    executor = build(cluster_config(f"cluster.address={address}", "cluster.allow_insecure=true").cluster, "cluster")
    assert executor.address.startswith("tcp://")
    for loopback in ("tcp://127.0.0.1:8786", "localhost:8786", "tcp://[::1]:8786"):
        assert build(cluster_config(f"cluster.address='{loopback}'").cluster, "cluster").address.startswith("tcp://")


def test_tls_needs_its_certificate_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^cluster.address=tls://10.1.2.3:8786 needs cluster.security"):
        DaskExecutor(address="tls://10.1.2.3:8786")
    files = {"tls_ca_file": str(tmp_path / "ca.pem"), "tls_client_cert": str(tmp_path / "c.pem"),
             "tls_client_key": str(tmp_path / "k.pem")}  # fmt: skip
    with pytest.raises(DataError, match=r"^cluster.security.tls_ca_file=.*ca.pem is not a file"):
        DaskExecutor(address="tls://10.1.2.3:8786", security=files)
    with pytest.raises(ConfigError, match=r"^cluster.security.tls_client_key is not set"):
        DaskExecutor(address="tls://10.1.2.3:8786", security={k: v for k, v in files.items() if k != "tls_client_key"})
    with pytest.raises(ConfigError, match=r"^cluster.address='ucx://10.1.2.3:8786' is not accepted"):
        DaskExecutor(address="ucx://10.1.2.3:8786")
    with pytest.raises(ConfigError, match=r"^cluster.latency_resources .* LocalCluster"):
        DaskExecutor(latency_resources={"device-pixel7": 1})
    with pytest.raises(ConfigError, match=r"^cluster.latency_resources=\{'device-pixel7': 0\} is not accepted"):
        DaskExecutor(address="tcp://127.0.0.1:8786", latency_resources={"device-pixel7": 0})


def test_an_evaluator_on_a_cluster_refuses_subprocess_envs(tmp_path: Path) -> None:
    env = make_env(tmp_path / "e.sqlite", DaskExecutor(workers=1))
    controller = SB3Controller(lambda **_: None, n_envs=2, vec_env="subproc")
    with pytest.raises(ConfigError, match=r"^controller.vec_env='subproc' is not accepted with cluster=dask"):
        controller.search(env, budget=2, seed=0, on_evaluation=lambda info: None)


def test_the_tabular_fast_path_refuses_a_cluster() -> None:
    from nas_rl.envs.factory import build_env
    from nas_rl.envs.registry import load_spec

    with pytest.raises(ConfigError, match=r"^cluster=dask is not accepted with evaluator._target_=.*TabularEvaluator"):
        build_env(load_spec("Tabular-v0"), EvaluationStore(":memory:"), "run", executor=DaskExecutor(workers=1))


# ------------------------------------------------------------------------------------------ role configs


@pytest.mark.parametrize("config, where", [
    ({"_target_": "os.system", "_args_": ["true"]}, "_target_='os.system'"),
    ({"_target_": "builtins.eval", "_args_": ["1"]}, "_target_='builtins.eval'"),
    ({"_target_": "nas_rl.accuracy.proxy.ProxyTraining", "dataset": {"_target_": "builtins.eval"}},
     "dataset._target_='builtins.eval'"),
    ({"_target_": "nas_rl.latency.litert.LiteRTLatency", "device": [{"_target_": "subprocess.run"}]},
     "device[0]._target_='subprocess.run'"),
    ({"_target_": "nas_rl._util.os.system"}, "_target_='nas_rl._util.os.system'"),  # nas_rl's name, os's function
    ({"_target_": "nas_rl_lookalike.Estimator"}, "_target_='nas_rl_lookalike.Estimator'"),
], ids=["os.system", "eval", "nested", "in-a-list", "re-exported", "lookalike"])  # fmt: skip
def test_a_role_config_naming_code_outside_nas_rl_is_refused_in_one_line(config: dict, where: str) -> None:
    """By load_role (what a worker runs, with its default accepted packages) and, before anything is sent, by the
    executor: one line naming the target and what is accepted; nothing is built."""
    with pytest.raises(tasks.TargetRefused) as on_worker:
        tasks.load_role(config)
    message = str(on_worker.value)
    assert message.startswith(f"{where} is not accepted on a Dask worker: use a class or function under nas_rl.*")
    assert "\n" not in message and "nas-rl.allow-targets" in message
    with pytest.raises(tasks.TargetRefused) as on_driver:
        DaskExecutor(workers=1).describe_role(HashAccuracyDouble(), config, "accuracy")
    message = str(on_driver.value)
    assert message.startswith(f"accuracy.{where} is not accepted") and "(cluster.allow_targets)" in message


def test_a_role_is_built_on_a_worker_from_its_config_alone() -> None:
    """What load_role builds from a role's resolved config section is the role the driver built from it."""
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=["cluster=dask", "search_space=tabular", "accuracy=tabular", "latency=flops",
                                           "latency.ms_per_mac=1e-6"])  # fmt: skip
    executor = build(cfg.cluster, "cluster")
    for key in ("accuracy", "latency"):
        role = build(cfg[key], key)
        executor.describe_role(role, cfg[key], key)
        config = executor._config(role, key)
        assert json.loads(json.dumps(config)) == config and isinstance(config["space"], dict)  # resolved: data
        assert tasks.load_role(config).fingerprint() == role.fingerprint()


def test_a_role_without_a_config_is_refused_before_connecting() -> None:
    executor = DaskExecutor(workers=1)
    arch = tiny_space().decode([0] * tiny_space().num_decisions)
    with pytest.raises(ConfigError, match=r"^cluster=dask: the accuracy estimator HashAccuracyDouble was not built "):
        executor.submit(arch, "fingerprint", HashAccuracyDouble(), ChannelLatencyDouble())
    assert executor._client is None
    with pytest.raises(ConfigError, match=r"^accuracy: a Dask worker builds roles from plain data"):
        executor.describe_role(HashAccuracyDouble(), {"_target_": "nas_rl.x", "seconds": object()}, "accuracy")
    with pytest.raises(ConfigError, match=r"^cluster.allow_targets='nas_rl.' is not accepted"):
        DaskExecutor(allow_targets="nas_rl.")


# ------------------------------------------------------------------------------------------ stops


@pytest.mark.slow  # SB3 and two subprocess envs
def test_repeated_failures_in_a_subprocess_env_stop_the_search_in_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    from stable_baselines3 import PPO

    env = make_env(tmp_path / "e.sqlite", accuracy=RaisingAccuracyDouble(), max_consecutive_failures=1)
    controller = SB3Controller(functools.partial(PPO, policy="MultiInputPolicy", n_steps=42, batch_size=42),
                               n_envs=2, vec_env="subproc")  # fmt: skip
    with pytest.raises(RepeatedFailures, match=r"^the search stopped: the last 1 evaluations all failed"):
        controller.search(env, budget=4, seed=0, on_evaluation=lambda info: None)
    assert "Traceback" not in capfd.readouterr().err  # no worker died printing one
