"""The pieces a network's latency adds up from: its stem, each of its layers, and its head.

A lookup table holds one latency per distinct :class:`Entry` (block settings, channels, stride and input size);
an architecture's latency is the sum over :func:`network_entries` plus a fitted per-network overhead.
:func:`space_entries` lists every entry a factorized search space can produce, so a table can be built before
any search. Each entry is measured as its own one-piece Keras model, built by the Keras builder's own layer
functions (:func:`entry_model`), so a table entry is the very subgraph the whole network contains.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from typing import Any

from nas_rl.arch import ArchSpec, BlockSpec
from nas_rl.errors import ConfigError
from nas_rl.models.torch_builder import LayerSpec, stage_layers
from nas_rl.spaces.base import FactorizedSpace, SearchSpace

#: Entry kinds, in network order.


@dataclass(frozen=True)
class Entry:
    """One separately measured piece of a network, at its input size.

    :param kind: ``stem`` (3x3 conv-bn-relu), ``layer`` (one layer of a stage) or ``head`` (1x1 conv-bn-relu,
        global pooling and the classifier).
    :param layer: the piece's conv settings; for the stem a ``cn`` layer without SE or residual, for the
        head the 1x1 conv. ``skip`` is normalised to ``has_residual``: it only matters when shapes match.
    :param height: input height.
    :param width: input width.
    :param num_classes: classifier outputs (head only; 0 otherwise).
    """

    kind: str
    layer: LayerSpec
    height: int
    width: int
    num_classes: int = 0

    @cached_property
    def key(self) -> str:
        """Canonical text of the entry: the key of its row in a lookup table."""
        layer = self.layer
        size = f"@{self.height}x{self.width}"
        if self.kind == "head":
            return f"head:i{layer.in_channels}_o{layer.out_channels}_n{self.num_classes}{size}"
        if self.kind == "stem":
            return f"stem:k{layer.kernel}_s{layer.stride}_i{layer.in_channels}_o{layer.out_channels}{size}"
        residual = "res" if layer.has_residual else "nores"
        return (
            f"layer:{layer.op}_k{layer.kernel}_s{layer.stride}_e{layer.expansion}_i{layer.in_channels}"
            f"_o{layer.out_channels}_se{layer.se_ratio:g}_{residual}{size}"
        )

    @property
    def output_size(self) -> tuple[int, int]:
        return output_size(self.height, self.layer.stride, self.layer.kernel), output_size(
            self.width, self.layer.stride, self.layer.kernel
        )

    def describe(self) -> dict[str, Any]:
        """The entry's settings as a flat dict (the ``config`` of its table row, and predictor features)."""
        layer = self.layer
        return {
            "kind": self.kind,
            "op": layer.op,
            "kernel": layer.kernel,
            "stride": layer.stride,
            "expansion": layer.expansion,
            "in_channels": layer.in_channels,
            "out_channels": layer.out_channels,
            "se_ratio": layer.se_ratio,
            "residual": layer.has_residual,
            "height": self.height,
            "width": self.width,
            "num_classes": self.num_classes,
        }


def output_size(size: int, stride: int, kernel: int) -> int:
    """Spatial size after a conv of the builders: 'same' at stride 1, explicit ``k // 2`` padding at stride 2."""
    if stride == 1:
        return size
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def _canonical(layer: LayerSpec) -> LayerSpec:
    return replace(layer, skip=layer.has_residual)


def stem_entry(arch: ArchSpec, resolution: int) -> Entry:
    stem = LayerSpec("cn", 3, arch.stem_stride, arch.in_channels, arch.stem_channels, 1, 0.0, False)
    return Entry("stem", stem, resolution, resolution)


def head_entry(arch: ArchSpec, in_channels: int, size: tuple[int, int]) -> Entry:
    head = LayerSpec("cn", 1, 1, in_channels, arch.head_channels, 1, 0.0, False)
    return Entry("head", head, size[0], size[1], arch.num_classes)


