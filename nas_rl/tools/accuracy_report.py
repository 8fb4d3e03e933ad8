"""How well does each zero-cost proxy predict proxy-trained accuracy on this space and dataset?

:func:`accuracy_report` samples architectures of a search space (with a seed of its own, not the search's),
proxy-trains each, computes every zero-cost score (and two classic baselines: parameter count and
multiply-adds), and measures Spearman's rho and Kendall's tau of each with the proxy-trained accuracy, and
the seconds each costs per architecture. :func:`write_report` writes the per-architecture CSV, the summary
(CSV and markdown) and a scatter plot; ``nas-rl-accuracy-report`` (:func:`run_report`) does both from the
Hydra config.
"""

from __future__ import annotations

import copy
import csv
import functools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm.auto import tqdm

from nas_rl._util import is_int
from nas_rl.accuracy.base import AccuracyEstimator
from nas_rl.accuracy.proxy import ProxyTraining, torch_threads
from nas_rl.accuracy.zero_cost import (
    PROXIES,
    ZeroCostProxy,
    check_proxy,
    sample_batches,
    score_arch,
)
from nas_rl.arch import ArchSpec
from nas_rl.errors import ConfigError, EvaluationFailed, require
from nas_rl.evaluation.store import Evaluation, EvaluationStore
from nas_rl.spaces.base import SearchSpace

#: Cheap cost measures reported next to the zero-cost proxies (Abdelfattah et al. 2021 compare with them too).
BASELINES = ("params", "flops")


@dataclass
class ReportRow:
    """One sampled architecture: its proxy-trained accuracy (None: training failed) and every score."""

    arch: str
    accuracy: float | None
    train_seconds: float
    scores: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class ProxyCorrelation:
    """One proxy over the architectures that trained: rank correlations with accuracy, and its cost."""

    proxy: str
    spearman: float
    spearman_p: float
    kendall: float
    kendall_p: float
    seconds: float
    count: int


@dataclass
class Report:
    rows: list[ReportRow]
    correlations: list[ProxyCorrelation]
    train_seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    #: With an estimator judged against stand-alone training: the agreement of two training seeds (the ceiling).
    ceiling: ProxyCorrelation | None = None

    def markdown(self) -> str:
        """The summary table: one row per proxy, then proxy training's own cost for comparison."""
        if self.ceiling is not None:
            return self._estimator_markdown(self.ceiling)
        failed = sum(row.accuracy is None for row in self.rows)
        lines = [
            f"Zero-cost proxies vs proxy-trained accuracy: {len(self.rows)} architectures"
            + (f" ({failed} failed training, left out)" if failed else ""),
            "",
            "| proxy | Spearman rho | Kendall tau | seconds / arch |",
            "|---|---:|---:|---:|",
        ]
        for c in self.correlations:
            name = f"{c.proxy} (baseline)" if c.proxy in BASELINES else c.proxy
            lines.append(f"| {name} | {_num(c.spearman)} | {_num(c.kendall)} | {c.seconds:.4f} |")
        lines.append(f"| proxy training | 1 | 1 | {self.train_seconds:.2f} |")
        return "\n".join(lines)

    def _estimator_markdown(self, ceiling: ProxyCorrelation) -> str:
        (estimator,) = self.correlations
        epochs, seeds = self.settings["reference_epochs"], self.settings["reference_seeds"]
        ratio = estimator.kendall / ceiling.kendall if ceiling.kendall > 0 else float("nan")
        return "\n".join([
            f"{estimator.proxy} vs stand-alone proxy training ({epochs} epochs, mean of seeds {seeds}): "
            f"{estimator.count} architectures",
            "",
            "| ranking | Spearman rho | Kendall tau | seconds / arch |",
            "|---|---:|---:|---:|",
            f"| {estimator.proxy} vs stand-alone | {_num(estimator.spearman)} | {_num(estimator.kendall)} | "
            f"{estimator.seconds:.4f} |",
            f"| ceiling: stand-alone seed {seeds[0]} vs seed {seeds[1]} | {_num(ceiling.spearman)} | "
            f"{_num(ceiling.kendall)} | {self.train_seconds:.2f} |",
            "",
            f"Kendall tau / ceiling: {_num(ratio)}",
        ])  # fmt: skip


