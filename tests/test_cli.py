"""The `nas-rl` entry point as a user runs it: a real tiny search, and one-line errors for bad input."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.tiny import TINY_OVERRIDES

pytestmark = pytest.mark.slow  # every test runs the entry point in a subprocess


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("controller=nope", "controller=nope is not accepted: controller is one of a2c, evolution, mnasnet"),
        ("reward.target_ms=-1", "reward.target_ms=-1 is not accepted"),
        ("search.budget=0", "search.budget=0 is not accepted"),
        ("accuracy.epochs=0", "accuracy.epochs=0 is not accepted"),
        ("search.no_such_key=1", "search.no_such_key"),
        ("seed=0,-1", "seed=-1 is not accepted"),
        # Wrong types, refused from the settings' type hints before anything is built.
        ("accuracy.epochs=abc", "accuracy.epochs='abc' is not accepted: use a number"),
        ("accuracy.lr=abc", "accuracy.lr='abc' is not accepted: use a number"),
        ("search_space.resolution=abc", "search_space.resolution='abc' is not accepted: use an integer"),
        ("search_space.resolution=32.5", "search_space.resolution=32.5 is not accepted: use an integer"),
        # Values that used to pass validation and crash at the first architecture.
        ("search_space.stem_channels=0", "search_space.stem_channels=0 is not accepted"),
        ("search_space.strides=[3,1,1,1,1,1,1]", "search_space.strides=[3, 1, 1, 1, 1, 1, 1] is not accepted"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(override: str, named: str, tmp_path: Path) -> None:
    result = run_cli([override], tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_real_search_end_to_end_writes_every_output(tmp_path: Path) -> None:
    """Real proxy training and real LiteRT measurement, tiny budget, the default MnasNet controller."""
    run_dir = tmp_path / "run"
    result = run_cli([*TINY_OVERRIDES, "search.budget=3", f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = ("config.yaml", "evaluations.sqlite", "evaluations.csv", "best.json", "pareto.csv", "pareto.png",
               "progress.png", "best.pt", "best.onnx", "best.tflite", "controller.zip")  # fmt: skip
    for name in outputs:
        assert (run_dir / name).is_file(), name
    for label in ("best architecture", "accuracy", "latency", "reward", "evaluations", "cache hits", "failures"):
        assert label in result.stdout
    rows = list(csv.DictReader(open(run_dir / "evaluations.csv")))
    assert len(rows) == 3
    assert all(row["status"] == "ok" and 0 <= float(row["accuracy"]) <= 1 for row in rows)
    assert all(float(row["latency_ms"]) > 0 and int(row["latency_runs"]) >= 10 for row in rows)
    best = json.loads((run_dir / "best.json").read_text())
    assert best["evaluations"] == 3 and best["failures"] == 0
    assert best["best"]["reward"] == max(float(row["reward"]) for row in rows)
    with sqlite3.connect(run_dir / "evaluations.sqlite") as conn:
        stored = conn.execute("SELECT COUNT(*) FROM evaluations WHERE status = 'ok'").fetchone()[0]
    assert stored == 3 - best["cache_hits"]
    assert "search_space:" in (run_dir / "config.yaml").read_text()
    assert max(best["export"]["max_abs_diff"].values()) < 1e-3
    assert best["export"]["retrained_accuracy"] == best["best"]["accuracy"]  # seeded training reproduces it
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
