"""Zero-cost proxies: score an untrained network from one or a few mini-batches, in a fraction of a second.

The four proxies, after the papers' reference code:

- ``synflow`` (Tanaka et al. 2020, as used by Abdelfattah et al. 2021, "Zero-Cost Proxies for Lightweight
  NAS"): all parameters replaced by their absolute values, the network in float64 fed one all-ones image;
  score = sum over conv/linear weights of ``|w * dR/dw|`` with ``R`` the sum of the logits. Data-free. BatchNorm
  is in eval mode with its initial statistics (mean 0, variance 1), i.e. the identity: the paper computes
  synflow without BatchNorm.
- ``grad_norm`` (Abdelfattah et al. 2021): sum over conv/linear layers of the L2 norm of the weights' gradient
  of the cross-entropy of one mini-batch (train mode).
- ``snip`` (Lee et al. 2019, as used by Abdelfattah et al. 2021): sum over conv/linear weights of the
  connection sensitivity ``|w * dL/dw|`` (train mode, cross-entropy of one mini-batch).
- ``naswot`` (Mellor et al. 2021, "Neural Architecture Search without Training"): the binary activation
  pattern ``c_i`` of every ReLU unit for every image ``i`` of a mini-batch; kernel
  ``K[i, j] = N_A - hamming(c_i, c_j)``; score = ``log |det K|`` (train mode, no gradients).

With ``batches > 1`` a data-dependent score is the mean over that many mini-batches of the same initialised
network. The papers take higher as better for all four; the calibration of :class:`ZeroCostProxy` checks
the direction on the task at hand.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas_rl._util import is_int, write_text_atomically
from nas_rl.accuracy.base import AccuracyEstimator
from nas_rl.accuracy.proxy import ProxyTraining, torch_threads
from nas_rl.arch import ArchSpec
from nas_rl.data.datasets import SplitDataset
from nas_rl.errors import ConfigError, EvaluationFailed, require
from nas_rl.models.torch_builder import build_torch_model
from nas_rl.spaces.base import SearchSpace

log = logging.getLogger(__name__)

PROXIES = ("synflow", "naswot", "grad_norm", "snip")


def _weights(model: nn.Module) -> list[torch.Tensor]:
    """The weights the proxies sum over: those of every conv and linear layer (as the reference code)."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def synflow(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None) -> float:
    """Synaptic flow of ``model`` (modified in place: float64, absolute weights); only ``images``' shape is used."""
    model.double().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.abs_()
    model.zero_grad(set_to_none=True)
    ones = torch.ones((1, *images.shape[1:]), dtype=torch.float64)
    model(ones).sum().backward()
    return _saliency(model)


def grad_norm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Sum over conv/linear layers of the L2 norm of the cross-entropy gradient of the layer's weights."""
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    with torch.no_grad():
        return float(sum(w.grad.norm() for w in _weights(model) if w.grad is not None))


def snip(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Sum over conv/linear weights of the SNIP saliency ``|w * dL/dw|`` (cross-entropy loss)."""
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    return _saliency(model)


@torch.no_grad()
def _saliency(model: nn.Module) -> float:
    """Sum over conv/linear weights of ``|w * grad|``: SNIP's saliency, and synflow's on the linearised network."""
    return float(sum((w * w.grad).abs().sum() for w in _weights(model) if w.grad is not None))


@torch.no_grad()
def naswot(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None) -> float:
    """log |det K| of the Hamming-similarity kernel of the mini-batch's ReLU activation patterns."""
    count = len(images)
    kernel = torch.zeros(count, count, dtype=torch.float64)

    def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal kernel
        codes = (output.detach().reshape(count, -1) > 0).double()
        kernel += codes @ codes.T + (1.0 - codes) @ (1.0 - codes).T

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        model.train()
        model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return float(torch.linalg.slogdet(kernel)[1])


SCORERS: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], float]] = {
    "synflow": synflow,
    "naswot": naswot,
    "grad_norm": grad_norm,
    "snip": snip,
}


def check_proxy(name: str, key: str = "proxy") -> str:
    if name not in SCORERS:
        raise ConfigError(f"{key}={name!r} is not accepted: use one of {', '.join(PROXIES)}")
    return name


