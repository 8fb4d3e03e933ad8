"""Zero-cost proxies on tiny networks, the score -> accuracy calibration, its cache, and the Hydra config."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from nas_rl.accuracy.proxy import ProxyTraining, torch_threads
from nas_rl.accuracy.zero_cost import (
    PROXIES,
    Calibration,
    ZeroCostProxy,
    naswot,
    sample_batches,
    score_arch,
)
from nas_rl.config import build
from nas_rl.data.datasets import SplitDataset, load_digits
from nas_rl.errors import ConfigError, EvaluationFailed
from tests.helpers.tiny import tiny_space

FAST = {"epochs": 0.2, "batch_size": 32, "lr": 0.01, "optimizer": "adam", "threads": 1}


@pytest.fixture(autouse=True)
def one_thread():
    """The machine's cores are shared: one torch thread keeps these tests fast under load."""
    with torch_threads(1):
        yield


@cache
def digits() -> SplitDataset:
    return load_digits(resolution=16, max_samples=300)


def archs(count: int, seed: int = 0):
    space = tiny_space()
    rng = np.random.default_rng(seed)
    return [space.sample_arch(rng) for _ in range(count)]


@pytest.mark.parametrize("proxy", PROXIES)
def test_each_proxy_scores_a_tiny_network_repeatably(proxy: str) -> None:
    batches = sample_batches(digits(), 2, 16, seed=0)
    arch_a, arch_b = archs(2)
    score = score_arch(proxy, arch_a, batches, seed=0)
    assert math.isfinite(score) and score == score_arch(proxy, arch_a, batches, seed=0)
    assert score != score_arch(proxy, arch_b, batches, seed=0)
    if proxy != "naswot":
        assert score > 0


def test_synflow_is_data_free_and_naswot_is_a_log_determinant() -> None:
    arch = archs(1)[0]
    batches = sample_batches(digits(), 1, 16, seed=0)
    noise = [(torch.randn_like(x), y) for x, y in batches]
    assert score_arch("synflow", arch, batches, 0) == score_arch("synflow", arch, noise, 0)
    # One ReLU: codes [1,0], [1,1], [0,0] over 2 units -> K = [[2,1,1],[1,2,0],[1,0,2]], det 4.
    model = torch.nn.ReLU()
    images = torch.tensor([[1.0, -1.0], [2.0, 3.0], [-1.0, -2.0]])
    assert naswot(model, images) == pytest.approx(math.log(4.0))
    assert naswot(model, images[[0, 0, 1]]) == -math.inf  # identical patterns: singular kernel


def test_calibration_is_a_monotone_map_into_0_1() -> None:
    calibration = Calibration(["a", "b", "c", "d"], [0.2, 0.4, None, 0.8], [10.0, 100.0, 50.0, 1e4])
    values = [calibration(s) for s in (-math.inf, 0.0, 10.0, 30.0, 100.0, 1e3, 1e4, 1e9, math.inf)]
    assert values == sorted(values) and all(0.0 <= v <= 1.0 for v in values)
    assert values[0] == values[2] == pytest.approx(0.2) and values[-3] == values[-1] == pytest.approx(0.8)
    assert 0.2 < values[3] < 0.4 < values[5] < 0.8  # piecewise linear in log(1 + score) between the points
    assert calibration.increasing
    falling = Calibration(["a", "b", "c"], [0.9, 0.5, 0.1], [1.0, 10.0, 100.0])  # an inverse proxy is used inversely
    assert not falling.increasing and falling(1.0) > falling(30.0) > falling(1e3)
    with pytest.raises(EvaluationFailed, match="NaN"):
        calibration(math.nan)
    with pytest.raises(ConfigError, match="calibration"):
        Calibration(["a", "b"], [0.5, None], [1.0, 2.0])


def test_zero_cost_estimator_calibrates_once_and_caches(tmp_path: Path) -> None:
    trainer = ProxyTraining(digits(), **FAST)
    settings = {"batch_size": 32, "calibration_archs": 3, "cache_dir": str(tmp_path)}
    estimator = ZeroCostProxy(trainer, tiny_space(), "grad_norm", **settings)
    arch = archs(1, seed=9)[0]
    accuracy = estimator.accuracy(arch)
    assert 0.0 <= accuracy <= 1.0 and accuracy == estimator.accuracy(arch)
    cache = json.loads(next(tmp_path.glob("calibration-*.json")).read_text())
    assert len(cache["accuracies"]) == 3
    fingerprint = estimator.fingerprint()
    assert (fingerprint["proxy"], fingerprint["batches"], fingerprint["seed"]) == ("grad_norm", 1, 0)
    assert fingerprint["calibration"]["archs"] == 3 and fingerprint["calibration"]["trainer"] == trainer.fingerprint()

    class NoTraining(ProxyTraining):
        def accuracy(self, arch):  # the cache must answer every calibration architecture
            raise AssertionError("trained a calibration architecture again")

    again = ZeroCostProxy(NoTraining(digits(), **FAST), tiny_space(), "grad_norm", **settings)
    assert again.accuracy(arch) == accuracy


def test_zero_cost_config_builds_every_proxy_and_refuses_unknown_ones() -> None:
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        for proxy in PROXIES:
            cfg = compose("config", overrides=["accuracy=zero_cost", f"accuracy.proxy={proxy}"])
            estimator = build(cfg.accuracy, "accuracy")
            assert isinstance(estimator, ZeroCostProxy) and estimator.proxy == proxy
            assert isinstance(estimator.trainer, ProxyTraining)
        cfg = compose("config", overrides=["accuracy=zero_cost", "accuracy.proxy=jacov"])
        with pytest.raises(ConfigError, match="accuracy.proxy='jacov' is not accepted: use one of synflow, naswot"):
            build(cfg.accuracy, "accuracy")
