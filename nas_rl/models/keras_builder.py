"""ArchSpec -> ``keras.Model`` (NHWC) for TFLite conversion, the same network as the torch builder.

Layers follow the torch layer plan (:func:`~nas_rl.models.torch_builder.stage_layers`) and are named after
the torch module paths with ``.`` -> ``_`` (``stages.2.0.dw.conv`` -> ``stages_2_0_dw_conv``), which is how
:func:`copy_torch_weights` pairs them. Stride-2 convs pad explicitly by ``k // 2`` on every side, as torch does,
instead of TF's asymmetric "same" padding, so copied weights give the same outputs.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from keras import KerasTensor  # noqa: E402
from torch import nn  # noqa: E402

from nas_rl.arch import ArchSpec  # noqa: E402
from nas_rl.models.torch_builder import BN_EPS, BN_MOMENTUM, LayerSpec, stage_layers  # noqa: E402


def keras_layer_name(torch_path: str) -> str:
    """Keras name of the layer that holds the weights of the torch module at ``torch_path``."""
    return torch_path.replace(".", "_")


def squeeze_excite(x: KerasTensor, name: str, reduced_channels: int) -> KerasTensor:
    """Keras twin of ``SqueezeExcite``: pool -> 1x1 reduce -> ReLU -> 1x1 expand -> sigmoid gate."""
    channels = x.shape[-1]
    scale = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    scale = keras.layers.Conv2D(reduced_channels, 1, activation="relu", name=f"{name}_conv_reduce")(scale)
    scale = keras.layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_conv_expand")(scale)
    return keras.layers.Multiply(name=f"{name}_gate")([x, scale])


def conv_bn_act(
    x: KerasTensor,
    name: str,
    filters: int,
    kernel: int = 1,
    stride: int = 1,
    depthwise: bool = False,
    act: bool = True,
    se_channels: int = 0,
    residual: bool = False,
) -> KerasTensor:
    """Keras twin of ``ConvBnAct``: conv (no bias) + BN [+ ReLU] [+ SE] [+ identity]."""
    inputs = x
    padding = "same"
    if stride > 1:
        padding = "valid"
        if kernel // 2:
            x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, stride, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, stride, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPS, momentum=1.0 - BN_MOMENTUM, name=f"{name}_bn")(x)
    if act:
        x = keras.layers.ReLU(name=f"{name}_act")(x)
    if se_channels:
        x = squeeze_excite(x, f"{name}_se", se_channels)
    if residual:
        x = keras.layers.Add(name=f"{name}_add")([inputs, x])
    return x


def depthwise_separable(x: KerasTensor, name: str, layer: LayerSpec) -> KerasTensor:
    """Keras twin of ``DepthwiseSeparable``."""
    inputs = x
    x = conv_bn_act(x, f"{name}_dw", layer.in_channels, layer.kernel, layer.stride, depthwise=True)
    if layer.se_channels:
        x = squeeze_excite(x, f"{name}_se", layer.se_channels)
    x = conv_bn_act(x, f"{name}_pw", layer.out_channels, act=False)
    return keras.layers.Add(name=f"{name}_add")([inputs, x]) if layer.has_residual else x


def inverted_residual(x: KerasTensor, name: str, layer: LayerSpec) -> KerasTensor:
    """Keras twin of ``InvertedResidual`` (MBConv)."""
    inputs = x
    if layer.expansion != 1:
        x = conv_bn_act(x, f"{name}_expand", layer.mid_channels)
    x = conv_bn_act(x, f"{name}_dw", layer.mid_channels, layer.kernel, layer.stride, depthwise=True)
    if layer.se_channels:
        x = squeeze_excite(x, f"{name}_se", layer.se_channels)
    x = conv_bn_act(x, f"{name}_project", layer.out_channels, act=False)
    return keras.layers.Add(name=f"{name}_add")([inputs, x]) if layer.has_residual else x


def build_layer(x: KerasTensor, name: str, layer: LayerSpec) -> KerasTensor:
    """Apply one layer, by block type (mirrors ``torch_builder.build_layer``)."""
    if layer.op == "cn":
        return conv_bn_act(
            x,
            name,
            layer.out_channels,
            layer.kernel,
            layer.stride,
            se_channels=layer.se_channels,
            residual=layer.has_residual,
        )
    if layer.op == "ds":
        return depthwise_separable(x, name, layer)
    if layer.op == "ir":
        return inverted_residual(x, name, layer)
    raise ValueError(f"unknown block type {layer.op!r}; accepted: cn, ds, ir")


def build_keras_model(arch: ArchSpec, resolution: int | tuple[int, int], batch_size: int | None = 1) -> keras.Model:
    """The Keras network of ``arch`` for a fixed NHWC input ``(batch_size, H, W, in_channels)``; outputs logits.

    The batch size is fixed (1 by default) because TFLite benchmarks a static shape.
    """
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    inputs = keras.Input(shape=(height, width, arch.in_channels), batch_size=batch_size, name="image")
    x = conv_bn_act(inputs, "stem", arch.stem_channels, 3, arch.stem_stride)
    for stage_index, layers in enumerate(stage_layers(arch)):
        for layer_index, layer in enumerate(layers):
            x = build_layer(x, f"stages_{stage_index}_{layer_index}", layer)
    x = conv_bn_act(x, "head", arch.head_channels)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(arch.num_classes, name="classifier")(x)
    return keras.Model(inputs, logits, name="nas_rl_network")


def _keras_weights(module: nn.Module) -> list[np.ndarray]:
    """The torch module's weights in Keras layout and order (OIHW -> HWIO, depthwise -> HWC1, dense -> IO)."""

    def numpy(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().cpu().numpy()

    if isinstance(module, nn.Conv2d):
        weight = numpy(module.weight)
        if module.groups > 1:  # (C, 1, kh, kw) -> (kh, kw, C, 1)
            kernel = weight.transpose(2, 3, 0, 1)
        else:  # (out, in, kh, kw) -> (kh, kw, in, out)
            kernel = weight.transpose(2, 3, 1, 0)
        return [kernel] + ([numpy(module.bias)] if module.bias is not None else [])
    if isinstance(module, nn.BatchNorm2d):
        assert module.running_mean is not None and module.running_var is not None  # tracked statistics
        return [numpy(module.weight), numpy(module.bias), numpy(module.running_mean), numpy(module.running_var)]
    if isinstance(module, nn.Linear):
        return [numpy(module.weight).T, numpy(module.bias)]
    raise TypeError(f"no Keras layout for {type(module).__name__}")


def copy_torch_weights(torch_model: nn.Module, keras_model: keras.Model) -> None:
    """Load the torch model's weights and BN running statistics into the Keras model of the same arch.

    Raises ``ValueError`` when the two do not describe the same network (a layer missing on either side, or a
    shape mismatch), so an export never silently carries untrained weights.
    """
    keras_layers = {layer.name: layer for layer in keras_model.layers if layer.weights}
    copied = set()
    for path, module in torch_model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            continue
        name = keras_layer_name(path)
        if name not in keras_layers:
            raise ValueError(f"torch module {path!r} has no Keras layer {name!r}: are both built from the same arch?")
        target = keras_layers[name]
        weights = _keras_weights(module)
        expected = [tuple(w.shape) for w in target.get_weights()]
        if [w.shape for w in weights] != expected:
            raise ValueError(
                f"torch module {path!r} gives weight shapes {[w.shape for w in weights]}, Keras layer {name!r} "
                f"holds {expected}: are both built from the same arch?"
            )
        target.set_weights(weights)
        copied.add(name)
    missing = sorted(set(keras_layers) - copied)
    if missing:
        raise ValueError(f"Keras layers {missing} have no torch counterpart: are both built from the same arch?")
