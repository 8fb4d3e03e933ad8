"""Elastic layers of the weight-sharing supernet: one weight set at a slot's largest size, sliced per subnet.

Every module holds its weights at the largest size its layer slot can take and computes any smaller layer of
the space from leading slices of them (Once-for-All / BigNAS weight sharing):

- channels (input, output, MBConv's expanded channels, the SE bottleneck): the first ``n`` channels, so
  MBConv 3's expansion is the first half of MBConv 6's;
- kernel: the centre ``k x k`` of the largest kernel. Once-for-All's learned kernel transformation matrices
  are left out: a smaller kernel reads the centre weights as they are;
- BatchNorm: the first ``n`` entries of its affine weights and running statistics.

``forward(x, layer)`` takes the active layer as a :class:`~nas_rl.models.torch_builder.LayerSpec` and slices
inside the forward pass (nothing is copied per subnet); ``subnet_state(layer)`` returns the sliced tensors
under the names of the stand-alone module :func:`~nas_rl.models.torch_builder.build_layer` builds, so a
subnet can be extracted as a plain network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from nas_rl.models.torch_builder import BN_EPS, BN_MOMENTUM, LayerSpec

State = dict[str, torch.Tensor]


def prefixed(prefix: str, state: State) -> State:
    """``state`` with every name under ``prefix`` (a module path, without the dot)."""
    return {f"{prefix}.{name}": tensor for name, tensor in state.items()}


@dataclass(frozen=True)
class SlotSize:
    """The largest layer one slot holds: its channel, kernel and SE sizes, and its (fixed) stride.

    :param in_channels: largest input channels (the previous block's widest choice for a block's first slot).
    :param out_channels: largest output channels (the block's widest choice).
    :param kernel: largest kernel.
    :param stride: the slot's stride (the block's for its first slot, else 1).
    :param se_channels: largest SE bottleneck (0: the space has no SE).
    :param expansion: largest MBConv expansion.
    """

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    se_channels: int
    expansion: int


class ElasticBatchNorm(nn.BatchNorm2d):
    """BatchNorm over the first ``C`` of its channels, ``C`` read from the input."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self.subnet_state(x.shape[1])
        momentum = BN_MOMENTUM if self.momentum is None else self.momentum
        return F.batch_norm(x, state["running_mean"], state["running_var"], state["weight"], state["bias"],
                            self.training, momentum, self.eps)  # fmt: skip

    def subnet_state(self, channels: int) -> State:
        mean, var = cast(torch.Tensor, self.running_mean), cast(torch.Tensor, self.running_var)
        return {
            "weight": self.weight[:channels],
            "bias": self.bias[:channels],
            "running_mean": mean[:channels],
            "running_var": var[:channels],
            "num_batches_tracked": cast(torch.Tensor, self.num_batches_tracked),
        }


class ElasticConvBn(nn.Module):
    """kxk conv (no bias) + BN [+ ReLU] at the largest size; slices channels and the kernel's centre.

    :param depthwise: one filter per channel (the active input channels are the output channels).
    :param act: ReLU after BN; off for the linear projections of ``ds`` and ``ir``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, depthwise: bool = False,
        act: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.depthwise, self.act, self.stride, self.max_kernel = depthwise, act, stride, kernel
        groups = out_channels if depthwise else 1
        self.conv = nn.Conv2d(
            out_channels if depthwise else in_channels, out_channels, kernel, groups=groups, bias=False
        )
        self.bn = ElasticBatchNorm(out_channels)

    def weight(self, in_channels: int, out_channels: int, kernel: int) -> torch.Tensor:
        """The conv weight of the active layer: leading channels, centre kernel."""
        if kernel > self.max_kernel or kernel % 2 == 0:
            raise ValueError(f"kernel {kernel} is not an odd size <= this slot's largest kernel {self.max_kernel}")
        start = (self.max_kernel - kernel) // 2
        weight = self.conv.weight[:out_channels] if self.depthwise else self.conv.weight[:out_channels, :in_channels]
        return weight[:, :, start : start + kernel, start : start + kernel]

    def forward(self, x: torch.Tensor, out_channels: int, kernel: int = 1) -> torch.Tensor:
        in_channels = x.shape[1]
        out_channels = in_channels if self.depthwise else out_channels
        weight = self.weight(in_channels, out_channels, kernel)
        groups = in_channels if self.depthwise else 1
        x = self.bn(F.conv2d(x, weight, stride=self.stride, padding=kernel // 2, groups=groups))
        return F.relu(x) if self.act else x

    def subnet_state(self, in_channels: int, out_channels: int, kernel: int = 1) -> State:
        """The stand-alone :class:`~nas_rl.models.torch_builder.ConvBnAct`'s conv and BN tensors."""
        out_channels = in_channels if self.depthwise else out_channels
        return {"conv.weight": self.weight(in_channels, out_channels, kernel),
                **prefixed("bn", self.bn.subnet_state(out_channels))}  # fmt: skip


class ElasticSqueezeExcite(nn.Module):
    """Squeeze-excite over the first ``C`` channels (from the input) with the first ``reduced`` bottleneck units."""

    def __init__(self, channels: int, reduced_channels: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced_channels, 1, bias=True)
        self.conv_expand = nn.Conv2d(reduced_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor, reduced: int) -> torch.Tensor:
        state = self.subnet_state(x.shape[1], reduced)
        scale = x.mean(dim=(2, 3), keepdim=True)
        scale = F.relu(F.conv2d(scale, state["conv_reduce.weight"], state["conv_reduce.bias"]))
        scale = F.conv2d(scale, state["conv_expand.weight"], state["conv_expand.bias"])
        return x * scale.sigmoid()

    def subnet_state(self, channels: int, reduced: int) -> State:
        reduce_bias, expand_bias = cast(torch.Tensor, self.conv_reduce.bias), cast(torch.Tensor, self.conv_expand.bias)
        return {
            "conv_reduce.weight": self.conv_reduce.weight[:reduced, :channels],
            "conv_reduce.bias": reduce_bias[:reduced],
            "conv_expand.weight": self.conv_expand.weight[:channels, :reduced],
            "conv_expand.bias": expand_bias[:channels],
        }


