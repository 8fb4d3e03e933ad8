"""A run folder's integrity, in process: resume composes on the run's own config, outputs are written atomically
and hold exactly the budget, the report checks its rows against the store, and the folder's lock keeps a second
writer out. (The same faults through the real entry point, with real kills: tests/test_resume_faults.py.)"""

from __future__ import annotations

import csv
import errno
import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from nas_rl.benchmark.table import shipped_path
from nas_rl.cli import report_main
from nas_rl.errors import ConfigError
from nas_rl.evaluation.store import EvaluationStore
from nas_rl.runs import search
from nas_rl.runs.run_folder import LOCK_FILE, check_writable_folder, locked, read_identity, resumed_run_overrides
from nas_rl.runs.search import resume_config, run_search, write_outputs

#: A tabular search (every architecture looked up): a real run in a second, without a subprocess.
TABULAR = ["experiment=tabular", "controller=evolution", "controller.population_size=4", "controller.sample_size=2",
           "search.progress=false"]  # fmt: skip


def start_run(run_dir: Path, budget: int, extra: tuple[str, ...] = ()) -> list[str]:
    """A finished tabular run in ``run_dir`` (started as the entry point starts one: with its overrides)."""
    overrides = [*TABULAR, f"search.budget={budget}", f"search.store={run_dir / 'evaluations.sqlite'}", *extra]
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        run_search(compose("config", overrides), run_dir, overrides)
    return overrides


def resume(run_dir: Path, overrides: list[str]) -> None:
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        run_search(OmegaConf.create({"resume": str(run_dir)}), run_dir, overrides)


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "evaluations.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def store_episodes(run_dir: Path) -> int:
    store = EvaluationStore(run_dir / "evaluations.sqlite")
    try:
        return store.count_episodes(read_identity(run_dir).run_id)
    finally:
        store.close()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    start_run(run_dir, budget=4)
    return run_dir


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    """A copy of the finished run (its own store: the copy's, as the run folder moved)."""
    return Path(shutil.copytree(finished_run, tmp_path / "copy"))


# ------------------------------------------------------------------------------------------ resume composes


