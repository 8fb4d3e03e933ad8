"""Which decisions a supernet's subnets inherit well: the largest subnet with one decision changed in one block.

    python bench/supernet_decisions.py [--epochs 5,20,60] [--randoms 12] [--threads 1]

Trains the supernet of the tests' tiny MnasNet space (seven one-layer blocks of 8-32 channels, 16x16 digits)
with the default recipe for each ``--epochs`` (resumed from the previous, in outputs/bench/supernet-tiny/),
then prints, per training length: the largest and smallest subnets' accuracy, the mean over ``--randoms``
random subnets, and for each decision the accuracies of the largest subnet with that decision changed to each
other choice in blocks 1, 4 and 7 (``accuracy=supernet``: BatchNorm recalibrated, validation top-1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from nas_rl.data.datasets import load_digits
from nas_rl.spaces.mnasnet import BLOCK_DECISIONS, MnasNetSpace
from nas_rl.supernet.estimator import SupernetAccuracy
from nas_rl.supernet.training import Recipe
from nas_rl.supernet.training_run import train

BLOCKS = (0, 3, 6)


def tiny_space() -> MnasNetSpace:
    return MnasNetSpace(resolution=16, num_classes=10, in_channels=1, stem_channels=8, head_channels=32,
                        base_widths=(8, 8, 8, 16, 16, 24, 32), base_repeats=(1, 1, 1, 1, 1, 1, 1))  # fmt: skip


def one_block_changes(estimator: SupernetAccuracy, space: MnasNetSpace) -> dict[str, list[float]]:
    largest = list(estimator.supernet().tokens("largest"))
    per = len(BLOCK_DECISIONS)
    changes: dict[str, list[float]] = {}
    for index, name in enumerate(BLOCK_DECISIONS):
        for block in BLOCKS:
            position = block * per + index
            for choice in range(space.decisions[position].num_choices):
                if choice != largest[position]:
                    tokens = list(largest)
                    tokens[position] = choice
                    changes.setdefault(name, []).append(estimator.accuracy(space.decode(tokens)))
    return changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", default="5,20,60")
    parser.add_argument("--randoms", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/supernet-tiny"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    space, data = tiny_space(), load_digits(resolution=16)
    randoms = space.sample_archs(11, args.randoms)
    print("| epochs | largest | smallest | random subnets (mean) | " + " | ".join(BLOCK_DECISIONS) + " |")
    print("|---:|---:|---:|---:|" + "---|" * len(BLOCK_DECISIONS))
    for epochs in (int(e) for e in args.epochs.split(",")):
        train(space, data, Recipe(epochs=epochs, threads=args.threads, progress=False), args.out)
        estimator = SupernetAccuracy(str(args.out), space, data, threads=args.threads)
        card = estimator.card["val_accuracy"]
        mean = float(np.mean([estimator.accuracy(arch) for arch in randoms]))
        changes = one_block_changes(estimator, space)
        cells = [f"{min(changes[n]):.2f}–{max(changes[n]):.2f}" for n in BLOCK_DECISIONS]
        print(f"| {epochs} | {card['largest']:.3f} | {card['smallest']:.3f} | {mean:.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
