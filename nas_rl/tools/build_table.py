"""Build a tabular benchmark: evaluate every architecture of a recipe's space once, then pack the table.

    python -m nas_rl.tools.build_table run    [--recipe NAME|FILE] [--out DIR] [--phase both|accuracy|latency]
                                          [--part K --parts N] [--limit M] [KEY=VALUE ...]
    python -m nas_rl.tools.build_table status [--out DIR]
    python -m nas_rl.tools.build_table pack   [--out DIR] [--table FILE]

``run`` proxy-trains (:class:`~nas_rl.accuracy.proxy.ProxyTraining`) and measures (:class:`~nas_rl.latency.
litert.LiteRTLatency`) the architectures of part ``K`` of ``N`` (index modulo ``N``) that the build folder does
not hold yet, appending one JSON line per finished measurement to ``DIR/<phase>-<K>of<N>.jsonl`` at once: a
killed run loses only what it was measuring, and running the same command again continues. Parts run as
separate processes (one per core: the recipe trains with one thread), and the phases can run apart:
accuracies where training is cheap, latencies alone on the stated CPU (a parallel trainer on the other core
disturbs the timings). ``DIR/recipe.json`` records the recipe and each phase's fingerprint (the latency one
holds the device); a run whose settings or device differ is refused, naming what differs.

``pack`` refuses an incomplete folder; it writes the table (:mod:`nas_rl.benchmark.table`) to
``nas_rl/benchmark/data/<name>.npz`` unless ``--table`` says otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from nas_rl._util import first_line, write_text_atomically
from nas_rl.benchmark.table import (
    FLOAT_COLUMNS,
    shipped_path,
    space_from_fingerprint,
    write_table,
)
from nas_rl.config import build
from nas_rl.errors import ConfigError, EvaluationFailed
from nas_rl.evaluation.store import fingerprint_of
from nas_rl.spaces.tabular import TabularSpace

DEFAULT_RECIPE = "tabular-digits-v0"
RECIPE_PACKAGE = "nas_rl.benchmark"
RECIPE_FILE = "recipe.json"
PHASES = ("accuracy", "latency")
STAT_KEYS = ("median_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "runs")


# --- recipes --------------------------------------------------------------------------------------------


def load_recipe(recipe: str = DEFAULT_RECIPE, overrides: list[str] | None = None) -> DictConfig:
    """A recipe YAML (a shipped name under ``nas_rl/benchmark/recipes/`` or a path) with ``KEY=VALUE`` overrides."""
    text = str(recipe)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        path = Path(text).expanduser()
    else:
        path = Path(str(resources.files(RECIPE_PACKAGE) / "recipes" / f"{text}.yaml"))
    if not path.is_file():
        raise ConfigError(f"--recipe {text}: no such recipe ({path}); give a recipe name or a YAML file")
    cfg = OmegaConf.load(path)
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    missing = [key for key in ("name", "search_space", "accuracy", "latency") if key not in cfg]
    if missing:
        raise ConfigError(f"recipe {path}: missing section(s) {', '.join(missing)}")
    assert isinstance(cfg, DictConfig)  # it has named sections
    return cfg


def build_space(cfg: DictConfig) -> TabularSpace:
    space = build(cfg.search_space, "search_space")
    if not isinstance(space, TabularSpace):
        raise ConfigError(f"recipe search_space builds {type(space).__name__}; a table needs a TabularSpace")
    return space


# --- the build folder -----------------------------------------------------------------------------------


class BuildFolder:
    """The rows of a build: ``recipe.json`` and every ``*.jsonl`` file under ``path`` (first row per index wins)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def recipe_file(self) -> Path:
        return self.path / RECIPE_FILE

    def recipe(self) -> dict[str, Any] | None:
        return json.loads(self.recipe_file.read_text()) if self.recipe_file.is_file() else None

    def write_recipe(self, record: dict[str, Any]) -> None:
        write_text_atomically(self.recipe_file, json.dumps(record, indent=1, sort_keys=True, default=str))

    def rows(self, phase: str) -> dict[int, dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}
        for file in sorted(self.path.glob("*.jsonl")):
            for row in _read_lines(file):
                if row.get("phase") == phase:
                    found.setdefault(int(row["index"]), row)
        return found

    def writer(self, phase: str, part: int, parts: int) -> Callable[[dict[str, Any]], None]:
        """Append rows to this process's file for ``phase`` (a partly written last line is cut first)."""
        file = self.path / f"{phase}-{part}of{parts}.jsonl"
        _cut_partial_line(file)

        def append(row: dict[str, Any]) -> None:
            with open(file, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"phase": phase, **row}) + "\n")
                handle.flush()
                os.fsync(handle.fileno())

        return append


