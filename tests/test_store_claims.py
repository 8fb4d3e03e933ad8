"""One architecture under one evaluator fingerprint is evaluated and stored once: the store's unique key, the
upgrade of stores written before it, and the in-flight claims that make processes sharing a store wait for each
other's evaluations instead of repeating them; and a process's second store on a file keeps the first's lock."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nas_rl.errors import DataError
from nas_rl.evaluation.evaluator import Evaluator
from nas_rl.evaluation.reward import MnasReward
from nas_rl.evaluation.store import Evaluation, EvaluationStore
from tests.helpers.doubles import ChannelLatencyDouble, HashAccuracyDouble, SlowAccuracyDouble
from tests.helpers.tiny import tiny_space

#: The schema of the stores nas-rl wrote before stores had a version and a unique key (files in the wild).
UNVERSIONED_SCHEMA = """
CREATE TABLE IF NOT EXISTS fingerprints (fingerprint TEXT PRIMARY KEY, settings TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, arch TEXT NOT NULL,
    fingerprint TEXT NOT NULL REFERENCES fingerprints(fingerprint),
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')), error TEXT, accuracy REAL, latency_ms REAL,
    latency_mean_ms REAL, latency_std_ms REAL, latency_min_ms REAL, latency_max_ms REAL, latency_runs INTEGER,
    reward REAL, accuracy_seconds REAL, latency_seconds REAL, eval_seconds REAL, created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS evaluations_key ON evaluations (arch, fingerprint);
CREATE TABLE IF NOT EXISTS episodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, arch TEXT NOT NULL, fingerprint TEXT NOT NULL,
    evaluation_id INTEGER REFERENCES evaluations(id), cached INTEGER NOT NULL, status TEXT NOT NULL,
    accuracy REAL, latency_ms REAL, reward REAL NOT NULL, eval_seconds REAL NOT NULL, created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS episodes_run ON episodes (run_id, id);
"""
#: Generous: a claim must outlive any scheduling hiccup of the shared test machine; only the stale test waits it out.
CLAIM_TIMEOUT_S = 2.0


def evaluator(path: Path | str, accuracy: Any = None, run_id: str = "run", **settings: Any) -> Evaluator:
    store = EvaluationStore(path)
    return Evaluator(
        accuracy or HashAccuracyDouble(), ChannelLatencyDouble(), MnasReward(1.0), store, run_id, **settings
    )


def rows(path: Path, query: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(query).fetchall()


# B. The unique key --------------------------------------------------------------------------------------------------


def test_a_key_is_stored_once_and_the_first_evaluation_stays(tmp_path: Path) -> None:
    store = EvaluationStore(tmp_path / "e.sqlite")
    first = store.add(Evaluation("arch", "fp", "ok", accuracy=0.5))
    second = store.add(Evaluation("arch", "fp", "ok", accuracy=0.9))
    assert second.id == first.id and second.accuracy == 0.5
    assert store.add(Evaluation("arch", "other", "failed", error="e")).id != first.id
    assert rows(tmp_path / "e.sqlite", "SELECT arch, fingerprint, accuracy FROM evaluations ORDER BY id") == [
        ("arch", "fp", 0.5), ("arch", "other", None)
    ]  # fmt: skip
    with sqlite3.connect(tmp_path / "e.sqlite") as conn, pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        conn.execute("INSERT INTO evaluations (arch, fingerprint, status, created_at) VALUES ('arch', 'fp', 'ok', 0)")


def unversioned_store(path: Path) -> None:
    """A store as earlier releases wrote it, with the duplicates two processes evaluating at once left there:
    key A failed, then ok twice; key B failed twice; key C once. One episode per evaluation row, plus a cache hit."""
    conn = sqlite3.connect(path)
    conn.executescript(UNVERSIONED_SCHEMA)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("INSERT INTO fingerprints VALUES ('fp', '{}')")
    evaluations = [("A", "failed", None, "oom"), ("A", "ok", 0.7, None), ("A", "ok", 0.8, None),
                   ("B", "failed", None, "first"), ("B", "failed", None, "second"), ("C", "ok", 0.6, None)]  # fmt: skip
    for number, (arch, status, accuracy, error) in enumerate(evaluations, start=1):
        conn.execute(
            "INSERT INTO evaluations (id, arch, fingerprint, status, error, accuracy, latency_ms, created_at)"
            " VALUES (?, ?, 'fp', ?, ?, ?, ?, 0)",
            (number, arch, status, error, accuracy, None if accuracy is None else 1.0),
        )
    for number, (arch, status, accuracy, _) in [*enumerate(evaluations, start=1), (3, evaluations[2])]:
        conn.execute(
            "INSERT INTO episodes (run_id, arch, fingerprint, evaluation_id, cached, status, accuracy, reward,"
            " eval_seconds, created_at) VALUES ('old', ?, 'fp', ?, 0, ?, ?, 0, 0, 0)",
            (arch, number, status, accuracy),
        )
    conn.commit()
    conn.close()


def test_an_unversioned_store_with_duplicates_is_upgraded_keeping_the_first_ok_row(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    unversioned_store(path)
    store = EvaluationStore(path)
    assert [(e.id, e.arch, e.status, e.error) for e in store.evaluations()] == [
        (2, "A", "ok", None), (4, "B", "failed", "first"), (6, "C", "ok", None)
    ]  # fmt: skip
    # Every episode is kept, pointing at its key's kept row.
    assert rows(path, "SELECT arch, evaluation_id FROM episodes ORDER BY id") == [
        ("A", 2), ("A", 2), ("A", 2), ("B", 4), ("B", 4), ("C", 6), ("A", 2)
    ]  # fmt: skip
    assert [row["accuracy"] for row in store.episodes("old")] == [None, 0.7, 0.8, None, None, 0.6, 0.8]
    assert rows(path, "PRAGMA user_version") == [(2,)]
    assert store.add(Evaluation("A", "fp", "ok", accuracy=0.1)).id == 2  # the key is unique from now on
    assert store.claim("D", "fp")  # and the store takes claims
    store.close()
    before = rows(path, "SELECT * FROM evaluations ORDER BY id")
    assert EvaluationStore(path).lookup("A", "fp").accuracy == 0.7  # reopening an upgraded store changes nothing
    assert rows(path, "SELECT * FROM evaluations ORDER BY id") == before


def test_an_unversioned_store_is_upgraded_in_one_transaction(tmp_path: Path) -> None:
    """A step of the upgrade that fails (here a trigger of the user's refuses the removal of duplicates, after
    their episodes were re-pointed) leaves the store exactly as it was, and says so in one line."""
    path = tmp_path / "old.sqlite"
    unversioned_store(path)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TRIGGER keep BEFORE DELETE ON evaluations BEGIN SELECT RAISE(ABORT, 'kept'); END")
    before = {table: rows(path, f"SELECT * FROM {table} ORDER BY id") for table in ("evaluations", "episodes")}
    with pytest.raises(DataError, match=r"old\.sqlite could not be upgraded .*kept.*left as it was") as raised:
        EvaluationStore(path).lookup("A", "fp")
    assert "\n" not in str(raised.value)
    assert {table: rows(path, f"SELECT * FROM {table} ORDER BY id") for table in before} == before
    assert rows(path, "PRAGMA user_version") == [(0,)]
    assert rows(path, "SELECT name FROM sqlite_master WHERE name IN ('claims', 'evaluations_unique')") == []


# C. Claims -----------------------------------------------------------------------------------------------------------


def test_claim_release_and_wait_for_between_two_owners(tmp_path: Path) -> None:
    mine, theirs = EvaluationStore(tmp_path / "e.sqlite"), EvaluationStore(tmp_path / "e.sqlite")
    assert mine.claim("arch", "fp", stale_after_s=60)
    assert not mine.claim("arch", "fp") and not theirs.claim("arch", "fp")  # held: by one caller only
    assert theirs.wait_for("arch", "fp", timeout_s=0.3) is None  # still in flight when the wait gave up
    assert [claim["arch"] for claim in theirs.claims()] == ["arch"]
    mine.release("arch", "fp")
    assert theirs.claims() == [] and theirs.wait_for("arch", "fp") is None  # no result, no claim: claim it
    assert theirs.claim("arch", "fp")
    stored = theirs.add(Evaluation("arch", "fp", "ok", accuracy=0.5))
    assert theirs.claims() == []  # the result ends the claim
    assert mine.wait_for("arch", "fp") == stored
    assert not mine.claim("arch", "fp")  # stored: nothing to claim


def test_a_claim_of_another_host_holds_until_its_heartbeat_is_stale(tmp_path: Path) -> None:
    """A process elsewhere cannot be asked whether it runs: its claim holds while renewed, then is taken over."""
    store = EvaluationStore(tmp_path / "e.sqlite")
    store.register_fingerprint({})  # create the store
    with sqlite3.connect(tmp_path / "e.sqlite") as conn:
        conn.execute("INSERT INTO claims VALUES ('live', 'fp', 'elsewhere:1:token', ?, 60)", (time.time(),))
        conn.execute("INSERT INTO claims VALUES ('stale', 'fp', 'elsewhere:1:token', ?, 60)", (time.time() - 61,))
    assert not store.claim("live", "fp") and store.wait_for("live", "fp", timeout_s=0.3) is None
    assert store.wait_for("stale", "fp") is None  # at once: nothing to wait for
    assert store.claim("stale", "fp")
    assert {claim["arch"]: claim["owner"] == "elsewhere:1:token" for claim in store.claims()} == {
        "live": True, "stale": False
    }  # fmt: skip


def _evaluate_once(path: str, started: str, barrier: Any) -> dict[str, Any]:
    worker = evaluator(path, SlowAccuracyDouble(seconds=3 * CLAIM_TIMEOUT_S, started=started),
                       claim_timeout_s=CLAIM_TIMEOUT_S)  # fmt: skip
    arch = tiny_space().decode((0,) * 42)
    worker.fingerprint(arch)  # open the store before the race
    barrier.wait()
    outcome = worker.evaluate(arch)
    return {"id": outcome.evaluation.id, "accuracy": outcome.evaluation.accuracy, "reward": outcome.reward,
            "cached": outcome.cached}  # fmt: skip


def test_processes_proposing_one_architecture_at_once_evaluate_it_once(tmp_path: Path) -> None:
    """The evaluation takes three claim timeouts: the owner's heartbeat keeps its claim alive all along."""
    path, started = tmp_path / "e.sqlite", tmp_path / "started.txt"
    workers = 3
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(workers) as pool:
        barrier = manager.Barrier(workers)
        answers = pool.starmap(_evaluate_once, [(str(path), str(started), barrier)] * workers)
    assert len(started.read_text().split()) == 1  # one process ran the accuracy estimator
    assert rows(path, "SELECT COUNT(*) FROM evaluations") == [(1,)]
    assert sorted(answer["cached"] for answer in answers) == [False] + [True] * (workers - 1)
    assert all({**answer, "cached": None} == {**answers[0], "cached": None} for answer in answers)
    assert rows(path, "SELECT COUNT(*) FROM episodes") == [(workers,)]
    assert rows(path, "SELECT COUNT(*) FROM claims") == [(0,)]


def _evaluate_until_killed(path: str, started: str) -> None:
    worker = evaluator(path, SlowAccuracyDouble(seconds=600, started=started), claim_timeout_s=600)
    worker.evaluate(tiny_space().decode((0,) * 42))


def test_a_claim_left_by_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    """On this host at once (the process is gone), without waiting for the claim's heartbeat to go stale."""
    path, started = tmp_path / "e.sqlite", tmp_path / "started.txt"
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_evaluate_until_killed, args=(str(path), str(started)))
    process.start()
    try:
        deadline = time.monotonic() + 120
        while not (started.exists() and started.read_text().strip()):
            assert process.is_alive() and time.monotonic() < deadline, "the evaluating process did not start"
            time.sleep(0.05)
        assert [claim["owner"].split(":")[1] for claim in EvaluationStore(path).claims()] == [str(process.pid)]
    finally:
        process.kill()  # SIGKILL mid-evaluation: no release, no more heartbeats
        process.join()

    arch = tiny_space().decode((0,) * 42)
    survivor = evaluator(path, claim_timeout_s=CLAIM_TIMEOUT_S)
    # The dead claim would stay fresh for 600 s: it is taken over because its process is gone.
    assert survivor.store.claim(arch.to_string(), survivor.fingerprint(arch))
    survivor.store.release(arch.to_string(), survivor.fingerprint(arch))
    outcome = survivor.evaluate(arch)
    assert not outcome.cached and outcome.evaluation.status == "ok"
    assert survivor.accuracy.calls == 1
    assert rows(path, "SELECT COUNT(*) FROM evaluations") == [(1,)]
    assert survivor.store.claims() == []