def network_entries(arch: ArchSpec, resolution: int) -> list[Entry]:
    """Stem, every layer in order, head: the pieces of ``arch`` at a ``resolution`` x ``resolution`` input."""
    entries = [stem_entry(arch, resolution)]
    channels, size = arch.stem_channels, entries[0].output_size
    for stage in arch.stages:
        layers, size = stage_entries(stage, channels, size, arch.in_channels)
        entries.extend(layers)
        channels = stage.out_channels
    entries.append(head_entry(arch, channels, size))
    return entries


@lru_cache(maxsize=1 << 16)
def stage_entries(
    stage: BlockSpec, in_channels: int, size: tuple[int, int], image_channels: int = 3
) -> tuple[tuple[Entry, ...], tuple[int, int]]:
    """The entries of one stage that receives ``in_channels`` x ``size``, and the size it hands on.

    Cached: a search revisits the same few hundred stages, so a lookup costs microseconds.
    """
    block = ArchSpec(stages=(stage,), stem_channels=in_channels, in_channels=image_channels)
    entries = []
    for layer in stage_layers(block)[0]:
        entries.append(Entry("layer", _canonical(layer), *size))
        size = entries[-1].output_size
    return tuple(entries), size


def space_entries(space: SearchSpace, resolution: int) -> list[Entry]:
    """Every distinct entry an architecture of ``space`` can have at ``resolution``, in network order.

    Needs a factorized space: ``space.stage_choices()`` lists each block's possible stages, and every
    combination is an architecture (as in :class:`~nas_rl.spaces.mnasnet.MnasNetSpace`).
    """
    if not isinstance(space, FactorizedSpace):
        raise ConfigError(
            f"search space {type(space).__name__} cannot list its layers for a latency table; accepted: a space "
            "with stage_choices() (e.g. nas_rl.spaces.mnasnet.MnasNetSpace)"
        )
    choices = space.stage_choices()
    template = space.decode([0] * space.num_decisions)  # stem, head and classes are the same in every arch
    stem = stem_entry(template, resolution)
    seen: dict[str, Entry] = {stem.key: stem}
    inputs = {(template.stem_channels, stem.output_size)}  # (channels, (H, W)) a stage can receive
    for stages in choices:
        outputs = set()
        for channels, size in sorted(inputs):
            for stage in stages:
                entries, out_size = stage_entries(stage, channels, size, template.in_channels)
                for entry in entries:
                    seen.setdefault(entry.key, entry)
                outputs.add((stage.out_channels, out_size))
        inputs = outputs
    for channels, size in sorted(inputs):
        head = head_entry(template, channels, size)
        seen.setdefault(head.key, head)
    return list(seen.values())


def entry_cost(entry: Entry) -> tuple[int, int]:
    """Multiply-adds and trainable parameters of ``entry``, counted on the torch builder's modules."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from nas_rl.models.torch_builder import build_layer

    module = build_layer(entry.layer).eval()
    image = torch.zeros(1, entry.layer.in_channels, entry.height, entry.width)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(image)
    macs = counter.get_total_flops() // 2
    params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    if entry.kind == "head":  # pooling and the linear classifier
        macs += entry.layer.out_channels * entry.num_classes
        params += (entry.layer.out_channels + 1) * entry.num_classes
    return int(macs), int(params)


def entry_model(entry: Entry, name: str = "entry") -> Any:
    """The one-piece ``keras.Model`` of ``entry`` (batch 1), built by the Keras builder's layer functions."""
    import keras

    from nas_rl.models import keras_builder

    layer = entry.layer
    inputs = keras.Input((entry.height, entry.width, layer.in_channels), batch_size=1, name="image")
    if entry.kind == "stem":
        x = keras_builder.conv_bn_act(inputs, "stem", layer.out_channels, layer.kernel, layer.stride)
    elif entry.kind == "head":
        x = keras_builder.conv_bn_act(inputs, "head", layer.out_channels)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        x = keras.layers.Dense(entry.num_classes, name="classifier")(x)
    else:
        x = keras_builder.build_layer(inputs, name, layer)
    return keras.Model(inputs, x, name=name)