def test_resume_composes_the_commands_settings_on_the_runs_config(run_copy: Path) -> None:
    """controller.sample_size is a key of the run's controller (evolution), not of the default one."""
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = resume_config(run_copy, ["controller.sample_size=3", "search.budget=6", "controller.population_size=4"])
    assert (cfg.controller.sample_size, cfg.search.budget, cfg.controller.population_size) == (3, 6, 4)
    assert cfg.search.store == str(run_copy / "evaluations.sqlite")  # the copy's own store
    assert cfg.accuracy.table == "tabular-digits-v0"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("tabular.table={other}", "accuracy.table, latency.table"),  # refused through the values that follow it
        ("reward.target_ms=0.03", "reward.target_ms"),
        ("seed=1", "seed"),
        ("controller.population_size=8", "controller.population_size"),  # the checkpoint's population
        ("controller=random", "controller._target_"),
        ("search_space=mnasnet", "search_space.*"),
    ],
)
def test_resume_refuses_what_would_change_the_runs_evaluations_or_checkpoint(
    override: str, named: str, run_copy: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.npz"  # the same table under another name: a real, loadable table
    shutil.copy(shipped_path("tabular-digits-v0"), other)
    before = (run_copy / "config.yaml").read_text()
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        with pytest.raises(ConfigError) as refused:
            resume_config(run_copy, [override.format(other=other)])
    message = str(refused.value)
    assert "is refused" in message and named in message and "\n" not in message, message
    assert (run_copy / "config.yaml").read_text() == before


def test_the_entry_point_composes_a_resume_on_the_runs_overrides(run_copy: Path) -> None:
    """What ``nas-rl resume=RUN ...`` puts before the command's overrides, so Hydra composes them on the run's."""
    recorded = resumed_run_overrides([f"resume={run_copy}", "controller.sample_size=3", "search.progress=false"])
    assert recorded[:3] == ["experiment=tabular", "controller=evolution", "controller.population_size=4"]
    assert "search.progress=false" not in recorded  # given by the command: once is enough
    # Settings that do not compose on the run's (its population_size is not a key of random search's): alone.
    assert resumed_run_overrides([f"resume={run_copy}", "controller=random"]) == []
    assert resumed_run_overrides([f"resume={run_copy.parent / 'nothing'}"]) == []
    assert resumed_run_overrides(["search.budget=3"]) == []


def test_resume_extends_a_run_with_new_controller_settings(run_copy: Path) -> None:
    resume(run_copy, ["controller.sample_size=3", "search.budget=6"])
    saved = OmegaConf.load(run_copy / "config.yaml")
    assert (saved.controller.sample_size, saved.search.budget) == (3, 6)
    assert len(csv_rows(run_copy)) == 6 == store_episodes(run_copy)


# ------------------------------------------------------------------------------ outputs, atomic and exact


def test_an_output_write_failing_midway_keeps_the_previous_file(
    finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that fills up while evaluations.csv, best.json or a plot is written: the file keeps its previous
    content (never half of the new one), and the error is one line naming the file."""
    run_dir = Path(shutil.copytree(finished_run, tmp_path / "run"))
    store = EvaluationStore(run_dir / "evaluations.sqlite")
    run_id = read_identity(run_dir).run_id
    before = {name: (run_dir / name).read_bytes() for name in ("evaluations.csv", "best.json", "pareto.png")}
    full = OSError(errno.ENOSPC, "No space left on device")

    real_writerow = csv.DictWriter.writerow
    rows_written = []

    def writerow_until_full(self: csv.DictWriter, row: dict) -> object:
        rows_written.append(row)
        if len(rows_written) == 3:
            raise full
        return real_writerow(self, row)

    real_write_text = Path.write_text

    def write_half(self: Path, data: str, *args: object, **kwargs: object) -> int:
        if self.name.endswith(".json"):
            real_write_text(self, data[: len(data) // 2])
            raise full
        return real_write_text(self, data, *args, **kwargs)

    from matplotlib.figure import Figure

    def savefig_half(self: Figure, fname: object, *args: object, **kwargs: object) -> None:
        Path(str(fname)).write_bytes(b"\x89PNG half")
        raise full

    for target, name, replacement, file in [
        (csv.DictWriter, "writerow", writerow_until_full, "evaluations.csv"),
        (Path, "write_text", write_half, "best.json"),
        (Figure, "savefig", savefig_half, "pareto.png"),
    ]:
        with monkeypatch.context() as patched:
            patched.setattr(target, name, replacement)
            with pytest.raises(ConfigError) as failed:
                write_outputs(store, run_id, run_dir, budget=4)
        assert str(run_dir / file) in str(failed.value) and "No space left" in str(failed.value), failed.value
        assert {name: (run_dir / name).read_bytes() for name in before} == before
        assert not [path.name for path in run_dir.iterdir() if ".tmp" in path.name]
    store.close()


@pytest.mark.slow  # SB3 training (PPO), in process
def test_n_envs_past_the_budget_are_kept_in_the_store_but_not_reported(tmp_path: Path) -> None:
    """Three envs in lockstep finish 3, 6, 9, 12 architectures: a budget of 10 reports 10, the two extra stay
    in the store (and count as done for a resume, which reports its first 10 again)."""
    run_dir = tmp_path / "run"
    ppo = ("controller=ppo", "controller.n_envs=3", "controller.rollout_archs=1", "controller.minibatch_archs=1")
    overrides = [o for o in TABULAR if not o.startswith("controller")] + list(ppo)
    overrides += ["search.budget=10", f"search.store={run_dir / 'evaluations.sqlite'}"]
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        result = run_search(compose("config", overrides), run_dir, overrides)
    assert len(result.episodes) == 10 and result.summary["evaluations"] == 10
    assert len(csv_rows(run_dir)) == 10 and json.loads((run_dir / "best.json").read_text())["evaluations"] == 10
    assert store_episodes(run_dir) == 12
    resume(run_dir, [])
    assert len(csv_rows(run_dir)) == 10


# ------------------------------------------------------------------------------------- report vs the store


def test_report_refuses_a_csv_that_lacks_evaluations_of_the_store(
    run_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A resume that evaluated 2 more architectures and was stopped before rewriting evaluations.csv."""

    class Stopped(Exception):
        pass

    def stopped(*args: object, **kwargs: object) -> None:
        raise Stopped

    monkeypatch.setattr(search, "write_outputs", stopped)
    with pytest.raises(Stopped):
        resume(run_copy, ["search.budget=6"])
    assert (len(csv_rows(run_copy)), store_episodes(run_copy)) == (4, 6)
    with pytest.raises(SystemExit) as exited:
        report_main([str(run_copy)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(lines) == 1, lines
    assert "evaluations.csv holds 4 architectures" in lines[0] and "has 6" in lines[0], lines[0]
    assert f"resume={run_copy}" in lines[0]

    monkeypatch.undo()
    resume(run_copy, [])  # the resume that rewrites the outputs: nothing left to evaluate
    report_main([str(run_copy)])
    assert "evaluations" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------- the lock


def test_a_locked_run_folder_refuses_a_second_holder_naming_the_first(tmp_path: Path) -> None:
    with locked(tmp_path):
        facts = json.loads((tmp_path / LOCK_FILE).read_text())
        with pytest.raises(ConfigError) as refused, locked(tmp_path):
            pass
        assert f"pid {facts['pid']} on {facts['host']}" in str(refused.value) and "in use" in str(refused.value)
    with locked(tmp_path):  # released at the end of the block
        pass


def test_a_run_folder_under_a_file_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        check_writable_folder(tmp_path / "file" / "run")
    with pytest.raises(ConfigError, match="cannot be written"), locked(tmp_path / "file" / "run"):
        pass
    check_writable_folder(tmp_path / "new" / "run")  # a folder still to make, under a writable one
