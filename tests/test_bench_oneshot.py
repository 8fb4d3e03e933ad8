"""bench/controllers_oneshot.py's own parts: how broadly a run samples (decision entropy), and its resume, which
refuses an --out holding runs of other settings instead of mixing them."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest

from nas_rl.config import build
from nas_rl.envs.registry import load_spec
from tests.helpers.bench import bench_module


@pytest.fixture(scope="module")
def oneshot():
    return bench_module("controllers_oneshot")


@pytest.fixture(scope="module")
def space():
    return build(load_spec("MnasNet-OneShot-v1").search_space, "search_space")


def test_decision_entropy_is_0_for_one_architecture_and_near_1_for_uniform_samples(oneshot, space) -> None:
    archs = [str(arch) for arch in space.sample_archs(seed=0, count=3000)]
    assert set(oneshot.decision_entropy([archs[0]] * 100, space).values()) == {0.0}
    uniform = oneshot.decision_entropy(archs, space)
    assert len(uniform) == sum(d.num_choices > 1 for d in space.decisions)
    # Choices that build the same layer are one token (block 1's widths x0.75 and x1 both round to 16 channels),
    # so a few decisions stay below 1 even for uniform samples.
    assert np.median(list(uniform.values())) > 0.95 and min(uniform.values()) > 0.5, uniform


def test_resume_refuses_an_out_of_other_settings(oneshot, tmp_path: Path) -> None:
    finished = {"env": "nas_rl/MnasNet-OneShot-v1", "budget": 500, "set": [], "best": 0.5, "runs": {}}
    (tmp_path / "oneshot.json").write_text(json.dumps(finished))
    with pytest.raises(SystemExit, match="give another --out"):
        oneshot.main(["--budget", "2000", "--out", str(tmp_path), "--store", str(tmp_path / "store.sqlite")])
    assert json.loads((tmp_path / "oneshot.json").read_text()) == finished  # nothing finished is lost


def runs_of(space) -> dict:
    """Two finished runs as run_one returns them: mnasnet repeats b, random proposes 6 distinct architectures."""
    a, b, c, d, *others = (str(arch) for arch in space.sample_archs(seed=1, count=10))
    mnasnet = {"rewards": [0.1, 0.5, 0.5, 0.5, 0.2, 0.9], "archs": [a, b, b, b, c, d]}
    random = {"rewards": [0.3] * 6, "archs": others}
    return {name: {**run, "seed": 100, "best_arch": run["archs"][-1], "seconds": 3.0}
            for name, run in (("mnasnet", mnasnet), ("random", random))}  # fmt: skip


def test_best_within_distinct_counts_what_a_run_evaluated_not_its_repeats(oneshot, space) -> None:
    rewards, archs = [0.1, 0.5, 0.5, 0.5, 0.2, 0.9], ["a", "b", "b", "b", "c", "d"]
    assert oneshot.best_within_distinct(rewards, archs, 2) == 0.5  # the repeats of b cost nothing
    assert oneshot.best_within_distinct(rewards, archs, 3) == 0.5
    assert oneshot.best_within_distinct(rewards, archs, 4) == 0.9
    assert oneshot.best_within_distinct(rewards, archs, 5) is None  # the run never evaluated 5
    summaries = {name: [oneshot.summary(run, [2, 5], space)] for name, run in runs_of(space).items()}
    table = oneshot.at_equal_cost(summaries, [2, 5])
    assert "| mnasnet | 0.5000 | none reached it |" in table and "| random | 0.3000 | 0.3000 |" in table


def test_a_summary_holds_what_the_tables_need_in_little_space(oneshot, space) -> None:
    run = runs_of(space)["mnasnet"]
    summary = oneshot.summary(run, [2, 5], space)
    assert summary["found"] == {"2": 0.5, "5": 0.5} and summary["within"] == {"2": 0.5, "5": None}
    assert (summary["best"], summary["distinct"], summary["proposals"], summary["seed"]) == (0.9, 4, 6, 100)
    assert summary["entropy"] == pytest.approx(oneshot.decision_entropy(run["archs"], space), abs=1e-4)
    assert len(json.dumps(summary)) < 3000  # what a committed study holds per run, whatever the budget
    table = oneshot.markdown({"mnasnet": [summary]}, [2, 5], best=1.0)
    assert "| mnasnet | 1 | 0.5000 | 0.5000 | 0.5000 | 0.4500 |" in table  # regret 1 - 0.5; mean of the last 100
    assert table.endswith("| 4 | 0.500 |")  # distinct architectures; seconds per proposal


def test_a_study_goes_on_from_its_summaries_when_its_full_runs_are_gone(oneshot, space, tmp_path: Path, capsys) -> None:
    """A summaries file (committed by an earlier session) counts as finished runs: nothing is rerun, the tables
    come from it, and a file of other settings is refused untouched."""
    summaries = tmp_path / "kept.json"
    runs = {name: [oneshot.summary(run, [2, 5], space)] for name, run in runs_of(space).items()}
    settings = {"env": "nas_rl/MnasNet-OneShot-v1", "budget": 6, "set": [], "envs_per_worker": 1, "checkpoints": [2, 5]}
    summaries.write_text(json.dumps({**settings, "best": 0.9, "runs": runs}))
    argv = ["--controllers", "mnasnet,random", "--seeds", "1", "--budget", "6", "--checkpoints", "2,5",
            "--out", str(tmp_path / "out"), "--store", str(tmp_path / "store.sqlite"), "--summaries", str(summaries)]  # fmt: skip
    oneshot.main(argv)  # both (controller, seed 100) pairs are in the summaries: no search runs
    printed = capsys.readouterr().out
    assert "best reward any run found: 0.9000" in printed
    assert "| mnasnet | 1 | 0.5000 | 0.5000 | 0.4000 |" in printed and "| random | 1 | 0.3000 | 0.3000 |" in printed
    assert not (tmp_path / "store.sqlite").exists() and json.loads(summaries.read_text())["runs"] == runs
    before = summaries.read_text()
    with pytest.raises(SystemExit, match="give other --summaries"):
        oneshot.main([*argv, "--table", "--set", "algorithm.ent_coef=0.01"])
    assert summaries.read_text() == before


class EnvScoredByAnotherSupernet(gym.Env):
    """Test double of a one-shot env whose accuracy fingerprint names another supernet (another machine's)."""

    observation_space = gym.spaces.Discrete(2)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, **settings) -> None:
        self.closed = False
        self.evaluator = SimpleNamespace(accuracy=SimpleNamespace(fingerprint=lambda: {"checkpoint_sha256": "other"}))

    def close(self) -> None:
        self.closed = True


