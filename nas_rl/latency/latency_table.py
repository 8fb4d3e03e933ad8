"""The latency table file: one device's measured latency of every piece of a search space's networks.

The file is JSON Lines, appended one row at a time as measurements complete, so a killed profiling run
loses at most the row it was writing and resumes where it stopped. Rows, by their ``row`` field:

``header`` (the first line, exactly once)
    ``format``, ``version``, ``table_id`` (random, names this table in fingerprints), ``created``, ``device``
    (a :class:`~nas_rl.latency.device.DeviceSpec` as a dict), ``input_shape`` ``[1, H, W, C]``, ``space`` (the
    search space's fingerprint), ``layer_timing`` and ``network_timing`` (benchmark settings), ``conversion``
    and ``network_seed`` (the seed the whole-network samples are drawn with).
``entry``
    one piece (:class:`~nas_rl.latency.layers.Entry`): ``key``, ``config``, ``macs``, ``params``, the latency
    statistics in ms (``median_ms`` ... ``runs``) and ``seconds`` spent converting and timing it; or ``error``
    when the piece could not be converted or run.
``network``
    one whole architecture drawn from the space (``index``-th draw of ``network_seed``): ``arch`` and its
    measured statistics. They fit the per-network overhead and train learned predictors.

A key (or network index) may have several rows (a refining pass measures the costliest entries and the
networks again; two processes may measure the same miss): the row with the lowest median wins, because on a
shared machine a neighbour's work only ever slows a measurement. An entry that could not be measured stays so
unless a later row has statistics.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas_rl.arch import ArchSpec
from nas_rl.errors import ConfigError
from nas_rl.latency.base import LatencyStats
from nas_rl.latency.device import DeviceSpec, describe

FORMAT = "nas-rl-latency-table"
VERSION = 1
STAT_FIELDS = ("median_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "runs")
#: Space settings that do not change a network's pieces: the proxy-training resolution (tables are taken at
#: the deployment input shape, which the header records on its own).
SPACE_KEYS_IGNORED = ("resolution",)


@dataclass(frozen=True)
class TableTarget:
    """What a run asks a latency table to describe: device, threads, precision, input shape and search space.

    :param device: the device's name.
    :param threads: interpreter threads.
    :param precision: ``fp32`` or ``int8``.
    :param input_shape: ``(1, H, W, C)`` at deployment.
    :param space: the search space's fingerprint.
    """

    device: str
    threads: int
    precision: str
    input_shape: tuple[int, int, int, int]
    space: dict[str, Any]

    def mismatches(self, header: dict[str, Any]) -> list[str]:
        """One ``key: table has X, this run asks for Y`` phrase per setting the table was built differently."""
        device = header.get("device", {})
        pairs = [
            ("device", device.get("name"), self.device),
            ("threads", device.get("threads"), self.threads),
            ("precision", device.get("precision"), self.precision),
            ("input_shape", list(header.get("input_shape", [])), list(self.input_shape)),
        ]
        phrases = [
            f"{key}: table has {have!r}, this run asks for {want!r}" for key, have, want in pairs if have != want
        ]
        have_space, want_space = space_identity(header.get("space", {})), space_identity(self.space)
        if have_space != want_space:
            differing = sorted(k for k in set(have_space) | set(want_space) if have_space.get(k) != want_space.get(k))
            detail = ", ".join(f"{k}={have_space.get(k)!r} vs {want_space.get(k)!r}" for k in differing)
            phrases.append(f"search space: table vs this run differ in {detail}")
        return phrases

    def file_name(self) -> str:
        """Default file name: readable settings and a digest of the space (whose settings are too long)."""
        _, height, width, channels = self.input_shape
        digest = hashlib.sha256(json.dumps(space_identity(self.space), sort_keys=True).encode()).hexdigest()[:8]
        space = self.space.get("space", "space")
        return f"{self.device}-{self.precision}-{self.threads}t-{space}-{height}x{width}x{channels}-{digest}.jsonl"


def table_target(space: Any, resolution: Any, device: str, threads: int, precision: str) -> TableTarget:
    """The table a run with these settings asks for (the input channels are the space's networks')."""
    if space is None:
        raise ConfigError("space=None is not accepted: use the search space the table describes")
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 1:
        raise ConfigError(
            f"resolution={resolution!r} is not accepted: use the deployment input size (an integer >= 1)"
        )
    in_channels = space.decode([0] * space.num_decisions).in_channels
    return TableTarget(str(device), int(threads), str(precision), (1, resolution, resolution, in_channels),
                       space.fingerprint())  # fmt: skip


def space_identity(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The part of a space fingerprint that decides which pieces its networks have."""
    return {k: v for k, v in fingerprint.items() if k not in SPACE_KEYS_IGNORED}


#: Latency tables shipped in the package (measured on a stated reference device; see their headers).
SHIPPED = Path(__file__).resolve().parent / "data"


