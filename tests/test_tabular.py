"""The tabular benchmark on made-up tables: space, table format and its refusals, lookups, fast path, config."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from nas_rl.benchmark.estimators import TabularAccuracy, TabularLatency
from nas_rl.benchmark.table import ARRAYS, load_table
from nas_rl.config import build
from nas_rl.envs.registry import make_env
from nas_rl.errors import ConfigError, EvaluationFailed
from nas_rl.evaluation.evaluator import Evaluator
from nas_rl.evaluation.reward import MnasReward, latency_midrange
from nas_rl.evaluation.store import EvaluationStore
from nas_rl.evaluation.table_evaluator import TabularEvaluator
from nas_rl.spaces.tabular import TabularSpace
from nas_rl.tools import build_table as tabular_build
from nas_rl.tools.build_table import write_synthetic_table
from tests.helpers.tables import rewrite, tiny_recipe_file

STAGES = [["ds_r1_k3_s1_c4", "ir_r1_k3_s1_e3_c4", "ir_r1_k5_s1_e3_c4"], ["ir_r1_k3_s2_e3_c8", "ir_r1_k3_s2_e6_c8"]]


def small_space() -> TabularSpace:
    return TabularSpace(STAGES, resolution=8, stem_channels=4, head_channels=8)


@pytest.fixture
def table_path(tmp_path: Path) -> Path:
    return write_synthetic_table(tmp_path / "small.npz", small_space())


def test_space_decodes_encodes_and_enumerates() -> None:
    space = small_space()
    assert space.size == 6 and space.num_decisions == 2 and space.max_choices == 3
    assert space.action_mask(1).tolist() == [True, True, False]
    tokens = space.all_tokens()
    assert [space.index(t) for t in tokens] == list(range(6))
    for t in tokens:
        arch = space.decode(t)
        assert space.encode(arch) == t and space.parse(arch.to_string()) == arch
        assert space.decode(list(t)) is arch  # decoded once, then reused
    with pytest.raises(ValueError, match="not one of this space's choices"):
        space.encode(space.parse("ir_r1_k5_s1_e6_c4:ir_r1_k3_s2_e3_c8"))
    with pytest.raises(ConfigError, match=r"stages\[1\]"):
        TabularSpace([["ds_r1_k3_s1_c4"], ["ir_r1_k3_s2_e3_c8", "ir_r1_k3_s2_e3_c8"]])
    with pytest.raises(ConfigError, match=r"stages\[0\].*unknown token"):
        TabularSpace([["ds_r1_k3_s1_c4_x9"]])


def test_search_space_tabular_is_the_default_recipes_space_of_1024_networks() -> None:
    conf = OmegaConf.load(Path(__file__).parents[1] / "conf" / "search_space" / "tabular.yaml")
    recipe = tabular_build.load_recipe()
    assert OmegaConf.to_container(conf) == OmegaConf.to_container(recipe.search_space)
    assert build(conf, "search_space").size == 1024


def test_table_round_trip_and_lookups(table_path: Path) -> None:
    table = load_table(table_path)
    space = small_space()
    assert len(table) == space.size and table.name == "synthetic-6" and table.digest.startswith("sha256:")
    accuracy, latency = TabularAccuracy(table_path, space=space), TabularLatency(table_path, space=space)
    for index, tokens in enumerate(space.all_tokens()):
        arch = space.decode(tokens)
        assert table.row(arch) == table.index(tokens) == index
        assert accuracy.accuracy(arch) == table.columns["accuracy"][index]
        assert latency.measure(arch).median_ms == latency.latency_ms(arch) == table.columns["latency_median_ms"][index]
        stats = latency.measure(arch)
        assert (stats.mean_ms, stats.std_ms, stats.min_ms, stats.max_ms, stats.runs) == tuple(
            table.columns[name][index] for name in ("latency_mean_ms", "latency_std_ms", "latency_min_ms",
                                                    "latency_max_ms", "latency_runs")
        )  # fmt: skip
    for fingerprint in (accuracy.fingerprint(), latency.fingerprint()):
        assert fingerprint["table"] == "synthetic-6" and fingerprint["digest"] == table.digest
    assert latency.fingerprint()["device"]["name"] == "synthetic"
    low, high = table.latency_range()
    assert latency_midrange(table) == pytest.approx((low + high) / 2)


def test_loading_refuses_bad_tables_naming_the_file(table_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_table(tmp_path / "absent.npz")
    with pytest.raises(ConfigError, match="no shipped table of that name"):
        load_table("no-such-table")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ConfigError, match="junk.npz: not a readable"):
        load_table(tmp_path / "junk.npz")
    no_device = rewrite(table_path, tmp_path / "no-device.npz", lambda meta: meta.pop("device"))
    with pytest.raises(ConfigError, match=r"no-device.npz: meta field\(s\) device"):
        load_table(no_device)
    no_recipe = rewrite(table_path, tmp_path / "no-recipe.npz", lambda meta: meta["recipe"].pop("latency"))
    with pytest.raises(ConfigError, match=r"no-recipe.npz: meta field\(s\) recipe.latency"):
        load_table(no_recipe)
    with np.load(table_path) as archive:
        short = {name: archive[name][:5] for name in ARRAYS}
    incomplete = rewrite(table_path, tmp_path / "incomplete.npz", **short)
    with pytest.raises(ConfigError, match="incomplete.npz: incomplete table: 5 row"):
        load_table(incomplete)
    with np.load(table_path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["accuracy"] = arrays["accuracy"] + 0.01
    np.savez(tmp_path / "edited.npz", **arrays)
    with pytest.raises(ConfigError, match="edited.npz: content does not match its digest"):
        load_table(tmp_path / "edited.npz")


def test_estimators_refuse_another_space_and_fail_failed_rows(table_path: Path, tmp_path: Path) -> None:
    other = TabularSpace(STAGES, resolution=8, stem_channels=4, head_channels=16)
    with pytest.raises(ConfigError, match="accuracy.table=.*another search space.*head_channels"):
        TabularAccuracy(table_path, space=other)
    with pytest.raises(ConfigError, match="has no architecture"):
        TabularLatency(table_path).measure(other.decode((0, 0)))
    with np.load(table_path) as archive:
        status, error = archive["status"].astype("<U6"), archive["error"]
    status[2], error = "failed", np.where(np.arange(6) == 2, "accuracy: proxy training diverged", error)
    failing = rewrite(table_path, tmp_path / "failing.npz", status=status, error=error)
    arch = small_space().decode(small_space().all_tokens()[2])
    with pytest.raises(EvaluationFailed, match="diverged"):
        TabularAccuracy(failing).accuracy(arch)


def test_fast_path_reports_what_the_plain_evaluator_reports(table_path: Path, tmp_path: Path) -> None:
    space, reward = small_space(), MnasReward(0.03)
    accuracy, latency = TabularAccuracy(table_path), TabularLatency(table_path)
    plain = Evaluator(accuracy, latency, reward, EvaluationStore(":memory:"))
    fast = TabularEvaluator(accuracy, latency, reward, EvaluationStore(tmp_path / "never.sqlite"))
    history = TabularEvaluator(accuracy, latency, reward, EvaluationStore(":memory:"), "run", history=True)
    for _ in range(2):
        for tokens in space.all_tokens():
            arch = space.decode(tokens)
            expected = plain.evaluate(arch).info()
            for evaluator in (fast, history):
                info = evaluator.evaluate(arch).info()
                assert {k: v for k, v in info.items() if k != "eval_seconds"} == {
                    k: v for k, v in expected.items() if k != "eval_seconds"
                }
    assert not (tmp_path / "never.sqlite").exists()  # no history: the store is never opened
    assert history.store.count_episodes("run") == 12
    assert len(list(history.store.evaluations())) == 6
    assert fast.evaluate(space.decode((0, 0))).evaluation.fingerprint == plain.fingerprint(space.decode((0, 0)))
    with pytest.raises(ConfigError, match="accuracy=tabular and latency=tabular"):
        TabularEvaluator(accuracy, object(), reward, EvaluationStore(":memory:"))


def test_tabular_env_passes_the_checkers_pickles_and_spends_no_store(table_path: Path) -> None:
    gym_check_env(make_env("Tabular-v0", table=str(table_path)), skip_render_check=True)
    sb3_check_env(make_env("Tabular-v0", table=str(table_path)), warn=True)
    env = make_env("Tabular-v0", table=str(table_path), reward={"target_ms": 0.04})
    assert env.evaluator.reward.target_ms == 0.04 and env.search_space.size == 6
    clone = pickle.loads(pickle.dumps(env))
    clone.reset(seed=0)
    clone.step(5)  # invalid at position 0 (3 choices): wraps to 2
    _, reward, terminated, _, info = clone.step(1)
    assert terminated and info["tokens"] == (2, 1) and reward == info["reward"] > 0 and not info["cached"]
    default = make_env("Tabular-v0", table=str(table_path))
    assert default.evaluator.reward.target_ms == pytest.approx(latency_midrange(load_table(table_path)))
    with pytest.raises(ValueError, match="unknown spec field"):
        make_env("Tabular-v0", table=str(table_path), rewards={"target_ms": 1.0})


def test_env_pays_each_architecture_the_packed_tables_values_exactly(table_path: Path) -> None:
    """Every architecture stepped through the env: its accuracy and latency are the table's stored row, bit for bit,
    and its reward is the reward of those values."""
    table = load_table(table_path)
    env = make_env("Tabular-v0", table=str(table_path))
    reward = env.evaluator.reward
    accuracies = table.columns["accuracy"]
    for index, tokens in enumerate(table.space.all_tokens()):
        env.reset(seed=index)
        for token in tokens:
            _, paid, terminated, _, info = env.step(token)
        assert terminated and info["tokens"] == tuple(tokens) and info["status"] == "ok"
        assert info["accuracy"] == accuracies[index]
        assert info["latency_ms"] == table.columns["latency_median_ms"][index]
        assert paid == info["reward"] == reward(accuracies[index], table.columns["latency_median_ms"][index])
    assert len(set(accuracies.tolist())) == len(table)  # distinct rows: a lookup of the wrong row would show


def test_hydra_options_look_up_the_table_and_name_a_missing_one(table_path: Path) -> None:
    overrides = ["search_space=tabular", "accuracy=tabular", "latency=tabular"]
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        missing = compose("config", overrides=[*overrides, "tabular.table=missing.npz"])
        small = compose("config", overrides=[*overrides, f"tabular.table={table_path}",
                                             f"search_space.stages={STAGES}", "search_space.resolution=8",
                                             "search_space.stem_channels=4", "search_space.head_channels=8"])  # fmt: skip
    with pytest.raises(ConfigError, match="latency.table=missing.npz: no such file"):
        build(missing.latency, "latency")
    assert build(small.accuracy, "accuracy").table.name == "synthetic-6"
    assert build(small.latency, "latency").fingerprint()["kind"] == "tabular"


def test_build_folder_guards_its_recipe_and_refuses_to_pack_incomplete(tmp_path: Path) -> None:
    recipe = tiny_recipe_file(tmp_path)
    out = tmp_path / "build"
    assert tabular_build.main(["run", "--recipe", str(recipe), "--out", str(out), "--limit", "0", "--no-progress"]) == 0
    assert json.loads((out / "recipe.json").read_text())["name"] == "tabular-tiny"
    with pytest.raises(ConfigError, match="accuracy differs from the build's in epochs"):
        tabular_build.run_build(tabular_build.load_recipe(str(recipe), ["accuracy.epochs=2"]), out, limit=0)
    with pytest.raises(ConfigError, match="incomplete build of tabular-tiny: 4 lack accuracy, 4 lack latency"):
        tabular_build.pack(out, tmp_path / "t.npz")
    (out / "accuracy-0of1.jsonl").write_text('{"phase": "accuracy", "index": 0, "arch"')  # a killed writer
    assert tabular_build.BuildFolder(out).rows("accuracy") == {}
    tabular_build.BuildFolder(out).writer("accuracy", 0, 1)({"index": 1, "seconds": 1.0, "status": "ok"})
    assert list(tabular_build.BuildFolder(out).rows("accuracy")) == [1]
    with pytest.raises(ConfigError, match="--part 2 --parts 2"):
        tabular_build.run_build(tabular_build.load_recipe(str(recipe)), out, part=2, parts=2)


def test_tabular_experiment_searches_the_shipped_table_at_its_midrange() -> None:
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=tabular"])
    table = load_table("tabular-digits-v0")
    assert cfg.reward.target_ms == pytest.approx(latency_midrange(table), abs=5e-5)
    space = build(cfg.search_space, "search_space")
    assert space.size == 1024 and build(cfg.latency, "latency").measure(space.decode((0,) * 5)).median_ms > 0
