"""What one architecture costs with accuracy=supernet against one stand-alone proxy evaluation, side by side.

    python bench/supernet_cost.py [--checkpoint outputs/supernets/mnasnet-digits] [--archs 40] [--proxy 4]
                                  [--threads 1] [--calibration-images 256] [--finetune-steps 0,10]
                                  [--batch-size 64] [--lr 0.001] [--from-stage 0] [--validation-subset 0]

Both estimators score architectures drawn from the default search's space (MnasNet space, 32x32, digits;
``envs/MnasNet-v0.yaml``) with the same torch threads: the supernet slices, recalibrates BatchNorm on
``--calibration-images`` training images and scores the validation split; proxy training trains each
architecture for the default 2 epochs (``conf/accuracy/proxy.yaml``). The supernet scores them once per
``--finetune-steps`` value (``accuracy.finetune_steps``: Adam steps from the inherited weights before scoring) and
``--validation-subset`` value (``accuracy.validation_subset``: top-1 on that many validation images, 0: all),
and is loaded before timing (a search loads it once). Prints a markdown table: median and 90th percentile
seconds per architecture, and the speed-up (proxy median / that row's median). Run it on an otherwise idle
machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from nas_rl.accuracy.proxy import ProxyTraining
from nas_rl.config import build
from nas_rl.data.datasets import load_digits
from nas_rl.envs.registry import load_spec
from nas_rl.spaces.mnasnet import MnasNetSpace
from nas_rl.supernet.estimator import SupernetAccuracy


def default_space() -> MnasNetSpace:
    return build(load_spec("MnasNet-v0").search_space, "search_space")


def seconds_each(score, archs) -> list[float]:  # noqa: ANN001
    times = []
    for arch in archs:
        start = time.perf_counter()
        score(arch)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="outputs/supernets/mnasnet-digits")
    parser.add_argument("--archs", type=int, default=40)
    parser.add_argument("--proxy", type=int, default=4, help="architectures proxy-trained (each takes seconds)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calibration-images", type=int, default=256)
    parser.add_argument("--finetune-steps", default="0", help="comma list: accuracy.finetune_steps values to time")
    parser.add_argument("--batch-size", type=int, default=64, help="accuracy.batch_size: images a step / a batch")
    parser.add_argument("--lr", type=float, default=1e-3, help="accuracy.finetune_lr")
    parser.add_argument("--from-stage", type=int, default=0, help="accuracy.finetune_from_stage")
    parser.add_argument("--validation-subset", default="0", help="comma list: accuracy.validation_subset values (0: "
                        "all), each timed with every --finetune-steps value")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    space = default_space()
    data = load_digits(resolution=space.resolution)
    archs = space.sample_archs(99, args.archs)
    rows = []
    subsets = [int(s) for s in args.validation_subset.split(",")]
    for subset, steps in ((subset, int(s)) for subset in subsets for s in args.finetune_steps.split(",")):
        supernet = SupernetAccuracy(args.checkpoint, space, data, calibration_images=args.calibration_images,
                                    threads=args.threads, finetune_steps=steps, batch_size=args.batch_size,
                                    finetune_lr=args.lr, finetune_from_stage=args.from_stage,
                                    validation_subset=subset)  # fmt: skip
        supernet.accuracy(archs[0])  # loads the checkpoint and prepares the data, as a search does once
        name = "accuracy=supernet" + (f", finetune_steps={steps}" if steps else "")
        name += f", finetune_from_stage={args.from_stage}" if steps and args.from_stage else ""
        name += f", validation_subset={subset}" if subset else ""
        rows.append((name, seconds_each(supernet.accuracy, archs)))
    proxy = seconds_each(ProxyTraining(data, epochs=2, threads=args.threads).accuracy, archs[: args.proxy])
    rows.append(("accuracy=proxy (2 epochs)", proxy))
    print(f"| estimator | archs | median s/arch | p90 s/arch | speed-up | ({args.threads} thread(s), "
          f"{args.calibration_images} calibration images, batches of {args.batch_size}) |")
    print("|---|---:|---:|---:|---:|---|")
    for name, times in rows:
        ratio = statistics.median(proxy) / statistics.median(times)
        print(f"| {name} | {len(times)} | {statistics.median(times):.3f} | {np.percentile(times, 90):.3f} | "
              f"{ratio:.0f}x | |")


if __name__ == "__main__":
    main()
