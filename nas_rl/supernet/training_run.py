"""Train (or resume) a supernet into a folder: a checkpoint after every epoch, atomically, and its card.

Used by ``nas-rl-supernet`` and by ``accuracy=supernet`` when a registered env trains its supernet on first use.
A killed run loses at most the epoch in progress; a larger ``epochs`` extends a finished training; a loss that
stops being finite ends with one line naming the epoch, and the last good checkpoint is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from nas_rl.data.datasets import SplitDataset, calibration_images
from nas_rl.errors import ConfigError, EvaluationFailed
from nas_rl.spaces.mnasnet import MnasNetSpace
from nas_rl.supernet.checkpoint import (
    CARD_NAME,
    CHECKPOINT_NAME,
    load_checkpoint,
    mismatch,
    save_checkpoint,
    sha256,
    write_card,
)
from nas_rl.supernet.network import SuperNet, calibrated_subnet, top1_accuracy
from nas_rl.supernet.training import Recipe, SupernetTrainer

#: Recipe settings a resumed training may change (besides ``epochs``): e.g. a lower lr after a divergence.
RESUMABLE = ("lr",)
OnEpoch = Callable[[int, SuperNet], None]


def check_inputs(space: Any, dataset: SplitDataset) -> None:
    if not isinstance(space, MnasNetSpace):
        raise ConfigError(
            f"search_space={type(space).__name__} is not accepted: the supernet covers search_space=mnasnet"
        )
    if (space.in_channels, space.num_classes) != (dataset.in_channels, dataset.num_classes):
        raise ConfigError(
            f"search_space.in_channels={space.in_channels} and num_classes={space.num_classes} do not match dataset "
            f"{dataset.name!r} ({dataset.in_channels} channels, {dataset.num_classes} classes): set them to match"
        )


def train(space: MnasNetSpace, dataset: SplitDataset, recipe: Recipe, out_dir: Path,
          on_epoch: OnEpoch | None = None) -> dict[str, Any]:  # fmt: skip
    """Train the supernet of ``space`` for ``recipe.epochs`` epochs in all, continuing ``out_dir``'s checkpoint."""
    path = out_dir / CHECKPOINT_NAME
    fingerprints = {"space": space.fingerprint(), "dataset": dataset.fingerprint(), "recipe": recipe.fingerprint()}
    torch.manual_seed(recipe.seed)
    supernet = SuperNet(space)
    trainer = SupernetTrainer(supernet, dataset, recipe)
    done, seconds = resume(path, supernet, trainer, fingerprints) if recipe.resume and path.is_file() else (0, 0.0)
    steps = trainer.steps_per_epoch
    bar = tqdm(total=recipe.epochs * steps, initial=min(done, recipe.epochs) * steps, desc="supernet", unit="step",
               disable=not recipe.progress, dynamic_ncols=True)  # fmt: skip
    card: dict[str, Any] | None = None
    try:
        for epoch in range(done + 1, recipe.epochs + 1):
            start = time.perf_counter()
            loss = _train_epoch(trainer, epoch, bar, path, done=epoch - 1)
            seconds += time.perf_counter() - start
            state = {**fingerprints, "epoch": epoch, "train_seconds": seconds, "loss": loss,
                     "state_dict": supernet.state_dict(), "trainer": trainer.state_dict()}  # fmt: skip
            card = write_validated_card(out_dir, supernet, dataset, recipe, state, save_checkpoint(path, state))
            if on_epoch is not None:
                on_epoch(epoch, supernet)
    finally:
        bar.close()
    if card is None:  # nothing left to train: the card of the checkpoint as it is
        state = {**fingerprints, "epoch": done, "train_seconds": seconds}
        card = write_validated_card(out_dir, supernet, dataset, recipe, state, sha256(path))
    return {**card, "resumed_from_epoch": done}


def resume(path: Path, supernet: SuperNet, trainer: SupernetTrainer, fingerprints: dict[str, Any]) -> tuple[int, float]:
    """Load ``path`` into the supernet and trainer; returns (epochs done, training seconds). A checkpoint of
    another space, dataset or recipe is refused, naming what differs."""
    payload = load_checkpoint(path, "out")
    for key, what in (("space", "search space"), ("dataset", "dataset"), ("recipe", "supernet recipe")):
        theirs, ours = dict(payload.get(key) or {}), dict(fingerprints[key])
        if key == "recipe":
            for name in RESUMABLE:
                theirs.pop(name, None), ours.pop(name, None)
        if problem := mismatch(what, theirs, ours):
            raise ConfigError(
                f"out={path.parent} holds a supernet of other settings: {problem}; accepted: the same search_space, "
                f"dataset and supernet settings (supernet.epochs and {', '.join(RESUMABLE)} may change), another "
                "out=, or supernet.resume=false to start over"
            )
    supernet.load_state_dict(payload["state_dict"])
    trainer.load_state_dict(payload["trainer"])
    return int(payload["epoch"]), float(payload["train_seconds"])


def _train_epoch(trainer: SupernetTrainer, epoch: int, bar: tqdm, path: Path, done: int) -> float:
    """One epoch with the progress bar; a divergence is one ConfigError line that says what was kept."""
    epochs = trainer.recipe.epochs

    def on_step(loss: float) -> None:
        bar.set_postfix(epoch=f"{epoch}/{epochs}", loss=f"{loss:.4f}", refresh=False)
        bar.update(1)

    try:
        loss = trainer.train_epoch(epoch, on_step)
        if not all(bool(torch.isfinite(p).all()) for p in trainer.supernet.parameters()):
            raise EvaluationFailed(f"weights are not finite after epoch {epoch}")
    except EvaluationFailed as failure:
        kept = (
            f"kept the last good checkpoint {path} (epoch {done}), which a rerun continues"
            if done
            else "no checkpoint written"
        )
        raise ConfigError(
            f"supernet training diverged: {failure} with supernet.lr={trainer.recipe.lr}; {kept}; accepted: a lower supernet.lr"
        ) from None
    return loss


def write_validated_card(out_dir: Path, supernet: SuperNet, dataset: SplitDataset, recipe: Recipe,
                         state: dict[str, Any], digest: str) -> dict[str, Any]:  # fmt: skip
    """Score the largest and smallest subnets on the validation split and write the checkpoint's card."""
    images = calibration_images(dataset, None, recipe.calibration_images, recipe.seed)
    images_t = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    x_val, y_val = torch.from_numpy(dataset.x_val), torch.from_numpy(dataset.y_val)
    archs = {"largest": supernet.largest_arch(), "smallest": supernet.smallest_arch()}
    accuracy = {
        name: top1_accuracy(calibrated_subnet(supernet, arch, images_t, recipe.batch_size), x_val, y_val)
        for name, arch in archs.items()
    }
    card = {
        "space": state["space"], "dataset": state["dataset"], "recipe": state["recipe"],
        "epochs_done": state["epoch"], "train_seconds": round(state["train_seconds"], 3),
        "val_accuracy": accuracy, "archs": {name: arch.to_string() for name, arch in archs.items()},
        "checkpoint": CHECKPOINT_NAME, "sha256": digest,
    }  # fmt: skip
    write_card(out_dir / CARD_NAME, card)
    return card
