"""Proxy training: train a candidate briefly in PyTorch and report its validation accuracy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas_rl.accuracy.base import AccuracyEstimator
from nas_rl.accuracy.datasets import SplitDataset
from nas_rl.arch import ArchSpec
from nas_rl.errors import ConfigError, EvaluationFailed
from nas_rl.models.torch_builder import build_torch_model

OPTIMIZERS = ("sgd", "adam")


class ProxyTraining(AccuracyEstimator):
    """Short SGD/Adam training with a cosine schedule; accuracy on the validation split.

    :param dataset: the data (already split, resized and normalised).
    :param epochs: passes over the (subset of the) training split.
    :param train_fraction: share of the training split used, a fixed seeded subset.
    :param batch_size: mini-batch size.
    :param lr: peak learning rate (cosine-annealed to 0 over the whole training).
    :param optimizer: ``sgd`` (Nesterov momentum 0.9) or ``adam``.
    :param weight_decay: L2 penalty.
    :param label_smoothing: cross-entropy label smoothing.
    :param seed: seeds initialisation and batch order: the same seed gives the same accuracy.
    :param threads: torch intra-op threads (0 = torch's default, all cores).
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
        threads: int = 0,
    ) -> None:
        _require(epochs > 0, "accuracy.epochs", epochs, "a number > 0")
        _require(0 < train_fraction <= 1, "accuracy.train_fraction", train_fraction, "a number in (0, 1]")
        _require(batch_size >= 1, "accuracy.batch_size", batch_size, "an integer >= 1")
        _require(lr > 0 and math.isfinite(lr), "accuracy.lr", lr, "a finite number > 0")
        _require(optimizer in OPTIMIZERS, "accuracy.optimizer", optimizer, f"one of {OPTIMIZERS}")
        _require(0 <= label_smoothing < 1, "accuracy.label_smoothing", label_smoothing, "a number in [0, 1)")
        _require(threads >= 0, "accuracy.threads", threads, "an integer >= 0 (0 = all cores)")
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

    def fingerprint(self) -> dict[str, Any]:
        return {
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

    def accuracy(self, arch: ArchSpec) -> float:
        return self.train(arch)[1]

    def train(self, arch: ArchSpec) -> tuple[torch.nn.Module, float]:
        """Train ``arch`` from a seeded initialisation; returns the trained model (eval mode) and its accuracy."""
        self._check_arch(arch)
        if self.threads:
            torch.set_num_threads(self.threads)
        torch.manual_seed(self.seed)
        model = build_torch_model(arch)
        rng = np.random.default_rng(self.seed)
        x_train, y_train = self._training_subset(rng)
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
                loss = F.cross_entropy(model(x_train[batch]), y_train[batch], label_smoothing=self.label_smoothing)
                if not torch.isfinite(loss):
                    raise EvaluationFailed(f"proxy training diverged: loss is {loss.item()} at step {step + 1}/{total_steps}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
        recalibrate_batchnorm(model, x_train, self.batch_size)
        return model, self.evaluate(model)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> float:
        """Top-1 accuracy of ``model`` on the validation split."""
        model.eval()
        x_val, y_val = torch.from_numpy(self.dataset.x_val), torch.from_numpy(self.dataset.y_val)
        correct = 0
        for start in range(0, len(y_val), 256):
            logits = model(x_val[start : start + 256])
            if not torch.isfinite(logits).all():
                raise EvaluationFailed("proxy training diverged: validation logits are not finite")
            correct += int((logits.argmax(1) == y_val[start : start + 256]).sum())
        return correct / len(y_val)

    def _training_subset(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.dataset.x_train, self.dataset.y_train
        if self.train_fraction < 1.0:
            keep = np.sort(rng.permutation(len(y))[: max(self.batch_size, round(self.train_fraction * len(y)))])
            x, y = x[keep], y[keep]
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))

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


def _require(ok: bool, key: str, value: Any, accepted: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not accepted: use {accepted}")
