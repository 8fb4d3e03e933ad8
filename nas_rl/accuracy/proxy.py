"""Proxy training: train a candidate briefly in PyTorch and report its validation accuracy."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas_rl.accuracy.base import AccuracyEstimator
from nas_rl.accuracy.checkpoint import Checkpoint, load_checkpoint
from nas_rl.arch import ArchSpec
from nas_rl.data.datasets import SplitDataset
from nas_rl.errors import ConfigError, EvaluationFailed, require
from nas_rl.models.torch_builder import build_torch_model

OPTIMIZERS = ("sgd", "adam")
EVAL_BATCH = 256


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (0: leave torch's setting), then restore it."""
    before = torch.get_num_threads()
    if threads and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def scale_width(arch: ArchSpec, multiplier: float) -> ArchSpec:
    """The channel-scaled copy of ``arch`` that proxy training trains: every stage's, the stem's and the
    head's channels times ``multiplier``, rounded to the nearest integer (at least 1). Block types, kernels,
    strides, depths, expansion and SE ratios are kept, so the proxy ranks the same design choices at a
    fraction of the cost; the latency is still taken on ``arch`` itself."""
    if multiplier == 1.0:
        return arch

    def scaled(channels: int) -> int:
        return max(1, int(round(channels * multiplier)))

    stages = tuple(dataclasses.replace(s, out_channels=scaled(s.out_channels)) for s in arch.stages)
    return dataclasses.replace(
        arch, stages=stages, stem_channels=scaled(arch.stem_channels), head_channels=scaled(arch.head_channels)
    )