def _read_lines(file: Path) -> Iterator[dict[str, Any]]:
    with open(file, encoding="utf-8") as handle:
        for line in handle:
            if line.endswith("\n"):  # a line without its newline is one a killed run was writing
                yield json.loads(line)


def _cut_partial_line(file: Path) -> None:
    if not file.exists():
        return
    data = file.read_bytes()
    if data and not data.endswith(b"\n"):
        file.write_bytes(data[: data.rfind(b"\n") + 1])


# --- run ------------------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    """What one ``run`` did."""

    measured: dict[str, int]
    seconds: dict[str, float]
    pending: int


def run_build(
    cfg: DictConfig,
    out: str | os.PathLike[str],
    phase: str = "both",
    part: int = 0,
    parts: int = 1,
    limit: int | None = None,
    progress: bool = True,
) -> RunSummary:
    """Evaluate what part ``part`` of ``parts`` still lacks (at most ``limit`` architectures), appending rows."""
    phases = _phases(phase)
    if not (isinstance(parts, int) and parts >= 1 and 0 <= part < parts):
        raise ConfigError(f"--part {part} --parts {parts} is not accepted: use 0 <= K < N")
    if limit is not None and limit < 0:
        raise ConfigError(f"--limit {limit} is not accepted: use an integer >= 0")
    folder = BuildFolder(out)
    space = build_space(cfg)
    roles = {name: build(cfg[name], name) for name in phases}
    _check_recipe(folder, cfg, space, roles)
    done = {name: folder.rows(name) for name in phases}
    mine = range(part, space.size, parts)
    pending = [i for i in mine if any(i not in done[name] for name in phases)]
    todo = pending if limit is None else pending[:limit]
    writers = {name: folder.writer(name, part, parts) for name in phases}
    digests = {name: fingerprint_of(roles[name].fingerprint()) for name in phases}
    all_tokens = space.all_tokens()
    measured = {name: 0 for name in phases}
    seconds = {name: 0.0 for name in phases}
    for index in tqdm(todo, desc=f"{cfg.name} part {part}/{parts}", unit="arch", disable=not progress):
        arch = space.decode(all_tokens[index])
        for name in phases:
            if index in done[name]:
                continue
            row = _measure(name, roles[name], arch)
            writers[name]({"index": index, "arch": arch.to_string(), "recipe": digests[name], **row})
            measured[name] += 1
            seconds[name] += row["seconds"]
    return RunSummary(measured, seconds, len(pending) - len(todo))


def _phases(phase: str) -> tuple[str, ...]:
    if phase == "both":
        return PHASES
    if phase not in PHASES:
        raise ConfigError(f"--phase {phase} is not accepted: use both, accuracy or latency")
    return (phase,)


def _measure(phase: str, role: Any, arch: Any) -> dict[str, Any]:
    """One measurement as a row; a failure is a row too (status failed and the reason), as the env records it."""
    start = time.perf_counter()
    row: dict[str, Any] = {"status": "ok", "error": None}
    try:
        if phase == "accuracy":
            row["accuracy"] = float(role.accuracy(arch))
        else:
            row.update(role.measure(arch).as_dict())
            row["loadavg"] = os.getloadavg()[0]
    except EvaluationFailed as failure:
        row.update(status="failed", error=str(failure))
    except RuntimeError as failure:  # e.g. a torch kernel refusing a shape: the candidate fails, not the build
        row.update(status="failed", error=f"{type(failure).__name__}: {first_line(failure, 'no message')}")
    row["seconds"] = time.perf_counter() - start
    return row


def _check_recipe(folder: BuildFolder, cfg: DictConfig, space: TabularSpace, roles: dict[str, Any]) -> None:
    """Record this run's recipe in the folder, or refuse when the folder's differs (naming the keys)."""
    record = folder.recipe() or {
        "name": cfg.name,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "space": space.fingerprint(),
        "accuracy": None,
        "latency": None,
    }
    current = {"name": cfg.name, "space": space.fingerprint()}
    current.update({name: role.fingerprint() for name, role in roles.items()})
    for key, value in current.items():
        have = record.get(key)
        if have is None:
            record[key] = value
        elif json.loads(json.dumps(have)) != json.loads(json.dumps(value, default=str)):
            raise ConfigError(
                f"{folder.path}: this run's {key} differs from the build's in {', '.join(_differing(have, value))}; "
                f"build with the same recipe (and, for latency, on the same device), or use another --out"
            )
    folder.write_recipe(record)


def _differing(have: Any, want: Any, prefix: str = "") -> list[str]:
    if isinstance(have, dict) and isinstance(want, dict):
        keys = sorted(set(have) | set(want))
        return [d for k in keys if have.get(k) != want.get(k) for d in _differing(have.get(k), want.get(k), f"{prefix}{k}.")]
    return [f"{prefix.rstrip('.') or 'value'} ({have!r} vs {want!r})"]


