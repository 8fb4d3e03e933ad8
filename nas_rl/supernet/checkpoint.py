"""The supernet's files: ``supernet.pt`` (the training state) and ``supernet.json`` (its card).

``supernet.pt`` is a ``torch.save`` file of a plain dict, readable with ``torch.load(weights_only=True)``::

    {"format": "nas-rl-supernet", "version": 1, "epoch": 3,          # epochs done
     "space": {...}, "dataset": {...}, "recipe": {...},                # fingerprints it was trained for
     "state_dict": {...}, "trainer": {optimizer, numpy_rng, torch_rng}, "train_seconds": 81.2}

``supernet.json`` says what the checkpoint is without loading it: the same fingerprints, the epochs done, the
training seconds, the validation accuracy of the largest and smallest subnets, and the checkpoint's sha256
(a checkpoint that does not match its card was replaced or cut short). Both are written atomically after
every epoch, the checkpoint first.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from nas_rl._util import atomic_write, first_line, write_text_atomically
from nas_rl.errors import ConfigError

FORMAT, CARD_FORMAT, VERSION = "nas-rl-supernet", "nas-rl-supernet-card", 1
CHECKPOINT_NAME, CARD_NAME = "supernet.pt", "supernet.json"
#: What a checkpoint and its card must agree on with the run that reads them.
MATCHED = ("space", "dataset")


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(checkpoint, card) of ``path``: a folder holding ``supernet.pt``, or the checkpoint file itself (its card
    is the ``.json`` beside it)."""
    path = Path(path).expanduser()
    if path.suffix == ".pt" or path.is_file():
        return path, path.with_suffix(".json")
    return path / CHECKPOINT_NAME, path / CARD_NAME


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(path: Path, payload: dict[str, Any]) -> str:
    """Write the training state atomically (a kill leaves the previous one); returns its sha256."""
    with atomic_write(path) as temporary:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, temporary)
    return sha256(path)


def load_checkpoint(path: Path, key: str) -> dict[str, Any]:
    """Read a training state; an unreadable or foreign file is one ConfigError line naming ``key`` and the file."""
    expected = "a supernet checkpoint written by nas-rl-supernet"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # reads only what is used
    except Exception as error:  # noqa: BLE001  (any unreadable file is the same user error)
        reason = f"{type(error).__name__}: {first_line(error, ' ').strip()}"
        raise ConfigError(
            f"{key}={path}: not readable as {expected} ({reason}); retrain it or restore the file"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"{key}={path}: not {expected}")
    if payload.get("version") != VERSION:
        raise ConfigError(f"{key}={path}: checkpoint version {payload.get('version')!r}; this nas-rl reads {VERSION}")
    return payload


def write_card(path: Path, card: dict[str, Any]) -> None:
    write_text_atomically(path, json.dumps({"format": CARD_FORMAT, "version": VERSION, **card}, indent=2))


def read_card(path: Path, key: str) -> dict[str, Any]:
    """The card at ``path``; unreadable or foreign: one ConfigError line naming the file."""
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"{key}: {path} is not a readable supernet card ({type(error).__name__}: {first_line(error)})"
        ) from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT or card.get("version") != VERSION:
        raise ConfigError(f"{key}: {path} is not a version-{VERSION} supernet card written by nas-rl-supernet")
    return card


def mismatch(what: str, theirs: dict[str, Any], ours: dict[str, Any]) -> str | None:
    """None when the fingerprints agree; else the keys that differ, with both values."""
    if theirs == ours:
        return None
    keys = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))

    def shown(fingerprint: dict[str, Any]) -> str:
        return ", ".join(f"{k}={fingerprint.get(k)!r}" for k in keys)

    return f"the checkpoint's {what} has {shown(theirs)}; this run's has {shown(ours)}"
