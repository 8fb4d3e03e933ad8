"""Cost of an architecture that needs no device: multiply-adds (counted by torch) and parameters."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from nas_rl.arch import ArchSpec
from nas_rl.models.torch_builder import build_torch_model


def multiply_adds(arch: ArchSpec, resolution: int) -> int:
    """Multiply-adds of one ``resolution`` x ``resolution`` image in eval mode, as papers report (FLOPs / 2)."""
    model = build_torch_model(arch).eval()
    image = torch.zeros(1, arch.in_channels, resolution, resolution)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(image)
    return counter.get_total_flops() // 2


def parameter_count(arch: ArchSpec) -> int:
    """Trainable parameters of the torch network (BN running statistics excluded)."""
    return sum(p.numel() for p in build_torch_model(arch).parameters() if p.requires_grad)
