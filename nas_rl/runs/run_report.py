"""What a researcher reads after a run: the summary table, the Pareto front and progress plots, comparisons.

Everything here works from a run's files (``evaluations.csv``, ``config.yaml``, Hydra's ``.hydra/``) or from
the episode rows of :meth:`EvaluationStore.episodes`, so it runs on finished runs and sweeps without torch
or TensorFlow. Plots are drawn on :class:`matplotlib.figure.Figure` objects (Agg, no display, no pyplot
global state).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from nas_rl._util import atomic_write, is_int
from nas_rl.errors import ConfigError
from nas_rl.evaluation.store import EvaluationStore
from nas_rl.runs.run_folder import holder, in_use, locate_store, read_identity, started_in, writing

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PARETO_FIELDS = ("arch", "accuracy", "latency_ms", "reward")
COMPARISON_FIELDS = (
    "run", "controller", "target_ms", "budget", "best_reward", "best_accuracy", "best_latency_ms",
    "evaluations", "cache_hits", "failures", "best_arch", "run_dir",
)  # fmt: skip
_FLOAT_FIELDS = (
    "accuracy", "latency_ms", "reward", "eval_seconds", "latency_mean_ms", "latency_std_ms", "latency_min_ms",
    "latency_max_ms", "accuracy_seconds", "latency_seconds",
)  # fmt: skip
_INT_FIELDS = ("episode", "cached", "latency_runs")
_REQUIRED_COLUMNS = ("arch", "status", "accuracy", "latency_ms", "reward")


# ----------------------------------------------------------------------------------------------- summaries


class RunResult(Protocol):
    """What :func:`print_summary` reads (``nas_rl.runs.search.SearchResult`` and :class:`RunRecord` have it)."""

    run_dir: Path
    best: dict[str, Any] | None
    summary: dict[str, Any]
    export: dict[str, Any] | None


def summarize(episodes: Sequence[dict[str, Any]]) -> tuple[dict[str, Any] | None, dict[str, int]]:
    """The best ok episode (highest reward, first on ties) and the counts: evaluations, cache hits, failures."""
    ok = [row for row in episodes if row["status"] == "ok" and row.get("reward") is not None]
    best = max(ok, key=lambda row: row["reward"], default=None)
    counts = {
        "evaluations": len(episodes),
        "cache_hits": sum(int(bool(row.get("cached"))) for row in episodes),
        "failures": sum(row["status"] != "ok" for row in episodes),
    }
    return best, counts


def summary_table(
    run_dir: Path,
    best: dict[str, Any] | None,
    summary: dict[str, Any],
    details: Iterable[tuple[str, str]] = (),
    export: dict[str, Any] | None = None,
) -> Table:
    """The one-run summary: best architecture, its accuracy, latency and reward, the run's counts, and the
    outcome of the export (``best.json``'s ``export``; no row when the run exported nothing)."""
    table = Table(title=f"nas-rl search: {run_dir}", show_header=False)
    table.add_column("what", no_wrap=True)
    table.add_column("value", overflow="fold")  # the whole block string: it is what a reader copies
    best = best or {}
    rows = [
        *details,
        ("best architecture", best.get("arch", "none (every evaluation failed)")),
        ("accuracy", _fmt(best.get("accuracy"), "{:.4f}")),
        ("latency (median)", _fmt(best.get("latency_ms"), "{:.3f} ms")),
        ("reward", _fmt(best.get("reward"), "{:.4f}")),
        ("evaluations", str(summary["evaluations"])),
        ("cache hits", str(summary["cache_hits"])),
        ("failures", str(summary["failures"])),
    ]
    if export is not None:
        rows.append(("export", _export_outcome(export)))
    for name, value in rows:
        table.add_row(name, value)
    return table


def print_summary(result: RunResult, console: Console | None = None) -> None:
    """Print the summary table of a finished search (a ``SearchResult``) or of a loaded run."""
    (console or Console()).print(summary_table(result.run_dir, result.best, result.summary, export=result.export))


def _export_outcome(export: dict[str, Any]) -> str:
    if export.get("error"):
        return f"FAILED: {export['error']}"
    differences = export.get("max_abs_diff") or {}
    worst = f", max logit difference {max(differences.values()):.1e}" if differences else ""
    return f"best.pt, best.onnx, best.tflite (checked on {export.get('validation_images', '?')} images{worst})"


# ------------------------------------------------------------------------------------------- one run's plots


def pareto_front(episodes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ok architectures no other ok architecture beats on both accuracy (max) and latency (min).

    A repeated architecture (a cache hit) counts once; distinct architectures with identical accuracy and
    latency are all kept. Sorted by latency, fastest first.
    """
    seen: set[str] = set()
    points = []
    for row in episodes:
        if row["status"] != "ok" or row.get("accuracy") is None or row.get("latency_ms") is None:
            continue
        if row["arch"] not in seen:
            seen.add(row["arch"])
            points.append(row)
    points.sort(key=lambda row: (row["latency_ms"], -row["accuracy"]))
    front: list[dict[str, Any]] = []
    for row in points:
        if not front or row["accuracy"] > front[-1]["accuracy"]:
            front.append(row)
        elif (row["accuracy"], row["latency_ms"]) == (front[-1]["accuracy"], front[-1]["latency_ms"]):
            front.append(row)  # a tie with the last kept point: neither dominates the other
    return [{key: row.get(key) for key in PARETO_FIELDS} for row in front]


def best_so_far(episodes: Sequence[dict[str, Any]]) -> np.ndarray:
    """The best reward after each evaluation (failed evaluations pay 0)."""
    rewards = np.asarray([_reward(row) for row in episodes], dtype=np.float64)
    return np.maximum.accumulate(rewards) if len(rewards) else rewards


def write_run_plots(episodes: list[dict[str, Any]], run_dir: Path, target_ms: float | None) -> None:
    """Write ``pareto.csv``, ``pareto.png`` and ``progress.png`` of one run's episodes into ``run_dir``.

    :param episodes: rows as returned by :meth:`EvaluationStore.episodes` or read by :func:`load_episodes`.
    :param target_ms: the reward's target latency, drawn as a vertical line; ``None`` draws none.
    """
    run_dir = Path(run_dir)
    with writing(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    front = pareto_front(episodes)
    _write_csv(run_dir / "pareto.csv", PARETO_FIELDS, front)
    _save(_pareto_figure(episodes, front, target_ms, title=run_dir.name), run_dir / "pareto.png")
    _save(_progress_figure(episodes, title=run_dir.name), run_dir / "progress.png")


def _pareto_figure(
    episodes: Sequence[dict[str, Any]], front: list[dict[str, Any]], target_ms: float | None, title: str
) -> Figure:
    from matplotlib.figure import Figure  # loaded only to draw

    figure = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = figure.subplots()
    ok = [row for row in episodes if row["status"] == "ok" and row.get("latency_ms") is not None]
    failed = len(episodes) - len(ok)
    ax.scatter(
        [row["latency_ms"] for row in ok], [row["accuracy"] for row in ok],
        s=18, color="tab:gray", alpha=0.6, label=f"evaluations ({len(ok)} ok, {failed} failed not shown)",
    )  # fmt: skip
    if front:
        ax.plot(
            [row["latency_ms"] for row in front], [row["accuracy"] for row in front],
            drawstyle="steps-post", marker="o", color="tab:red", label=f"Pareto front ({len(front)})",
        )  # fmt: skip
    if target_ms is not None:
        ax.axvline(target_ms, color="tab:blue", linestyle="--", label=f"target {target_ms:g} ms")
    if not ok:
        ax.text(0.5, 0.5, "no successful evaluation", transform=ax.transAxes, ha="center", va="center")
    ax.set(xlabel="latency (ms, median)", ylabel="accuracy", title=f"accuracy vs latency: {title}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return figure


def _progress_figure(episodes: Sequence[dict[str, Any]], title: str) -> Figure:
    from matplotlib.figure import Figure  # loaded only to draw

    figure = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = figure.subplots()
    index = np.arange(1, len(episodes) + 1)
    ok = np.asarray([row["status"] == "ok" for row in episodes], dtype=bool)
    rewards = np.asarray([_reward(row) for row in episodes], dtype=np.float64)
    ax.scatter(index[ok], rewards[ok], s=18, color="tab:gray", alpha=0.7, label="reward")
    if (~ok).any():
        ax.scatter(index[~ok], rewards[~ok], s=24, marker="x", color="tab:red", label="failed (reward 0)")
    if len(episodes):
        ax.plot(index, best_so_far(episodes), drawstyle="steps-post", color="tab:blue", label="best so far")
        ax.legend(loc="lower right", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no evaluation", transform=ax.transAxes, ha="center", va="center")
    ax.set(xlabel="evaluation", ylabel="reward", title=f"search progress: {title}")
    ax.grid(alpha=0.3)
    return figure


# ---------------------------------------------------------------------------------------- runs on disk


@dataclass
class RunRecord:
    """A finished run read back from its folder."""

    run_dir: Path
    episodes: list[dict[str, Any]]
    config: dict[str, Any]
    controller: str | None = None
    best: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] | None = None

    @property
    def target_ms(self) -> float | None:
        value = _get(self.config, "reward", "target_ms")
        return None if value is None else float(value)

    @property
    def budget(self) -> int | None:
        value = _get(self.config, "search", "budget")
        return None if value is None else int(value)


def load_episodes(path: Path) -> list[dict[str, Any]]:
    """The rows of an ``evaluations.csv`` with numbers parsed (empty cells -> ``None``).

    :raises ConfigError: the file is not a run's ``evaluations.csv``; the message names it.
    """
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [name for name in _REQUIRED_COLUMNS if name not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(f"{path} is not a nas-rl evaluations.csv: no column(s) {', '.join(missing)}")
            return [_parse_row(row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(f"{path} is not readable: {error}") from None
    except ValueError as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{path} is not a nas-rl evaluations.csv: {error}") from None


def load_run(run_dir: Path) -> RunRecord:
    """Read a run folder: ``evaluations.csv`` (required), ``config.yaml`` and Hydra's choices (optional), and
    check the CSV against the run's history in its store (:func:`check_against_store`).

    :raises ConfigError: ``run_dir`` is not a run folder, or its ``evaluations.csv`` lacks architectures its
        store holds; the message names it.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "a file, not a folder" if run_dir.exists() else "no such directory"
        raise ConfigError(f"{run_dir} is not a run directory: {what}")
    if not (run_dir / "evaluations.csv").is_file():
        raise ConfigError(f"{run_dir} is not a run directory: it has no evaluations.csv (written when a run ends)")
    episodes = load_episodes(run_dir / "evaluations.csv")
    config = _read_yaml(run_dir / "config.yaml")
    check_against_store(run_dir, len(episodes), config)
    choice = _get(_read_yaml(run_dir / ".hydra" / "hydra.yaml"), "hydra", "runtime", "choices", "controller")
    best, summary = summarize(episodes)
    export = _read_json(run_dir / "best.json").get("export")
    return RunRecord(run_dir, episodes, config, choice or _controller_class(config), best, summary, export)


def check_against_store(run_dir: Path, rows: int, config: dict[str, Any]) -> None:
    """Refuse a run whose ``evaluations.csv`` holds fewer architectures than its history in the store.

    ``evaluations.csv`` is written when a run (or a resume) ends; a later resume that was stopped, or a run still
    going, leaves the store ahead of it, and a report of the file alone would be of part of the run. The run's
    architectures are the first ``search.budget`` of its history (:func:`reported_episodes`). Nothing is
    checked for a folder without nas-rl's ``run.json`` or whose store is not there (moved elsewhere, deleted).

    :raises ConfigError: fewer rows than the store's; one line with the counts, the store, and what to do.
    """
    try:
        identity = read_identity(run_dir, setting="report")
    except ConfigError:
        return
    recorded = _get(config, "search", "store")
    if not isinstance(recorded, str):
        return
    store_path = locate_store(run_dir, recorded, started_in(run_dir, identity))
    if not store_path.is_file():
        return
    store = EvaluationStore(store_path)
    try:
        history = store.count_episodes(identity.run_id)
    except (ValueError, sqlite3.Error):
        return  # a store this version cannot read: there is nothing to check against
    finally:
        store.close()
    budget = _get(config, "search", "budget")
    expected = min(history, int(budget)) if is_int(budget) else history
    if rows < expected:
        if in_use(run_dir):
            why = f"the run is still running ({holder(run_dir)}); report it when it ends"
        else:
            why = (f"the file is out of date (a resume stopped before writing it) or was cut short; nas-rl "
                   f"resume={run_dir} rewrites it")  # fmt: skip
        raise ConfigError(f"{run_dir / 'evaluations.csv'} holds {rows} architectures but the run's history in its "
                          f"store {store_path} has {expected}: {why}")  # fmt: skip


def find_runs(paths: Sequence[Path]) -> tuple[list[Path], list[str]]:
    """The run folders the paths given to ``nas-rl-report`` name, and notes on what was skipped.

    A run folder (one with ``evaluations.csv``) is itself. A folder of runs, such as a Hydra multirun folder
    (``outputs/multirun/DATE/TIME``), stands for its runs, in job order; its sub-folders without
    ``evaluations.csv`` (jobs that failed or still run) are skipped with a note. Among several paths, a
    file (a shell glob's ``multirun.yaml``) is skipped with a note.

    :raises ConfigError: a path is missing, a folder neither is a run nor holds any, the only path is a file,
        or no run is left; the message names the path.
    """
    runs: list[Path] = []
    notes: list[str] = []
    for path in map(Path, paths):
        if path.is_file() and len(paths) > 1:
            notes.append(f"skipped {path}: a file, not a run folder")
        elif not path.is_dir() or (path / "evaluations.csv").is_file():
            runs.append(path)  # a run folder, or a bad path that load_run names in its error
        else:
            jobs = sorted((p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_job_order)
            finished = [job for job in jobs if (job / "evaluations.csv").is_file()]
            if not finished:
                raise ConfigError(
                    f"{path} is not a run directory: it has no evaluations.csv (written when a run ends) and no "
                    "sub-folder that has one (a sweep's finished jobs)"
                )
            runs.extend(finished)
            notes.extend(f"skipped {job}: no evaluations.csv (a job that failed or still runs)"
                         for job in jobs if job not in finished and (job / ".hydra").is_dir())  # fmt: skip
    if not runs:
        raise ConfigError(f"no run folder among {', '.join(map(str, paths))}; accepted: folders written by nas-rl")
    return runs, notes


def _job_order(path: Path) -> tuple[int, int, str]:
    """Hydra's job folders (0, 1, ..., 10) in number order, other names after them alphabetically."""
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def comparison_rows(runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per run with its settings and results (the columns of ``comparison.csv``)."""
    labels = _labels([run.run_dir for run in runs])
    rows = []
    for label, run in zip(labels, runs):
        best = run.best or {}
        rows.append(
            {
                "run": label,
                "controller": run.controller,
                "target_ms": run.target_ms,
                "budget": run.budget,
                "best_reward": best.get("reward"),
                "best_accuracy": best.get("accuracy"),
                "best_latency_ms": best.get("latency_ms"),
                **run.summary,
                "best_arch": best.get("arch"),
                "run_dir": str(run.run_dir.resolve()),
            }
        )
    return rows


def comparison_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(title=f"nas-rl runs ({len(rows)})")
    columns = (
        ("run", "run", "{}"), ("controller", "controller", "{}"), ("target", "target_ms", "{:g} ms"),
        ("budget", "budget", "{}"), ("best reward", "best_reward", "{:.4f}"),
        ("best acc", "best_accuracy", "{:.4f}"), ("best latency", "best_latency_ms", "{:.3f} ms"),
        ("evaluations", "evaluations", "{}"), ("cache hits", "cache_hits", "{}"), ("failures", "failures", "{}"),
    )  # fmt: skip
    for header, _, _ in columns:
        table.add_column(header, justify="left" if header in ("run", "controller") else "right")
    for row in rows:
        table.add_row(*(_fmt(row.get(key), template) for _, key, template in columns))
    return table


def write_comparison(runs: Sequence[RunRecord], out_dir: Path, console: Console | None = None) -> list[dict[str, Any]]:
    """Print the side-by-side table of ``runs`` and write ``comparison.csv`` and ``comparison.png`` to ``out_dir``."""
    out_dir = Path(out_dir)
    with writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(runs)
    (console or Console()).print(comparison_table(rows))
    _write_csv(out_dir / "comparison.csv", COMPARISON_FIELDS, rows)
    from matplotlib.figure import Figure  # loaded only to draw

    figure = Figure(figsize=(7.2, 4.8), layout="constrained")
    ax = figure.subplots()
    for row, run in zip(rows, runs):
        curve = best_so_far(run.episodes)
        if len(curve):
            label = f"{row['run']} ({row['controller'] or '?'}, T={_fmt(row['target_ms'], '{:g} ms')})"
            ax.plot(np.arange(1, len(curve) + 1), curve, drawstyle="steps-post", label=label)
    ax.set(xlabel="evaluation", ylabel="best reward so far", title="best reward so far, per run")
    ax.grid(alpha=0.3)
    if any(run.episodes for run in runs):
        ax.legend(loc="lower right", fontsize="small")
    _save(figure, out_dir / "comparison.png")
    return rows


def report(run_dirs: Sequence[Path], out_dir: Path | None = None, console: Console | None = None) -> None:
    """``nas-rl-report``: one run -> its summary table and plots (into ``out_dir`` or the run folder);
    several -> the comparison table, ``comparison.csv`` and ``comparison.png`` (into ``out_dir`` or ``.``).

    :raises ConfigError: a folder is not a run folder (checked for every folder before anything is written).
    """
    if not run_dirs:
        raise ConfigError("no run directory given; accepted: one or more folders written by nas-rl")
    console = console or Console()
    runs = [load_run(Path(run_dir)) for run_dir in run_dirs]
    if len(runs) == 1:
        run = runs[0]
        details = [("controller", run.controller or "-"), ("target latency", _fmt(run.target_ms, "{:g} ms"))]
        console.print(summary_table(run.run_dir, run.best, run.summary, details, run.export))
        plots_dir = Path(out_dir) if out_dir is not None else run.run_dir
        write_run_plots(run.episodes, plots_dir, run.target_ms)
        console.print(f"wrote pareto.csv, pareto.png, progress.png to {plots_dir}")
        return
    out_dir = Path(out_dir) if out_dir is not None else Path.cwd()
    write_comparison(runs, out_dir, console)
    console.print(f"wrote comparison.csv, comparison.png to {out_dir}")


# ------------------------------------------------------------------------------------------------- helpers


def _parse_row(row: dict[str, str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {key: (None if value in ("", None) else value) for key, value in row.items()}
    for key in _FLOAT_FIELDS:
        if parsed.get(key) is not None:
            parsed[key] = float(parsed[key])
    for key in _INT_FIELDS:
        value = parsed.get(key)
        if value is not None:  # ``cached`` is 0/1 from the store, True/False from a hand-made file
            parsed[key] = int(value.lower() == "true") if value.lower() in ("true", "false") else int(float(value))
    return parsed


def _reward(row: dict[str, Any]) -> float:
    value = row.get("reward")
    return 0.0 if value is None or row["status"] != "ok" or not math.isfinite(value) else float(value)


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object, or {} when the file is missing or unreadable (the report goes on without it)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping, or {} when the file is missing or unreadable (the report goes on without it)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _get(mapping: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def _controller_class(config: dict[str, Any]) -> str | None:
    """The controller's class (or its SB3 algorithm's) when Hydra's choices are not on disk."""
    target = _get(config, "controller", "algorithm", "_target_") or _get(config, "controller", "_target_")
    return None if target is None else str(target).rsplit(".", 1)[-1]


def _labels(run_dirs: Sequence[Path]) -> list[str]:
    """Folder names when they are unique (a sweep's job numbers), else paths relative to their common parent."""
    names = [path.name for path in run_dirs]
    if len(set(names)) == len(names):
        return names
    resolved = [path.resolve() for path in run_dirs]
    common = Path(os.path.commonpath(resolved))
    return [str(path.relative_to(common)) if path != common else str(path) for path in resolved]


def _write_csv(path: Path, fields: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    with writing(path), atomic_write(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _save(figure: Figure, path: Path) -> None:
    """Save a figure atomically (the format from the suffix, which the temporary file keeps)."""
    with writing(path), atomic_write(path) as temporary:
        figure.savefig(temporary, dpi=120)


def _fmt(value: Any, template: str) -> str:
    return "-" if value is None else template.format(value)
