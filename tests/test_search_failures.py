"""A search goes on after failed evaluations: each controller spends its whole budget through `run_search`, and
the failures are stored (status failed, their reason, reward 0) and counted in the summary."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import zlib
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from omegaconf import open_dict
from rich.console import Console

from nas_rl.accuracy.base import AccuracyEstimator
from nas_rl.arch import ArchSpec
from nas_rl.errors import EvaluationFailed
from nas_rl.runs.search import print_summary, run_search
from tests.helpers.controllers import controller_params
from tests.helpers.doubles import ChannelLatencyDouble
from tests.helpers.tiny import TINY_OVERRIDES

BUDGET = 8
#: Evolution with a population below the budget, so failed members (reward 0) go through its tournaments.
CONTROLLER_OVERRIDES = {"evolution": ["controller.population_size=4", "controller.sample_size=2"]}
REASON = "proxy training diverged: loss is nan (test double)"


class DivergingAccuracyDouble(AccuracyEstimator):
    """Test double: proxy training that diverges on every architecture whose first block has kernel 5 (half of
    the first block's kernel choices), and a deterministic pseudo-accuracy from the block string otherwise."""

    def accuracy(self, arch: ArchSpec) -> float:
        if arch.stages[0].kernel == 5:
            raise EvaluationFailed(REASON)
        return 0.5 + (zlib.crc32(arch.to_string().encode()) % 1000) / 2000

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "diverging_double"}


def target_of(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def search_config(controller: str, run_dir: Path):
    overrides = [*TINY_OVERRIDES, f"controller={controller}", f"search.budget={BUDGET}", "search.export=false",
                 "search.progress=false", f"search.store={run_dir / 'evaluations.sqlite'}",
                 *CONTROLLER_OVERRIDES.get(controller, [])]  # fmt: skip
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with open_dict(cfg):  # the real controller, space, reward, store and outputs; doubles for the costly roles
        cfg.accuracy = {"_target_": target_of(DivergingAccuracyDouble)}
        cfg.latency = {"_target_": target_of(ChannelLatencyDouble)}
    return cfg


@pytest.mark.parametrize("controller", controller_params())  # the SB3 ones are slow
def test_search_spends_its_budget_through_failed_evaluations(controller: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_search(search_config(controller, run_dir), run_dir)

    episodes = result.episodes
    failed = [row for row in episodes if row["status"] == "failed"]
    assert len(episodes) == BUDGET and result.summary["evaluations"] == BUDGET
    assert 0 < len(failed) < BUDGET, [row["arch"] for row in episodes]
    assert episodes.index(failed[0]) < BUDGET - 1  # the search went on after its first failure
    for row in failed:
        assert row["arch"].split("_")[2] == "k5"
        assert (row["error"], row["reward"], row["accuracy"], row["latency_ms"]) == (REASON, 0.0, None, None)
    assert all(row["reward"] > 0 for row in episodes if row["status"] == "ok")

    assert result.summary["failures"] == len(failed)
    best = json.loads((run_dir / "best.json").read_text())
    assert (best["evaluations"], best["failures"]) == (BUDGET, len(failed))
    assert best["best"]["arch"].split("_")[2] == "k3"
    rows = list(csv.DictReader(open(run_dir / "evaluations.csv")))
    assert [(row["status"], row["error"], float(row["reward"])) for row in rows if row["status"] != "ok"] == [
        ("failed", REASON, 0.0)
    ] * len(failed)
    with sqlite3.connect(run_dir / "evaluations.sqlite") as conn:
        stored = conn.execute("SELECT DISTINCT error FROM evaluations WHERE status = 'failed'").fetchall()
    assert stored == [(REASON,)]

    console = Console(file=io.StringIO(), width=200)
    print_summary(result, console)
    assert re.search(rf"failures\W+{len(failed)}\b", console.file.getvalue()), console.file.getvalue()