def test_an_evaluation_that_raises_releases_its_claim(tmp_path: Path) -> None:
    class InterruptedAccuracyDouble(HashAccuracyDouble):
        def accuracy(self, arch):
            raise KeyboardInterrupt

    arch = tiny_space().decode((0,) * 42)
    with pytest.raises(KeyboardInterrupt):
        evaluator(tmp_path / "e.sqlite", InterruptedAccuracyDouble()).evaluate(arch)
    other = evaluator(tmp_path / "e.sqlite")
    assert other.store.claims() == []
    assert not other.evaluate(arch).cached  # evaluated at once: nothing to wait for


#: Run in another process: whether some process holds a lock in SQLite's SHARED range of the file (argv[1]).
LOCK_PROBE = """
import fcntl, os, sys
descriptor = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB, 510, 0x40000000 + 2)
except OSError:
    print("held")
else:
    print("free")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX advisory locks")
def test_a_second_store_on_the_file_keeps_the_first_ones_lock(tmp_path: Path) -> None:
    """Several processes may share a store only while each connection's lock on the file holds. A second store
    object on the same file in one process (another env, a sweep's next run) must leave the first one's lock in
    place: POSIX locks belong to the process, so a descriptor opened and closed outside SQLite would drop it,
    and another process could then checkpoint and reset the WAL under the live connection, corrupting the store."""
    path = tmp_path / "store.sqlite"
    first = EvaluationStore(path)
    first.register_fingerprint({"a": 1})  # a connection in WAL mode: it holds a shared lock on the file

    def lock() -> str:
        probe = [sys.executable, "-c", LOCK_PROBE, str(path)]
        return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()

    assert lock() == "held"
    second = EvaluationStore(path)
    assert second.lookup("arch", "fp") is None  # recognises the file, then connects
    assert lock() == "held"
    first.close()
    assert lock() == "held"  # the second's own
    second.close()
    assert lock() == "free"
