"""The packed tabular benchmark: every architecture of a small space with its measured accuracy and latency.

A table is one NumPy ``.npz`` file (written by ``python -m nas_rl.tools.build_table pack``), read without pickle.
Row ``i`` is the ``i``-th token sequence of the space (:meth:`TabularSpace.all_tokens` order). Arrays:

``tokens`` (N, L) int16, ``arch`` (N,) block strings, ``status`` (N,) ``ok`` / ``failed``, ``error`` (N,)
(empty when ok), ``accuracy`` (N,) float64 (NaN when failed), ``latency_median_ms``, ``latency_mean_ms``,
``latency_std_ms``, ``latency_min_ms``, ``latency_max_ms`` (N,) float64, ``latency_runs`` (N,) int64,
``accuracy_seconds`` and ``latency_seconds`` (N,) float64 (what each measurement cost when the table was
built), and ``meta``: a 0-d string array holding one JSON object:

``format``, ``version``, ``name``, ``digest`` (sha256 of every array and of ``meta`` without ``digest``: the
table's identity in fingerprints), ``created``, ``size``, ``recipe`` (``space``: the space's fingerprint, which
holds the stem, head, classes and input channels; ``accuracy`` and ``latency``: the estimators' fingerprints;
``config``: the recipe the table was built from, resolved), ``device`` (the latency device's description) and ``build``
(hosts, seconds, load averages; informative only).

:func:`load_table` refuses a file that is missing, unreadable, incomplete (not one row per architecture of its
space, in order), altered after packing (digest), or whose recipe or device fields are missing, with a
message that names the file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from nas_rl._util import atomic_write
from nas_rl.arch import ArchSpec
from nas_rl.errors import ConfigError, EvaluationFailed
from nas_rl.latency.base import LatencyStats
from nas_rl.spaces.base import SearchSpace
from nas_rl.spaces.tabular import TabularSpace

FORMAT = "nas-rl-tabular-benchmark"
VERSION = 1
SUFFIX = ".npz"
#: Where shipped tables live (package data): a table is named by its file name without ``.npz``.
DATA_PACKAGE = "nas_rl.benchmark"
DATA_FOLDER = "data"

FLOAT_COLUMNS = (
    "accuracy", "latency_median_ms", "latency_mean_ms", "latency_std_ms", "latency_min_ms", "latency_max_ms",
    "accuracy_seconds", "latency_seconds",
)  # fmt: skip
ARRAYS = ("tokens", "arch", "status", "error", "latency_runs", *FLOAT_COLUMNS)
REQUIRED_META = ("format", "version", "name", "digest", "size", "recipe", "device")
REQUIRED_RECIPE = ("space", "accuracy", "latency")
STATUSES = ("ok", "failed")


@dataclass
class Table:
    """A loaded, validated table. Look rows up with :meth:`row` (an ArchSpec) or :meth:`index` (tokens).

    :param path: the file it was read from.
    :param meta: the ``meta`` JSON object.
    :param columns: the arrays, by name.
    """

    path: Path
    meta: dict[str, Any]
    columns: dict[str, np.ndarray]
    space: TabularSpace = field(init=False)
    _rows: dict[ArchSpec, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.space = space_from_fingerprint(self.meta["recipe"]["space"])
        self._rows = {self.space.decode(tuple(t)): i for i, t in enumerate(self.columns["tokens"].tolist())}

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def digest(self) -> str:
        return str(self.meta["digest"])

    @property
    def device(self) -> dict[str, Any]:
        return dict(self.meta["device"])

    def __len__(self) -> int:
        return len(self.columns["arch"])

    def row(self, arch: ArchSpec) -> int:
        """Row of ``arch``; ConfigError when the table's space does not hold it."""
        index = self._rows.get(arch)
        if index is None:
            raise ConfigError(
                f"table {self.name} ({self.path}) has no architecture {arch.to_string()} with {_network(arch)}: the "
                f"search space must be the table's ({self.space.fingerprint()})"
            )
        return index

    def index(self, tokens: Sequence[int]) -> int:
        return self.space.index(tokens)

    def ok(self, index: int) -> bool:
        return self.columns["status"][index] == "ok"

    def error(self, index: int) -> str:
        return str(self.columns["error"][index])

    def failure(self, index: int) -> str:
        """Why row ``index`` has no values: the reason recorded when the table was built."""
        return f"failed when table {self.name} was built: {self.error(index)}"

    def evaluated_row(self, arch: ArchSpec) -> int:
        """Row of ``arch``; EvaluationFailed with the recorded reason when its evaluation failed at build time."""
        index = self.row(arch)
        if not self.ok(index):
            raise EvaluationFailed(self.failure(index))
        return index

    def accuracy(self, index: int) -> float:
        return float(self.columns["accuracy"][index])

    def latency(self, index: int) -> LatencyStats:
        c = self.columns
        return LatencyStats(
            median_ms=float(c["latency_median_ms"][index]),
            mean_ms=float(c["latency_mean_ms"][index]),
            std_ms=float(c["latency_std_ms"][index]),
            min_ms=float(c["latency_min_ms"][index]),
            max_ms=float(c["latency_max_ms"][index]),
            runs=int(c["latency_runs"][index]),
        )

    def fingerprint(self) -> dict[str, str]:
        """The table's identity: its name and content digest."""
        return {"table": self.name, "digest": self.digest}

    def latency_range(self) -> tuple[float, float]:
        """Smallest and largest median latency (ms) of the evaluated architectures."""
        values = self.columns["latency_median_ms"][self.columns["status"] == "ok"]
        return float(values.min()), float(values.max())

    def rewards(self, reward: Any) -> np.ndarray:
        """``reward(accuracy, latency)`` of every row, 0 for failed rows (what the env pays for them)."""
        out = np.zeros(len(self))
        for i in np.flatnonzero(self.columns["status"] == "ok"):
            out[i] = reward(self.accuracy(int(i)), float(self.columns["latency_median_ms"][i]))
        return out


