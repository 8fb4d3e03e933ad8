"""``nas-rl-supernet``: train the weight-sharing supernet of a MnasNet space on a dataset, for ``accuracy=supernet``.

Writes ``supernet.pt`` (the whole training state) and ``supernet.json`` (its card, with the validation
accuracy of the largest and smallest subnets) to the output folder after every epoch, atomically
(:mod:`nas_rl.supernet.training_run`). Running the same command again continues from the checkpoint; a
larger ``supernet.epochs`` extends a finished training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from nas_rl.accuracy.proxy import torch_threads
from nas_rl.config import build
from nas_rl.supernet.training_run import OnEpoch, check_inputs, train


def run(cfg: DictConfig, out_dir: Path, on_epoch: OnEpoch | None = None) -> dict[str, Any]:
    """Build the space, dataset and recipe of the composed ``train_supernet`` config, train (or resume) into
    ``out_dir`` and return the card (with ``resumed_from_epoch``: the epochs done before this call).
    ``on_epoch(epoch, supernet)`` is called after each epoch's files are written."""
    space = build(cfg.search_space, "search_space")
    dataset = build(cfg.dataset, "dataset")
    recipe = build(cfg.supernet, "supernet")
    check_inputs(space, dataset)
    with torch_threads(recipe.threads):
        return train(space, dataset, recipe, Path(out_dir), on_epoch)