def score_arch(
    proxy: str, arch: ArchSpec, batches: list[tuple[torch.Tensor, torch.Tensor]], seed: int
) -> float:
    """The ``proxy`` score of ``arch`` initialised from ``seed``: the mean over ``batches`` (synflow: data-free,
    scored once)."""
    scorer = SCORERS[check_proxy(proxy)]
    torch.manual_seed(seed)
    model = build_torch_model(arch)
    if proxy == "synflow":
        return scorer(model, batches[0][0], batches[0][1])
    return float(np.mean([scorer(model, x, y) for x, y in batches]))


def feature(score: float) -> float:
    """The calibration axis: sign(s) * log(1 + |s|), which spreads synflow's and snip's many orders of magnitude
    and keeps the order of every score."""
    return math.copysign(math.log1p(abs(score)), score) if math.isfinite(score) else score


@dataclass
class Calibration:
    """A monotone map from proxy score to accuracy, fitted on calibration architectures.

    :param archs: the calibration architectures (block strings).
    :param accuracies: their proxy-trained accuracies (None where training failed).
    :param scores: their proxy scores.
    """

    archs: list[str]
    accuracies: list[float | None]
    scores: list[float]

    def __post_init__(self) -> None:
        from sklearn.isotonic import IsotonicRegression

        points = [(feature(s), a) for s, a in zip(self.scores, self.accuracies) if a is not None and math.isfinite(s)]
        if len({x for x, _ in points}) < 2:
            raise ConfigError(
                f"zero-cost calibration: {len(points)} of {len(self.archs)} calibration architectures have a proxy-"
                "trained accuracy and a finite score (need >= 2 distinct): raise accuracy.calibration_archs or fix "
                "accuracy.calibration's training settings"
            )
        x, y = np.array(points).T
        # The direction comes from the data (the sign of Spearman's rho on the calibration points): the papers'
        # "higher is better" does not always hold, e.g. grad_norm and snip rank short digits trainings inversely.
        self.map = IsotonicRegression(increasing="auto", y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x, y)

    @property
    def increasing(self) -> bool:
        """Whether accuracy rises with the score on the calibration architectures."""
        return bool(self.map.increasing_)

    def __call__(self, score: float) -> float:
        if math.isnan(score):
            raise EvaluationFailed("zero-cost proxy score is NaN")
        x = feature(score)
        x = min(max(x, self.map.X_min_), self.map.X_max_)  # +-inf (overflow, singular kernel) -> the ends
        return float(np.clip(self.map.predict([x])[0], 0.0, 1.0))


