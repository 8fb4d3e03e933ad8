"""Proxy-training throughput: ProxyTraining vs a plain PyTorch training loop, same model, data and threads.

    python bench/proxy_throughput.py [--epochs 1] [--repeats 3] [--resolution 32] [--threads 0]

For each network, both loops train the same seeded model on the digits training split (the default search's
dataset) for the same number of steps with the same optimizer (Adam, batch 64) and the same torch threads
(0 = torch's default, all cores). The plain loop is the textbook one: shuffle, index a batch, forward,
cross-entropy, zero_grad, backward, step. ProxyTraining adds its divergence check, cosine schedule,
BatchNorm recalibration and validation pass; its training-loop throughput excludes the last two (timed
separately and shown as their own column). Runs alternate between the two loops; the fastest of
``--repeats`` runs of each is reported (as timeit does: other processes on shared cores only ever slow a
run down, and multi-threaded torch badly so). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

import nas_rl.accuracy.proxy as proxy_module
from nas_rl.accuracy.proxy import ProxyTraining, torch_threads
from nas_rl.arch import ArchSpec
from nas_rl.data.datasets import load_digits
from nas_rl.models.torch_builder import MNASNET_A1, build_torch_model

NETWORKS = {
    "MnasNet-A1": (MNASNET_A1, {"stem_channels": 32, "head_channels": 1280}),
    "small (c8-c32, head 64)": ("ds_r1_k3_s1_c8:ir_r2_k3_s2_e3_c16:ir_r2_k5_s2_e3_c24_se0.25:ir_r1_k3_s1_e6_c32",
                                {"stem_channels": 8, "head_channels": 64}),
}  # fmt: skip


def plain_loop(
    arch: ArchSpec, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int
) -> float:
    """Seconds for ``steps`` steps of the textbook loop."""
    torch.manual_seed(seed)
    model = build_torch_model(arch)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=4e-5)
    model.train()
    start = time.perf_counter()
    step = 0
    while step < steps:
        order = torch.randperm(len(y))
        for first in range(0, len(y) - batch_size + 1, batch_size):
            if step == steps:
                break
            batch = order[first : first + batch_size]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return time.perf_counter() - start


def proxy_training(trainer: ProxyTraining, arch: ArchSpec) -> tuple[float, float]:
    """(training-loop seconds, BN recalibration + validation seconds) of one ``trainer.train(arch)``."""
    spent = {"eval": 0.0}
    recalibrate, evaluate = proxy_module.recalibrate_batchnorm, ProxyTraining.evaluate

    def timed(function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent["eval"] += time.perf_counter() - start

        return wrapper

    proxy_module.recalibrate_batchnorm = timed(recalibrate)
    ProxyTraining.evaluate = timed(evaluate)
    try:
        start = time.perf_counter()
        trainer.train(arch)
        total = time.perf_counter() - start
    finally:
        proxy_module.recalibrate_batchnorm, ProxyTraining.evaluate = recalibrate, evaluate
    return total - spent["eval"], spent["eval"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both loops (0: torch's default)")
    args = parser.parse_args()
    data = load_digits(resolution=args.resolution)
    trainer = ProxyTraining(
        data, epochs=args.epochs, batch_size=args.batch_size, lr=0.01, optimizer="adam", threads=args.threads
    )
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    steps = max(1, round(args.epochs * (len(y) // args.batch_size)))
    images = steps * args.batch_size
    with torch_threads(args.threads):
        threads = torch.get_num_threads()
    print(f"digits {args.resolution}x{args.resolution}, {len(y)} training images, {steps} steps of {args.batch_size}, "
          f"Adam, torch {torch.__version__}, {threads} torch threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f} at start, best of {args.repeats}\n")  # fmt: skip
    print("| network | plain loop (img/s) | ProxyTraining loop (img/s) | ratio | + BN recalibration & validation (s) |")
    print("|---|---:|---:|---:|---:|")
    for name, (text, settings) in NETWORKS.items():
        arch = ArchSpec.from_string(text, num_classes=10, in_channels=1, **settings)
        with torch_threads(args.threads):
            plain_loop(arch, x, y, 2, args.batch_size, 0.01, 0)  # warm-up: kernel selection, allocator
        plain, ours, extra = [], [], []
        for _ in range(args.repeats):
            with torch_threads(args.threads):
                plain.append(plain_loop(arch, x, y, steps, args.batch_size, 0.01, 0))
            train_seconds, eval_seconds = proxy_training(trainer, arch)
            ours.append(train_seconds)
            extra.append(eval_seconds)
        plain_rate, our_rate = images / min(plain), images / min(ours)
        ratio, extra_seconds = our_rate / plain_rate, min(extra)
        print(f"| {name} | {plain_rate:.0f} | {our_rate:.0f} | {ratio:.3f} | {extra_seconds:.2f} |")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end (other processes on the CPUs slow multi-threaded torch)")


if __name__ == "__main__":
    main()
