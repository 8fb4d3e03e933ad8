"""``nas-rl-latency-report``: how well each latency model predicts LiteRT measurements of held-out architectures.

Draws ``samples`` architectures from the search space with a seed no table sample was drawn with, measures
each whole through LiteRT (the ``latency=litert`` measurement), asks every configured latency model, and
writes to the run folder:

``predictions.csv``  one row per architecture: measured statistics, each model's prediction and its cost in µs
``report.csv`` / ``report.md``  per model: share within ±5% and ±10%, MAPE, RMSE, Kendall tau, bias, µs/arch
``predicted_vs_measured.png``  one scatter per model against the y = x line and the ±10% band
``repeatability.csv``  the first ``repeats`` architectures measured again at the end: the measurement's spread
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from nas_rl.errors import ConfigError
from nas_rl.latency.base import LatencyModel

METRIC_COLUMNS = ("model", "n", "within_5pct", "within_10pct", "mape_pct", "rmse_ms", "kendall_tau", "bias_pct",
                  "us_per_arch")  # fmt: skip


def score(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Accuracy of predictions against measurements (both in ms)."""
    from scipy.stats import kendalltau

    relative = predicted / measured - 1
    return {
        "n": int(len(measured)),
        "within_5pct": float(np.mean(np.abs(relative) <= 0.05)),
        "within_10pct": float(np.mean(np.abs(relative) <= 0.10)),
        "mape_pct": float(100 * np.mean(np.abs(relative))),
        "rmse_ms": float(np.sqrt(np.mean((predicted - measured) ** 2))),
        "kendall_tau": float(kendalltau(predicted, measured).statistic) if len(measured) > 1 else float("nan"),
        "bias_pct": float(100 * np.median(relative)),
    }


def held_out_architectures(space: Any, seed: int, count: int, models: dict[str, LatencyModel]) -> list[Any]:
    """``count`` architectures drawn with ``seed``, none of them a training sample of a model's table.

    :raises ConfigError: ``seed`` is the seed a table drew its whole-network samples with.
    """
    from nas_rl.latency.profile import draw_architectures

    seen: set[str] = set()
    for name, model in models.items():
        for table in _tables(model):
            if table.header.get("network_seed") == seed:
                raise ConfigError(
                    f"report.seed={seed} is the seed the whole-network samples of latency table {table.path} (used by "
                    f"model {name!r}) were drawn with; accepted: any other seed, so the architectures are held out"
                )
            seen.update(row["arch"] for row in table.network_samples())
    archs: list[Any] = []
    for arch in draw_architectures(space, seed, 100 * count + len(seen)):  # a small space repeats itself
        if arch.to_string() not in seen:
            seen.add(arch.to_string())
            archs.append(arch)
            if len(archs) == count:
                return archs
    raise ConfigError(
        f"report.samples={count} is not accepted: the search space has only {len(archs)} architectures besides the "
        "tables' samples; accepted: a smaller number"
    )


def _tables(model: LatencyModel) -> list[Any]:
    tables = []
    for holder in (model, getattr(model, "lut", None)):
        table = getattr(holder, "table", None)
        if table is not None:
            tables.append(table)
    return tables


