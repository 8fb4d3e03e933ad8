"""Resume after SIGKILL in the middle of an evaluation, refusals, and a multirun sharing one store."""

from __future__ import annotations

import csv
import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.cli import nas_rl_command, run_cli
from tests.helpers.tiny import TINY_OVERRIDES, tiny_space

#: Every test runs the real entry point in a subprocess (real proxy training, most with LiteRT measurement).
pytestmark = pytest.mark.slow


def count_episodes(store: Path) -> int:
    if not store.exists():
        return 0
    try:
        with sqlite3.connect(store, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM episodes").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_resume_after_sigkill_mid_evaluation_loses_and_repeats_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*TINY_OVERRIDES, "controller=evolution", "controller.population_size=2", "controller.sample_size=1",
            "search.budget=4", "search.export=false", f"hydra.run.dir={run_dir}"]  # fmt: skip
    process = subprocess.Popen(nas_rl_command() + args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while count_episodes(run_dir / "evaluations.sqlite") < 2 and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    time.sleep(0.3)  # inside the third evaluation (proxy training or conversion)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = count_episodes(run_dir / "evaluations.sqlite")
    assert 2 <= killed_at < 4

    result = run_cli([f"resume={run_dir}", f"hydra.run.dir={tmp_path / 'resume'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    best = json.loads((run_dir / "best.json").read_text())
    assert best["evaluations"] == 4
    with sqlite3.connect(run_dir / "evaluations.sqlite") as conn:
        rows = conn.execute("SELECT arch, fingerprint, COUNT(*) FROM evaluations GROUP BY 1, 2").fetchall()
        episodes = conn.execute("SELECT COUNT(DISTINCT run_id), COUNT(*) FROM episodes").fetchone()
    assert all(count == 1 for _, _, count in rows)  # no architecture evaluated twice
    assert episodes == (1, 4)  # one run, its budget counted across both parts
    # The controller went on from its checkpoint: with a population of 2, each architecture after the first two
    # is one decision away from one of the two before it, across the kill too (a fresh controller would start
    # over with random ones). Compared as tokens (a decision the network ignores, as a width rounded to the same
    # channels, reads back unchanged: hence <= 1).
    space = tiny_space()
    tokens = [space.encode(space.parse(row["arch"])) for row in csv.DictReader(open(run_dir / "evaluations.csv"))]
    for index in (2, 3):
        distances = [sum(a != b for a, b in zip(tokens[index], parent)) for parent in tokens[index - 2 : index]]
        assert min(distances) <= 1, (index, killed_at, distances)
    assert len(json.loads((run_dir / "controller.json").read_text())["population"]) == 2


def test_resume_refuses_a_non_run_and_changed_evaluation_settings(tmp_path: Path) -> None:
    result = run_cli([f"resume={tmp_path}"], tmp_path, timeout=120)
    assert result.returncode == 2 and "not a nas-rl run directory" in result.stderr
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"run_id": "x"}))
    (run_dir / "config.yaml").write_text("accuracy:\n  epochs: 2\nsearch:\n  budget: 3\n")
    result = run_cli([f"resume={run_dir}", "accuracy.epochs=0.5"], tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "accuracy.epochs" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def cheap_run_args(run_dir: Path) -> list[str]:
    """A real search run that takes seconds: tiny networks, FLOP latency, random search, no export."""
    space_and_training = [o for o in TINY_OVERRIDES if not o.startswith("latency.")]
    return [*space_and_training, "latency=flops", "latency.ms_per_mac=1e-6", "controller=random",
            "search.budget=1", "search.export=false", f"hydra.run.dir={run_dir}"]  # fmt: skip


def test_resume_compares_the_composed_config_refusing_other_evaluations_or_store(tmp_path: Path) -> None:
    """A group choice is judged by the values it changes, and so is search.store; a run's own values and other
    keys (the budget) are accepted."""
    run_dir = tmp_path / "run"
    result = run_cli(cheap_run_args(run_dir), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    refusals = [(["experiment=tabular"], ("search_space.", "accuracy.", "latency.")),
                ([f"search.store={tmp_path / 'other.sqlite'}"], ("search.store",))]  # fmt: skip
    for number, (overrides, named) in enumerate(refusals):
        result = run_cli([f"resume={run_dir}", *overrides, f"hydra.run.dir={tmp_path / str(number)}"], tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
        assert "is refused" in lines[0] and all(key in lines[0] for key in named), lines[0]
    assert not (tmp_path / "other.sqlite").exists()

    again = [f"resume={run_dir}", "accuracy.epochs=0.1", "search.budget=2", f"hydra.run.dir={tmp_path / 'more'}"]
    result = run_cli(again, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "best.json").read_text())["evaluations"] == 2
    assert count_episodes(run_dir / "evaluations.sqlite") == 2


def test_multirun_jobs_share_one_store(tmp_path: Path) -> None:
    """Same seed, two targets: the second job's architectures are all cache hits from the first job."""
    store = tmp_path / "shared.sqlite"
    result = run_cli(
        ["-m", *TINY_OVERRIDES, "controller=random", "search.budget=2", "search.export=false", "reward.target_ms=0.2,0.4",
         f"search.store={store}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [json.loads((tmp_path / "sweep" / str(n) / "best.json").read_text()) for n in (0, 1)]
    assert [job["evaluations"] for job in jobs] == [2, 2]
    assert jobs[1]["cache_hits"] == 2
    assert jobs[0]["best"]["arch"] == jobs[1]["best"]["arch"]
