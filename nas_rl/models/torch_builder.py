"""ArchSpec -> ``torch.nn.Module``: the network that proxy training trains and FLOP counting measures.

The layer plan (:func:`~nas_rl.models.layer_plan.stage_layers`) is shared with the Keras builder, so both frameworks build the same
layers with the same channel counts; module attribute paths (``stages.2.0.dw.conv``) double as Keras layer
names (``stages_2_0_dw_conv``) so trained weights can be copied across by name.
"""

from __future__ import annotations

import torch
from torch import nn

from nas_rl.arch import ArchSpec
from nas_rl.models.layer_plan import BN_EPS, BN_MOMENTUM, LayerSpec, stage_layers

#: MnasNet-A1 (Tan et al. 2019, Figure 7), in this project's block-string format.
MNASNET_A1 = (
    "ds_r1_k3_s1_c16_noskip:ir_r2_k3_s2_e6_c24:ir_r3_k5_s2_e3_c40_se0.25:ir_r4_k3_s2_e6_c80:"
    "ir_r2_k3_s1_e6_c112_se0.25:ir_r3_k5_s2_e6_c160_se0.25:ir_r1_k3_s1_e6_c320"
)


class SqueezeExcite(nn.Module):
    """Channel attention: global pool -> 1x1 reduce -> ReLU -> 1x1 expand -> sigmoid gate on the input."""

    def __init__(self, channels: int, reduced_channels: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced_channels, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=(2, 3), keepdim=True)
        scale = self.conv_expand(self.act(self.conv_reduce(scale)))
        return x * scale.sigmoid()


class ConvBnAct(nn.Module):
    """kxk conv (no bias) + BN [+ ReLU] [+ SE] [+ identity]: stem, head, ``cn`` layers and parts of the others.

    :param depthwise: one filter per channel (``groups=in_channels``); needs ``in_channels == out_channels``.
    :param act: ReLU after BN; off for the linear projections of ``ds`` and ``ir``.
    :param se_channels: SE bottleneck width after the activation (``cn`` layers with an se ratio); 0 for none.
    :param residual: add the input to the output (the caller checks that the shapes match).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 1,
        stride: int = 1,
        depthwise: bool = False,
        act: bool = True,
        se_channels: int = 0,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if depthwise and in_channels != out_channels:
            raise ValueError(f"a depthwise conv keeps the channel count, got {in_channels} -> {out_channels}")
        self.residual = residual
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel,
            stride=stride,
            padding=kernel // 2,
            groups=in_channels if depthwise else 1,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()
        self.se = SqueezeExcite(out_channels, se_channels) if se_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se(self.act(self.bn(self.conv(x))))
        return x + out if self.residual else out


class DepthwiseSeparable(nn.Module):
    """MnasNet/timm SepConv: depthwise kxk + BN + ReLU, [SE], pointwise 1x1 + BN (linear), [identity]."""

    def __init__(self, layer: LayerSpec) -> None:
        super().__init__()
        self.residual = layer.has_residual
        self.dw = ConvBnAct(layer.in_channels, layer.in_channels, layer.kernel, layer.stride, depthwise=True)
        self.se = SqueezeExcite(layer.in_channels, layer.se_channels) if layer.se_channels else nn.Identity()
        self.pw = ConvBnAct(layer.in_channels, layer.out_channels, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pw(self.se(self.dw(x)))
        return x + out if self.residual else out


class InvertedResidual(nn.Module):
    """MBConv: [1x1 expand + BN + ReLU], depthwise kxk + BN + ReLU, [SE], 1x1 project + BN (linear), [identity]."""

    def __init__(self, layer: LayerSpec) -> None:
        super().__init__()
        mid = layer.mid_channels
        self.residual = layer.has_residual
        self.expand = ConvBnAct(layer.in_channels, mid) if layer.expansion != 1 else nn.Identity()
        self.dw = ConvBnAct(mid, mid, layer.kernel, layer.stride, depthwise=True)
        self.se = SqueezeExcite(mid, layer.se_channels) if layer.se_channels else nn.Identity()
        self.project = ConvBnAct(mid, layer.out_channels, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.dw(self.expand(x))))
        return x + out if self.residual else out


def build_layer(layer: LayerSpec) -> nn.Module:
    """The torch module of one layer, by block type."""
    if layer.op == "cn":
        return ConvBnAct(
            layer.in_channels,
            layer.out_channels,
            layer.kernel,
            layer.stride,
            se_channels=layer.se_channels,
            residual=layer.has_residual,
        )
    if layer.op == "ds":
        return DepthwiseSeparable(layer)
    if layer.op == "ir":
        return InvertedResidual(layer)
    raise ValueError(f"unknown block type {layer.op!r}; accepted: cn, ds, ir")


class Network(nn.Module):
    """Stem, stages, 1x1 head conv, global average pool and linear classifier; NCHW in, logits out."""

    def __init__(self, arch: ArchSpec, initialise: bool = True) -> None:
        super().__init__()
        self.arch = arch
        self.stem = ConvBnAct(arch.in_channels, arch.stem_channels, 3, arch.stem_stride)
        self.stages = nn.Sequential(*(nn.Sequential(*map(build_layer, layers)) for layers in stage_layers(arch)))
        self.head = ConvBnAct(arch.stages[-1].out_channels, arch.head_channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(arch.head_channels, arch.num_classes)
        if initialise:
            self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's MnasNet initialisation: trains faster from scratch than PyTorch's defaults."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.kaiming_uniform_(module.weight, mode="fan_out", nonlinearity="sigmoid")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.stages(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


def build_torch_model(arch: ArchSpec, initialise: bool = True) -> Network:
    """The trainable torch network of ``arch``; takes NCHW float input of any resolution, returns logits.

    ``initialise=False`` skips the weight initialisation, for a caller that replaces every tensor (on the meta
    device it is most of the build time: 50 ms of a supernet subnet's extraction).
    """
    return Network(arch, initialise)
