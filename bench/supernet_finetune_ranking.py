"""Does a supernet rank better after a few fine-tuning steps, and is that the inherited weights or the steps?

    python bench/supernet_finetune_ranking.py --reference bench/data/references-a.csv (or a report's CSV)
        [--checkpoint ~/.cache/nas-rl/supernets/MnasNet-OneShot-v0] [--steps 0,3,5,10,20,30] [--lr 0.001]
        [--batch-size 64] [--calibration-images 256] [--from-stage 0] [--validation-subset 0] [--threads 1]

Takes the architectures of an ``nas-rl-accuracy-report accuracy=supernet`` run and their stand-alone accuracy
(its CSV's ``accuracy`` column: proxy training, mean over the reference seeds), so the costly stand-alone
training is done once. Scores each architecture with ``accuracy=supernet`` at every ``--steps`` value of
``finetune_steps`` (from the supernet's inherited weights), and with the same steps, batches and learning rate
from a fresh initialisation (``build_torch_model``, seeded): the steps alone. Prints a markdown table: per
number of steps, the mean accuracy and Kendall's tau (with a 95% bootstrap interval over the architectures) and
Spearman's rho with the stand-alone accuracy, for both starts, the seconds per architecture of the inherited
start, and where both starts ran, the paired bootstrap interval of their difference in tau. With several
``--validation-subset`` values (``accuracy.validation_subset``: top-1 on that many validation images, 0: all) the
steps run for each. The paired bootstrap also compares every inherited row with the first (the first steps value at
the first subset: list a baseline setting first).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr
from supernet_cost import default_space  # bench/supernet_cost.py

from nas_rl.data.datasets import load_digits
from nas_rl.models.torch_builder import build_torch_model
from nas_rl.supernet.estimator import SupernetAccuracy
from nas_rl.supernet.network import in_memory_format, top1_accuracy


def from_scratch(estimator: SupernetAccuracy, arch) -> float:  # noqa: ANN001
    """The estimator's fine-tuning and scoring, started from a seeded fresh network instead of the supernet."""
    data = estimator.tensors()
    torch.manual_seed(0)
    model = estimator.finetuned(in_memory_format(build_torch_model(arch), torch.channels_last))
    return top1_accuracy(model, data["x_scored"], data["y_scored"])


def bootstrap_taus(scores: list[float], reference: list[float], resamples: int = 2000) -> np.ndarray:
    """Kendall's tau on ``resamples`` resamplings of the architectures (the same seeded ones for every call)."""
    picks = np.random.default_rng(0).integers(0, len(scores), (resamples, len(scores)))
    a, b = np.asarray(scores), np.asarray(reference)
    return np.array([kendalltau(a[pick], b[pick])[0] for pick in picks])


def interval(values: np.ndarray) -> str:
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return f"[{low:+.2f}, {high:+.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="an accuracy report's accuracy_report.csv")
    parser.add_argument("--checkpoint", default=str(Path.home() / ".cache/nas-rl/supernets/MnasNet-OneShot-v0"))
    parser.add_argument("--steps", default="0,3,5,10,20,30")
    parser.add_argument("--scratch-steps", default="0,10,30", help="the steps also run from a fresh initialisation")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64, help="images per fine-tuning step (and recalibration)")
    parser.add_argument("--calibration-images", type=int, default=256, help="accuracy.calibration_images")
    parser.add_argument("--from-stage", type=int, default=0, help="accuracy.finetune_from_stage: earlier stages frozen")
    parser.add_argument("--validation-subset", default="0", help="comma list: accuracy.validation_subset values")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    space = default_space()
    data = load_digits(resolution=space.resolution)
    rows = [row for row in csv.DictReader(args.reference.open()) if row["accuracy"]]
    archs, reference = [space.parse(row["arch"]) for row in rows], [float(row["accuracy"]) for row in rows]
    steps = [int(s) for s in args.steps.split(",")]
    scratch_steps = [int(s) for s in args.scratch_steps.split(",") if s]
    subsets = [int(s) for s in args.validation_subset.split(",")]
    print(f"{len(archs)} architectures of {args.reference}; Adam lr {args.lr}, batches of {args.batch_size}, "
          f"{args.calibration_images} calibration images, stem and stages before {args.from_stage} frozen, "
          f"{args.threads} thread(s)\n")  # fmt: skip
    print(
        "| fine-tuning steps | validation images | start | mean accuracy | Kendall tau [95%] | Spearman rho | s/arch |"
    )
    print("|---:|---:|---|---:|---|---:|---:|")
    differences, baseline = [], None
    for subset, count in ((subset, count) for subset in subsets for count in steps):
        # each count's batches are the first `count` of the same seeded stream
        estimator = SupernetAccuracy(args.checkpoint, space, data, finetune_steps=count, finetune_lr=args.lr,
                                     batch_size=args.batch_size, threads=args.threads,
                                     calibration_images=args.calibration_images, validation_subset=subset,
                                     finetune_from_stage=args.from_stage)  # fmt: skip
        shown = subset or len(data.y_val)
        estimator.accuracy(archs[0])  # loads the supernet once, as a search does
        start = time.perf_counter()
        inherited = [estimator.accuracy(arch) for arch in archs]
        seconds = (time.perf_counter() - start) / len(archs)
        starts = [("inherited", inherited, f"{seconds:.2f}")]
        if count in scratch_steps:
            starts.append(("fresh", [from_scratch(estimator, arch) for arch in archs], ""))
        for name, scores, cell in starts:
            tau = kendalltau(scores, reference)[0]
            print(f"| {count} | {shown} | {name} | {np.mean(scores):.3f} | {tau:+.3f} {interval(bootstrap_taus(scores, reference))} "
                  f"| {spearmanr(scores, reference)[0]:+.3f} | {cell} |", flush=True)  # fmt: skip
        if len(starts) == 2:
            gap = bootstrap_taus(starts[0][1], reference) - bootstrap_taus(starts[1][1], reference)
            differences.append(
                f"- {count} steps, {shown} images: tau inherited - fresh {np.nanmean(gap):+.3f} {interval(gap)}"
            )
        if baseline is None:
            baseline = (f"{count} steps, {shown} images", inherited)
        else:
            gap = bootstrap_taus(inherited, reference) - bootstrap_taus(baseline[1], reference)
            differences.append(f"- {count} steps, {shown} images: tau - tau at {baseline[0]} {np.nanmean(gap):+.3f} "
                               f"{interval(gap)}")  # fmt: skip
    print("\nPaired bootstrap (the same resampled architectures on both sides):")
    print("\n".join(differences))


if __name__ == "__main__":
    main()