class ElasticLayer(nn.Module):
    """One op family in one slot: computes any layer of that family the slot can hold."""

    se: ElasticSqueezeExcite | None

    def forward(self, x: torch.Tensor, layer: LayerSpec) -> torch.Tensor:
        out = self.body(x, layer)
        return x + out if layer.has_residual else out

    def body(self, x: torch.Tensor, layer: LayerSpec) -> torch.Tensor:
        raise NotImplementedError

    def subnet_state(self, layer: LayerSpec) -> State:
        """The layer's tensors under the stand-alone module's names (views of this module's weights)."""
        raise NotImplementedError

    def _squeeze(self, x: torch.Tensor, layer: LayerSpec) -> torch.Tensor:
        return self._se(layer)(x, layer.se_channels) if layer.se_channels else x

    def _se_state(self, channels: int, layer: LayerSpec) -> State:
        return prefixed("se", self._se(layer).subnet_state(channels, layer.se_channels)) if layer.se_channels else {}

    def _se(self, layer: LayerSpec) -> ElasticSqueezeExcite:
        if self.se is None:
            raise ValueError(f"se ratio {layer.se_ratio}: this slot was built for a space without squeeze-excite")
        return self.se


def _se(channels: int, size: SlotSize) -> ElasticSqueezeExcite | None:
    return ElasticSqueezeExcite(channels, size.se_channels) if size.se_channels else None


class ElasticConvLayer(ElasticLayer):
    """``cn``: kxk conv + BN + ReLU [+ SE over its output] [+ identity]."""

    def __init__(self, size: SlotSize) -> None:
        super().__init__()
        self.conv = ElasticConvBn(size.in_channels, size.out_channels, size.kernel, size.stride)
        self.se = _se(size.out_channels, size)

    def body(self, x: torch.Tensor, layer: LayerSpec) -> torch.Tensor:
        return self._squeeze(self.conv(x, layer.out_channels, layer.kernel), layer)

    def subnet_state(self, layer: LayerSpec) -> State:
        state = self.conv.subnet_state(layer.in_channels, layer.out_channels, layer.kernel)
        return {**state, **self._se_state(layer.out_channels, layer)}


class ElasticSepConv(ElasticLayer):
    """``ds``: depthwise kxk + BN + ReLU, [SE], pointwise 1x1 + BN, [identity]."""

    def __init__(self, size: SlotSize) -> None:
        super().__init__()
        self.dw = ElasticConvBn(size.in_channels, size.in_channels, size.kernel, size.stride, depthwise=True)
        self.se = _se(size.in_channels, size)
        self.pw = ElasticConvBn(size.in_channels, size.out_channels, act=False)

    def body(self, x: torch.Tensor, layer: LayerSpec) -> torch.Tensor:
        return self.pw(self._squeeze(self.dw(x, layer.in_channels, layer.kernel), layer), layer.out_channels)

    def subnet_state(self, layer: LayerSpec) -> State:
        return {
            **prefixed("dw", self.dw.subnet_state(layer.in_channels, layer.in_channels, layer.kernel)),
            **self._se_state(layer.in_channels, layer),
            **prefixed("pw", self.pw.subnet_state(layer.in_channels, layer.out_channels)),
        }


class ElasticMBConv(ElasticLayer):
    """``ir`` (MBConv): [1x1 expand + BN + ReLU], depthwise kxk + BN + ReLU, [SE], 1x1 project + BN, [identity].

    The expanded channels of expansion ``e`` are the first ``e * in_channels`` of the largest expansion's.
    """

    def __init__(self, size: SlotSize) -> None:
        super().__init__()
        mid = size.in_channels * size.expansion
        self.expand = ElasticConvBn(size.in_channels, mid)
        self.dw = ElasticConvBn(mid, mid, size.kernel, size.stride, depthwise=True)
        self.se = _se(mid, size)
        self.project = ElasticConvBn(mid, size.out_channels, act=False)

    def body(self, x: torch.Tensor, layer: LayerSpec) -> torch.Tensor:
        if layer.expansion != 1:
            x = self.expand(x, layer.mid_channels)
        x = self._squeeze(self.dw(x, layer.mid_channels, layer.kernel), layer)
        return self.project(x, layer.out_channels)

    def subnet_state(self, layer: LayerSpec) -> State:
        mid = layer.mid_channels
        expand = self.expand.subnet_state(layer.in_channels, mid) if layer.expansion != 1 else {}
        return {
            **prefixed("expand", expand),
            **prefixed("dw", self.dw.subnet_state(mid, mid, layer.kernel)),
            **self._se_state(mid, layer),
            **prefixed("project", self.project.subnet_state(mid, layer.out_channels)),
        }


#: The elastic module of each block type (``op`` of :class:`~nas_rl.arch.BlockSpec`).
ELASTIC_LAYERS: dict[str, type[ElasticLayer]] = {"cn": ElasticConvLayer, "ds": ElasticSepConv, "ir": ElasticMBConv}
