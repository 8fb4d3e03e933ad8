"""Faults end in one line that names the file and what was expected, never a traceback (exit code 2 from `nas-rl`):
a store file that is not a store (and is then left untouched), a folder, a read-only store or folder; and a
search whose every evaluation fails stops after `evaluator.max_consecutive_failures` of them."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from omegaconf import open_dict

from nas_rl.errors import ConfigError, DataError
from nas_rl.evaluation.evaluator import Evaluator, RepeatedFailures
from nas_rl.evaluation.reward import MnasReward
from nas_rl.evaluation.store import APPLICATION_ID, EvaluationStore
from nas_rl.runs.search import run_search
from tests.helpers.cli import nas_rl_command
from tests.helpers.doubles import ChannelLatencyDouble, HashAccuracyDouble, RaisingAccuracyDouble
from tests.helpers.tiny import TINY_OVERRIDES, tiny_space

REPO = Path(__file__).resolve().parents[1]


def one_line(message: str) -> str:
    lines = message.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in message, message
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file in ``folder``: its bytes and modification time."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()}


# Files that are not a store -----------------------------------------------------------------------------------------


def random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def sqlite_header_then_garbage(path: Path) -> None:
    garbage = bytearray(os.urandom(8192))
    garbage[19 - 16] = 1  # the read version of a rollback-journal database; 2 (WAL) is the next case
    path.write_bytes(b"SQLite format 3\x00" + garbage)


def sqlite_wal_header_then_garbage(path: Path) -> None:
    """Its header's read version says WAL: a read-only connection would make -wal and -shm files beside it."""
    garbage = bytearray(os.urandom(8192))
    garbage[18 - 16 : 20 - 16] = b"\x02\x02"
    path.write_bytes(b"SQLite format 3\x00" + garbage)


def database(*statements: str, wal: bool = False) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        conn = sqlite3.connect(path)
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        for statement in statements:
            conn.execute(statement)
        conn.commit()
        conn.close()

    return make


NOT_A_DATABASE = {
    "random bytes": random_bytes,
    "an SQLite header, then garbage": sqlite_header_then_garbage,
    "an SQLite header saying WAL, then garbage": sqlite_wal_header_then_garbage,
}
FOREIGN = {
    "another application's database": database("CREATE TABLE foo (x)", "INSERT INTO foo VALUES (1)"),
    "another application's database in WAL mode": database(
        "CREATE TABLE foo (x)", "INSERT INTO foo VALUES (1)", wal=True
    ),  # fmt: skip
    "a store's table names with other columns": database(
        "CREATE TABLE fingerprints (x)", "CREATE TABLE evaluations (x)", "CREATE TABLE episodes (x)"
    ),
    "another application's id": database("PRAGMA application_id = 7", "CREATE TABLE foo (x)"),
    "a store of a newer version": database(
        f"PRAGMA application_id = {APPLICATION_ID}", "PRAGMA user_version = 99", "CREATE TABLE claims2 (x)"
    ),
}


@pytest.mark.parametrize("make", NOT_A_DATABASE.values(), ids=NOT_A_DATABASE.keys())
def test_a_file_that_is_not_a_database_is_one_line_naming_it(make: Callable[[Path], None], tmp_path: Path) -> None:
    path = tmp_path / "broken.sqlite"
    make(path)
    before = snapshot(tmp_path)
    with pytest.raises(DataError) as raised:
        EvaluationStore(path).lookup("arch", "fp")
    line = one_line(str(raised.value))
    assert str(path) in line and "is not an SQLite database" in line and "expected an evaluation store" in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("make", FOREIGN.values(), ids=FOREIGN.keys())
def test_another_database_is_refused_and_left_untouched(make: Callable[[Path], None], tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    make(path)
    before = snapshot(tmp_path)
    with pytest.raises(DataError) as raised:
        EvaluationStore(path).register_fingerprint({"a": 1})
    line = one_line(str(raised.value))
    assert str(path) in line and "left untouched" in line
    assert "expected an evaluation store written by nas-rl" in line or "schema version 99" in line
    assert snapshot(tmp_path) == before  # not a byte, not a timestamp, no journal or WAL file left beside it


def test_an_empty_file_becomes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    path.touch()
    store = EvaluationStore(path)
    store.register_fingerprint({"a": 1})
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] >= 2