class ZeroCostProxy(AccuracyEstimator):
    """Accuracy from a zero-cost proxy score of the untrained network, calibrated to proxy-trained accuracy.

    A raw score is not an accuracy, and the reward needs one in [0, 1]. So on first use the estimator samples
    ``calibration_archs`` architectures from ``search_space`` with ``calibration_seed``, proxy-trains each with
    ``calibration`` (a :class:`ProxyTraining`; failures are left out), scores them, and fits an isotonic
    (monotone, piecewise-linear) regression from ``feature(score)`` to accuracy, clipped to [0, 1] and to the
    calibration range. Its direction (rising or falling) is the sign of the calibration points' Spearman
    correlation, so a proxy that ranks inversely on this task is used inversely. An architecture's accuracy
    is that map at its score: its rank among architectures follows the proxy's, its scale that of
    proxy-trained accuracies. A proxy that does not predict accuracy on this task yields a nearly flat map;
    ``nas-rl-accuracy-report`` measures how well each one does.
    The calibration accuracies are cached in ``cache_dir`` (JSON per trainer and space fingerprint), so
    sweep jobs and later runs train each calibration architecture once.

    :param calibration: the proxy training that labels the calibration architectures; its dataset is the one
        the proxies read.
    :param search_space: the space calibration architectures are sampled from.
    :param proxy: ``synflow``, ``naswot``, ``grad_norm`` or ``snip``.
    :param batches: mini-batches each data-dependent score averages over.
    :param batch_size: images per mini-batch.
    :param seed: seeds the network initialisation and the choice of mini-batches.
    :param calibration_archs: number of calibration architectures (>= 2).
    :param calibration_seed: seeds their sampling.
    :param cache_dir: folder of the calibration cache; None keeps it in memory only.
    """

    def __init__(
        self,
        calibration: ProxyTraining,
        search_space: SearchSpace,
        proxy: str = "synflow",
        batches: int = 1,
        batch_size: int = 64,
        seed: int = 0,
        calibration_archs: int = 8,
        calibration_seed: int = 1,
        cache_dir: str | None = None,
    ) -> None:
        check_proxy(proxy)
        counts = (("batches", batches, 1), ("batch_size", batch_size, 2), ("calibration_archs", calibration_archs, 2))
        for key, value, low in counts:
            require(is_int(value) and value >= low, key, value, f"an integer >= {low}")
        if not isinstance(calibration, ProxyTraining):
            raise ConfigError(f"calibration: a ProxyTraining config is needed, got {type(calibration).__name__}")
        self.trainer = calibration
        self.search_space = search_space
        self.proxy = proxy
        self.batches = batches
        self.batch_size = batch_size
        self.seed = int(seed)
        self.calibration_archs = calibration_archs
        self.calibration_seed = int(calibration_seed)
        self.cache_dir = None if cache_dir in (None, "") else Path(cache_dir)
        self._calibration: Calibration | None = None
        self._batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def dataset(self) -> SplitDataset:
        """The data the proxies read: the calibration trainer's."""
        return self.trainer.dataset

    def fingerprint(self) -> dict[str, Any]:
        return {
            "kind": "zero_cost",
            **self.dataset.fingerprint(),
            "proxy": self.proxy,
            "batches": self.batches,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "calibration": {
                "map": "isotonic-auto-log1p",
                "archs": self.calibration_archs,
                "seed": self.calibration_seed,
                "trainer": self.trainer.fingerprint(),
                "space": self.search_space.fingerprint(),
            },
        }

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_batches": None}

    def score(self, arch: ArchSpec) -> float:
        """The raw proxy score of ``arch`` (higher predicts more accurate)."""
        self.trainer._check_arch(arch)
        with torch_threads(self.trainer.threads):
            return score_arch(self.proxy, arch, self.mini_batches(), self.seed)

    def accuracy(self, arch: ArchSpec) -> float:
        return self.calibration()(self.score(arch))

    def mini_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The seeded mini-batches of the training split every score reads."""
        if self._batches is None:
            self._batches = sample_batches(self.dataset, self.batches, self.batch_size, self.seed)
        return self._batches

    def calibration(self) -> Calibration:
        """The score -> accuracy map, fitted on first use (calibration accuracies from the cache when there)."""
        if self._calibration is None:
            archs = self.search_space.sample_archs(self.calibration_seed, self.calibration_archs, distinct=True)
            accuracies = self._calibration_accuracies(archs)
            scores = [self.score(arch) for arch in archs]
            self._calibration = Calibration([a.to_string() for a in archs], accuracies, scores)
        return self._calibration

    def _calibration_accuracies(self, archs: list[ArchSpec]) -> list[float | None]:
        key = {"trainer": self.trainer.fingerprint(), "space": self.search_space.fingerprint()}
        digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=10).hexdigest()
        path = None if self.cache_dir is None else self.cache_dir / f"calibration-{digest}.json"
        known = _read_cache(path)
        for number, arch in enumerate(archs, start=1):
            text = arch.to_string()
            if text in known:
                continue
            log.info("zero-cost calibration: proxy-training architecture %d/%d", number, len(archs))
            try:
                known[text] = self.trainer.accuracy(arch)
            except EvaluationFailed as failure:
                log.warning("zero-cost calibration: %s failed: %s", text, failure)
                known[text] = None
            if path is not None:  # merge with what parallel sweep jobs wrote meanwhile
                known = {**_read_cache(path), **known}
                _write_json_atomically(path, {"key": key, "accuracies": known})
        return [known[arch.to_string()] for arch in archs]



def sample_batches(
    dataset: SplitDataset, batches: int, batch_size: int, seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``batches`` disjoint seeded mini-batches of the training split (fewer, smaller ones if it is small)."""
    order = np.random.default_rng(seed).permutation(len(dataset.y_train))
    size = min(batch_size, len(order))
    chunks = [np.sort(order[i * size : (i + 1) * size]) for i in range(min(batches, len(order) // size))]
    return [(torch.from_numpy(dataset.x_train[c]), torch.from_numpy(dataset.y_train[c])) for c in chunks]


def _read_cache(path: Path | None) -> dict[str, float | None]:
    """Calibration accuracies by block string; an absent or unreadable cache file is an empty cache."""
    if path is None or not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text())["accuracies"])
    except (ValueError, KeyError, TypeError):
        log.warning("zero-cost calibration: ignoring unreadable cache %s", path)
        return {}


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    write_text_atomically(path, json.dumps(payload, indent=1, sort_keys=True))
