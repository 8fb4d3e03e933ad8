"""The SQLite evaluation store and the evaluator's cache and failure paths."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from nas_rl.errors import EvaluationFailed
from nas_rl.evaluation.evaluator import Evaluator
from nas_rl.evaluation.reward import MnasReward
from nas_rl.evaluation.store import EvaluationStore
from tests.helpers.doubles import ChannelLatencyDouble, HashAccuracyDouble
from tests.helpers.tiny import tiny_space


def make_evaluator(path: Path, accuracy=None, run_id: str = "run") -> Evaluator:
    return Evaluator(
        accuracy or HashAccuracyDouble(), ChannelLatencyDouble(), MnasReward(target_ms=1.0), EvaluationStore(path), run_id
    )


def test_repeated_architecture_is_answered_from_the_store(tmp_path: Path) -> None:
    evaluator = make_evaluator(tmp_path / "e.sqlite")
    arch = tiny_space().decode((0,) * 42)
    first, second = evaluator.evaluate(arch), evaluator.evaluate(arch)
    assert not first.cached and second.cached
    assert evaluator.accuracy.calls == 1
    assert second.reward == first.reward
    # A new process (a new store object on the same file) sees the same cache.
    again = make_evaluator(tmp_path / "e.sqlite", run_id="other").evaluate(arch)
    assert again.cached and again.evaluation.id == first.evaluation.id
    assert [row["cached"] for row in evaluator.store.episodes("run")] == [0, 1]


def test_other_evaluator_settings_do_not_hit_the_cache(tmp_path: Path) -> None:
    class OtherAccuracyDouble(HashAccuracyDouble):
        def fingerprint(self):
            return {"kind": "hash_double", "epochs": 2}

    arch = tiny_space().decode((1,) * 42)
    make_evaluator(tmp_path / "e.sqlite").evaluate(arch)
    assert not make_evaluator(tmp_path / "e.sqlite", OtherAccuracyDouble()).evaluate(arch).cached


def test_failed_evaluation_is_recorded_with_reason_and_zero_reward(tmp_path: Path) -> None:
    class DivergingAccuracyDouble(HashAccuracyDouble):
        def accuracy(self, arch):
            raise EvaluationFailed("proxy training diverged: loss is nan at step 3/10")

    evaluator = make_evaluator(tmp_path / "e.sqlite", DivergingAccuracyDouble())
    outcome = evaluator.evaluate(tiny_space().decode((0,) * 42))
    assert outcome.reward == 0.0
    assert outcome.evaluation.status == "failed"
    assert "diverged" in outcome.evaluation.error
    stored = list(evaluator.store.evaluations())
    assert [(e.status, e.error) for e in stored] == [("failed", outcome.evaluation.error)]


def test_corrupt_store_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match="broken.sqlite"):
        EvaluationStore(path).lookup("x", "y")


def _register_in_fresh_store(path: str, barrier: Any, index: int) -> str:
    barrier.wait()  # every process opens the fresh store at the same moment, as vector env workers do
    return EvaluationStore(path).register_fingerprint({"worker": index})


def test_processes_opening_a_fresh_store_at_once_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = 6
    with context.Manager() as manager, context.Pool(workers) as pool:
        barrier = manager.Barrier(workers)
        for attempt in range(8):  # the race is timing-dependent: several fresh stores make it show
            path = str(tmp_path / f"fresh{attempt}.sqlite")
            keys = pool.starmap(_register_in_fresh_store, [(path, barrier, i) for i in range(workers)])
            rows = EvaluationStore(path).conn.execute("SELECT COUNT(*) FROM fingerprints").fetchone()[0]
            assert len(set(keys)) == rows == workers


def test_copying_an_in_memory_store_that_holds_evaluations_warns_once(tmp_path: Path) -> None:
    import copy
    import pickle
    import warnings

    from nas_rl.controllers.base import play_tokens
    from nas_rl.envs.nas_env import NasEnv
    from nas_rl.evaluation.evaluator import Evaluator
    from nas_rl.evaluation.reward import MnasReward
    from tests.helpers.doubles import ChannelLatencyDouble, HashAccuracyDouble
    from tests.helpers.tiny import tiny_space

    def env(store: str) -> NasEnv:
        evaluator = Evaluator(HashAccuracyDouble(), ChannelLatencyDouble(), MnasReward(1.0), EvaluationStore(store))
        return NasEnv(tiny_space(), evaluator)

    memory, file = env(":memory:"), env(str(tmp_path / "e.sqlite"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pickle.dumps(memory)  # empty: nothing is lost
        play_tokens(file, [0] * 42)
        pickle.dumps(file)  # a file: the copy reopens it
    play_tokens(memory, [0] * 42)
    with pytest.warns(UserWarning, match="in-memory evaluation store: the copy starts empty") as caught:
        clone = pickle.loads(pickle.dumps(memory))
        copy.deepcopy(memory)
    assert len(caught) == 1
    assert len(list(clone.evaluator.store.evaluations())) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pickle.dumps(clone)