def shipped_tables() -> list[str]:
    """Names of the tables shipped in the package."""
    folder = resources.files(DATA_PACKAGE) / DATA_FOLDER
    if not folder.is_dir():
        return []
    return sorted(f.name[: -len(SUFFIX)] for f in folder.iterdir() if f.name.endswith(SUFFIX))


def shipped_path(name: str) -> Path:
    """Where the shipped table ``name`` lives (it may not exist yet)."""
    return Path(str(resources.files(DATA_PACKAGE) / DATA_FOLDER / f"{name}{SUFFIX}"))


def resolve(table: str | os.PathLike[str] | None, key: str = "table") -> Path:
    """A table reference -> its file: a path (anything with a folder or the ``.npz`` suffix), else a shipped name."""
    if table is None or str(table).strip() in ("", "???"):
        raise ConfigError(f"{key} is not set: pass {key}=NAME (a shipped table: {_shipped_list()}) or {key}=FILE.npz")
    text = str(table)
    if os.sep in text or "/" in text or text.endswith(SUFFIX):
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"{key}={text}: no such file; expected a table written by `python -m nas_rl.tools.build_table pack`"
            )
        return path
    path = shipped_path(text)
    if not path.is_file():
        raise ConfigError(
            f"{key}={text}: no shipped table of that name ({path} does not exist; shipped: {_shipped_list()}). "
            "Build it with `python -m nas_rl.tools.build_table run` and `... pack`, or pass the path of a packed table"
        )
    return path


def load_table(table: str | os.PathLike[str], key: str = "table") -> Table:
    """Read and validate a table (a shipped name or a path); loaded once per file content and shared."""
    path = resolve(table, key).resolve()
    stat = path.stat()
    return _load(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int, size: int) -> Table:
    where = f"table {path}"
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as error:  # noqa: BLE001  (any unreadable file is the same user error)
        raise ConfigError(f"{where}: not a readable .npz table ({type(error).__name__}: {error})") from None
    if "meta" not in arrays:
        raise ConfigError(f"{where}: no 'meta' array; not a nas-rl tabular benchmark (expected {FORMAT})")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{where}: 'meta' is not JSON ({error})") from None
    _check_meta(meta, where)
    missing = [name for name in ARRAYS if name not in arrays]
    if missing:
        raise ConfigError(f"{where}: missing array(s) {', '.join(missing)}; a packed table has {', '.join(ARRAYS)}")
    if table_digest(arrays, meta) != meta["digest"]:
        raise ConfigError(
            f"{where}: content does not match its digest {meta['digest']}: the file was altered after packing; pack it again"
        )
    _check_complete(arrays, meta, where)
    return Table(Path(path), meta, arrays)


