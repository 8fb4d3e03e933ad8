"""The zero-cost correlation report: as a function on a small N, and once through its real entry point."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from nas_rl.accuracy.proxy import ProxyTraining
from nas_rl.accuracy.zero_cost import PROXIES
from nas_rl.data.datasets import load_digits
from nas_rl.errors import ConfigError
from nas_rl.tools.accuracy_report import (
    BASELINES,
    Report,
    ReportRow,
    accuracy_report,
    correlation,
    write_report,
)
from tests.helpers.tiny import TINY_OVERRIDES, tiny_space


def hand_made_rows(scores: list[float], accuracies: list[float | None], proxy: str = "p") -> list[ReportRow]:
    return [ReportRow(f"arch{i}", acc, 1.0, {proxy: score}, {proxy: 0.25 * (i + 1)})
            for i, (score, acc) in enumerate(zip(scores, accuracies))]  # fmt: skip


def test_correlation_of_hand_made_ranks() -> None:
    """Ranks 1,2,3,4 against 1,3,2,4: one discordant pair of six, so Kendall's tau = (5 - 1) / 6 = 2/3, and
    Spearman's rho = 1 - 6 * (0 + 1 + 1 + 0) / (4 * (16 - 1)) = 0.8. A failed row and a NaN score are left out."""
    rows = hand_made_rows([10.0, 20.0, 30.0, 40.0, 50.0, math.nan], [0.1, 0.3, 0.2, 0.4, None, 0.9])
    c = correlation(rows, "p")
    assert c.proxy == "p" and c.count == 4
    assert c.kendall == pytest.approx(2 / 3) and c.spearman == pytest.approx(0.8)
    assert c.kendall_p == pytest.approx(stats.kendalltau([1, 2, 3, 4], [1, 3, 2, 4]).pvalue)
    assert c.spearman_p == pytest.approx(stats.spearmanr([1, 2, 3, 4], [1, 3, 2, 4]).pvalue)
    assert c.seconds == pytest.approx(sum(0.25 * i for i in range(1, 7)) / 6)  # the cost is over every row
    inverse = correlation(hand_made_rows([4.0, 3.0, 2.0, 1.0], [0.1, 0.3, 0.2, 0.4]), "p")
    assert (inverse.kendall, inverse.spearman) == (pytest.approx(-2 / 3), pytest.approx(-0.8))


def test_correlation_is_nan_when_undefined() -> None:
    constant = correlation(hand_made_rows([5.0] * 4, [0.1, 0.3, 0.2, 0.4]), "p")
    assert math.isnan(constant.kendall) and math.isnan(constant.spearman) and constant.count == 4
    too_few = correlation(hand_made_rows([1.0, 2.0, 3.0], [0.1, 0.2, None]), "p")
    assert math.isnan(too_few.kendall) and math.isnan(too_few.spearman) and too_few.count == 2


def test_summary_rows_show_the_correlations() -> None:
    rows = hand_made_rows([10.0, 20.0, 30.0, 40.0], [0.1, 0.3, 0.2, 0.4])
    report = Report(rows, [correlation(rows, "p"), correlation(hand_made_rows([1.0] * 4, [0.1] * 4, "params"), "params")], 2.5)
    lines = report.markdown().splitlines()
    assert lines[0] == "Zero-cost proxies vs proxy-trained accuracy: 4 architectures"
    assert lines[4:] == ["| p | +0.800 | +0.667 | 0.6250 |", "| params (baseline) | n/a | n/a | 0.6250 |",
                         "| proxy training | 1 | 1 | 2.50 |"]  # fmt: skip


def test_report_correlates_every_proxy_and_writes_its_files(tmp_path: Path) -> None:
    data = load_digits(16, max_samples=300)
    trainer = ProxyTraining(data, epochs=0.2, batch_size=32, optimizer="adam", lr=0.01, threads=1)
    report = accuracy_report(tiny_space(), trainer, archs=4, seed=7, batch_size=32)
    assert [c.proxy for c in report.correlations] == [*PROXIES, *BASELINES]
    assert len(report.rows) == 4 and all(0 <= r.accuracy <= 1 for r in report.rows)
    assert len({r.accuracy for r in report.rows}) > 1  # else every correlation is undefined and nothing is tested
    for c in report.correlations:
        # Spearman is undefined (NaN) only for a proxy that scores every architecture the same.
        constant = len({r.scores[c.proxy] for r in report.rows}) == 1
        assert c.count == 4 and c.seconds > 0 and math.isnan(c.spearman) == constant, (c, constant)
        assert constant or (-1 <= c.spearman <= 1 and -1 <= c.kendall <= 1)
    # Sizes and synflow (data-free, a continuous function of every weight) differ between distinct networks.
    assert all(math.isfinite(c.spearman) for c in report.correlations if c.proxy in ("params", "flops", "synflow"))
    paths = write_report(report, tmp_path)
    assert all(path.is_file() and path.stat().st_size > 0 for path in paths.values())
    with open(paths["rows"]) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and set(PROXIES) <= set(rows[0])
    markdown = paths["markdown"].read_text()
    assert "| synflow |" in markdown and "| proxy training | 1 | 1 |" in markdown
    with pytest.raises(ConfigError, match="report.archs=2"):
        accuracy_report(tiny_space(), trainer, archs=2)


