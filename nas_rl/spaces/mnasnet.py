"""The MnasNet factorized hierarchical search space (Tan et al. 2019, section 4.1).

A skeleton of blocks (by default MobileNetV2's seven: widths, repeats, strides); every block picks its
ConvOp, kernel, squeeze-excite ratio, skip op, filter multiplier and layer count offset, and repeats
that one layer. Six decisions per block, so 42 tokens for the default skeleton.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

from nas_rl._util import is_int
from nas_rl.arch import ArchSpec, BlockSpec
from nas_rl.errors import not_accepted, require
from nas_rl.spaces.base import Decision, SearchSpace

#: MobileNetV2's inverted-residual skeleton (Sandler et al. 2018, table 2): width, repeats, stride.
MOBILENETV2_WIDTHS = (16, 24, 32, 64, 96, 160, 320)
MOBILENETV2_REPEATS = (1, 2, 3, 4, 3, 3, 1)
MOBILENETV2_STRIDES = (1, 2, 2, 2, 1, 2, 1)

#: ConvOp choices as (block type, expansion): regular conv, depthwise-separable, MBConv 3, MBConv 6.
CONV_OPS = (("cn", 1), ("ds", 1), ("ir", 3), ("ir", 6))
BLOCK_DECISIONS = ("op", "kernel", "se", "skip", "width", "layers")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without going below 90% of ``value`` (MobileNet rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class MnasNetSpace(SearchSpace):
    """The paper's per-block decisions over a configurable skeleton.

    :param resolution: input resolution the networks are trained at.
    :param num_classes: classifier outputs.
    :param in_channels: image channels.
    :param stem_channels: width of the 3x3 stem conv.
    :param stem_stride: stride of the stem (2 for ImageNet-size inputs; 1 keeps small inputs larger).
    :param head_channels: width of the final 1x1 conv.
    :param base_widths: each block's base width, multiplied by the chosen filter multiplier.
    :param base_repeats: each block's base layer count, offset by the chosen layer offset (at least 1 layer).
    :param strides: each block's first-layer stride.
    :param width_multipliers: filter multiplier choices.
    :param layer_offsets: layer count offset choices.
    :param kernels: depthwise/conv kernel choices.
    :param se_ratios: squeeze-excite ratio choices (0 = none).
    """

    def __init__(
        self,
        resolution: int = 224,
        num_classes: int = 1000,
        in_channels: int = 3,
        stem_channels: int = 32,
        stem_stride: int = 2,
        head_channels: int = 1280,
        base_widths: Sequence[int] = MOBILENETV2_WIDTHS,
        base_repeats: Sequence[int] = MOBILENETV2_REPEATS,
        strides: Sequence[int] = MOBILENETV2_STRIDES,
        width_multipliers: Sequence[float] = (0.75, 1.0, 1.25),
        layer_offsets: Sequence[int] = (-1, 0, 1),
        kernels: Sequence[int] = (3, 5),
        se_ratios: Sequence[float] = (0.0, 0.25),
    ) -> None:
        self._check(
            resolution=resolution, num_classes=num_classes, in_channels=in_channels, stem_channels=stem_channels,
            stem_stride=stem_stride, head_channels=head_channels, base_widths=base_widths,
            base_repeats=base_repeats, strides=strides, width_multipliers=width_multipliers,
            layer_offsets=layer_offsets, kernels=kernels, se_ratios=se_ratios,
        )  # fmt: skip
        self._resolution = int(resolution)
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.stem_channels = int(stem_channels)
        self.stem_stride = int(stem_stride)
        self.head_channels = int(head_channels)
        self.base_widths = tuple(int(w) for w in base_widths)
        self.base_repeats = tuple(int(r) for r in base_repeats)
        self.strides = tuple(int(s) for s in strides)
        self.width_multipliers = tuple(float(m) for m in width_multipliers)
        self.layer_offsets = tuple(int(o) for o in layer_offsets)
        self.kernels = tuple(int(k) for k in kernels)
        self.se_ratios = tuple(float(r) for r in se_ratios)
        choices = {
            "op": tuple(f"{op}{'' if op != 'ir' else f'_e{e}'}" for op, e in CONV_OPS),
            "kernel": self.kernels,
            "se": self.se_ratios,
            "skip": (True, False),
            "width": self.width_multipliers,
            "layers": self.layer_offsets,
        }
        super().__init__(
            [
                Decision(f"block{b + 1}.{name}", choices[name])
                for b in range(len(self.base_widths))
                for name in BLOCK_DECISIONS
            ]
        )

    @staticmethod
    def _check(**settings: Any) -> None:
        """Refuse any setting that would make a decoded network invalid, before a search starts rather than in it.

        A layer offset may take a block below one layer: :meth:`decode` keeps at least one (so offsets -1 and
        0 coincide on 1-layer blocks, as in the paper's skeleton); the base counts themselves must be >= 1.
        """

        def check(ok: bool, name: str, accepted: str) -> None:
            require(ok, name, settings[name], accepted)

        def listed(name: str, item_ok: Callable[[Any], bool], accepted: str, distinct: bool = False) -> None:
            values = settings[name]
            ok = isinstance(values, (list, tuple)) and len(values) >= 1 and all(item_ok(v) for v in values)
            ok = ok and (not distinct or len(set(values)) == len(values))
            check(ok, name, f"a non-empty list of {'distinct ' if distinct else ''}{accepted}")

        for name, low in (("resolution", 8), ("num_classes", 2), ("in_channels", 1), ("stem_channels", 1),
                          ("head_channels", 1)):  # fmt: skip
            check(is_int(settings[name]) and settings[name] >= low, name, f"an integer >= {low}")
        check(is_int(settings["stem_stride"]) and settings["stem_stride"] in (1, 2), "stem_stride", "1 or 2")
        listed("base_widths", lambda v: is_int(v) and v >= 1, "integers >= 1")
        listed("base_repeats", lambda v: is_int(v) and v >= 1, "integers >= 1")
        listed("strides", lambda v: is_int(v) and v in (1, 2), "strides, each 1 or 2")
        lengths = [len(settings[name]) for name in ("base_widths", "base_repeats", "strides")]
        if len(set(lengths)) != 1:
            raise not_accepted("base_widths", list(settings["base_widths"]), f"a list as long as base_repeats and "
                               f"strides (lengths {lengths[0]}, {lengths[1]} and {lengths[2]})")
        listed("width_multipliers", lambda v: _is_number(v) and v > 0, "numbers > 0", distinct=True)
        listed("layer_offsets", is_int, "integers", distinct=True)
        listed("kernels", lambda v: is_int(v) and v >= 1 and v % 2 == 1, "positive odd integers", distinct=True)
        listed("se_ratios", lambda v: _is_number(v) and 0 <= v <= 1, "numbers in [0, 1]", distinct=True)

    @property
    def resolution(self) -> int:
        return self._resolution

    def block_width(self, block: int, multiplier: float) -> int:
        return make_divisible(self.base_widths[block] * multiplier)

    def decode(self, tokens: Sequence[int]) -> ArchSpec:
        tokens = self.check_tokens(tokens)
        stages = []
        per_block = len(BLOCK_DECISIONS)
        for block in range(len(self.base_widths)):
            op_t, kernel_t, se_t, skip_t, width_t, layers_t = tokens[block * per_block : (block + 1) * per_block]
            op, expansion = CONV_OPS[op_t]
            stages.append(
                BlockSpec(
                    op=op,
                    repeats=max(1, self.base_repeats[block] + self.layer_offsets[layers_t]),
                    kernel=self.kernels[kernel_t],
                    stride=self.strides[block],
                    out_channels=self.block_width(block, self.width_multipliers[width_t]),
                    expansion=expansion,
                    se_ratio=self.se_ratios[se_t],
                    skip=skip_t == 0,
                )
            )
        return ArchSpec(stages=tuple(stages), **self.network_settings())

    def encode(self, arch: ArchSpec) -> tuple[int, ...]:
        settings = self.network_settings()
        for name, expected in settings.items():
            if getattr(arch, name) != expected:
                raise ValueError(f"architecture has {name}={getattr(arch, name)}, this space has {expected}")
        if len(arch.stages) != len(self.base_widths):
            raise ValueError(f"architecture has {len(arch.stages)} stages, this space has {len(self.base_widths)}")
        tokens: list[int] = []
        for block, stage in enumerate(arch.stages):
            where = f"stage {block + 1} ({stage.to_string()})"
            if stage.stride != self.strides[block]:
                raise ValueError(f"{where}: stride {stage.stride}, the skeleton has {self.strides[block]}")
            tokens.append(_index((stage.op, stage.expansion), CONV_OPS, where, "conv op"))
            tokens.append(_index(stage.kernel, self.kernels, where, "kernel"))
            tokens.append(_index(stage.se_ratio, self.se_ratios, where, "se ratio"))
            tokens.append(0 if stage.skip else 1)
            widths = [self.block_width(block, m) for m in self.width_multipliers]
            tokens.append(_index(stage.out_channels, widths, where, "width"))
            repeats = [max(1, self.base_repeats[block] + o) for o in self.layer_offsets]
            tokens.append(_index(stage.repeats, repeats, where, "layer count"))
        return tuple(tokens)

    def stage_choices(self) -> list[tuple[BlockSpec, ...]]:
        """Every distinct stage each block can decode to, block by block (for latency lookup tables).

        The space is factorized: any combination of one stage per block is an architecture of the space, and
        stem, head and classifier are the same in all of them (see :meth:`decode`).
        """
        stages = []
        for block in range(len(self.base_widths)):
            choices = {
                BlockSpec(
                    op=op,
                    repeats=max(1, self.base_repeats[block] + offset),
                    kernel=kernel,
                    stride=self.strides[block],
                    out_channels=self.block_width(block, multiplier),
                    expansion=expansion,
                    se_ratio=se_ratio,
                    skip=skip,
                )
                for op, expansion in CONV_OPS
                for kernel in self.kernels
                for se_ratio in self.se_ratios
                for skip in (True, False)
                for multiplier in self.width_multipliers
                for offset in self.layer_offsets
            }
            stages.append(tuple(sorted(choices, key=BlockSpec.to_string)))
        return stages

    def fingerprint(self) -> dict[str, Any]:
        return {
            "space": "mnasnet",
            "resolution": self.resolution,
            **self.network_settings(),
            "base_widths": list(self.base_widths),
            "base_repeats": list(self.base_repeats),
            "strides": list(self.strides),
            "width_multipliers": list(self.width_multipliers),
            "layer_offsets": list(self.layer_offsets),
            "kernels": list(self.kernels),
            "se_ratios": list(self.se_ratios),
        }


def _index(value: Any, options: Sequence[Any], where: str, what: str) -> int:
    for index, option in enumerate(options):
        if option == value:
            return index
    raise ValueError(f"{where}: {what} {value!r} is not in this space's choices {list(options)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
