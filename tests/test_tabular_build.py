"""A real tiny tabular benchmark end to end: build in parts (real proxy training, real LiteRT), resume, pack,
load, look up every architecture, run the env through the checkers and the benchmarks on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from nas_rl.benchmark import load_table
from nas_rl.benchmark.estimators import TabularAccuracy, TabularLatency
from nas_rl.envs.registry import make_env
from nas_rl.tools import build_table as tabular_build
from tests.helpers.bench import bench_module
from tests.helpers.tables import tiny_recipe_file

#: Real proxy training and LiteRT measurement of four networks, SB3 controllers in the benchmarks.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(build folder, packed table) of the 4-architecture recipe, built the way a long build is: in parts,
    one of them cut short by --limit and resumed."""
    folder = tmp_path_factory.mktemp("tabular")
    recipe, out = str(tiny_recipe_file(folder)), str(folder / "build")
    run = ["run", "--recipe", recipe, "--out", out, "--no-progress", "--parts", "2"]
    assert tabular_build.main([*run, "--part", "0", "--limit", "1"]) == 0
    assert tabular_build.build_status(out)["accuracy"]["done"] == 1
    assert tabular_build.main([*run, "--part", "0"]) == 0  # resumes: only index 2 is left in part 0
    assert tabular_build.main([*run, "--part", "1"]) == 0
    table = folder / "tiny.npz"
    assert tabular_build.main(["pack", "--out", out, "--table", str(table)]) == 0
    return Path(out), table


def test_build_in_parts_resumes_without_repeating_work(built: tuple[Path, Path]) -> None:
    out, _ = built
    for phase in ("accuracy", "latency"):
        rows = [json.loads(line) for file in sorted(out.glob(f"{phase}-*.jsonl")) for line in file.read_text().splitlines()]
        assert sorted(row["index"] for row in rows) == [0, 1, 2, 3]  # each architecture exactly once
    status = tabular_build.build_status(out)
    assert status["accuracy"]["missing"] == status["latency"]["missing"] == 0
    assert status["seconds_per_architecture"] > 0


def test_packed_table_holds_every_architecture_with_its_recipe_and_device(built: tuple[Path, Path]) -> None:
    out, path = built
    table = load_table(path)
    assert table.name == "tabular-tiny" and len(table) == 4
    assert table.meta["recipe"]["accuracy"]["kind"] == "proxy_training"
    assert table.meta["recipe"]["latency"]["kind"] == "litert"
    assert table.device["runtime"].startswith("litert") and table.device["threads"] == 1
    assert table.meta["recipe"]["config"]["accuracy"]["epochs"] == 0.25
    rows = {phase: {} for phase in ("accuracy", "latency")}
    for line in (line for f in out.glob("*.jsonl") for line in f.read_text().splitlines()):
        row = json.loads(line)
        rows[row["phase"]][row["index"]] = row
    accuracy, latency = TabularAccuracy(path, space=table.space), TabularLatency(path, space=table.space)
    for index, tokens in enumerate(table.space.all_tokens()):
        arch = table.space.decode(tokens)
        assert table.columns["arch"][index] == arch.to_string()
        # What the estimators answer is the packed row, and the packed row is what the build measured.
        assert accuracy.accuracy(arch) == table.columns["accuracy"][index] == rows["accuracy"][index]["accuracy"]
        stats = latency.measure(arch)
        assert stats.median_ms == table.columns["latency_median_ms"][index] == rows["latency"][index]["median_ms"] > 0
        assert stats.runs == table.columns["latency_runs"][index] >= 10
    assert path.stat().st_size < 5 * 2**20


def test_env_on_the_real_table_passes_the_checkers(built: tuple[Path, Path]) -> None:
    _, path = built
    gym_check_env(make_env("Tabular-v0", table=str(path)), skip_render_check=True)
    sb3_check_env(make_env("Tabular-v0", table=str(path)), warn=True)


def test_controller_benchmark_runs_every_controller_tiny(built: tuple[Path, Path], tmp_path: Path) -> None:
    _, path = built
    result = bench_module("controllers").main(
        ["--table", str(path), "--seeds", "2", "--budget", "4", "--checkpoints", "2,4", "--out", str(tmp_path)]
    )
    assert set(result["curves"]) == {"a2c", "evolution", "mnasnet", "ppo", "random", "recurrent_ppo"}
    for curve in result["curves"].values():
        assert curve.shape == (2, 4) and (curve >= 0).all() and (curve <= 1).all()
        assert (np.diff(curve, axis=1) <= 0).all()  # best-so-far never gets worse
    assert (tmp_path / "regret.png").stat().st_size > 0


def test_overhead_and_env_steps_benchmarks_run_tiny(built: tuple[Path, Path]) -> None:
    _, path = built
    rows = bench_module("overhead").main(["--table", str(path), "--budget", "4", "--controllers", "random,mnasnet"])
    # Which component is faster is the benchmark's finding (README), not a property to test: only its rows.
    assert {"proxy evaluation", "env (TabularEvaluator, no history)"} <= {row["component"] for row in rows}
    assert all(np.isfinite(row["seconds"]) and row["seconds"] >= 0 for row in rows)
    steps = bench_module("env_steps").main(["--table", str(path), "--seconds", "0.1", "--repeats", "1"])
    assert len(steps) == 4 and all(row["steps_per_second"] > 0 for row in steps)