def compare(
    models: dict[str, LatencyModel],
    reference: LatencyModel,
    archs: list[Any],
    repeats: int = 0,
    progress: bool = True,
    on_row: Any = None,
    measured: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Measure every architecture with ``reference`` and predict it with every model.

    :param measured: block string -> an earlier report's row: its measurement is reused instead of measuring.
    :return: one row per architecture, and one row per re-measured architecture (the first ``repeats``).
    """
    rows = []
    measured = measured or {}
    for index, arch in enumerate(tqdm(archs, desc="held-out architectures", unit="arch", disable=not progress)):
        earlier = measured.get(arch.to_string())
        if earlier is None:
            stats = reference.measure(arch)
            earlier = {"measured_ms": stats.median_ms, "measured_std_ms": stats.std_ms, "measured_runs": stats.runs}
        row: dict[str, Any] = {"index": index, "arch": arch.to_string(),
                               **{k: float(earlier[k]) for k in ("measured_ms", "measured_std_ms", "measured_runs")}}
        for name, model in models.items():
            start = time.perf_counter()
            row[f"{name}_ms"] = model.latency_ms(arch)
            row[f"{name}_us"] = 1e6 * (time.perf_counter() - start)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    again = []
    for row, arch in zip(rows[:repeats], archs[:repeats]):
        second = reference.measure(arch).median_ms
        spread = abs(second - row["measured_ms"]) / min(second, row["measured_ms"])
        again.append({"arch": row["arch"], "first_ms": row["measured_ms"], "second_ms": second, "spread": spread})
    return rows, again


def summarise(models: list[str], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    measured = np.array([row["measured_ms"] for row in rows])
    table = []
    for name in models:
        predicted = np.array([row[f"{name}_ms"] for row in rows])
        # the first call may build caches (e.g. a lazy fit): the median is the steady cost
        cost = float(np.median([row[f"{name}_us"] for row in rows]))
        table.append({"model": name, **score(predicted, measured), "us_per_arch": cost})
    return table


def markdown(scores: list[dict[str, Any]]) -> str:
    lines = [
        "| model | n | within ±5% | within ±10% | MAPE | RMSE (ms) | Kendall τ | median bias | µs / arch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        lines.append(
            f"| {s['model']} | {s['n']} | {s['within_5pct']:.0%} | {s['within_10pct']:.0%} | {s['mape_pct']:.1f}% | "
            f"{s['rmse_ms']:.4g} | {s['kendall_tau']:.3f} | {s['bias_pct']:+.1f}% | {s['us_per_arch']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(models: list[str], rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = np.array([row["measured_ms"] for row in rows])
    low, high = 0.9 * measured.min(), 1.1 * measured.max()
    figure, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4.2), squeeze=False)
    for axis, name in zip(axes[0], models):
        predicted = np.array([row[f"{name}_ms"] for row in rows])
        line = np.array([low, high])
        axis.fill_between(line, 0.9 * line, 1.1 * line, color="0.9", label="±10%")
        axis.plot(line, line, color="0.4", linewidth=1, label="y = x")
        axis.scatter(measured, predicted, s=12)
        axis.set(title=name, xlabel="measured (ms)", ylabel="predicted (ms)", xlim=(low, high), ylim=(low, high))
        axis.legend(loc="upper left", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _earlier_measurements(folder: Any, reference: LatencyModel) -> dict[str, dict[str, Any]]:
    """Rows of an earlier report's ``predictions.csv`` by block string, if it measured with the same reference."""
    if not folder:
        return {}
    folder = Path(str(folder))
    try:
        context = json.loads((folder / "context.json").read_text())
        partial = folder / "predictions.partial.jsonl"  # what a killed report had measured
        if partial.exists() and not (folder / "predictions.csv").exists():
            rows = [json.loads(line) for line in partial.read_text().splitlines() if line.endswith("}")]
        else:
            with open(folder / "predictions.csv", newline="") as handle:
                rows = list(csv.DictReader(handle))
    except (OSError, ValueError) as error:
        raise ConfigError(f"report.reuse={str(folder)!r} is not accepted ({error}); accepted: a folder written by "
                          "nas-rl-latency-report") from None  # fmt: skip
    if context.get("reference_fingerprint") != reference.fingerprint():
        raise ConfigError(
            f"report.reuse={str(folder)!r} was measured with another reference ({context.get('reference_fingerprint')}"
            f"), this report's is {reference.fingerprint()}; accepted: a report of the same device and settings"
        )
    return {row["arch"]: row for row in rows}


def run_report(cfg: Any, out_dir: Path) -> list[dict[str, Any]]:
    """Build the models and the reference from the composed config, compare, write the outputs, print the table."""
    from nas_rl.config import build

    settings = cfg.report
    samples, seed, repeats = int(settings.samples), int(settings.seed), int(settings.repeats)
    if samples < 2:
        raise ConfigError(f"report.samples={samples} is not accepted; accepted: an integer >= 2")
    space = build(cfg.search_space, "search_space")
    models = {name: build(node, f"models.{name}") for name, node in cfg.models.items() if node is not None}
    if not models:
        raise ConfigError("models is empty; accepted: at least one latency model under models (lut, predictor, ...)")
    reference = build(cfg.reference, "reference")
    archs = held_out_architectures(space, seed, samples, models)
    measured = _earlier_measurements(settings.get("reuse"), reference)
    out_dir.mkdir(parents=True, exist_ok=True)
    context = {
        "device": reference.fingerprint().get("device"),
        "resolution": int(cfg.resolution),
        "samples": samples,
        "seed": seed,
        "models": {name: repr(model) for name, model in models.items()},
        "reference": repr(reference),
        "reference_fingerprint": reference.fingerprint(),
    }
    (out_dir / "context.json").write_text(json.dumps(context, indent=2))
    for name, model in models.items():
        print(f"{name}: {model!r}")
    partial = out_dir / "predictions.partial.jsonl"
    with open(partial, "w") as handle:

        def keep(row: dict[str, Any]) -> None:  # a killed report still leaves what it measured
            handle.write(json.dumps(row) + "\n")
            handle.flush()

        start = time.perf_counter()
        rows, again = compare(models, reference, archs, repeats, bool(settings.progress), keep, measured)
    partial.unlink()
    scores = summarise(list(models), rows)
    write_csv(out_dir / "predictions.csv", rows)
    write_csv(out_dir / "report.csv", [{k: s[k] for k in METRIC_COLUMNS} for s in scores])
    write_csv(out_dir / "repeatability.csv", again)
    device = context["device"] or {}
    title = (f"{samples} held-out architectures, {cfg.resolution}x{cfg.resolution}, {device.get('name')} "
             f"({device.get('threads')} thread(s), {device.get('precision')})")  # fmt: skip
    text = f"# Latency models vs LiteRT measurements\n\n{title}; seed {seed}.\n\n" + markdown(scores)
    if again:
        spreads = np.array([a["spread"] for a in again])
        text += (f"\nRepeatability: {len(again)} architectures measured twice in this process; median spread "
                 f"{np.median(spreads):.2%}, max {spreads.max():.2%}.\n")  # fmt: skip
    text += f"\nMeasuring took {time.perf_counter() - start:.0f} s.\n"
    (out_dir / "report.md").write_text(text)
    plot(list(models), rows, out_dir / "predicted_vs_measured.png", title)
    print(text)
    print(f"written to {out_dir}")
    return scores