def test_a_folder_is_one_line_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DataError) as raised:
        EvaluationStore(tmp_path).lookup("arch", "fp")
    assert one_line(str(raised.value)) == (
        f"evaluation store {tmp_path} is a folder: expected an SQLite file (such as {tmp_path / 'evaluations.sqlite'})"
    )


def test_a_folder_that_cannot_be_made_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where the store's folder would be")
    with pytest.raises(DataError) as raised:
        EvaluationStore(tmp_path / "file" / "e.sqlite").lookup("arch", "fp")
    assert f"its folder {tmp_path / 'file'} cannot be created" in one_line(str(raised.value))


# Read-only files and folders -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make a file or folder read-only for this process: by its mode; or, when the tests run as root (which
    ignores modes), by the immutable attribute (``chattr +i``), which binds root too."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    made = shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    if not made:
        pytest.skip("the tests run as root, which ignores file modes, and this filesystem has no immutable files "
                    "(chattr +i) to make a read-only file or folder with")  # fmt: skip
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def make_store(path: Path) -> None:
    store = EvaluationStore(path)
    store.register_fingerprint({"made": 1})
    store.close()  # no -wal or -shm file remains


def test_a_new_store_in_a_read_only_folder_is_one_line_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir()
    with read_only(folder), pytest.raises(DataError) as raised:
        EvaluationStore(folder / "e.sqlite").register_fingerprint({"a": 1})
    line = one_line(str(raised.value))
    assert f"evaluation store {folder / 'e.sqlite'} cannot be created" in line
    assert "expected a path in a folder this process can write" in line
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("read_only_part", ["file", "folder"])
def test_an_existing_store_that_cannot_be_written_is_one_line_naming_it(read_only_part: str, tmp_path: Path) -> None:
    path = tmp_path / "stores" / "e.sqlite"
    make_store(path)
    before = snapshot(path.parent)
    with read_only(path if read_only_part == "file" else path.parent), pytest.raises(DataError) as raised:
        EvaluationStore(path).register_fingerprint({"a": 1})
    line = one_line(str(raised.value))
    assert f"evaluation store {path} cannot be written" in line
    assert "expected a file this process can write, in a folder it can write" in line
    assert snapshot(path.parent)[path.name] == before[path.name]  # (SQLite may leave its -shm file beside it)


# The same faults through `nas-rl` -----------------------------------------------------------------------------------

CHEAP_SEARCH = ["experiment=tabular", "controller=random", "search.budget=2", "search.export=false",
                "search.progress=false"]  # fmt: skip