# --- status and pack ------------------------------------------------------------------------------------


def build_status(out: str | os.PathLike[str]) -> dict[str, Any]:
    """Done and missing counts per phase, the measured cost per architecture and the projected time left."""
    folder = BuildFolder(out)
    record = folder.recipe()
    if record is None:
        raise ConfigError(f"{folder.path}: not a build folder (no {RECIPE_FILE}); start one with `run`")
    size = _space_of(record).size
    status: dict[str, Any] = {"name": record["name"], "size": size}
    per_arch = 0.0
    for phase in PHASES:
        rows = folder.rows(phase)
        costs = [row["seconds"] for row in rows.values()]
        median = statistics.median(costs) if costs else math.nan
        status[phase] = {
            "done": len(rows),
            "failed": sum(row["status"] != "ok" for row in rows.values()),
            "median_seconds": median,
            "missing": size - len(rows),
        }
        per_arch += median
        status[f"{phase}_left_hours"] = (size - len(rows)) * median / 3600
    status["seconds_per_architecture"] = per_arch
    status["whole_table_hours"] = size * per_arch / 3600
    status["whole_table_hours_in_parts_on_all_cores"] = size * per_arch / 3600 / (os.cpu_count() or 1)
    return status


def pack(out: str | os.PathLike[str], table: str | os.PathLike[str] | None = None) -> Path:
    """Write the packed table of a complete build folder; refuses an incomplete one, naming what is missing."""
    folder = BuildFolder(out)
    record = folder.recipe()
    if record is None:
        raise ConfigError(f"{folder.path}: not a build folder (no {RECIPE_FILE})")
    missing_phase = [phase for phase in PHASES if not record.get(phase)]
    space = _space_of(record)
    rows = {phase: folder.rows(phase) for phase in PHASES}
    missing = {phase: [i for i in range(space.size) if i not in rows[phase]] for phase in PHASES}
    if missing_phase or any(missing.values()):
        counts = ", ".join(f"{len(missing[p])} lack {p}" for p in PHASES)
        raise ConfigError(
            f"{folder.path}: incomplete build of {record['name']}: {counts} (of {space.size}); run "
            f"`python -m nas_rl.tools.build_table run --out {folder.path}` (see `status`) and pack again"
        )
    for phase in PHASES:
        digest = fingerprint_of(record[phase])
        strays = [i for i, row in rows[phase].items() if row.get("recipe") != digest]
        if strays:
            raise ConfigError(
                f"{folder.path}: {len(strays)} {phase} row(s) were measured with another recipe (e.g. index {strays[0]})"
            )
    columns = _columns(space, rows["accuracy"], rows["latency"])
    meta = {
        "name": record["name"],
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "recipe": {"space": record["space"], "accuracy": record["accuracy"], "latency": record["latency"],
                   "config": record["config"]},  # fmt: skip
        "device": record["latency"].get("device", {}),
        "build": _build_info(rows),
    }
    return write_table(table or shipped_path(record["name"]), columns, meta)


def _columns(space: TabularSpace, accuracy: dict[int, dict], latency: dict[int, dict]) -> dict[str, np.ndarray]:
    size = space.size
    columns: dict[str, Any] = {name: np.full(size, np.nan) for name in FLOAT_COLUMNS}
    columns["tokens"] = np.asarray(space.all_tokens(), dtype=np.int16).reshape(size, space.num_decisions)
    columns["latency_runs"] = np.zeros(size, dtype=np.int64)
    arch, status, error = [], [], []
    for i in range(size):
        a, lat = accuracy[i], latency[i]
        arch.append(a["arch"])
        failures = [f"{p}: {r['error']}" for p, r in (("accuracy", a), ("latency", lat)) if r["status"] != "ok"]
        status.append("failed" if failures else "ok")
        error.append("; ".join(failures))
        columns["accuracy_seconds"][i], columns["latency_seconds"][i] = a["seconds"], lat["seconds"]
        if a["status"] == "ok":
            columns["accuracy"][i] = a["accuracy"]
        if lat["status"] == "ok":
            for key in STAT_KEYS[:-1]:
                columns[f"latency_{key}"][i] = lat[key]
            columns["latency_runs"][i] = lat["runs"]
    columns.update(arch=np.asarray(arch), status=np.asarray(status), error=np.asarray(error))
    return columns


def _build_info(rows: dict[str, dict[int, dict]]) -> dict[str, Any]:
    import torch

    loads = [row["loadavg"] for row in rows["latency"].values() if "loadavg" in row]
    return {
        "accuracy_seconds_total": sum(r["seconds"] for r in rows["accuracy"].values()),
        "latency_seconds_total": sum(r["seconds"] for r in rows["latency"].values()),
        "latency_loadavg_median": statistics.median(loads) if loads else None,
        "latency_loadavg_max": max(loads) if loads else None,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
    }


