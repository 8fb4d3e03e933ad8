"""Image classification data for proxy training, held in memory as normalised NCHW float32 arrays.

Every loader returns a :class:`SplitDataset`: a stratified, seeded train/validation split, resized to the
requested resolution, normalised with statistics of the training split only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas_rl.errors import ConfigError


@dataclass
class SplitDataset:
    """Train and validation arrays (NCHW float32, int64 labels) and what identifies them."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def resolution(self) -> int:
        return int(self.x_train.shape[2])

    def fingerprint(self) -> dict[str, Any]:
        return {"dataset": self.name, **self.settings}


def stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded split that keeps every class's share in both parts."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"dataset.val_fraction={val_fraction} is not accepted: use a number in (0, 1)")
    from sklearn.model_selection import train_test_split

    train, val = train_test_split(np.arange(len(y)), test_size=val_fraction, stratify=y, random_state=seed)
    return np.sort(train), np.sort(val)


def prepare(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    resolution: int,
    val_fraction: float,
    seed: int,
    settings: dict[str, Any],
) -> SplitDataset:
    """Split, resize (bilinear) and normalise NCHW ``images`` with per-channel train statistics."""
    if resolution < 1:
        raise ConfigError(f"dataset.resolution={resolution} is not accepted: use a positive integer")
    train_idx, val_idx = stratified_split(labels, val_fraction, seed)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if x.shape[-2:] != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x = x.numpy()
    x_train, x_val = x[train_idx], x[val_idx]
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    return SplitDataset(
        name=name,
        x_train=np.ascontiguousarray((x_train - mean) / std, dtype=np.float32),
        y_train=labels[train_idx].astype(np.int64),
        x_val=np.ascontiguousarray((x_val - mean) / std, dtype=np.float32),
        y_val=labels[val_idx].astype(np.int64),
        num_classes=num_classes,
        settings={**settings, "resolution": resolution, "val_fraction": val_fraction, "seed": seed},
    )


def load_digits(resolution: int = 32, val_fraction: float = 0.2, seed: int = 0) -> SplitDataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), upsampled to ``resolution``."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = bunch.images.astype(np.float32)[:, None, :, :] / 16.0
    return prepare("digits", images, bunch.target, 10, resolution, val_fraction, seed, {})