def accuracy_report(
    space: SearchSpace,
    trainer: ProxyTraining,
    archs: int = 20,
    seed: int = 2024,
    proxies: Sequence[str] = PROXIES,
    batches: int = 1,
    batch_size: int = 64,
    score_seed: int = 0,
    progress: bool = False,
) -> Report:
    """Proxy-train ``archs`` architectures sampled from ``space`` with ``seed`` and score each with ``proxies``
    (each on ``batches`` mini-batches of ``batch_size`` training images, networks initialised from ``score_seed``)."""
    from nas_rl.models.flops import multiply_adds, parameter_count

    proxies = [check_proxy(p, "report.proxies") for p in proxies]
    if isinstance(archs, bool) or not isinstance(archs, int) or archs < 3:
        raise ConfigError(f"report.archs={archs!r} is not accepted: use an integer >= 3 (correlations need points)")
    data = sample_batches(trainer.dataset, batches, batch_size, score_seed)
    resolution = trainer.dataset.resolution
    measures: dict[str, Callable[[ArchSpec], float]] = {
        p: functools.partial(_score, p, data, score_seed) for p in proxies
    }
    measures["params"] = parameter_count
    measures["flops"] = functools.partial(multiply_adds, resolution=resolution)
    rows = []
    for arch in tqdm(space.sample_archs(seed, archs, distinct=True), desc="architectures", disable=not progress, unit="arch"):
        start = time.perf_counter()
        try:
            accuracy: float | None = trainer.accuracy(arch)
        except EvaluationFailed:
            accuracy = None
        row = ReportRow(arch.to_string(), accuracy, time.perf_counter() - start)
        with torch_threads(trainer.threads):  # scores run on the trainer's threads: costs compare fairly
            for name, measure in measures.items():
                start = time.perf_counter()
                row.scores[name] = float(measure(arch))
                row.seconds[name] = time.perf_counter() - start
        rows.append(row)
    correlations = [correlation(rows, name) for name in measures]
    settings = {"archs": archs, "seed": seed, "batches": batches, "batch_size": batch_size, "score_seed": score_seed}
    return Report(rows, correlations, _mean([r.train_seconds for r in rows]), settings)


def estimator_report(
    space: SearchSpace,
    estimator: AccuracyEstimator,
    name: str,
    reference: ProxyTraining,
    seeds: Sequence[int] = (0, 1),
    archs: int = 50,
    seed: int = 2024,
    progress: bool = False,
    store: EvaluationStore | None = None,
) -> Report:
    """How well ``estimator`` (a supernet slice, say) ranks ``archs`` architectures against stand-alone proxy
    training, the mean over ``seeds``; and the ceiling, how well one training seed ranks them against another.

    With ``store``, each stand-alone training's accuracy (or failure) is kept there under the training's
    fingerprint and read back instead of trained again: a stopped report goes on where it stopped, and another
    report with the same references (another estimator, say) trains nothing."""
    require(is_int(archs) and archs >= 3, "report.archs", archs, "an integer >= 3 (correlations need points)")
    require(len(seeds) >= 2 and len(set(seeds)) == len(seeds), "report.reference.seeds", seeds, "two or more seeds")
    trainers = [copy.copy(reference) for _ in seeds]
    for trainer, value in zip(trainers, seeds):
        trainer.seed = int(value)
    rows, by_seed = [], []
    for arch in tqdm(space.sample_archs(seed, archs, distinct=True), desc="architectures", disable=not progress, unit="arch"):
        trained = [reference_training(trainer, arch, store) for trainer in trainers]
        accuracies = [e.accuracy for e in trained if e.accuracy is not None]
        if len(accuracies) < len(trained):
            accuracies = []  # a seed that failed leaves no mean to rank
        seconds = sum(e.accuracy_seconds or 0.0 for e in trained) / len(seeds)
        row = ReportRow(arch.to_string(), _mean(accuracies) if accuracies else None, seconds)
        start = time.perf_counter()
        row.scores[name] = float(estimator.accuracy(arch))
        row.seconds[name] = time.perf_counter() - start
        rows.append(row)
        if accuracies:
            by_seed.append(accuracies)
    first = [ReportRow("", values[1], 0.0, {"seed": values[0]}, {"seed": 0.0}) for values in by_seed]
    settings = {"archs": archs, "seed": seed, "reference_epochs": reference.epochs, "reference_seeds": list(seeds)}
    return Report(rows, [correlation(rows, name)], _mean([r.train_seconds for r in rows]), settings,
                  ceiling=correlation(first, "seed"))  # fmt: skip


def reference_training(trainer: ProxyTraining, arch: ArchSpec, store: EvaluationStore | None) -> Evaluation:
    """``arch`` trained stand-alone by ``trainer``: its accuracy and the seconds it took (``status`` failed, with
    the reason, when training failed), from ``store`` when it holds that training, else trained (and kept there)."""
    text = arch.to_string()
    fingerprint = "" if store is None else store.register_fingerprint({"reference": trainer.fingerprint()})
    if store is not None and (stored := store.lookup(text, fingerprint)) is not None:
        return stored
    start = time.perf_counter()
    try:
        evaluation = Evaluation(text, fingerprint, "ok", accuracy=trainer.accuracy(arch))
    except EvaluationFailed as error:
        evaluation = Evaluation(text, fingerprint, "failed", error=str(error))
    evaluation.accuracy_seconds = time.perf_counter() - start
    return evaluation if store is None else store.add(evaluation)