def _space_of(record: dict[str, Any]) -> TabularSpace:
    return space_from_fingerprint(record["space"])


# --- command line ---------------------------------------------------------------------------------------


def default_out(name: str) -> Path:
    return Path("outputs") / "tabular" / name



def write_synthetic_table(path: str | os.PathLike[str], space: TabularSpace | None = None, seed: int = 0) -> Path:
    """A complete table of ``space`` (default: the default recipe's) with made-up values (accuracy grows with
    width, latency with cost), for tests and speed benchmarks before a real table exists; its name, recipe and
    device say ``synthetic``."""
    if space is None:
        space = build_space(load_recipe())
    rng = np.random.default_rng(seed)
    tokens = np.asarray(space.all_tokens(), dtype=np.int16).reshape(space.size, space.num_decisions)
    cost = np.array([sum(s.out_channels * s.expansion * s.repeats * s.kernel for s in space.decode(t).stages)
                     for t in tokens.tolist()], dtype=float)  # fmt: skip
    latency = 0.01 + cost / cost.max() * 0.05 * rng.uniform(0.9, 1.1, space.size)
    columns: dict[str, Any] = {
        "tokens": tokens,
        "arch": np.asarray([space.decode(t).to_string() for t in tokens.tolist()]),
        "status": np.full(space.size, "ok", dtype="<U6"),
        "error": np.full(space.size, ""),
        "accuracy": np.clip(0.7 + 0.2 * np.sqrt(cost / cost.max()) + rng.normal(0, 0.02, space.size), 0, 1),
        "latency_median_ms": latency,
        "latency_mean_ms": latency * 1.05,
        "latency_std_ms": latency * 0.1,
        "latency_min_ms": latency * 0.95,
        "latency_max_ms": latency * 1.5,
        "latency_runs": np.full(space.size, 50, dtype=np.int64),
        "accuracy_seconds": np.full(space.size, 1.0),
        "latency_seconds": np.full(space.size, 2.0),
    }
    synthetic = {"kind": "synthetic", "seed": seed}
    device = {"name": "synthetic", "runtime": "none", "converter": "none", "threads": 1, "precision": "fp32",
              "cpu_model": "none"}  # fmt: skip
    meta = {"name": f"synthetic-{space.size}", "recipe": {"space": space.fingerprint(), "accuracy": synthetic,
            "latency": {**synthetic, "device": device}}, "device": device}  # fmt: skip
    return write_table(path, columns, meta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nas_rl.tools.build_table", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="evaluate missing architectures (resumable)")
    run.add_argument("--recipe", default=DEFAULT_RECIPE, help="recipe name (nas_rl/benchmark/recipes/) or YAML file")
    run.add_argument("--out", type=Path, default=None, help="build folder (default outputs/tabular/<name>)")
    run.add_argument("--phase", default="both", choices=("both", *PHASES))
    run.add_argument("--part", type=int, default=0, help="this process's part K (architectures with index %% N == K)")
    run.add_argument("--parts", type=int, default=1, help="number of parts N")
    run.add_argument("--limit", type=int, default=None, help="evaluate at most M architectures, then stop")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. accuracy.threads=2")
    status = commands.add_parser("status", help="what is done, what it cost, time left")
    status.add_argument("--recipe", default=DEFAULT_RECIPE)
    status.add_argument("--out", type=Path, default=None)
    pack_cmd = commands.add_parser("pack", help="write the table of a complete build")
    pack_cmd.add_argument("--recipe", default=DEFAULT_RECIPE)
    pack_cmd.add_argument("--out", type=Path, default=None)
    pack_cmd.add_argument("--table", type=Path, default=None, help="output file (default nas_rl/benchmark/data/<name>.npz)")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            cfg = load_recipe(args.recipe, args.overrides)
            out = args.out or default_out(cfg.name)
            summary = run_build(cfg, out, args.phase, args.part, args.parts, args.limit, not args.no_progress)
            costs = ", ".join(f"{p} {summary.seconds[p] / max(1, n):.2f} s/arch ({n})" for p, n in summary.measured.items())
            print(f"{out}: measured {costs}; {summary.pending} architecture(s) of this part left")
        elif args.command == "status":
            out = args.out or default_out(load_recipe(args.recipe).name)
            print(json.dumps(build_status(out), indent=1))
        else:
            out = args.out or default_out(load_recipe(args.recipe).name)
            print(f"packed {pack(out, args.table)}")
    except ConfigError as error:
        print(f"nas_rl.tools.build_table: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
