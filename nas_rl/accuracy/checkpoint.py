"""The one checkpoint format of nas-rl: a trained network as its architecture and its weights.

A checkpoint is a ``torch.save`` file holding a plain dict (loadable with ``torch.load(weights_only=True)``,
so reading one runs no code)::

    {
        "format": "nas-rl-checkpoint",
        "version": 1,
        "arch": "ds_r1_k3_s1_c16_noskip:ir_r2_k3_s2_e6_c24:...",   # ArchSpec block string
        "settings": {"stem_channels": 32, "stem_stride": 2, "head_channels": 1280,
                     "num_classes": 10, "in_channels": 1},          # the ArchSpec's non-stage fields
        "state_dict": {...},                                          # build_torch_model(arch).state_dict()
        "metadata": {...},                                            # free-form, JSON-like (dataset, accuracy, ...)
    }

Exporters write it with :func:`save_checkpoint`; distillation reads teachers with :func:`load_checkpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas_rl._util import first_line
from nas_rl.arch import ArchSpec
from nas_rl.errors import ConfigError
from nas_rl.models.torch_builder import build_torch_model

FORMAT = "nas-rl-checkpoint"
VERSION = 1
SETTINGS = ("stem_channels", "stem_stride", "head_channels", "num_classes", "in_channels")


@dataclass
class Checkpoint:
    """A loaded checkpoint: the architecture, its weights and free-form metadata."""

    arch: ArchSpec
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)

    def build_model(self) -> torch.nn.Module:
        """The torch network with these weights, in eval mode."""
        model = build_torch_model(self.arch)
        model.load_state_dict(self.state_dict)
        return model.eval()


def save_checkpoint(
    path: str | Path, arch: ArchSpec, model: torch.nn.Module, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` (built by ``build_torch_model(arch)``) as a checkpoint; returns the path written."""
    state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
    expected = build_torch_model(arch).state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise ValueError(f"the model's weights do not match architecture {arch.to_string()!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch.to_string(),
        "settings": {name: int(getattr(arch, name)) for name in SETTINGS},
        "state_dict": state,
        "metadata": dict(metadata or {}),
    }
    torch.save(payload, path)
    return path


def load_checkpoint(path: str | Path, key: str = "checkpoint") -> Checkpoint:
    """Read and check a checkpoint; every problem is one :class:`ConfigError` line naming ``key`` and the file."""
    path = Path(path).expanduser()
    expected = "a nas-rl checkpoint (torch file written by nas_rl.accuracy.checkpoint.save_checkpoint)"
    if not path.is_file():
        raise ConfigError(f"{key}={path}: no such file; expected {expected}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (any unreadable file is the same user error)
        raise ConfigError(f"{key}={path}: not readable as {expected} ({type(error).__name__}: {first_line(error, ' ')})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"{key}={path}: not {expected}")
    if payload.get("version") != VERSION:
        version = payload.get("version")
        raise ConfigError(f"{key}={path}: checkpoint version {version!r}; this nas-rl reads version {VERSION}")
    try:
        arch = ArchSpec.from_string(payload["arch"], **{name: int(payload["settings"][name]) for name in SETTINGS})
        state_dict = dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"{key}={path}: malformed checkpoint ({type(error).__name__}: {error})") from None
    checkpoint = Checkpoint(arch, state_dict, dict(payload.get("metadata") or {}))
    try:
        checkpoint.build_model()
    except RuntimeError as error:
        raise ConfigError(
            f"{key}={path}: weights do not match its architecture {arch.to_string()!r} ({first_line(error, ' ').strip()})"
        ) from None
    return checkpoint