def _check_meta(meta: Any, where: str) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ConfigError(f"{where}: format {found!r}; expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise ConfigError(f"{where}: format version {meta.get('version')!r}; this nas-rl reads version {VERSION}")
    missing = [key for key in REQUIRED_META if not meta.get(key)]
    recipe: dict[str, Any] = meta["recipe"] if isinstance(meta.get("recipe"), dict) else {}
    missing += [f"recipe.{key}" for key in REQUIRED_RECIPE if not recipe.get(key)]
    device: dict[str, Any] = meta["device"] if isinstance(meta.get("device"), dict) else {}
    missing += [f"device.{key}" for key in ("name", "runtime", "threads", "precision", "cpu_model") if key not in device]
    if missing:
        raise ConfigError(
            f"{where}: meta field(s) {', '.join(dict.fromkeys(missing))} missing; a table must record its recipe "
            "(space, accuracy and latency fingerprints) and its latency device"
        )


def _check_complete(arrays: dict[str, np.ndarray], meta: dict[str, Any], where: str) -> None:
    try:
        space = space_from_fingerprint(meta["recipe"]["space"])
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"{where}: recipe.space does not describe a tabular space ({error})") from None
    rows = len(arrays["arch"])
    if rows != space.size or meta["size"] != space.size:
        raise ConfigError(
            f"{where}: incomplete table: {rows} row(s) (meta says {meta['size']}) for the {space.size} architectures "
            "of its space; finish the build (`python -m nas_rl.tools.build_table status`) and pack again"
        )
    expected = np.asarray(space.all_tokens(), dtype=np.int64).reshape(space.size, space.num_decisions)
    if arrays["tokens"].shape != expected.shape or not np.array_equal(arrays["tokens"], expected):
        raise ConfigError(f"{where}: rows are not the space's architectures in order (tokens column)")
    if any(len(arrays[name]) != rows for name in ARRAYS):
        raise ConfigError(f"{where}: columns of different lengths: {({n: len(arrays[n]) for n in ARRAYS})}")
    bad = sorted(set(arrays["status"].tolist()) - set(STATUSES))
    if bad:
        raise ConfigError(f"{where}: status values {bad}; expected {STATUSES}")
    ok = arrays["status"] == "ok"
    values = np.stack([arrays["accuracy"][ok], arrays["latency_median_ms"][ok]])
    if not np.isfinite(values).all() or (arrays["latency_median_ms"][ok] <= 0).any():
        raise ConfigError(f"{where}: an 'ok' row has a missing accuracy or a latency that is not > 0")


def table_digest(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
    """sha256 of the arrays (name, dtype, shape, bytes, in name order) and of ``meta`` without ``digest``."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    rest = {k: v for k, v in meta.items() if k != "digest"}
    digest.update(json.dumps(rest, sort_keys=True, default=str).encode())
    return "sha256:" + digest.hexdigest()[:32]


def write_table(path: str | os.PathLike[str], columns: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write a table (``meta`` gets format, version, size and digest) atomically; returns the path."""
    path = Path(path)
    arrays = {name: np.asarray(columns[name]) for name in ARRAYS}
    meta = {**meta, "format": FORMAT, "version": VERSION, "size": int(len(arrays["arch"]))}
    meta.pop("digest", None)
    meta["digest"] = table_digest(arrays, meta)
    with atomic_write(path) as temporary:
        np.savez_compressed(temporary, meta=np.asarray(json.dumps(meta, sort_keys=True)), **arrays)  # type: ignore[arg-type]
    _load.cache_clear()
    return path


def space_from_fingerprint(fingerprint: dict[str, Any]) -> TabularSpace:
    """The TabularSpace a table's ``recipe.space`` describes."""
    if not isinstance(fingerprint, dict) or fingerprint.get("space") != "tabular":
        raise ConfigError(f"space fingerprint {fingerprint!r} is not a tabular space's")
    return TabularSpace(**{k: v for k, v in fingerprint.items() if k != "space"})


def table_space(table: str | os.PathLike[str]) -> TabularSpace:
    """The search space of a table (``search_space`` of the tabular env spec: the table decides the space)."""
    return load_table(table, "search_space.table").space


def open_table(table: str | os.PathLike[str], space: SearchSpace | None, key: str) -> Table:
    """The table ``table`` at setting ``key``, refused when ``space`` (the run's, when given) is not its space."""
    loaded = load_table(table, key=key)
    check_space(loaded, space, key)
    return loaded


def check_space(table: Table, space: TabularSpace | SearchSpace | dict[str, Any] | None, key: str) -> None:
    """ConfigError naming the differing settings when ``space`` is not the table's space."""
    if space is None:
        return
    have = table.meta["recipe"]["space"]
    want = space.fingerprint() if isinstance(space, SearchSpace) else space
    if have != want:
        differing = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        raise ConfigError(
            f"{key}={table.path}: the table was built for another search space (differs in {', '.join(differing)}); "
            "use the table's space (search_space=tabular with its settings) or a table built for this space"
        )


def _network(arch: ArchSpec) -> str:
    return (
        f"stem_channels={arch.stem_channels}, stem_stride={arch.stem_stride}, head_channels={arch.head_channels}, "
        f"num_classes={arch.num_classes}, in_channels={arch.in_channels}"
    )


def _shipped_list() -> str:
    return ", ".join(shipped_tables()) or "none yet"
