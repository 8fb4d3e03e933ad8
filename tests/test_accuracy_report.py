"""The zero-cost correlation report: as a function on a small N, and once through its real entry point."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

from nas_rl.accuracy.proxy import ProxyTraining
from nas_rl.accuracy.zero_cost import PROXIES
from nas_rl.data.datasets import load_digits
from nas_rl.errors import ConfigError
from nas_rl.tools.accuracy_report import BASELINES, accuracy_report, write_report
from tests.conftest import TINY_OVERRIDES, tiny_space


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