ENTRY_POINT = Path(sys.executable).with_name("nas-rl-accuracy-report")


@pytest.mark.slow
@pytest.mark.skipif(not ENTRY_POINT.exists(), reason="entry point not installed (pip install -e .)")
def test_entry_point_runs_and_refuses_a_bad_proxy(tmp_path: Path) -> None:
    command = str(ENTRY_POINT)
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("latency.")]
    run = subprocess.run(
        [command, *overrides, "accuracy.threads=1", "report.archs=3", "report.progress=false",
         "report.proxies=[synflow,naswot]", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "| naswot |" in run.stdout and (tmp_path / "run" / "accuracy_report.png").is_file()
    bad = subprocess.run(
        [command, "report.proxies=[foo]", f"hydra.run.dir={tmp_path / 'bad'}"], capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 2 and "report.proxies='foo' is not accepted" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_an_estimator_that_does_not_train_is_ranked_against_stand_alone_seeds() -> None:
    """accuracy=supernet's report: the estimator's ranks against the seeds' mean, and seed 0 against seed 1."""
    from nas_rl.accuracy.proxy import ProxyTraining
    from nas_rl.data.datasets import load_digits
    from nas_rl.tools.accuracy_report import estimator_report
    from tests.helpers.doubles import HashAccuracyDouble
    from tests.helpers.tiny import tiny_space

    reference = ProxyTraining(load_digits(resolution=16, max_samples=300), epochs=0.2, threads=1)
    report = estimator_report(tiny_space(), HashAccuracyDouble(), "double", reference, seeds=(0, 1), archs=4, seed=3)
    (row,) = {r.arch: r for r in report.rows[:1]}.values()
    assert row.accuracy is not None and 0 <= row.accuracy <= 1
    assert report.correlations[0].proxy == "double" and report.correlations[0].count == 4
    assert report.ceiling is not None and report.ceiling.count == 4
    text = report.markdown()
    assert "double vs stand-alone" in text and "ceiling: stand-alone seed 0 vs seed 1" in text
    # The ceiling is the seeds' own agreement: recomputed here from independent trainings.
    again = [ProxyTraining(reference.dataset, epochs=0.2, threads=1, seed=s) for s in (0, 1)]
    archs = tiny_space().sample_archs(3, 4, distinct=True)
    firsts = [again[0].accuracy(a) for a in archs]
    seconds = [again[1].accuracy(a) for a in archs]
    assert [r.accuracy for r in report.rows] == pytest.approx([(a + b) / 2 for a, b in zip(firsts, seconds)])


def test_stand_alone_references_are_kept_in_a_store_and_not_trained_again(tmp_path: Path) -> None:
    """With a store, a second report (a stopped one resumed, or one for another estimator) reads every stand-alone
    training back, with its accuracy and the seconds it cost, instead of training again."""
    from nas_rl.accuracy.proxy import ProxyTraining
    from nas_rl.data.datasets import load_digits
    from nas_rl.evaluation.store import EvaluationStore
    from nas_rl.tools.accuracy_report import estimator_report
    from tests.helpers.doubles import HashAccuracyDouble
    from tests.helpers.tiny import tiny_space

    class TrainingRefusedDouble(ProxyTraining):
        """Test double: the same fingerprint as the real training, but training is an error."""

        def accuracy(self, arch):  # noqa: ANN001, ANN201
            raise AssertionError(f"{arch} was trained again")

    dataset = load_digits(resolution=16, max_samples=300)
    store = EvaluationStore(tmp_path / "references.sqlite")
    first = estimator_report(tiny_space(), HashAccuracyDouble(), "double", ProxyTraining(dataset, epochs=0.2, threads=1),
                             seeds=(0, 1), archs=4, seed=3, store=store)  # fmt: skip
    assert len(list(store.evaluations())) == 8  # 4 architectures x 2 seeds
    again = estimator_report(tiny_space(), HashAccuracyDouble(), "double", TrainingRefusedDouble(dataset, epochs=0.2,
                             threads=1), seeds=(0, 1), archs=4, seed=3, store=EvaluationStore(store.path))  # fmt: skip
    assert [(r.arch, r.accuracy, r.train_seconds) for r in again.rows] == [
        (r.arch, r.accuracy, r.train_seconds) for r in first.rows
    ]
    assert all(r.train_seconds > 0 for r in again.rows)  # what the training cost, not the lookup
    with pytest.raises(AssertionError, match="trained again"):  # other references (3 seeds) are trained
        estimator_report(tiny_space(), HashAccuracyDouble(), "double", TrainingRefusedDouble(dataset, epochs=0.2,
                         threads=1), seeds=(0, 1, 2), archs=4, seed=3, store=EvaluationStore(store.path))  # fmt: skip
