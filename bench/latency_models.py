"""Latency models against LiteRT measurements: profile a device's table, then report on held-out architectures.

Runs ``nas-rl-profile`` (resumable: a finished table is reused) and ``nas-rl-latency-report`` with the same
overrides, and prints how long each took and the report's table: the README's two commands in one, e.g.

    python bench/latency_models.py resolution=224 report.samples=100

(``profile.*`` overrides go to the profiler, ``report.*``, ``models.*`` and ``reference.*`` to the report, the
rest to both). Latency numbers are only as quiet as the machine: run it with nothing else busy.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_module

from nas_rl.tools.latency_report import run_report
from nas_rl.tools.profile import run_profile

PROFILE_ONLY = ("profile.",)
REPORT_ONLY = ("report.", "models.", "reference.")


def main(overrides: list[str]) -> None:
    shared = [o for o in overrides if not o.startswith(PROFILE_ONLY + REPORT_ONLY)]
    profile_overrides = shared + [o for o in overrides if o.startswith(PROFILE_ONLY)]
    report_overrides = shared + [o for o in overrides if o.startswith(REPORT_ONLY)]
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        profile_cfg = compose("profile", overrides=profile_overrides)
        report_cfg = compose("latency_report", overrides=report_overrides)
    start = time.perf_counter()
    result = run_profile(profile_cfg)
    profiled = time.perf_counter() - start
    if profile_cfg.profile.table is None and report_cfg.table is None:  # the report reads the table just written
        report_cfg.table = str(result.table.path)
    out_dir = Path("outputs") / "bench" / time.strftime("latency_models-%Y-%m-%d-%H-%M-%S")
    start = time.perf_counter()
    run_report(report_cfg, out_dir)
    print(f"profile: {profiled:.0f} s ({result.entries_measured} entries, {result.networks_measured} networks "
          f"measured in this run); report: {time.perf_counter() - start:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