class ProxyTraining(AccuracyEstimator):
    """Short SGD/Adam training with a cosine schedule; accuracy on the validation split.

    Optionally trains at a proxy resolution and width (cheaper than the deployed network; the latency model
    still measures the deployed one) and distils from a teacher: the loss is then
    ``(1 - w) * CE(student, labels) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))``.

    :param dataset: the data (already split, resized and normalised).
    :param epochs: passes over the (subset of the) training split.
    :param train_fraction: share of the training split used, a fixed seeded subset.
    :param batch_size: mini-batch size.
    :param lr: peak learning rate (cosine-annealed to 0 over the whole training).
    :param optimizer: ``sgd`` (Nesterov momentum 0.9) or ``adam``.
    :param weight_decay: L2 penalty.
    :param label_smoothing: cross-entropy label smoothing.
    :param seed: seeds initialisation and batch order: the same seed gives the same accuracy.
    :param threads: torch intra-op threads (0 = torch's default, all cores; 1 holds up on a shared machine).
    :param resolution: proxy-training input resolution (train and validation images are resized to it once);
        None trains at the dataset's resolution.
    :param width_multiplier: train :func:`scale_width` ``(arch, width_multiplier)`` instead of ``arch``.
    :param teacher: path of a nas-rl checkpoint (:mod:`nas_rl.accuracy.checkpoint`) to distil from; it must
        take the dataset's channels and predict its classes, and have been trained on nas-rl's normalisation.
    :param distill_temperature: softmax temperature ``T`` of the distillation term.
    :param distill_weight: weight ``w`` of the distillation term, in [0, 1].
    """

    def __init__(
        self,
        dataset: SplitDataset,
        epochs: float = 1.0,
        train_fraction: float = 1.0,
        batch_size: int = 64,
        lr: float = 0.05,
        optimizer: str = "sgd",
        weight_decay: float = 4e-5,
        label_smoothing: float = 0.0,
        seed: int = 0,
        threads: int = 1,
        resolution: int | None = None,
        width_multiplier: float = 1.0,
        teacher: str | None = None,
        distill_temperature: float = 4.0,
        distill_weight: float = 0.5,
    ) -> None:
        require(epochs > 0, "epochs", epochs, "a number > 0")
        require(0 < train_fraction <= 1, "train_fraction", train_fraction, "a number in (0, 1]")
        require(batch_size >= 1, "batch_size", batch_size, "an integer >= 1")
        require(lr > 0 and math.isfinite(lr), "lr", lr, "a finite number > 0")
        require(optimizer in OPTIMIZERS, "optimizer", optimizer, f"one of {OPTIMIZERS}")
        require(0 <= label_smoothing < 1, "label_smoothing", label_smoothing, "a number in [0, 1)")
        require(threads >= 0, "threads", threads, "an integer >= 0 (0 = all cores)")
        require(resolution is None or resolution >= 1, "resolution", resolution, "null or an integer >= 1")
        require(0 < width_multiplier <= 4, "width_multiplier", width_multiplier, "a number in (0, 4]")
        require(distill_temperature > 0, "distill_temperature", distill_temperature, "a number > 0")
        require(0 <= distill_weight <= 1, "distill_weight", distill_weight, "a number in [0, 1]")
        self.dataset = dataset
        self.epochs = float(epochs)
        self.train_fraction = float(train_fraction)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.optimizer = optimizer
        self.weight_decay = float(weight_decay)
        self.label_smoothing = float(label_smoothing)
        self.seed = int(seed)
        self.threads = int(threads)
        self.resolution = None if resolution is None else int(resolution)
        self.width_multiplier = float(width_multiplier)
        self.distill_temperature = float(distill_temperature)
        self.distill_weight = float(distill_weight)
        self.teacher_path = None if teacher in (None, "") else str(teacher)
        self._teacher: Checkpoint | None = None
        self._teacher_digest = ""
        if self.teacher_path is not None:
            self._teacher = load_checkpoint(self.teacher_path, key="accuracy.teacher")
            self._teacher_digest = _file_digest(Path(self.teacher_path).expanduser())
            if dataset is not None:
                self._check_teacher()
        self._tensors: dict[str, torch.Tensor] | None = None

    def fingerprint(self) -> dict[str, Any]:
        fingerprint = {
            "kind": "proxy_training",
            **self.dataset.fingerprint(),
            "epochs": self.epochs,
            "train_fraction": self.train_fraction,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "optimizer": self.optimizer,
            "weight_decay": self.weight_decay,
            "label_smoothing": self.label_smoothing,
            "seed": self.seed,
        }
        # Settings added after the first release appear only when used, so older stores keep their keys.
        if self.resolution is not None and self.resolution != self.dataset.resolution:
            fingerprint["proxy_resolution"] = self.resolution
        if self.width_multiplier != 1.0:
            fingerprint["width_multiplier"] = self.width_multiplier
        if self._teacher is not None:
            fingerprint["teacher"] = {
                "digest": self._teacher_digest,
                "arch": self._teacher.arch.to_string(),
                "temperature": self.distill_temperature,
                "weight": self.distill_weight,
            }
        return fingerprint

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tensors": None}  # resized copies and teacher logits are rebuilt on demand

    def accuracy(self, arch: ArchSpec) -> float:
        return self.train(arch)[1]

    def train(self, arch: ArchSpec) -> tuple[torch.nn.Module, float]:
        """Train (the width-scaled copy of) ``arch`` from a seeded initialisation; returns the trained model
        (eval mode) and its validation accuracy."""
        self._check_arch(arch)
        with torch_threads(self.threads):
            return self._train(arch)

    def _train(self, arch: ArchSpec) -> tuple[torch.nn.Module, float]:
        self.tensors()  # prepared before the seeded initialisation, as always
        torch.manual_seed(self.seed)
        return self.fit(build_torch_model(scale_width(arch, self.width_multiplier)))

    def fit(self, model: torch.nn.Module) -> tuple[torch.nn.Module, float]:
        """Train ``model`` as it is initialised (seeded by :meth:`train`, or inherited from a supernet) with this
        recipe; returns it in eval mode, BatchNorm recalibrated, and its validation accuracy."""
        data = self.tensors()
        rng = np.random.default_rng(self.seed)
        x_train, y_train, teacher = data["x_train"], data["y_train"], data.get("teacher_logits")
        keep = self._training_subset(rng)
        if keep is not None:
            x_train, y_train = x_train[keep], y_train[keep]
            teacher = None if teacher is None else teacher[keep]
        steps_per_epoch = max(1, len(y_train) // self.batch_size)
        total_steps = max(1, round(self.epochs * steps_per_epoch))
        optimizer = self._optimizer(model)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
        model.train()
        step = 0
        while step < total_steps:
            order = torch.from_numpy(rng.permutation(len(y_train)))
            for start in range(0, steps_per_epoch * self.batch_size, self.batch_size):
                if step == total_steps:
                    break
                batch = order[start : start + self.batch_size]
                logits = model(x_train[batch])
                loss = self._loss(logits, y_train[batch], None if teacher is None else teacher[batch])
                if not torch.isfinite(loss):
                    raise EvaluationFailed(
                        f"proxy training diverged: loss is {loss.item()} at step {step + 1}/{total_steps}"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
        recalibrate_batchnorm(model, x_train, self.batch_size)
        return model, self.evaluate(model)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        if teacher is None or self.distill_weight == 0:
            return loss
        t = self.distill_temperature
        kl = F.kl_div(
            F.log_softmax(logits / t, dim=1), F.log_softmax(teacher / t, dim=1), log_target=True, reduction="batchmean"
        )
        return (1 - self.distill_weight) * loss + self.distill_weight * t * t * kl

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> float:
        """Top-1 accuracy of ``model`` on the validation split (at the proxy resolution)."""
        model.eval()
        data = self.tensors()
        x_val, y_val = data["x_val"], data["y_val"]
        correct = 0
        for start in range(0, len(y_val), EVAL_BATCH):
            logits = model(x_val[start : start + EVAL_BATCH])
            if not torch.isfinite(logits).all():
                raise EvaluationFailed("proxy training diverged: validation logits are not finite")
            correct += int((logits.argmax(1) == y_val[start : start + EVAL_BATCH]).sum())
        return correct / len(y_val)

    def validation_images(self) -> np.ndarray:
        return self.tensors()["x_val"].numpy()

    def tensors(self) -> dict[str, torch.Tensor]:
        """The splits as tensors at the proxy resolution (and the teacher's logits of the training split),
        computed once per estimator."""
        if self._tensors is None:
            d = self.dataset
            x_train, x_val = torch.from_numpy(d.x_train), torch.from_numpy(d.x_val)
            if self.resolution is not None and self.resolution != d.resolution:
                size = (self.resolution, self.resolution)
                x_train = F.interpolate(x_train, size=size, mode="bilinear", align_corners=False).contiguous()
                x_val = F.interpolate(x_val, size=size, mode="bilinear", align_corners=False).contiguous()
            tensors = {"x_train": x_train, "y_train": torch.from_numpy(d.y_train), "x_val": x_val,
                       "y_val": torch.from_numpy(d.y_val)}  # fmt: skip
            if self._teacher is not None and self.distill_weight > 0:
                tensors["teacher_logits"] = _logits(self._teacher.build_model(), x_train)
            self._tensors = tensors
        return self._tensors

    def _training_subset(self, rng: np.random.Generator) -> torch.Tensor | None:
        """Indices of the seeded training subset; None for the whole split (no copy)."""
        count = len(self.dataset.y_train)
        if self.train_fraction >= 1.0:
            return None
        keep = np.sort(rng.permutation(count)[: max(self.batch_size, round(self.train_fraction * count))])
        return torch.from_numpy(keep)

    def _optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(
            model.parameters(), lr=self.lr, momentum=0.9, nesterov=True, weight_decay=self.weight_decay
        )

    def _check_arch(self, arch: ArchSpec) -> None:
        if arch.in_channels != self.dataset.in_channels or arch.num_classes != self.dataset.num_classes:
            raise ConfigError(
                f"architecture takes {arch.in_channels} channels and {arch.num_classes} classes, dataset "
                f"{self.dataset.name!r} has {self.dataset.in_channels} and {self.dataset.num_classes}: set "
                "search_space.in_channels and search_space.num_classes to match the dataset"
            )
        if self._teacher is not None:
            self._check_teacher()

    def _check_teacher(self) -> None:
        assert self._teacher is not None
        teacher, d = self._teacher.arch, self.dataset
        if teacher.in_channels != d.in_channels or teacher.num_classes != d.num_classes:
            raise ConfigError(
                f"accuracy.teacher={self.teacher_path}: the teacher takes {teacher.in_channels} channels and predicts "
                f"{teacher.num_classes} classes; dataset {d.name!r} has {d.in_channels} channels and "
                f"{d.num_classes} classes"
            )


@torch.no_grad()
def _logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(images[start : start + EVAL_BATCH]) for start in range(0, len(images), EVAL_BATCH)])


def _file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=12)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, images: torch.Tensor, batch_size: int, max_batches: int = 8) -> None:
    """Recompute BatchNorm statistics with the final weights (the running averages of a short training lag far
    behind them and ruin validation accuracy); leaves the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
    model.train()
    for start in range(0, min(len(images), max_batches * batch_size), batch_size):
        model(images[start : start + batch_size])
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.eval()