def table_path(path: str | os.PathLike[str] | None, directory: str | os.PathLike[str], target: TableTarget) -> Path:
    """``path`` when given (a bare file name that is not here names a shipped table), else
    ``directory/<target's default file name>``."""
    if not path:
        return Path(directory) / target.file_name()
    given = Path(path).expanduser()
    if not given.exists() and given.name == str(path) and (SHIPPED / given.name).is_file():
        return SHIPPED / given.name
    return given


class LatencyTable:
    """A latency table file, read into memory; :meth:`append` adds a row to memory and to the file.

    Open an existing file with :meth:`read` and a new one with :meth:`create`.
    """

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.header = header
        self.entries: dict[str, dict[str, Any]] = {}
        self.networks: dict[int, dict[str, Any]] = {}
        self.measurements: dict[str, int] = {}  # rows per entry key
        self.network_measurements: dict[int, int] = {}  # rows per network index
        self._unterminated = False  # the file's last row lacks its newline

    @property
    def table_id(self) -> str:
        return str(self.header["table_id"])

    @classmethod
    def create(cls, path: str | os.PathLike[str], header: dict[str, Any]) -> LatencyTable:
        """Start a new table file with ``header`` (format, version, id and date are filled in)."""
        header = {
            "row": "header",
            "format": FORMAT,
            "version": VERSION,
            "table_id": uuid.uuid4().hex,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **header,
        }
        table = cls(Path(path), header)
        table.path.parent.mkdir(parents=True, exist_ok=True)
        with open(table.path, "x", encoding="utf-8") as handle:  # never overwrite a table
            handle.write(json.dumps(header) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return table

    @classmethod
    def read(cls, path: str | os.PathLike[str], repair: bool = False) -> LatencyTable:
        """Read and validate a table file.

        Nothing is ever written to a file whose first line is not a table header: it is refused as not a table.

        :param repair: cut a half-written last line (what a killed profiling run leaves) of a recognised table
            instead of refusing the file; the profiler resumes with it. The cut happens only once every other
            line has been read and checked.
        :raises ConfigError: the file is missing, empty, not a table, half-written or corrupt; the message names
            the file and says which.
        """
        path = Path(path)
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise ConfigError(
                f"latency table {path} {what}; accepted: a table written by nas-rl-profile (run "
                "`nas-rl-profile device=<name> search_space=<name>` for this device and space first)"
            )
        data = path.read_bytes()
        if not data:
            raise ConfigError(f"latency table {path} is empty; accepted: a table written by nas-rl-profile")
        first, newline, rest = data.partition(b"\n")
        header = _header(path, first if newline else None)
        if header.get("version") != VERSION:
            raise ConfigError(
                f"latency table {path} has format version {header.get('version')!r}; accepted: {VERSION} "
                "(profile the device again with this version of nas-rl)"
            )
        for key in ("table_id", "device", "input_shape", "space"):
            if key not in header:
                raise ConfigError(f"latency table {path}: the header lacks {key!r}; the file is corrupt")
        lines = rest.decode("utf-8", errors="replace").split("\n")
        last = lines.pop()  # "" when the file ends with a newline, else its unterminated last line
        table = cls(path, header)
        for number, line in enumerate(lines, start=2):
            table._add(_parse(path, number, line), path, number)
        if last:
            table._last_line(last, len(lines) + 2, repair, data.rfind(b"\n") + 1)
        return table

    def _last_line(self, text: str, number: int, repair: bool, complete_bytes: int) -> None:
        """The unterminated last line of a recognised table: a row missing only its newline is kept (the next
        :meth:`append` ends its line); a half-written row is refused, or cut when repairing."""
        try:
            row = json.loads(text)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            self._add(row, self.path, number)
            self._unterminated = True  # the next append ends the line first
            return
        if not repair:
            raise ConfigError(
                f"latency table {self.path} is a nas-rl latency table whose last line (line {number}) is half-written, "
                "as a killed nas-rl-profile leaves it; accepted: a complete table (run nas-rl-profile again with "
                "the same settings: it cuts that line and resumes)"
            )
        with open(self.path, "r+b") as handle:
            handle.truncate(complete_bytes)

    def append(self, row: dict[str, Any]) -> None:
        """Write ``row`` as one line (flushed and synced: a crash loses at most this row) and keep it."""
        self._add(row, self.path, None)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(("\n" if self._unterminated else "") + json.dumps(row) + "\n")
            self._unterminated = False
            handle.flush()
            os.fsync(handle.fileno())

    def _add(self, row: dict[str, Any], path: Path, line: int | None) -> None:
        where = f"latency table {path}" + (f": line {line}" if line else "")
        kind = row.get("row")
        try:
            if kind == "entry":
                key = str(row["key"])
                _keep_quietest(self.entries, key, row)
                self.measurements[key] = self.measurements.get(key, 0) + 1
            elif kind == "network":
                index = int(row["index"])
                known = self.networks.get(index)
                if known is not None and known["arch"] != row["arch"]:
                    raise ValueError(f"network {index} is {known['arch']} in an earlier row and {row['arch']} here")
                _keep_quietest(self.networks, index, row)
                self.network_measurements[index] = self.network_measurements.get(index, 0) + 1
            else:
                raise ConfigError(f"{where} has an unknown row type {kind!r}; accepted: entry, network")
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, ConfigError):
                raise
            raise ConfigError(f"{where} is corrupt: {type(error).__name__}: {error}") from None

    def stats(self, key: str) -> LatencyStats | None:
        """Statistics of the entry ``key``; ``None`` when the table has no such entry."""
        row = self.entries.get(key)
        return None if row is None or "error" in row else _stats(row)

    def network_samples(self) -> list[dict[str, Any]]:
        """The measured whole-network rows, in draw order (rows of networks that failed are left out)."""
        return [self.networks[i] for i in sorted(self.networks) if "error" not in self.networks[i]]

    def network_archs(self, space: Any) -> list[tuple[ArchSpec, dict[str, Any]]]:
        """The measured whole-network samples as ``(architecture, row)`` pairs (stem, head and classes: ``space``'s)."""
        template = space.decode([0] * space.num_decisions)
        names = ("stem_channels", "stem_stride", "head_channels", "num_classes", "in_channels")
        settings = {name: getattr(template, name) for name in names}
        return [(ArchSpec.from_string(row["arch"], **settings), row) for row in self.network_samples()]

    def describe(self) -> str:
        device = self.header["device"]
        return (
            f"{self.path} ({device.get('name')}, {device.get('threads')} thread(s), {device.get('precision')}, "
            f"input {self.header['input_shape']}, {len(self.entries)} entries, {len(self.networks)} networks)"
        )


