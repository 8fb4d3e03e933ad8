"""Does training one path of the supernet help the others? Paths drawn from pools of K fixed architectures.

    python bench/supernet_transfer.py [--pools 1,4,16,64,0] [--steps 600] [--elastic all] [--align 0] [--threads 1]

Trains the supernet of the tests' tiny MnasNet space (seven one-layer blocks of 8-32 channels, 16x16 digits)
from scratch for each pool size K: every step trains one path (cross-entropy, Adam 0.002, 64 images), drawn
from a pool of K random architectures fixed at the start (K=0: a new random architecture every step, as
single-path one-shot training does). Only the ``--elastic`` decisions vary (``all``, or a comma list of op,
kernel, se, skip, width, layers; the others stay at the largest subnet's choice). Prints, per K: the training
loss over the last quarter of the steps, the validation accuracy of the pool's architectures and of 8 random
architectures outside the pool (``accuracy=supernet``'s scoring: BatchNorm recalibrated on 256 training images).

``--align N``: first train the largest subnet alone for N steps and freeze a copy of it; then every path learns
block by block to reproduce that copy's block outputs from its block inputs (the leading channels; MSE over
the target's variance), and the head its logits (block-wise distillation, as DNA does), instead of the labels.

If paths shared what they learn, a pool's architectures would learn about as fast whatever K, and architectures
outside the pool would score well above chance (0.10). If they share nothing, a pool of K learns like one
network trained for steps/K, and the others stay at chance.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
import torch.nn.functional as F
from supernet_decisions import tiny_space  # bench/supernet_decisions.py: the tests' tiny space

from nas_rl.data.datasets import calibration_images, load_digits
from nas_rl.spaces.mnasnet import BLOCK_DECISIONS, MnasNetSpace
from nas_rl.supernet.network import SuperNet, calibrated_subnet, sample_tokens, top1_accuracy

OUTSIDE = 8



def run(space: MnasNetSpace, data, pool_size: int, steps: int, elastic: frozenset[str] | None, align: int) -> tuple:
    """Train one supernet on paths of a pool of ``pool_size``; its last-quarter loss and the two accuracies."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    net = SuperNet(space).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.002)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    pool = [space.decode(sample_tokens(net, rng, elastic)) for _ in range(pool_size)]
    teacher = trained_largest(net, x, y, align, rng) if align else None
    losses = []
    for _ in range(steps):
        batch = torch.from_numpy(rng.integers(0, len(y), 64))
        arch = pool[int(rng.integers(pool_size))] if pool_size else space.decode(sample_tokens(net, rng, elastic))
        optimizer.zero_grad()
        if teacher is None:
            loss = F.cross_entropy(net(x[batch], arch), y[batch])
        else:
            loss = blockwise_loss(net, teacher, x[batch], arch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    images = torch.from_numpy(calibration_images(data, None, 256, seed=0)).permute(0, 3, 1, 2).contiguous()  # NCHW
    xv, yv = torch.from_numpy(data.x_val), torch.from_numpy(data.y_val)

    def accuracy(arch) -> float:
        return top1_accuracy(calibrated_subnet(net, arch, images, 64), xv, yv)

    outside_rng = np.random.default_rng(12345)
    outside = [space.decode(sample_tokens(net, outside_rng, elastic)) for _ in range(OUTSIDE)]
    inside = [accuracy(arch) for arch in pool[:OUTSIDE]]
    return float(np.mean(losses[-steps // 4 :])), inside, [accuracy(arch) for arch in outside]


def trained_largest(net: SuperNet, x: torch.Tensor, y: torch.Tensor, steps: int, rng: np.random.Generator) -> SuperNet:
    """A frozen copy of ``net`` after training its largest subnet alone for ``steps`` steps."""
    largest, optimizer = net.largest_arch(), torch.optim.Adam(net.parameters(), lr=0.005)
    for _ in range(steps):
        batch = torch.from_numpy(rng.integers(0, len(y), 64))
        optimizer.zero_grad()
        F.cross_entropy(net(x[batch], largest), y[batch]).backward()
        optimizer.step()
    return copy.deepcopy(net).requires_grad_(False)


def blocks(net: SuperNet, images: torch.Tensor, arch) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Each block's input and output along ``arch``, and its logits."""
    inputs, outputs, h = [], [], net.stem(images, net.space.stem_channels, 3)
    for block, layers in enumerate(net.layers(arch)):
        inputs.append(h)
        for index, layer in enumerate(layers):
            h = net.slot(block, index, layer.op)(h, layer)
        outputs.append(h)
    return inputs, outputs, net.classifier(torch.flatten(net.pool(net.head(h, net.space.head_channels)), 1))


def blockwise_loss(net: SuperNet, teacher: SuperNet, images: torch.Tensor, arch) -> torch.Tensor:
    """Every block of ``arch`` fed the teacher's block input, against the teacher's block output; the head fed
    the teacher's last block output, against its logits."""
    with torch.no_grad():
        inputs, outputs, logits = blocks(teacher, images, teacher.largest_arch())
    loss = torch.zeros(())
    for block, layers in enumerate(net.layers(arch)):
        h = inputs[block][:, : layers[0].in_channels]
        for index, layer in enumerate(layers):
            h = net.slot(block, index, layer.op)(h, layer)
        target = outputs[block][:, : h.shape[1]]
        loss = loss + F.mse_loss(h, target) / (target.var() + 1e-5)
    last = outputs[-1][:, : arch.stages[-1].out_channels]
    student = net.classifier(torch.flatten(net.pool(net.head(last, net.space.head_channels)), 1))
    kl = F.kl_div(F.log_softmax(student, 1), F.log_softmax(logits, 1), log_target=True, reduction="batchmean")
    return loss + kl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", default="1,4,16,64,0")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--elastic", default="all")
    parser.add_argument("--align", type=int, default=0, help="steps of the largest alone before block-wise paths")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    elastic = None if args.elastic == "all" else frozenset(args.elastic.split(","))
    if elastic is not None and not elastic <= set(BLOCK_DECISIONS):
        parser.error(f"--elastic={args.elastic!r}: use all or a comma list of {', '.join(BLOCK_DECISIONS)}")
    space, data = tiny_space(), load_digits(resolution=16)
    aligned = f"; block-wise against the largest trained {args.align} steps" if args.align else ""
    print(f"elastic: {args.elastic}; {args.steps} steps of one path each{aligned}\n")
    print("| pool of K architectures | steps per architecture | training loss (last quarter) | "
          "pool's architectures: accuracy | 8 outside the pool: accuracy |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for pool_size in (int(k) for k in args.pools.split(",")):
        loss, inside, outside = run(space, data, pool_size, args.steps, elastic, args.align)
        label = str(pool_size) if pool_size else "a new one every step"
        per = f"{args.steps / pool_size:.0f}" if pool_size else "1"
        inside_text = f"{np.mean(inside):.2f} ({min(inside):.2f}-{max(inside):.2f})" if pool_size else "n/a"
        print(f"| {label} | {per} | {loss:.2f} | {inside_text} | {np.mean(outside):.2f} "
              f"({min(outside):.2f}-{max(outside):.2f}) |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