def test_a_run_scored_by_another_supernet_is_refused_before_it_searches(oneshot, monkeypatch) -> None:
    made = []
    monkeypatch.setattr(
        oneshot.gym, "make", lambda env_id, **settings: made.append(EnvScoredByAnotherSupernet()) or made[-1]
    )
    with pytest.raises(SystemExit, match="not with the .*'mine'.* of the runs it would join"):
        oneshot.run_one("nas_rl/MnasNet-OneShot-v1", "random", 100, 10, "store.sqlite", {},
                        scored_by={"checkpoint_sha256": "mine"})  # fmt: skip
    assert made[0].closed


class OneShotEnvDouble(EnvScoredByAnotherSupernet):
    """Test double of a one-shot env for building a controller against: the MnasNet space's 42 decisions."""

    search_space = SimpleNamespace(num_decisions=42)


@pytest.mark.parametrize(("name", "envs", "rollout"), [("mnasnet", 8, 1), ("ppo", 8, 1), ("a2c", 2, 1)])
def test_envs_per_worker_never_changes_how_many_architectures_an_update_sees(oneshot, monkeypatch, name, envs,
                                                                             rollout) -> None:  # fmt: skip
    """--envs-per-worker 4 on 2 workers: 8 envs with rollouts of 1 architecture (4 per env cut by 4); a2c's rollout
    of 1 architecture cannot be cut, so it steps 1 env per worker (an update sees 2 architectures either way)."""
    built = []

    class Built(Exception):
        pass

    def capture(config, group):
        built.append(config)
        raise Built

    monkeypatch.setattr(oneshot.gym, "make", lambda env_id, **settings: OneShotEnvDouble())
    monkeypatch.setattr(oneshot, "build", capture)
    with pytest.raises(Built):
        oneshot.run_one("nas_rl/MnasNet-OneShot-v1", name, 100, 10, "store.sqlite", {},
                        executor=SimpleNamespace(workers=2), envs_per_worker=4)  # fmt: skip
    assert (built[0].n_envs, built[0].rollout_archs) == (envs, rollout)


