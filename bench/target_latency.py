"""Latency distribution of random architectures of a search space, to choose a binding target latency.

The default ``reward.target_ms`` is the median printed here for the default space and device: about half
of the space is then over the target, so the constraint binds.

    python bench/target_latency.py [N] [hydra overrides ...]
"""

from __future__ import annotations

import sys

import numpy as np
from hydra import compose, initialize_config_module

from nas_rl.config import build


def main(samples: int, overrides: list[str]) -> None:
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    space = build(cfg.search_space, "search_space")
    latency = build(cfg.latency, "latency")
    rng = np.random.default_rng(12345)
    values = []
    for index in range(samples):
        arch = space.sample_arch(rng)
        values.append(latency.latency_ms(arch))
        print(f"{index + 1:3d}/{samples} {values[-1]:8.3f} ms  {arch}", flush=True)
    quantiles = np.percentile(values, [10, 25, 50, 75, 90])
    print(f"| p10 | p25 | median | p75 | p90 | (ms, {samples} random architectures) |")
    print("|---|---|---|---|---|---|")
    print("| " + " | ".join(f"{q:.3f}" for q in quantiles) + " | |")


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 20
    main(count, [a for a in sys.argv[1:] if "=" in a])
