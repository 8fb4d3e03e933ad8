"""The weight-sharing supernet of a MnasNet space: every architecture of the space is a slice of it.

Layout: the stem at full size; per block, one slot per layer the block can have (the most over the layer
offsets); per slot, one elastic module per op family (``cn``, ``ds``, ``ir``: MBConv 3 and 6 share the
``ir`` weights); the head 1x1 conv (its input channels sliced to the last block's width) and the classifier
at full size. An architecture uses the first ``repeats`` slots of each block, each slot's module of its op,
sliced to its kernel, SE, expansion and widths (see :mod:`nas_rl.supernet.elastic`).

``forward(x, arch)`` runs one subnet on the shared weights (training); :meth:`SuperNet.extract` copies one
subnet's weights into the plain network of :func:`~nas_rl.models.torch_builder.build_torch_model` (scoring,
export).
"""

from __future__ import annotations

import math
from typing import TypeVar, cast

import numpy as np
import torch
from torch import nn

from nas_rl.accuracy.proxy import recalibrate_batchnorm
from nas_rl.arch import ArchSpec
from nas_rl.models.torch_builder import LayerSpec, Network, build_torch_model, stage_layers
from nas_rl.spaces.mnasnet import CONV_OPS, MnasNetSpace
from nas_rl.supernet.elastic import ELASTIC_LAYERS, ElasticConvBn, ElasticLayer, SlotSize, State, prefixed

#: The op the smallest subnet uses: depthwise-separable has the fewest weights and multiply-adds of CONV_OPS.
SMALLEST_OP = ("ds", 1)
LARGEST_OP = ("ir", max(e for op, e in CONV_OPS if op == "ir"))
EVAL_BATCH = 256
M = TypeVar("M", bound=nn.Module)


