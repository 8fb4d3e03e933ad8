"""The EvaluationStore: every evaluation in SQLite, keyed by architecture + evaluator fingerprint.

It is the cache (a repeated architecture under the same evaluator settings is answered from it; one row per
architecture and fingerprint, a unique key) and the history a run reads back (one ``episodes`` row per
architecture a controller proposed). WAL mode and a busy timeout let several processes (vector envs, sweep
jobs) share one file; every write is its own transaction, so a killed process loses at most the evaluation it
was running.

Processes that share a store also share their work in flight: an evaluator :meth:`~EvaluationStore.claim`\\ s
an architecture before evaluating it, and another process that proposes it meanwhile
:meth:`~EvaluationStore.wait_for`\\ s that result instead of repeating it. A claim is renewed by a heartbeat
while its owner works; one left by a killed process is taken over: at once when that process ran on this host
(it no longer exists), else once its heartbeat is older than the owner's ``stale_after``.

A file is written only once it is recognised as a store: a new or empty file becomes one, a store of this
version opens as it is, one of an earlier version is upgraded in one transaction; anything else (another
application's database, a newer store, not a database at all) is refused with a :class:`DataError` and left
untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import socket
import sqlite3
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nas_rl.errors import DataError

#: ``PRAGMA application_id`` of a store ("nasr"): what marks an SQLite file as this application's.
APPLICATION_ID = 0x6E617372
#: ``PRAGMA user_version`` of a store this code writes. 1: the unmarked stores of earlier releases (the three
#: tables below, several rows per key allowed); 2: the application id, a unique key, in-flight claims.
SCHEMA_VERSION = 2
#: The tables (and columns this code relies on) that make an unmarked file a version-1 store.
_V1_COLUMNS = {
    "fingerprints": {"fingerprint", "settings"},
    "evaluations": {"id", "arch", "fingerprint", "status"},
    "episodes": {"id", "run_id", "evaluation_id"},
}
#: Version 1, exactly as earlier releases created it (a new store is created as one and upgraded at once).
_V1_SCHEMA = (
    """CREATE TABLE fingerprints (
        fingerprint TEXT PRIMARY KEY,
        settings TEXT NOT NULL
    )""",
    """CREATE TABLE evaluations (
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
    )""",
    "CREATE INDEX evaluations_key ON evaluations (arch, fingerprint)",
    """CREATE TABLE episodes (
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
    )""",
    "CREATE INDEX episodes_run ON episodes (run_id, id)",
)
#: Per key, the row a version-1 store's duplicates collapse to: the first ok evaluation, else the first one.
_KEPT = (
    "WITH kept AS (SELECT COALESCE(MIN(CASE WHEN status = 'ok' THEN id END), MIN(id)) AS id, arch, fingerprint"
    " FROM evaluations GROUP BY arch, fingerprint) "
)
#: Version 1 -> 2, in the transaction that recognised the file.
_TO_V2 = (
    # Episodes of a duplicate evaluation point at the row kept for its key (they keep their own reported values).
    _KEPT + "UPDATE episodes SET evaluation_id = (SELECT kept.id FROM kept JOIN evaluations v ON v.arch = kept.arch"
    " AND v.fingerprint = kept.fingerprint WHERE v.id = episodes.evaluation_id)"
    " WHERE evaluation_id IN (SELECT id FROM evaluations) AND evaluation_id NOT IN (SELECT id FROM kept)",
    _KEPT + "DELETE FROM evaluations WHERE id NOT IN (SELECT id FROM kept)",
    "DROP INDEX IF EXISTS evaluations_key",
    "CREATE UNIQUE INDEX evaluations_unique ON evaluations (arch, fingerprint)",
    # One row per evaluation in flight: its owner (host:pid:token) renews ``heartbeat`` (time.time()) while it
    # works; a claim not renewed for ``stale_after`` seconds is taken over.
    """CREATE TABLE claims (
        arch TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        owner TEXT NOT NULL,
        heartbeat REAL NOT NULL,
        stale_after REAL NOT NULL,
        PRIMARY KEY (arch, fingerprint)
    )""",
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
#: Seconds between looks at the store while waiting for another process's evaluation.
POLL_SECONDS = 0.2


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


#: Lock-free reads of a store file before it is judged not a database (see ``EvaluationStore._recognise``).
_IMMUTABLE_READS = 3


class EvaluationStore:
    """SQLite-backed store; picklable (each process opens its own connection on first use).

    Opening it (on first use) raises :class:`~nas_rl.errors.DataError`, naming the file, when it is not a
    store this code can read and write: a folder, not an SQLite database, another application's database, a
    store of a newer version, a read-only file or folder.

    :param path: database file (its folder is created), or ``":memory:"`` for a private in-process store.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._warned_copy = False
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        """What belongs to one process: its connection, its owner token and the claims it holds."""
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held: dict[tuple[str, str], float] = {}  # (arch, fingerprint) -> its stale_after
        self._lock = threading.Lock()
        self._heartbeat: _Heartbeat | None = None

    def __getstate__(self) -> dict[str, Any]:
        if self._is_memory and not self._warned_copy and self._holds_evaluations():
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
        self._warned_copy = False
        self._reset_process_state()

    @property
    def _is_memory(self) -> bool:
        return str(self.path) == ":memory:"

    @property
    def shared(self) -> bool:
        """Whether other processes can open this store (a file), so that claims matter; an in-memory one is private."""
        return not self._is_memory

    def _holds_evaluations(self) -> bool:
        """Whether this process's open connection holds an evaluation (never opens a connection to find out)."""
        if self._conn is None or self._pid != os.getpid():
            return False
        return self._conn.execute("SELECT 1 FROM evaluations LIMIT 1").fetchone() is not None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            self._reset_process_state()  # a forked copy: the parent's connection and claims are not its own
        if self._conn is None:
            conn = self._open()
            conn.row_factory = sqlite3.Row
            self._conn = conn
        return self._conn

    def _open(self, timeout: float = 60.0) -> sqlite3.Connection:
        """Recognise the file (creating or upgrading it), then connect in WAL mode.

        Retries while another process holds the lock: processes that open a fresh store at the same moment
        (vector env workers) can get "database is locked" at once from the journal-mode switch, which SQLite's
        busy timeout does not cover.
        """
        if self._is_memory:
            conn = sqlite3.connect(":memory:", isolation_level=None)
            self._initialise(conn)
            return conn
        self._check_path()
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._connect(timeout)
            except sqlite3.OperationalError as error:
                if ("locked" in str(error) or "busy" in str(error)) and time.monotonic() < deadline:
                    time.sleep(0.05 + random.random() * 0.1)
                    continue
                raise self._fault(error) from None
            except sqlite3.DatabaseError as error:
                raise self._not_a_database(error) from None

    def _check_path(self) -> None:
        if self.path.is_dir():
            raise DataError(
                f"evaluation store {self.path} is a folder: expected an SQLite file (such as "
                f"{self.path / 'evaluations.sqlite'})"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DataError(
                f"evaluation store {self.path}: its folder {self.path.parent} cannot be created ({error.strerror}): "
                "expected a path in a folder this process can write"
            ) from None

    def _connect(self, timeout: float) -> sqlite3.Connection:
        if self.path.exists() and self.path.stat().st_size > 0:
            self._recognise(timeout)
        conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        try:
            self._initialise(conn)
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _recognise(self, timeout: float) -> None:
        """Refuse a file that is not a store before any connection that could write to it: a read-write
        connection may roll back another application's hot journal, or checkpoint its WAL file into it.

        The file is read alone (``immutable``: no lock, and no journal, WAL or shared-memory file opened or
        made beside it). That read can fail on a store another process is writing (a page read mid-commit or
        mid-checkpoint); such a process keeps a journal or WAL file beside the store, so only then is the file
        read again through a read-only connection, which takes SQLite's locks. Without one the read is tried a
        few times (the writer may have just finished) and its error stands: a read-only connection would make
        empty WAL and shared-memory files beside a damaged file whose header says WAL. Only SQLite opens the
        file: POSIX locks belong to a process, so closing a descriptor opened outside SQLite would drop the
        locks of this process's other connections to the store, and another process could then checkpoint and
        reset the WAL under them, which corrupts the store.
        """
        uri = self.path.resolve().as_uri()
        for attempt in range(_IMMUTABLE_READS):
            try:
                with contextlib.closing(sqlite3.connect(f"{uri}?immutable=1", uri=True)) as reader:
                    _version(reader, self.path)
                    return
            except sqlite3.DatabaseError:
                if any(Path(f"{self.path}{suffix}").exists() for suffix in ("-journal", "-wal")):
                    break
                if attempt == _IMMUTABLE_READS - 1:
                    raise
                time.sleep(0.05)
        with contextlib.closing(sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout)) as reader:
            _version(reader, self.path)

    def _not_a_database(self, reason: object) -> DataError:
        return DataError(
            f"evaluation store {self.path} is not an SQLite database ({reason}): expected an evaluation store "
            "written by nas-rl, or a new file; it was left untouched"
        )

    def _initialise(self, conn: sqlite3.Connection) -> None:
        """Create or upgrade the store in one transaction, judging it again under the write lock (another
        process may have created or upgraded it since it was looked at); fail here if it cannot be written."""
        with _transaction(conn):
            version = _version(conn, self.path)
            if version == 0:
                for statement in _V1_SCHEMA:
                    conn.execute(statement)
                version = 1
            if version == 1:
                try:
                    for statement in _TO_V2:
                        conn.execute(statement)
                except sqlite3.IntegrityError as error:  # e.g. a trigger added to the file refusing a step
                    raise DataError(
                        f"evaluation store {self.path} could not be upgraded to version {SCHEMA_VERSION} ({error}); "
                        "it was left as it was"
                    ) from None
            # Changes nothing, but is refused at once by a store this process cannot write.
            conn.execute("UPDATE fingerprints SET settings = settings WHERE 0")

    def _fault(self, error: sqlite3.OperationalError) -> DataError:
        """The one-line error of a store that cannot be opened for writing."""
        if not self.path.exists():
            return DataError(
                f"evaluation store {self.path} cannot be created ({error}): expected a path in a folder this "
                "process can write"
            )
        return DataError(
            f"evaluation store {self.path} cannot be written ({error}): expected a file this process can write, "
            "in a folder it can write (SQLite keeps its journal beside the file)"
        )

    def close(self) -> None:
        """Close this process's connection (reopened on next use); an in-memory store stays open: closing would lose it."""
        if self._is_memory:
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
        """The stored evaluation of ``arch`` under ``fingerprint``, or None."""
        row = self.conn.execute(
            "SELECT * FROM evaluations WHERE arch = ? AND fingerprint = ?", (arch, fingerprint)
        ).fetchone()
        return None if row is None else _evaluation(row)

    def add(self, evaluation: Evaluation) -> Evaluation:
        """Store ``evaluation`` and end this store's claim on its key; returns the stored row.

        The first evaluation of a key stays: if another process stored one meanwhile (it did not claim it, or
        took over a claim of this one that went stale), that one is returned.
        """
        fields = {k: v for k, v in asdict(evaluation).items() if k != "id"}
        fields["created_at"] = time.time()
        conn = self.conn
        with _transaction(conn):
            cursor = conn.execute(
                f"INSERT INTO evaluations ({', '.join(fields)}) VALUES ({', '.join('?' * len(fields))})"
                " ON CONFLICT (arch, fingerprint) DO NOTHING",
                tuple(fields.values()),
            )
            if cursor.rowcount:
                evaluation.id = cursor.lastrowid
                stored: Evaluation | None = evaluation
            else:
                stored = self.lookup(evaluation.arch, evaluation.fingerprint)
            if (evaluation.arch, evaluation.fingerprint) in self._held:
                self._delete_claim(conn, evaluation.arch, evaluation.fingerprint)
        assert stored is not None  # inserted, or there was a row in the way
        return stored

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

    # In-flight claims --------------------------------------------------------------------------------------------

    def claim(self, arch: str, fingerprint: str, stale_after_s: float = 60.0) -> bool:
        """Claim the evaluation of ``arch`` under ``fingerprint`` for this store object in this process.

        True: the caller holds the claim; it evaluates, then :meth:`add`\\ s the result (which ends the claim)
        or :meth:`release`\\ s it. A background thread renews it every ``stale_after_s / 4`` seconds meanwhile.
        False: the evaluation is stored already, or a live claim (of another process, or an earlier call of
        this one) holds it: :meth:`wait_for` it. A claim of a process of this host that no longer exists, or
        one its owner has not renewed for its own ``stale_after_s`` (a killed process elsewhere), is taken over.
        """
        key = (arch, fingerprint)
        conn = self.conn
        with _transaction(conn):
            if conn.execute("SELECT 1 FROM evaluations WHERE arch = ? AND fingerprint = ?", key).fetchone():
                return False
            if self._live_claim(conn, arch, fingerprint):
                return False
            conn.execute(
                "INSERT OR REPLACE INTO claims (arch, fingerprint, owner, heartbeat, stale_after) VALUES (?, ?, ?, ?, ?)",
                # In memory, a claim dies with its process and connection: it never goes stale (no heartbeat).
                (arch, fingerprint, self._owner, time.time(), math.inf if self._is_memory else float(stale_after_s)),
            )
        with self._lock:
            self._held[key] = float(stale_after_s)
            if not self._is_memory and (self._heartbeat is None or not self._heartbeat.is_alive()):
                self._heartbeat = _Heartbeat(self)
                self._heartbeat.start()
            elif self._heartbeat is not None:
                self._heartbeat.wake.set()  # a shorter stale_after_s than those held: renew sooner
        return True

    def release(self, arch: str, fingerprint: str) -> None:
        """End this store's claim on ``arch`` under ``fingerprint`` without a result (a waiter then claims it)."""
        if (arch, fingerprint) not in self._held:
            return
        conn = self.conn
        with _transaction(conn):
            self._delete_claim(conn, arch, fingerprint)

    def wait_for(self, arch: str, fingerprint: str, timeout_s: float | None = None) -> Evaluation | None:
        """Wait while a live claim holds ``arch`` under ``fingerprint``: the stored evaluation once there is one.

        None when there is no evaluation and no live claim (its owner released it without a result, or stopped
        renewing it: the caller may :meth:`claim` it now), or after ``timeout_s`` seconds (None: no limit).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        conn = self.conn
        while True:
            evaluation = self.lookup(arch, fingerprint)
            if evaluation is not None:
                return evaluation
            if not self._live_claim(conn, arch, fingerprint):
                return self.lookup(arch, fingerprint)  # written just before the claim ended, or None
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(POLL_SECONDS)

    def claims(self) -> list[dict[str, Any]]:
        """The claims in the store (evaluations in flight, and stale ones not taken over yet)."""
        return [dict(row) for row in self.conn.execute("SELECT * FROM claims ORDER BY arch, fingerprint")]

    @staticmethod
    def _live_claim(conn: sqlite3.Connection, arch: str, fingerprint: str) -> bool:
        """Whether a claim holds the key: renewed within its ``stale_after``, and, when its owner is a process of
        this host, that process still runs (so a killed one's claim is taken over at once, not after a timeout)."""
        row = conn.execute(
            "SELECT owner, heartbeat, stale_after FROM claims WHERE arch = ? AND fingerprint = ?", (arch, fingerprint)
        ).fetchone()
        if row is None or time.time() - row[1] > row[2]:
            return False
        host, pid, _ = str(row[0]).rsplit(":", 2)
        return host != socket.gethostname() or _runs(int(pid))

    def _delete_claim(self, conn: sqlite3.Connection, arch: str, fingerprint: str) -> None:
        conn.execute(
            "DELETE FROM claims WHERE arch = ? AND fingerprint = ? AND owner = ?", (arch, fingerprint, self._owner)
        )
        with self._lock:
            self._held.pop((arch, fingerprint), None)

    def _renew_claims(self, conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE claims SET heartbeat = ? WHERE owner = ?", (time.time(), self._owner))


class _Heartbeat(threading.Thread):
    """Renews a store's claims from a connection of its own while the store holds any; ends when it holds none."""

    def __init__(self, store: EvaluationStore) -> None:
        super().__init__(name="nas-rl-claim-heartbeat", daemon=True)
        self.store = store
        self.wake = threading.Event()  # set by a new claim: its stale_after may call for a shorter period

    def run(self) -> None:
        store, conn = self.store, None
        try:
            while True:
                with store._lock:
                    if not store._held:
                        store._heartbeat = None
                        return
                    period = min(store._held.values()) / 4
                if self.wake.wait(period):
                    self.wake.clear()
                    continue  # a new claim starts with a fresh heartbeat: only the period may change
                try:
                    conn = conn or sqlite3.connect(store.path, timeout=period, isolation_level=None)
                    store._renew_claims(conn)
                except sqlite3.Error:
                    pass  # a busy store: the next beat tries again, well within stale_after
        finally:
            if conn is not None:
                conn.close()


def _runs(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (a killed one not yet reaped by its parent still does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (taken at once, so two processes never both read before writing)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _version(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of the database on ``conn``: 0 for an empty one, 1 for an unmarked store of an earlier
    release, :data:`SCHEMA_VERSION` for a current one; :class:`DataError` for anything else. Only reads."""
    application, version = (conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("application_id", "user_version"))
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    tables -= {"sqlite_sequence"}
    if application == APPLICATION_ID:
        if 1 <= version <= SCHEMA_VERSION:
            return version
        raise DataError(
            f"evaluation store {path} has schema version {version}: this nas-rl reads versions 1 to "
            f"{SCHEMA_VERSION} (a newer nas-rl wrote it?); it was left untouched"
        )
    if application == 0 and version == 0 and not tables:
        return 0
    if application == 0 and version == 0 and tables == set(_V1_COLUMNS):
        columns = {name: {row[1] for row in conn.execute(f"PRAGMA table_info({name})")} for name in _V1_COLUMNS}
        if all(columns[name] >= needed for name, needed in _V1_COLUMNS.items()):
            return 1
    found = [f"tables: {', '.join(sorted(tables)) or 'none'}"]
    found += [
        f"{name} {value}" for name, value in (("application id", application), ("user version", version)) if value
    ]
    raise DataError(
        f"evaluation store {path} is an SQLite database of something else ({'; '.join(found)}): expected an "
        f"evaluation store written by nas-rl (tables {', '.join(_V1_COLUMNS)}), or a new file; it was left untouched"
    )


def _evaluation(row: sqlite3.Row) -> Evaluation:
    keys = set(row.keys())
    return Evaluation(**{k: row[k] for k in Evaluation.__dataclass_fields__ if k in keys})
