"""The EvaluationStore: every evaluation in SQLite, keyed by architecture + evaluator fingerprint.

It is the cache (a repeated architecture under the same evaluator settings is answered from it) and the
history a run reads back (one ``episodes`` row per architecture a controller proposed). WAL mode and a busy
timeout let several processes (vector envs, sweep jobs) share one file; every write is its own transaction,
so a killed process loses at most the evaluation it was running.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fingerprints (
    fingerprint TEXT PRIMARY KEY,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    arch TEXT NOT NULL,
    fingerprint TEXT NOT NULL REFERENCES fingerprints(fingerprint),
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT,
    accuracy REAL,
    latency_ms REAL,
    latency_mean_ms REAL,
    latency_std_ms REAL,
    latency_min_ms REAL,
    latency_max_ms REAL,
    latency_runs INTEGER,
    reward REAL,
    accuracy_seconds REAL,
    latency_seconds REAL,
    eval_seconds REAL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS evaluations_key ON evaluations (arch, fingerprint);
CREATE TABLE IF NOT EXISTS episodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    arch TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    evaluation_id INTEGER REFERENCES evaluations(id),
    cached INTEGER NOT NULL,
    status TEXT NOT NULL,
    accuracy REAL,
    latency_ms REAL,
    reward REAL NOT NULL,
    eval_seconds REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS episodes_run ON episodes (run_id, id);
"""


def fingerprint_of(settings: dict[str, Any]) -> str:
    """Stable short hash of JSON-serialisable evaluator settings."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Evaluation:
    """One stored evaluation of an architecture under one evaluator fingerprint."""

    arch: str
    fingerprint: str
    status: str
    error: str | None = None
    accuracy: float | None = None
    latency_ms: float | None = None
    latency_mean_ms: float | None = None
    latency_std_ms: float | None = None
    latency_min_ms: float | None = None
    latency_max_ms: float | None = None
    latency_runs: int | None = None
    reward: float | None = None
    accuracy_seconds: float | None = None
    latency_seconds: float | None = None
    eval_seconds: float | None = None
    id: int | None = None


class EvaluationStore:
    """SQLite-backed store; picklable (each process opens its own connection on first use).

    :param path: database file (its folder is created), or ``":memory:"`` for a private in-process store.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._warned_copy = False

    def __getstate__(self) -> dict[str, Any]:
        if str(self.path) == ":memory:" and not self._warned_copy and self._holds_evaluations():
            self._warned_copy = True
            warnings.warn(
                "copying or pickling an in-memory evaluation store: the copy starts empty, so its process (a vector "
                "env worker, a deepcopy) re-evaluates what this one knows and keeps its own answers; give the env a "
                "store file to share them (gym.make(..., store='evaluations.sqlite'))",
                stacklevel=2,
            )
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = Path(state["path"])
        self._conn = None
        self._pid = None
        self._warned_copy = False

    def _holds_evaluations(self) -> bool:
        """Whether this process's open connection holds an evaluation (never opens a connection to find out)."""
        if self._conn is None or self._pid != os.getpid():
            return False
        return self._conn.execute("SELECT 1 FROM evaluations LIMIT 1").fetchone() is not None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._open()
            conn.row_factory = sqlite3.Row
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _open(self, timeout: float = 60.0) -> sqlite3.Connection:
        """Connect, switch to WAL and create the tables, retrying while another process holds the lock.

        Processes that open a fresh store at the same moment (vector env workers) can get "database is locked"
        at once from the journal-mode switch, which SQLite's busy timeout does not cover.
        """
        deadline = time.monotonic() + timeout
        while True:
            conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
                return conn
            except sqlite3.OperationalError as error:
                conn.close()
                if "locked" not in str(error) and "busy" not in str(error) or time.monotonic() > deadline:
                    raise ValueError(f"evaluation store {self.path} could not be opened: {error}") from None
                time.sleep(0.05 + random.random() * 0.1)
            except sqlite3.DatabaseError as error:
                conn.close()
                raise ValueError(f"evaluation store {self.path} is not a readable SQLite database: {error}") from None

    def close(self) -> None:
        """Close this process's connection (reopened on next use); an in-memory store stays open: closing would lose it."""
        if str(self.path) == ":memory:":
            return
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    def register_fingerprint(self, settings: dict[str, Any]) -> str:
        """Record the settings behind a fingerprint (so a table row can be traced to its recipe)."""
        key = fingerprint_of(settings)
        self.conn.execute(
            "INSERT OR IGNORE INTO fingerprints (fingerprint, settings) VALUES (?, ?)",
            (key, json.dumps(settings, sort_keys=True, default=str)),
        )
        return key

    def lookup(self, arch: str, fingerprint: str) -> Evaluation | None:
        """The first stored evaluation of ``arch`` under ``fingerprint``, or None."""
        row = self.conn.execute(
            "SELECT * FROM evaluations WHERE arch = ? AND fingerprint = ? ORDER BY id LIMIT 1", (arch, fingerprint)
        ).fetchone()
        return None if row is None else _evaluation(row)

    def add(self, evaluation: Evaluation) -> Evaluation:
        fields = {k: v for k, v in asdict(evaluation).items() if k != "id"}
        fields["created_at"] = time.time()
        cursor = self.conn.execute(
            f"INSERT INTO evaluations ({', '.join(fields)}) VALUES ({', '.join('?' * len(fields))})",
            tuple(fields.values()),
        )
        evaluation.id = cursor.lastrowid
        return evaluation

    def add_episode(self, run_id: str, evaluation: Evaluation, cached: bool, reward: float, seconds: float) -> None:
        self.conn.execute(
            "INSERT INTO episodes (run_id, arch, fingerprint, evaluation_id, cached, status, accuracy, latency_ms,"
            " reward, eval_seconds, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                evaluation.arch,
                evaluation.fingerprint,
                evaluation.id,
                int(cached),
                evaluation.status,
                evaluation.accuracy,
                evaluation.latency_ms,
                reward,
                seconds,
                time.time(),
            ),
        )

    def episodes(self, run_id: str) -> list[dict[str, Any]]:
        """Every architecture proposed in ``run_id``, in order, joined with its latency statistics."""
        rows = self.conn.execute(
            "SELECT e.id AS episode, e.arch, e.cached, e.status, e.accuracy, e.latency_ms, e.reward,"
            " e.eval_seconds, v.error, v.latency_mean_ms, v.latency_std_ms, v.latency_min_ms, v.latency_max_ms,"
            " v.latency_runs, v.accuracy_seconds, v.latency_seconds, e.fingerprint"
            " FROM episodes e LEFT JOIN evaluations v ON v.id = e.evaluation_id WHERE e.run_id = ? ORDER BY e.id",
            (run_id,),
        ).fetchall()
        return [dict(row) for row in rows]

    def evaluations(self) -> Iterator[Evaluation]:
        for row in self.conn.execute("SELECT * FROM evaluations ORDER BY id"):
            yield _evaluation(row)

    def count_episodes(self, run_id: str) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM episodes WHERE run_id = ?", (run_id,)).fetchone()[0])


def _evaluation(row: sqlite3.Row) -> Evaluation:
    keys = set(row.keys())
    return Evaluation(**{k: row[k] for k in Evaluation.__dataclass_fields__ if k in keys})