def correlation(rows: Sequence[ReportRow], proxy: str) -> ProxyCorrelation:
    """Spearman and Kendall of ``proxy``'s scores with accuracy over the rows that trained (NaN if undefined)."""
    from scipy import stats

    pairs = [(r.scores[proxy], r.accuracy) for r in rows if r.accuracy is not None and not math.isnan(r.scores[proxy])]
    nan = float("nan")
    rho, rho_p, tau, tau_p = nan, nan, nan, nan
    if len(pairs) >= 3:
        scores, accuracies = zip(*pairs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant input: the correlation is undefined, reported as NaN
            rho, rho_p = stats.spearmanr(scores, accuracies)
            tau, tau_p = stats.kendalltau(scores, accuracies)
    seconds = _mean([r.seconds[proxy] for r in rows])
    return ProxyCorrelation(proxy, float(rho), float(rho_p), float(tau), float(tau_p), seconds, len(pairs))


def write_report(report: Report, out_dir: Path) -> dict[str, Path]:
    """``accuracy_report.csv`` (per architecture), ``accuracy_report_summary.csv``, ``accuracy_report.md`` and
    ``accuracy_report.png`` (score vs accuracy, one panel per proxy) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "rows": out_dir / "accuracy_report.csv",
        "summary": out_dir / "accuracy_report_summary.csv",
        "markdown": out_dir / "accuracy_report.md",
        "plot": out_dir / "accuracy_report.png",
    }
    names = [c.proxy for c in report.correlations]
    with open(paths["rows"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch", "accuracy", "train_seconds", *names, *(f"{n}_seconds" for n in names)])
        for r in report.rows:
            scores, seconds = (r.scores[n] for n in names), (r.seconds[n] for n in names)
            writer.writerow([r.arch, r.accuracy, r.train_seconds, *scores, *seconds])
    with open(paths["summary"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["proxy", "spearman", "spearman_p", "kendall", "kendall_p", "seconds_per_arch", "archs"])
        for c in report.correlations:
            writer.writerow([c.proxy, c.spearman, c.spearman_p, c.kendall, c.kendall_p, c.seconds, c.count])
        writer.writerow(["proxy_training", 1.0, 0.0, 1.0, 0.0, report.train_seconds, len(report.rows)])
    paths["markdown"].write_text(report.markdown() + "\n")
    plot_report(report, paths["plot"])
    return paths


def plot_report(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(report.correlations)
    columns = min(3, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.3 * rows), squeeze=False)
    trained = [r for r in report.rows if r.accuracy is not None]
    for axis, c in zip(axes.flat, report.correlations):
        x = [r.scores[c.proxy] for r in trained]
        axis.scatter(x, [r.accuracy for r in trained], s=14)
        finite = [v for v in x if math.isfinite(v)]
        if finite and min(finite) > 0 and max(finite) / min(finite) > 100:
            axis.set_xscale("log")
        axis.set_title(f"{c.proxy}: rho={_num(c.spearman)} tau={_num(c.kendall)}", fontsize=9)
        axis.set_xlabel("score", fontsize=8)
        axis.set_ylabel("proxy-trained accuracy", fontsize=8)
    for axis in list(axes.flat)[count:]:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_report(cfg: DictConfig, run_dir: Path) -> Report:
    """``nas-rl-accuracy-report``: build the configured space and proxy training (``accuracy=proxy``, or the
    calibration trainer of ``accuracy=zero_cost``), run the report with ``cfg.report``, write it, print it."""
    from nas_rl.config import build

    settings = cfg.report
    space = build(cfg.search_space, "search_space")
    estimator = build(cfg.accuracy, "accuracy")
    trainer = estimator.trainer if isinstance(estimator, ZeroCostProxy) else estimator
    if not isinstance(trainer, ProxyTraining):
        # An estimator without training (accuracy=supernet, ...): judged against stand-alone training.
        reference = build(cfg.report.reference.training, "report.reference.training")
        name = HydraConfig.get().runtime.choices.get("accuracy") or type(estimator).__name__
        kept = settings.reference.get("store")
        store = None if kept in (None, "") else EvaluationStore(kept)
        report = estimator_report(space, estimator, str(name), reference, list(settings.reference.seeds),
                                  archs=settings.archs, seed=settings.seed, progress=settings.progress,
                                  store=store)  # fmt: skip
        paths = write_report(report, run_dir)
        print(report.markdown())
        print(f"\nwritten: {', '.join(str(p) for p in paths.values())}")
        return report
    report = accuracy_report(
        space,
        trainer,
        archs=settings.archs,
        seed=settings.seed,
        proxies=list(settings.proxies),
        batches=settings.batches,
        batch_size=settings.batch_size,
        score_seed=settings.score_seed,
        progress=settings.progress,
    )
    paths = write_report(report, run_dir)
    print(report.markdown())
    print(f"\nwritten: {', '.join(str(p) for p in paths.values())}")
    return report


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.3f}"


def _score(proxy: str, batches: list[tuple[Any, Any]], seed: int, arch: ArchSpec) -> float:
    """``score_arch`` with the architecture last, so one proxy is a function of the architecture alone."""
    return score_arch(proxy, arch, batches, seed)
