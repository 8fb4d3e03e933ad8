"""Run reports: the Pareto front, plots, the summary of one run and the comparison of several."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.image import imread

from nas_rl.arch import ArchSpec
from nas_rl.cli import report_main
from nas_rl.errors import EvaluationFailed
from nas_rl.evaluation.evaluator import Evaluator
from nas_rl.evaluation.reward import MnasReward
from nas_rl.evaluation.store import EvaluationStore
from nas_rl.latency.base import LatencyStats
from nas_rl.runs.run_report import best_so_far, load_run, pareto_front, write_run_plots
from nas_rl.runs.search import write_outputs
from tests.helpers.doubles import ChannelLatencyDouble, HashAccuracyDouble
from tests.helpers.tiny import tiny_space


def episode(arch: str, accuracy: float | None, latency_ms: float | None, reward: float = 0.0, **extra: Any) -> dict:
    status = "ok" if accuracy is not None else "failed"
    return {"arch": arch, "status": status, "cached": 0, "accuracy": accuracy, "latency_ms": latency_ms,
            "reward": reward, **extra}  # fmt: skip


HAND_MADE = [
    episode("a", 0.50, 1.0, 0.50),
    episode("b", 0.70, 2.0, 0.60),
    episode("c", 0.60, 2.5, 0.55),  # dominated by b
    episode("d", None, None),  # failed: never on the front
    episode("b", 0.70, 2.0, 0.60, cached=1),  # a cache hit of b counts once
    episode("e", 0.70, 2.0, 0.60),  # ties b: neither dominates
    episode("f", 0.90, 3.0, 0.70),
    episode("g", 0.40, 1.0, 0.40),  # as fast as a, less accurate
    episode("h", 0.90, 3.5, 0.65),  # as accurate as f, slower
]


def test_pareto_front_of_a_hand_made_run() -> None:
    front = pareto_front(HAND_MADE)
    assert [row["arch"] for row in front] == ["a", "b", "e", "f"]
    assert front[0] == {"arch": "a", "accuracy": 0.5, "latency_ms": 1.0, "reward": 0.5}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(1, 5)), max_size=12))
def test_pareto_front_is_the_set_no_point_dominates(points: list[tuple[int, int]]) -> None:
    episodes = [episode(f"arch{i}", acc / 4, float(lat)) for i, (acc, lat) in enumerate(points)]

    def dominated(p: dict) -> bool:
        return any(
            q["accuracy"] >= p["accuracy"] and q["latency_ms"] <= p["latency_ms"]
            and (q["accuracy"], q["latency_ms"]) != (p["accuracy"], p["latency_ms"])
            for q in episodes
        )  # fmt: skip

    assert {row["arch"] for row in pareto_front(episodes)} == {p["arch"] for p in episodes if not dominated(p)}


def test_best_so_far_counts_failures_as_zero() -> None:
    rows = [episode("a", 0.5, 1.0, 0.4), episode("b", None, None, 0.0), episode("c", 0.9, 1.0, 0.8)]
    np.testing.assert_allclose(best_so_far(rows), [0.4, 0.4, 0.8])
    assert len(best_so_far([])) == 0


def test_write_run_plots_from_episodes(tmp_path: Path) -> None:
    write_run_plots(HAND_MADE, tmp_path, target_ms=2.2)
    rows = list(csv.DictReader(open(tmp_path / "pareto.csv")))
    assert [row["arch"] for row in rows] == ["a", "b", "e", "f"]
    assert list(rows[0]) == ["arch", "accuracy", "latency_ms", "reward"]
    for name in ("pareto.png", "progress.png"):
        height, width, _ = imread(tmp_path / name).shape
        assert height > 100 and width > 100


@pytest.mark.parametrize("episodes", [[], [episode("x", None, None)]], ids=["empty", "all-failed"])
def test_write_run_plots_without_successful_evaluations(episodes: list[dict], tmp_path: Path) -> None:
    write_run_plots(episodes, tmp_path, target_ms=None)
    assert (tmp_path / "pareto.csv").read_text().strip() == "arch,accuracy,latency_ms,reward"
    assert (tmp_path / "pareto.png").stat().st_size > 0 and (tmp_path / "progress.png").stat().st_size > 0


# ------------------------------------------------------------------------- run folders, as a search writes them


class FailingLatencyDouble(ChannelLatencyDouble):
    """Test double: the channel latency, except for the given architectures, whose measurement fails."""

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing

    def measure(self, arch: ArchSpec) -> LatencyStats:
        if arch.to_string() in self.failing:
            raise EvaluationFailed("TFLite conversion failed: test double")
        return super().measure(arch)


def make_run(run_dir: Path, seed: int, count: int, target_ms: float, controller: str | None) -> list[dict]:
    """A run folder written by the search's own output code, from test doubles: ``count`` sampled architectures,
    the second one failing, then the first one again (a cache hit)."""
    space, rng = tiny_space(), np.random.default_rng(seed)
    archs = [space.sample_arch(rng) for _ in range(count)]
    archs.append(archs[0])
    store = EvaluationStore(run_dir / "evaluations.sqlite")
    latency = FailingLatencyDouble({archs[1].to_string()})
    evaluator = Evaluator(HashAccuracyDouble(), latency, MnasReward(target_ms=target_ms), store, run_id="run")
    for arch in archs:
        evaluator.evaluate(arch)
    result = write_outputs(store, "run", run_dir)
    store.close()
    config = {
        "seed": seed,
        "search": {"budget": len(archs)},
        "reward": {"_target_": "nas_rl.evaluation.reward.MnasReward", "target_ms": target_ms, "alpha": -0.07, "beta": -0.07},
        "controller": {"_target_": "nas_rl.controllers.sb3.SB3Controller",
                       "algorithm": {"_target_": "sb3_contrib.MaskablePPO", "_partial_": True}},
    }  # fmt: skip
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    if controller is not None:
        (run_dir / ".hydra").mkdir()
        choices = {"hydra": {"runtime": {"choices": {"controller": controller, "reward": "soft"}}}}
        (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(choices))
    return result.episodes


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, list[dict]]]:
    """Two runs as the jobs of a Hydra multirun folder: ``0/``, ``1/`` and ``multirun.yaml``."""
    sweep = tmp_path_factory.mktemp("sweep")
    made = []
    for job, (count, target, controller) in enumerate([(6, 1.0, "random"), (4, 2.0, None)]):
        run_dir = sweep / str(job)
        run_dir.mkdir()
        made.append((run_dir, make_run(run_dir, job, count, target, controller)))
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"mode": "MULTIRUN"}}))
    return made


def test_load_run_reads_what_the_search_wrote(runs: list[tuple[Path, list[dict]]]) -> None:
    run_dir, episodes = runs[0]
    run = load_run(run_dir)
    assert [row["arch"] for row in run.episodes] == [row["arch"] for row in episodes]
    assert [row["reward"] for row in run.episodes] == pytest.approx([row["reward"] for row in episodes])
    assert run.summary == {"evaluations": 7, "cache_hits": 1, "failures": 1}
    assert run.episodes[1]["status"] == "failed" and run.episodes[1]["latency_ms"] is None
    assert run.best["reward"] == max(row["reward"] for row in episodes)
    assert (run.controller, run.target_ms, run.budget) == ("random", 1.0, 7)
    assert load_run(runs[1][0]).controller == "MaskablePPO"  # no .hydra/: the controller's class


def test_report_of_one_run_prints_summary_and_writes_plots(
    runs: list[tuple[Path, list[dict]]], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, episodes = runs[0]
    report_main([str(run_dir)])
    out = capsys.readouterr().out
    for label in ("best architecture", "accuracy", "latency", "reward", "evaluations", "cache hits", "failures"):
        assert label in out
    assert "random" in out and "1 ms" in out
    rows = list(csv.DictReader(open(run_dir / "pareto.csv")))
    assert {row["arch"] for row in rows} == {row["arch"] for row in pareto_front(episodes)}
    assert (run_dir / "pareto.png").is_file() and (run_dir / "progress.png").is_file()


def report_command() -> list[str]:
    script = Path(sys.executable).parent / "nas-rl-report"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from nas_rl.cli import report_main; report_main()"]


def run_report(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(report_command() + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # a subprocess run of the entry point
def test_report_compares_two_runs_as_a_user_runs_it(runs: list[tuple[Path, list[dict]]], tmp_path: Path) -> None:
    result = run_report([str(run_dir) for run_dir, _ in runs] + ["--out", "compare"], tmp_path)
    assert result.returncode == 0, result.stderr
    for header in ("controller", "target", "budget", "best reward", "best acc", "best latency", "cache hits"):
        assert header in result.stdout
    rows = list(csv.DictReader(open(tmp_path / "compare" / "comparison.csv")))
    assert [row["run"] for row in rows] == ["0", "1"]
    assert [row["controller"] for row in rows] == ["random", "MaskablePPO"]
    for row, (_, episodes) in zip(rows, runs):
        assert float(row["best_reward"]) == pytest.approx(max(e["reward"] for e in episodes))
        assert (row["evaluations"], row["cache_hits"], row["failures"]) == (str(len(episodes)), "1", "1")
    assert imread(tmp_path / "compare" / "comparison.png").shape[0] > 100


@pytest.mark.slow  # subprocess runs of the entry point
@pytest.mark.parametrize("bad", ["no/such/run", "empty"], ids=["missing", "not-a-run"])
def test_report_of_a_bad_path_is_one_line_and_exit_code_2(bad: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_report([bad], tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and bad in lines[0] and "Traceback" not in result.stderr, result.stderr


@pytest.mark.slow  # a subprocess run of the entry point
def test_report_of_a_sweep_folder_compares_its_finished_jobs(
    runs: list[tuple[Path, list[dict]]], tmp_path: Path
) -> None:
    """nas-rl-report SWEEP_DIR: the job folders, in job order; a failed job (no evaluations.csv) is noted."""
    sweep = tmp_path / "multirun"
    shutil.copytree(runs[0][0].parent, sweep)
    for job in ("2", "10"):  # 10 after 2: Hydra's job numbers, not their text order
        shutil.copytree(sweep / "1", sweep / job)
    (sweep / "11" / ".hydra").mkdir(parents=True)  # a job that failed before writing its outputs
    result = run_report([str(sweep)], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(sweep / "comparison.csv")))  # written next to the jobs
    assert [row["run"] for row in rows] == ["0", "1", "2", "10"]
    note = f"nas-rl-report: note: skipped {sweep / '11'}: no evaluations.csv (a job that failed or still runs)"
    assert result.stderr.strip() == note


def test_report_of_a_glob_over_a_sweep_skips_its_files(
    runs: list[tuple[Path, list[dict]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """nas-rl-report SWEEP_DIR/*: the shell also passes multirun.yaml; it is skipped with a note."""
    sweep = runs[0][0].parent
    report_main([str(path) for path in sorted(sweep.iterdir())] + ["--out", str(tmp_path)])
    note = f"nas-rl-report: note: skipped {sweep / 'multirun.yaml'}: a file, not a run folder"
    assert capsys.readouterr().err.strip() == note
    assert [row["run"] for row in csv.DictReader(open(tmp_path / "comparison.csv"))] == ["0", "1"]


def test_report_refuses_paths_without_runs(
    runs: list[tuple[Path, list[dict]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = runs[0][0].parent
    (tmp_path / "empty_sweep" / "0" / ".hydra").mkdir(parents=True)  # its only job failed
    cases = [
        ([sweep / "multirun.yaml"], "is not a run directory: a file, not a folder"),
        ([sweep / "0", tmp_path / "no_such_run"], "is not a run directory: no such directory"),
        ([tmp_path / "empty_sweep"], "is not a run directory: it has no evaluations.csv"),
    ]
    for paths, named in cases:
        with pytest.raises(SystemExit) as exited:
            report_main([str(path) for path in paths])
        lines = capsys.readouterr().err.strip().splitlines()
        assert exited.value.code == 2 and len(lines) == 1 and f"{paths[-1]} {named}" in lines[0], lines
