"""bench/controllers_oneshot.py's own parts: how broadly a run samples (decision entropy), and its resume, which
refuses an --out holding runs of other settings instead of mixing them."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert oneshot.token_entropy(archs, space) == pytest.approx(np.mean(list(uniform.values())))


def test_resume_refuses_an_out_of_other_settings(oneshot, tmp_path: Path) -> None:
    finished = {"env": "nas_rl/MnasNet-OneShot-v1", "budget": 500, "set": [], "best": 0.5, "runs": {}}
    (tmp_path / "oneshot.json").write_text(json.dumps(finished))
    with pytest.raises(SystemExit, match="give another --out"):
        oneshot.main(["--budget", "2000", "--out", str(tmp_path), "--store", str(tmp_path / "store.sqlite")])
    assert json.loads((tmp_path / "oneshot.json").read_text()) == finished  # nothing finished is lost


def test_best_within_distinct_counts_what_a_run_evaluated_not_its_repeats(oneshot) -> None:
    rewards, archs = [0.1, 0.5, 0.5, 0.5, 0.2, 0.9], ["a", "b", "b", "b", "c", "d"]
    assert oneshot.best_within_distinct(rewards, archs, 2) == 0.5  # the repeats of b cost nothing
    assert oneshot.best_within_distinct(rewards, archs, 3) == 0.5
    assert oneshot.best_within_distinct(rewards, archs, 4) == 0.9
    assert oneshot.best_within_distinct(rewards, archs, 5) is None  # the run never evaluated 5
    runs = {
        "mnasnet": [{"rewards": rewards, "archs": archs}],
        "random": [{"rewards": [0.3] * 6, "archs": list("uvwxyz")}],
    }
    table = oneshot.at_equal_cost(runs, [2, 5])
    assert "| mnasnet | 0.5000 | none reached it |" in table and "| random | 0.3000 | 0.3000 |" in table
