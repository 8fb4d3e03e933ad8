"""Tabular benchmark tables for tests: edited copies of a packed table, a planted-optimum table, a tiny recipe."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from nas_rl.benchmark.table import ARRAYS, write_table
from nas_rl.spaces.tabular import TabularSpace
from nas_rl.tools.build_table import write_synthetic_table


def rewrite(path: Path, target: Path, meta_edit: Callable[[dict], None] | None = None, **column_edits) -> Path:
    """A copy of table ``path`` with edited meta or columns, packed again (so its digest is right)."""
    with np.load(path) as archive:
        meta = json.loads(str(archive["meta"]))
        columns = {name: archive[name] for name in ARRAYS}
    if meta_edit:
        meta_edit(meta)
    columns.update(column_edits)
    return write_table(target, columns, meta)


def write_planted_table(path: Path, space: TabularSpace, best: Sequence[int], step: float = 0.1,
                        base: float = 0.4, latency_ms: float = 0.03) -> Path:  # fmt: skip
    """A complete table of ``space`` whose accuracy decomposes over the decisions: ``base`` plus ``step`` for
    every decision that takes its choice in ``best``. Every row has the same latency, so the env's reward (its
    target is the latency midrange: this latency) is the accuracy itself, and ``best`` is the only optimum.
    A policy can climb it one decision at a time."""
    synthetic = write_synthetic_table(path, space)
    tokens = np.asarray(space.all_tokens())
    accuracy = base + step * (tokens == np.asarray(best)).sum(axis=1)
    latency = np.full(space.size, latency_ms)
    return rewrite(synthetic, path, accuracy=accuracy, latency_median_ms=latency, latency_mean_ms=latency,
                   latency_std_ms=np.zeros(space.size), latency_min_ms=latency, latency_max_ms=latency)  # fmt: skip


TINY_RECIPE = """
name: tabular-tiny
search_space:
  _target_: nas_rl.spaces.tabular.TabularSpace
  resolution: 8
  num_classes: 10
  in_channels: 1
  stem_channels: 4
  stem_stride: 1
  head_channels: 8
  stages:
  - [ds_r1_k3_s1_c4, ir_r1_k3_s1_e3_c4]
  - [ir_r1_k3_s2_e3_c8, ir_r1_k5_s2_e6_c8]
dataset:
  _target_: nas_rl.data.datasets.load_digits
  resolution: ${search_space.resolution}
  val_fraction: 0.2
  seed: 0
accuracy:
  _target_: nas_rl.accuracy.proxy.ProxyTraining
  dataset: ${dataset}
  epochs: 0.25
  batch_size: 64
  lr: 0.01
  optimizer: adam
  seed: 0
  threads: 1
latency:
  _target_: nas_rl.latency.litert.LiteRTLatency
  threads: 1
  precision: fp32
  resolution: ${search_space.resolution}
  in_channels: ${search_space.in_channels}
  warmup_min_runs: 1
  warmup_min_seconds: 0.0
  min_runs: 10
  min_seconds: 0.01
  conversion: frozen_graph
"""


def tiny_recipe_file(folder: Path) -> Path:
    """A 2 x 2 = 4-architecture recipe at 8x8: a quarter epoch, 10 ms of timing per network."""
    path = folder / "tiny.yaml"
    path.write_text(TINY_RECIPE)
    return path