def _header(path: Path, line: bytes | None) -> dict[str, Any]:
    """The header row of ``path`` from its first line (``None``: the file has no complete first line); a first
    line that is not a complete nas-rl table header means the file is not a table."""
    header: Any = None
    if line is not None:
        try:
            header = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
    if not isinstance(header, dict) or header.get("row") != "header" or header.get("format") != FORMAT:
        raise ConfigError(
            f"{path} is not a nas-rl latency table (its first line is not a complete {FORMAT} header), so it was "
            "neither read nor changed; accepted: a table written by nas-rl-profile, or, for a new table, a path "
            "where no file exists yet"
        )
    return header


def _parse(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ConfigError(f"latency table {path} is corrupt: line {number} is not JSON ({error.msg})") from None
    if not isinstance(row, dict):
        raise ConfigError(f"latency table {path} is corrupt: line {number} is not a JSON object")
    return row


def _keep_quietest(rows: dict[Any, dict[str, Any]], key: Any, row: dict[str, Any]) -> None:
    """Keep ``row`` under ``key`` if it is the first, or measured where the kept one failed, or has a lower median."""
    known = rows.get(key)
    if "error" not in row:
        median = _stats(row).median_ms
        if known is None or "error" in known or median < known["median_ms"]:
            rows[key] = row
    elif known is None:
        rows[key] = row


def _stats(row: dict[str, Any]) -> LatencyStats:
    values = [row[name] for name in STAT_FIELDS]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) or not values[0] > 0:
        raise ValueError(f"latency statistics {values} are not positive numbers")
    median, mean, std, low, high = (float(v) for v in values[:-1])
    return LatencyStats(median, mean, std, low, high, int(values[-1]))


def check_target(table: LatencyTable, target: TableTarget) -> None:
    """Refuse a table built for another device, thread count, precision, input shape or search space."""
    mismatches = target.mismatches(table.header)
    if mismatches:
        recorded = table.header.get("device")
        measured = f" (it was measured on {describe(recorded)})" if isinstance(recorded, dict) else ""
        raise ConfigError(
            f"latency table {table.path} was built for another setting than this run: {'; '.join(mismatches)}"
            f"{measured}. Accepted: a table profiled for this run's settings (nas-rl-profile with the same device, "
            "threads, precision, resolution and search space), or point latency.path at one"
        )


def check_device(table: LatencyTable, here: DeviceSpec, allow_other_device: bool = False) -> None:
    """Refuse a table measured on a device described otherwise than ``here`` (the configured device's description:
    another CPU model, phone, runtime or converter version measures other latencies), naming both descriptions. With
    ``allow_other_device`` the table is used, with a warning: its latencies are the other device's (as a shipped
    table's, measured on the reference device its header names)."""
    recorded = table.header.get("device")
    recorded = recorded if isinstance(recorded, dict) else {}
    wanted = here.as_dict()
    if recorded == wanted:
        return
    differing = ", ".join(key for key in wanted if recorded.get(key) != wanted[key]) or "its fields"
    message = (
        f"latency table {table.path} was measured on another device than this one (they differ in {differing}): "
        f"the table's is {describe(recorded)}, this one is {describe(wanted)}"
    )
    if allow_other_device:
        warnings.warn(f"{message}; its latencies are the table's device's (allow_other_device=true)", stacklevel=3)
        return
    raise ConfigError(
        f"{message}. Accepted: a table profiled on this device (nas-rl-profile with the same settings), or "
        "allow_other_device=true on the latency model (latency.allow_other_device=true) to use the other "
        "device's latencies knowingly"
    )