def run_nas_rl(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``nas-rl`` as a user runs it, able to import this checkout's ``tests`` package (for a test double)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(nas_rl_command() + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


STORE_FAULTS = {
    "random bytes": (random_bytes, "is not an SQLite database"),
    "another application's database": (FOREIGN["another application's database"], "is an SQLite database of"),
    "a folder": (lambda path: path.mkdir(), "is a folder"),
}


@pytest.mark.slow  # runs the entry point in a subprocess
@pytest.mark.parametrize(("make", "named"), STORE_FAULTS.values(), ids=STORE_FAULTS.keys())
def test_nas_rl_with_a_faulty_store_is_one_line_and_exit_code_2(make: Callable, named: str, tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    make(store)
    before = snapshot(tmp_path)
    result = run_nas_rl([*CHEAP_SEARCH, f"search.store={store}", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert one_line(result.stderr).startswith(f"nas-rl: error: evaluation store {store} {named}")
    assert snapshot(tmp_path) == before


@pytest.mark.slow  # runs the entry point in a subprocess
def test_nas_rl_with_a_store_in_a_read_only_folder_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    store = tmp_path / "read-only" / "e.sqlite"
    store.parent.mkdir()
    with read_only(store.parent):
        result = run_nas_rl([*CHEAP_SEARCH, f"search.store={store}", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert one_line(result.stderr).startswith(f"nas-rl: error: evaluation store {store} cannot be created")


# D. A run of failed evaluations stops the search --------------------------------------------------------------------


def target_of(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def failing_search(run_dir: Path, limit: Any, budget: int = 8):
    overrides = [*TINY_OVERRIDES, "controller=random", f"search.budget={budget}", "search.export=false",
                 "search.progress=false", f"search.store={run_dir / 'evaluations.sqlite'}",
                 f"evaluator.max_consecutive_failures={limit}"]  # fmt: skip
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with open_dict(cfg):  # the real controller, space, reward, store and evaluator; doubles for the costly roles
        cfg.accuracy = {"_target_": target_of(RaisingAccuracyDouble)}
        cfg.latency = {"_target_": target_of(ChannelLatencyDouble)}
    return cfg


def stored(path: Path, query: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(query).fetchall()


def test_a_search_whose_every_evaluation_fails_stops_after_the_limit(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(RepeatedFailures) as raised:
        run_search(failing_search(run_dir, 3), run_dir)
    assert isinstance(raised.value, ConfigError)  # the entry points print it as one line, exit code 2
    line = one_line(str(raised.value))
    assert "the last 3 evaluations all failed" in line
    assert f"RuntimeError: {RaisingAccuracyDouble.MESSAGE}" in line
    assert "evaluator.max_consecutive_failures=3" in line
    store = run_dir / "evaluations.sqlite"
    reason = f"RuntimeError: {RaisingAccuracyDouble.MESSAGE}"
    assert stored(store, "SELECT status, error FROM evaluations") == [("failed", reason)] * 3
    assert stored(store, "SELECT status, reward FROM episodes") == [("failed", 0.0)] * 3


@pytest.mark.parametrize("limit", [0, "null"])
def test_the_failure_limit_can_be_turned_off(limit: Any, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_search(failing_search(run_dir, limit), run_dir)
    assert len(result.episodes) == 8 and result.summary["failures"] == 8


def test_only_fresh_evaluations_count_and_an_ok_one_resets_the_count(tmp_path: Path) -> None:
    space = tiny_space()
    archs = [space.decode((first,) + (0,) * 41) for first in range(4)]
    bad = {archs[0].to_string(), archs[1].to_string(), archs[3].to_string()}

    class SometimesRaisingDouble(HashAccuracyDouble):
        def accuracy(self, arch):
            if arch.to_string() in bad:
                raise RuntimeError("shape mismatch (test double)")
            return super().accuracy(arch)

    evaluator = Evaluator(SometimesRaisingDouble(), ChannelLatencyDouble(), MnasReward(1.0),
                          EvaluationStore(tmp_path / "e.sqlite"), max_consecutive_failures=2)  # fmt: skip
    assert evaluator.evaluate(archs[0]).evaluation.status == "failed"  # 1
    assert evaluator.evaluate(archs[0]).cached  # from the store: still 1
    assert evaluator.evaluate(archs[2]).evaluation.status == "ok"  # 0
    assert evaluator.evaluate(archs[1]).evaluation.status == "failed"  # 1
    assert evaluator.evaluate(archs[1]).cached  # still 1
    with pytest.raises(RepeatedFailures, match="the last 2 evaluations all failed.*shape mismatch"):
        evaluator.evaluate(archs[3])  # 2


@pytest.mark.parametrize("value", [-1, 1.5])
def test_a_wrong_failure_limit_is_refused(value: Any) -> None:
    with pytest.raises(ConfigError, match=rf"max_consecutive_failures={value} is not accepted: use an integer >= 0"):
        Evaluator(HashAccuracyDouble(), ChannelLatencyDouble(), MnasReward(1.0), EvaluationStore(":memory:"),
                  max_consecutive_failures=value)  # fmt: skip


@pytest.mark.slow  # runs the entry point in a subprocess
def test_nas_rl_stops_a_search_whose_every_evaluation_fails_with_one_line(tmp_path: Path) -> None:
    args = [*TINY_OVERRIDES, "controller=random", "search.budget=20", "search.export=false", "search.progress=false",
            f"accuracy._target_={target_of(RaisingAccuracyDouble)}", "evaluator.max_consecutive_failures=4",
            f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    result = run_nas_rl(args, tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_line(result.stderr)
    assert line.startswith("nas-rl: error: the search stopped: the last 4 evaluations all failed")
    assert RaisingAccuracyDouble.MESSAGE in line
    assert stored(tmp_path / "run" / "evaluations.sqlite", "SELECT COUNT(*) FROM evaluations") == [(4,)]