class SuperNet(nn.Module):
    """All architectures of ``space`` as slices of one set of weights.

    :param space: the MnasNet space; its skeleton, choices and network settings fix the supernet's shape.
    """

    def __init__(self, space: MnasNetSpace) -> None:
        super().__init__()
        if not isinstance(space, MnasNetSpace):
            raise TypeError(f"the supernet covers MnasNetSpace search spaces, got {type(space).__name__}")
        self.space = space
        self.stem = ElasticConvBn(space.in_channels, space.stem_channels, 3, space.stem_stride)
        self.blocks = nn.ModuleList(
            nn.ModuleList(nn.ModuleDict({op: ELASTIC_LAYERS[op](size) for op in ELASTIC_LAYERS}) for size in sizes)
            for sizes in self.slot_sizes()
        )
        self.head = ElasticConvBn(self.widest(len(space.base_widths) - 1), space.head_channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(space.head_channels, space.num_classes)
        self._init_weights()

    def widest(self, block: int) -> int:
        """A block's largest output channels over the width multipliers."""
        return max(self.space.block_width(block, m) for m in self.space.width_multipliers)

    def slot_sizes(self) -> list[list[SlotSize]]:
        """Per block, the largest layer of each of its slots."""
        space, sizes, channels = self.space, [], self.space.stem_channels
        kernel, ratio = max(space.kernels), max(space.se_ratios)
        expansion = max(e for _, e in CONV_OPS)
        for block, repeats in enumerate(space.base_repeats):
            slots = max(max(1, repeats + offset) for offset in space.layer_offsets)
            width = self.widest(block)
            block_sizes = []
            for slot in range(slots):
                in_channels = channels if slot == 0 else width
                se = max(1, int(in_channels * ratio)) if ratio > 0 else 0  # as LayerSpec.se_channels
                stride = space.strides[block] if slot == 0 else 1
                block_sizes.append(SlotSize(in_channels, width, kernel, stride, se, expansion))
            sizes.append(block_sizes)
            channels = width
        return sizes

    def _init_weights(self) -> None:
        """The stand-alone network's initialisation (torchvision's MnasNet), at the largest sizes (the method
        only walks ``self.modules()``, so it serves any module)."""
        Network._init_weights(self)  # type: ignore[arg-type]

    def slot(self, block: int, index: int, op: str) -> ElasticLayer:
        """The elastic module of block type ``op`` in slot ``index`` of ``block``."""
        slots = cast(nn.ModuleList, self.blocks[block])
        return cast(ElasticLayer, cast(nn.ModuleDict, slots[index])[op])

    def layers(self, arch: ArchSpec) -> list[list[LayerSpec]]:
        """The layers of ``arch``, block by block; ``ValueError`` if ``arch`` is not in the space."""
        self.space.encode(arch)
        return stage_layers(arch)

    def forward(self, x: torch.Tensor, arch: ArchSpec) -> torch.Tensor:
        """The logits of subnet ``arch`` on the shared weights."""
        x = self.stem(x, self.space.stem_channels, 3)
        for block, layers in enumerate(self.layers(arch)):
            for index, layer in enumerate(layers):
                x = self.slot(block, index, layer.op)(x, layer)
        x = self.head(x, self.space.head_channels)
        return self.classifier(torch.flatten(self.pool(x), 1))

    def subnet_state_dict(self, arch: ArchSpec) -> State:
        """``build_torch_model(arch)``'s state dict, as views of the shared weights."""
        space = self.space
        state = prefixed("stem", self.stem.subnet_state(space.in_channels, space.stem_channels, 3))
        for block, layers in enumerate(self.layers(arch)):
            for index, layer in enumerate(layers):
                state.update(prefixed(f"stages.{block}.{index}", self.slot(block, index, layer.op).subnet_state(layer)))
        state.update(prefixed("head", self.head.subnet_state(arch.stages[-1].out_channels, space.head_channels)))
        state.update(prefixed("classifier", dict(self.classifier.named_parameters())))
        return state

    def extract(self, arch: ArchSpec) -> Network:
        """The stand-alone network of ``arch`` (``build_torch_model``) holding copies of its sliced weights."""
        with torch.device("meta"):  # no memory and no initialisation: every tensor is replaced below
            model = build_torch_model(arch, initialise=False)
        state = {
            k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in self.subnet_state_dict(arch).items()
        }
        model.load_state_dict(state, strict=True, assign=True)
        return model.train(self.training)

    def tokens(self, which: str) -> tuple[int, ...]:
        """The tokens of the ``largest`` or ``smallest`` subnet (most / fewest weights and multiply-adds)."""
        if which not in ("largest", "smallest"):
            raise ValueError(f"which={which!r}: use 'largest' or 'smallest'")
        space, choose = self.space, (max if which == "largest" else min)
        op = CONV_OPS.index(LARGEST_OP if which == "largest" else SMALLEST_OP)
        per_block = [
            op,
            space.kernels.index(choose(space.kernels)),
            space.se_ratios.index(choose(space.se_ratios)),
            0,  # skip on: it costs nothing and eases training
            space.width_multipliers.index(choose(space.width_multipliers)),
            space.layer_offsets.index(choose(space.layer_offsets)),
        ]
        return tuple(per_block * len(space.base_widths))

    def largest_arch(self) -> ArchSpec:
        return self.space.decode(self.tokens("largest"))

    def smallest_arch(self) -> ArchSpec:
        return self.space.decode(self.tokens("smallest"))


def in_memory_format(module: M, memory_format: torch.memory_format) -> M:
    """``module`` with its 4-d weights in ``memory_format`` (in place)."""
    return module.to(memory_format=memory_format)  # type: ignore[call-overload]  # torch stubs lack memory_format


def calibrated_subnet(supernet: SuperNet, arch: ArchSpec, images: torch.Tensor, batch_size: int) -> nn.Module:
    """The extracted network of ``arch`` with BatchNorm statistics recomputed on ``images``, in eval mode and
    channels-last memory format (about twice as fast for depthwise convs on CPU; the logits are the same).

    Shared BatchNorm statistics fit no single subnet, so each one's are recomputed (as Once-for-All does).
    """
    model = in_memory_format(supernet.extract(arch), torch.channels_last)
    batches = math.ceil(len(images) / batch_size)
    recalibrate_batchnorm(model, images.contiguous(memory_format=torch.channels_last), batch_size, batches)
    return model


@torch.no_grad()
def top1_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``images`` whose arg-max logit is the label (eval mode)."""
    model.eval()
    correct = 0
    for start in range(0, len(labels), EVAL_BATCH):
        batch = images[start : start + EVAL_BATCH].contiguous(memory_format=torch.channels_last)
        correct += int((model(batch).argmax(1) == labels[start : start + EVAL_BATCH]).sum())
    return correct / len(labels)


def sample_tokens(
    supernet: SuperNet, rng: np.random.Generator, elastic: frozenset[str] | None = None
) -> tuple[int, ...]:
    """Uniformly random tokens over the ``elastic`` decisions (names of BLOCK_DECISIONS; None: all); the
    others at the largest subnet's choice."""
    space, largest = supernet.space, supernet.tokens("largest")
    return tuple(
        int(rng.integers(decision.num_choices)) if elastic is None or decision.name.split(".")[-1] in elastic else fixed
        for decision, fixed in zip(space.decisions, largest)
    )
