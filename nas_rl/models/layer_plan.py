"""The layer plan of an ArchSpec, shared by every builder (torch, Keras, the TFLite emitter): each stage's layers
with their strides and channel counts. Free of torch and TensorFlow, so a board that only measures can emit
flatbuffers without either.
"""

from __future__ import annotations

from dataclasses import dataclass

from nas_rl.arch import ArchSpec

# TF's BatchNormalization defaults in MnasNet's reference; torch momentum 0.01 == keras momentum 0.99.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a stage: the stage's block settings with this layer's stride and channel counts."""

    op: str
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    expansion: int
    se_ratio: float
    skip: bool

    @property
    def mid_channels(self) -> int:
        """Channels of the depthwise conv (and of SE): expanded input for ``ir``, the input for ``ds``."""
        return self.in_channels * self.expansion

    @property
    def se_channels(self) -> int:
        """SE bottleneck width, relative to the layer's input channels as in TF's MnasNet reference; 0: no SE."""
        return max(1, int(self.in_channels * self.se_ratio)) if self.se_ratio > 0 else 0

    @property
    def has_residual(self) -> bool:
        """Identity add only where input and output shapes match."""
        return self.skip and self.stride == 1 and self.in_channels == self.out_channels


def stage_layers(arch: ArchSpec) -> list[list[LayerSpec]]:
    """Expand every stage into its layers: the first has the stage's stride and maps channels, the rest keep them."""
    stages, channels = [], arch.stem_channels
    for block in arch.stages:
        layers = []
        for index in range(block.repeats):
            layers.append(
                LayerSpec(
                    op=block.op,
                    kernel=block.kernel,
                    stride=block.stride if index == 0 else 1,
                    in_channels=channels,
                    out_channels=block.out_channels,
                    expansion=block.expansion,
                    se_ratio=block.se_ratio,
                    skip=block.skip,
                )
            )
            channels = block.out_channels
        stages.append(layers)
    return stages