def test_runs_of_another_controller_config_are_refused_before_any_search(oneshot, space, tmp_path: Path) -> None:
    """A summaries file whose mnasnet runs were made with another config (an older default) is refused before
    the cluster or any search starts, and left untouched; runs of this config (or of no recorded one) join."""
    ours = oneshot.config_digest(oneshot.run_config("mnasnet", space.num_decisions))
    assert ours == oneshot.config_digest(oneshot.run_config("mnasnet", space.num_decisions))  # stable
    assert ours != oneshot.config_digest(oneshot.run_config("mnasnet", space.num_decisions, ("algorithm.n_epochs=5",)))
    assert ours != oneshot.config_digest(oneshot.run_config("mnasnet", space.num_decisions, (), 2, 4))  # 8 envs
    summaries = tmp_path / "kept.json"
    runs = {name: [oneshot.summary(run, [2, 5], space)] for name, run in runs_of(space).items()}
    settings = {"env": "nas_rl/MnasNet-OneShot-v1", "budget": 6, "set": [], "envs_per_worker": 1, "checkpoints": [2, 5]}
    argv = ["--controllers", "mnasnet,random", "--seeds", "2", "--budget", "6", "--checkpoints", "2,5",
            "--out", str(tmp_path / "out"), "--store", str(tmp_path / "store.sqlite"), "--summaries", str(summaries)]  # fmt: skip
    runs["mnasnet"][0]["controller"] = "0123456789abcdef"
    summaries.write_text(json.dumps({**settings, "best": 0.9, "runs": runs}))
    before = summaries.read_text()
    with pytest.raises(SystemExit, match=f"holds mnasnet runs of controller config 0123456789abcdef, not of this "
                                         f"mnasnet's {ours} \\(its default changed, or --set\\)"):  # fmt: skip
        oneshot.main(argv)
    assert summaries.read_text() == before and not (tmp_path / "store.sqlite").exists()
    runs["mnasnet"][0]["controller"] = ours  # a run of this config joins: seed 100 is finished, nothing runs
    summaries.write_text(json.dumps({**settings, "best": 0.9, "runs": runs}))
    oneshot.main([*argv[:3], "1", *argv[4:]])
    assert json.loads(summaries.read_text())["runs"]["mnasnet"][0]["controller"] == ours
    assert not (tmp_path / "store.sqlite").exists()


def test_joined_studies_show_side_by_side_with_the_differences_and_their_intervals(
    oneshot, space, tmp_path: Path, capsys
) -> None:
    """--join puts another summaries file's runs beside this one's (a name already shown gets its file's name);
    --versus gives each difference in the best found with Welch's interval; another study or supernet is refused."""
    archs = [str(arch) for arch in space.sample_archs(seed=1, count=6)]

    def study(path: Path, best: dict[str, list[float]], checkpoint: str = "c1", budget: int = 6) -> None:
        runs = {name: [oneshot.summary({"rewards": [0.1 * i] * 5 + [reward], "archs": archs, "seed": 100 + i, "seconds": 1.0,
                                        "accuracy": {"checkpoint_sha256": checkpoint}}, [2, 6], space)
                       for i, reward in enumerate(rewards)] for name, rewards in best.items()}  # fmt: skip
        settings = {"env": "nas_rl/MnasNet-OneShot-v1", "budget": budget, "set": [], "envs_per_worker": 1}
        path.write_text(json.dumps({**settings, "checkpoints": [2, 6], "best": 0.8, "runs": runs}))

    study(tmp_path / "new.json", {"mnasnet": [0.6, 0.7, 0.8]})
    study(tmp_path / "old.json", {"mnasnet": [0.5, 0.6, 0.7], "random": [0.2, 0.3, 0.4]})
    argv = ["--table", "--controllers", "mnasnet", "--budget", "6", "--checkpoints", "2,6", "--summaries",
            str(tmp_path / "new.json"), "--join", str(tmp_path / "old.json"), "--versus", "mnasnet"]  # fmt: skip
    oneshot.main(argv)
    printed = capsys.readouterr().out
    assert "| mnasnet | 3 |" in printed and "| mnasnet (old) | 3 |" in printed and "| random | 3 |" in printed
    # 0.1 apart, both spreads 0.1 over 3 runs: Welch's 95% interval is 0.1 -+ t(0.975, 4) * sqrt(2 * 0.01 / 3)
    assert "| mnasnet (old) | +0.0000 [-0.2267, +0.2267] | +0.1000 [-0.1267, +0.3267] | 3 of 3 seeds |" in printed
    assert "| random | +0.0000 [-0.2267, +0.2267] | +0.4000 [+0.1733, +0.6267] | 3 of 3 seeds |" in printed
    with pytest.raises(SystemExit, match="--versus evolution: no such controller"):
        oneshot.main([*argv[:-1], "evolution"])
    study(tmp_path / "other-budget.json", {"random": [0.5]}, budget=7)
    with pytest.raises(SystemExit, match="only runs of the same study join"):
        oneshot.main([*argv[:-4], "--join", str(tmp_path / "other-budget.json")])
    study(tmp_path / "other-supernet.json", {"random": [0.5]}, checkpoint="c2")
    with pytest.raises(SystemExit, match="scored by 2 accuracies"):
        oneshot.main([*argv[:-4], "--join", str(tmp_path / "other-supernet.json")])
