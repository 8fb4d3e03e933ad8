"""ArchSpec -> fp32 TFLite flatbuffer, written directly with the TFLite schema's object API (no TensorFlow).

Measuring an architecture's latency used to build its Keras model and run TensorFlow's TFLite converter, which
costs more than the benchmark itself. This module writes the flatbuffer the converter writes for the Keras model
of :mod:`nas_rl.models.keras_builder`, from the same layer plan (:func:`~nas_rl.models.torch_builder.stage_layers`):
the same operators in the same order, with the same options and shapes. What the converter does, so we do:

- BatchNorm folded into the conv's weights and bias; ReLU fused into the conv (``fused_activation_function``);
- stride-1 convs ``SAME``, the squeeze-excite 1x1 convs ``VALID`` (Keras' default), stride-2 convs as the Keras
  model has them, an explicit ``PAD`` by ``k // 2`` and a ``VALID`` conv, except where that padding equals TF's
  "same" padding (odd map sizes): there the ``PAD`` is folded into a ``SAME`` conv;
- squeeze-excite as ``MEAN`` (keep dims) -> ``CONV_2D`` + ReLU -> ``CONV_2D`` -> ``LOGISTIC`` -> ``MUL``, without
  the ``MEAN`` on a 1x1 map (an identity);
- identity residuals as ``ADD``; on a ``(1, 1, 1, C)`` map TensorFlow makes it a bias add: ``RESHAPE`` of the
  layer's output to ``(C,)``, then a broadcasting ``ADD``;
- global pooling as ``MEAN`` over H, W; the classifier as ``FULLY_CONNECTED``, without a bias operand when the
  bias is all zeros (the converter drops an all-zero bias add);
- identical constants stored once (the converter shares them too, e.g. the zero biases of a fresh model).

Weights come from a Keras model of the same arch (:func:`tflite_from_keras`, or :func:`keras_weights` and
:func:`tflite_from_arch`), or are drawn with a seed the way Keras initialises a fresh model (glorot-uniform
kernels, zero biases, identity BatchNorm), which is all a latency measurement needs, without building a Keras
model. Only fp32: int8 needs calibration and stays with the converter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from nas_rl.arch import ArchSpec
from nas_rl.models.layer_plan import BN_EPS, LayerSpec, stage_layers

#: Keras layer name -> that layer's weights in Keras' layout and order (``layer.get_weights()``).
KerasWeights = Mapping[str, Sequence[np.ndarray]]

_OPS = schema.BuiltinOperator
_OPTIONS = schema.BuiltinOptions
_RELU = schema.ActivationFunctionType.RELU
_NO_ACTIVATION = schema.ActivationFunctionType.NONE
_SAME, _VALID = schema.Padding.SAME, schema.Padding.VALID
#: Op codes above this are only in ``builtin_code``; ``deprecated_builtin_code`` holds this placeholder.
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127
#: The schema declares buffer data ``force_align: 16``; the Python object API does not honour it.
_BUFFER_ALIGNMENT = 16
_TENSOR_TYPES = {np.dtype(np.float32): schema.TensorType.FLOAT32, np.dtype(np.int32): schema.TensorType.INT32}


def tflite_from_arch(
    arch: ArchSpec,
    resolution: int | tuple[int, int],
    weights: KerasWeights | None = None,
    seed: int = 0,
    batch_size: int = 1,
) -> bytes:
    """The fp32 TFLite flatbuffer of ``arch`` for a fixed NHWC input ``(batch_size, H, W, in_channels)``.

    :param arch: the architecture.
    :param resolution: input size, ``H = W`` or ``(H, W)``.
    :param weights: the Keras model's weights by layer name (:func:`keras_weights`); ``None``: drawn with
        ``seed`` as Keras initialises a fresh model.
    :param seed: seed of the drawn weights; ignored with ``weights``.
    :param batch_size: the fixed batch size.
    :return: the flatbuffer bytes, loadable by LiteRT's interpreter.
    :raises ValueError: ``weights`` do not describe ``arch`` (a layer missing or left over, a shape mismatch).
    """
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    if min(height, width, batch_size) < 1:
        raise ValueError(f"resolution={resolution!r} and batch_size={batch_size!r} are not accepted: use integers >= 1")
    source = _WeightSource(weights, seed)
    graph = _Graph()
    image = graph.activation("image", (batch_size, height, width, arch.in_channels))
    x = _conv_bn_act(graph, source, image, "stem", arch.stem_channels, 3, arch.stem_stride)
    for stage_index, layers in enumerate(stage_layers(arch)):
        for layer_index, layer in enumerate(layers):
            x = _layer(graph, source, x, f"stages_{stage_index}_{layer_index}", layer)
    x = _conv_bn_act(graph, source, x, "head", arch.head_channels)
    pooled = graph.activation("pool", (batch_size, arch.head_channels))
    graph.op(_OPS.MEAN, [x, graph.constant("pool_axes", np.array([1, 2], np.int32))], pooled, _reducer(False))
    logits = _dense(graph, source, pooled, "classifier", arch.num_classes)
    source.check_all_used()
    return graph.serialize(image, logits)


def keras_weights(keras_model: Any) -> dict[str, list[np.ndarray]]:
    """The weights of every Keras layer that has any, by layer name, in Keras' layout (for :func:`tflite_from_arch`).

    Duck-typed (``model.layers``, ``layer.get_weights()``): calling it never imports Keras.
    """
    return {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in keras_model.layers if layer.weights}


def tflite_from_keras(arch: ArchSpec, keras_model: Any) -> bytes:
    """The fp32 flatbuffer of a Keras model built by :func:`~nas_rl.models.keras_builder.build_keras_model` for
    ``arch``, with its weights, at its input shape (a batch of ``None`` is written as 1).

    :raises ValueError: the model is not ``arch``'s (a layer missing or left over, a shape mismatch).
    """
    batch, height, width, channels = tuple(keras_model.inputs[0].shape)
    if channels != arch.in_channels:
        raise ValueError(f"the Keras model takes {channels} input channels, the arch {arch.in_channels}")
    return tflite_from_arch(arch, (int(height), int(width)), keras_weights(keras_model), batch_size=batch or 1)


# --- the network, layer by layer (mirrors keras_builder) --------------------------------------------------------


def _layer(graph: _Graph, source: _WeightSource, x: int, name: str, layer: LayerSpec) -> int:
    if layer.op == "cn":
        return _conv_bn_act(
            graph,
            source,
            x,
            name,
            layer.out_channels,
            layer.kernel,
            layer.stride,
            se_channels=layer.se_channels,
            residual=layer.has_residual,
        )
    if layer.op not in ("ds", "ir"):
        raise ValueError(f"unknown block type {layer.op!r}; accepted: cn, ds, ir")
    inputs, mid = x, layer.mid_channels
    if layer.op == "ir" and layer.expansion != 1:
        x = _conv_bn_act(graph, source, x, f"{name}_expand", mid)
    x = _conv_bn_act(graph, source, x, f"{name}_dw", mid, layer.kernel, layer.stride, depthwise=True)
    if layer.se_channels:
        x = _squeeze_excite(graph, source, x, f"{name}_se", layer.se_channels)
    projection = "pw" if layer.op == "ds" else "project"
    x = _conv_bn_act(graph, source, x, f"{name}_{projection}", layer.out_channels, act=False)
    return _add(graph, inputs, x, f"{name}_add") if layer.has_residual else x


def _conv_bn_act(
    graph: _Graph,
    source: _WeightSource,
    x: int,
    name: str,
    filters: int,
    kernel: int = 1,
    stride: int = 1,
    depthwise: bool = False,
    act: bool = True,
    se_channels: int = 0,
    residual: bool = False,
) -> int:
    """conv (no bias) + BN [+ ReLU] [+ SE] [+ identity] as one conv with folded BN and fused ReLU."""
    inputs = x
    batch, height, width, channels = graph.shape(x)
    padding = _SAME
    if stride > 1:
        # Keras builder: explicit symmetric padding by k // 2 (torch's), then a VALID conv. The converter folds the
        # PAD into a SAME conv where TF's "same" padding is that symmetric padding (odd input sizes, 1x1 maps).
        pad = kernel // 2
        folded = pad > 0 and all(_tf_same_padding(size, kernel, stride) == (pad, pad) for size in (height, width))
        padding = _SAME if folded else _VALID
        if pad and not folded:
            padded = graph.activation(f"{name}_pad", (batch, height + 2 * pad, width + 2 * pad, channels))
            paddings = np.array([[0, 0], [pad, pad], [pad, pad], [0, 0]], np.int32)
            pad_options = (_OPTIONS.PadOptions, _new(schema.PadOptionsT))
            graph.op(_OPS.PAD, [x, graph.constant(f"{name}_pad/paddings", paddings)], padded, pad_options)
            x = padded
        height, width = (height + 2 * pad - kernel) // stride + 1, (width + 2 * pad - kernel) // stride + 1
    out_channels = channels if depthwise else filters
    gamma, beta, mean, variance = source.get(f"{name}_bn", [(out_channels,)] * 4, "batch_norm")
    shape = (kernel, kernel, channels, 1 if depthwise else filters)
    (keras_kernel,) = source.get(f"{name}_conv", [shape], "kernel")
    scale = (np.float32(1.0) / np.sqrt(variance + np.float32(BN_EPS))) * gamma
    bias = beta - mean * scale
    activation = _RELU if act else _NO_ACTIVATION
    out = graph.activation(f"{name}_conv", (batch, height, width, out_channels))
    if depthwise:  # (kh, kw, C, 1) -> (1, kh, kw, C)
        folded = (keras_kernel[:, :, :, 0] * scale)[None]
        options = _new(
            schema.DepthwiseConv2DOptionsT,
            padding=padding,
            strideW=stride,
            strideH=stride,
            depthMultiplier=1,
            fusedActivationFunction=activation,
            dilationWFactor=1,
            dilationHFactor=1,
        )
        graph.op(
            _OPS.DEPTHWISE_CONV_2D,
            [x, graph.constant(f"{name}_conv/kernel", folded), graph.constant(f"{name}_conv/bias", bias)],
            out,
            (_OPTIONS.DepthwiseConv2DOptions, options),
        )
    else:  # (kh, kw, in, out) -> (out, kh, kw, in)
        folded = (keras_kernel * scale).transpose(3, 0, 1, 2)
        _conv2d(graph, x, out, f"{name}_conv", folded, bias, padding, stride, activation)
    if se_channels:
        out = _squeeze_excite(graph, source, out, f"{name}_se", se_channels)
    return _add(graph, inputs, out, f"{name}_add") if residual else out


def _squeeze_excite(graph: _Graph, source: _WeightSource, x: int, name: str, reduced: int) -> int:
    """pool -> 1x1 reduce + ReLU -> 1x1 expand -> sigmoid -> gate: Keras' 1x1 convs pad VALID, with biases."""
    batch, height, width, channels = graph.shape(x)
    scale = x
    if (height, width) != (1, 1):  # the converter drops the mean over a 1x1 map (an identity)
        scale = graph.activation(f"{name}_pool", (batch, 1, 1, channels))
        graph.op(_OPS.MEAN, [x, graph.constant("pool_axes", np.array([1, 2], np.int32))], scale, _reducer(True))
    for suffix, width, activation in (("conv_reduce", reduced, _RELU), ("conv_expand", channels, _NO_ACTIVATION)):
        in_channels = graph.shape(scale)[3]
        kernel, bias = source.get(f"{name}_{suffix}", [(1, 1, in_channels, width), (width,)], "kernel")
        out = graph.activation(f"{name}_{suffix}", (batch, 1, 1, width))
        _conv2d(graph, scale, out, f"{name}_{suffix}", kernel.transpose(3, 0, 1, 2), bias, _VALID, 1, activation)
        scale = out
    gate = graph.activation(f"{name}_sigmoid", (batch, 1, 1, channels))
    graph.op(_OPS.LOGISTIC, [scale], gate)
    out = graph.activation(f"{name}_gate", graph.shape(x))
    graph.op(
        _OPS.MUL,
        [x, gate],
        out,
        (_OPTIONS.MulOptions, _new(schema.MulOptionsT, fusedActivationFunction=_NO_ACTIVATION)),
    )
    return out


def _conv2d(
    graph: _Graph,
    x: int,
    out: int,
    name: str,
    kernel: np.ndarray,
    bias: np.ndarray,
    padding: int,
    stride: int,
    act: int,
) -> None:
    options = _new(
        schema.Conv2DOptionsT,
        padding=padding,
        strideW=stride,
        strideH=stride,
        fusedActivationFunction=act,
        dilationWFactor=1,
        dilationHFactor=1,
    )
    inputs = [x, graph.constant(f"{name}/kernel", kernel), graph.constant(f"{name}/bias", bias)]
    graph.op(_OPS.CONV_2D, inputs, out, (_OPTIONS.Conv2DOptions, options))


def _add(graph: _Graph, a: int, b: int, name: str) -> int:
    """``a + b`` (same shapes). When the shape is ``(1, 1, 1, C)`` TensorFlow rewrites the add as a bias add,
    which the converter writes as ``RESHAPE`` of ``b`` to ``(C,)`` and a broadcasting ``ADD``; so do we."""
    shape = graph.shape(b)
    out = graph.activation(name, shape)
    if all(size == 1 for size in shape[:-1]):
        squeezed = graph.activation(f"{name}_squeeze", shape[-1:])
        graph.op(_OPS.RESHAPE, [b, graph.constant(f"{name}_squeeze/shape", np.array(shape[-1:], np.int32))], squeezed)
        b = squeezed
    graph.op(
        _OPS.ADD, [a, b], out, (_OPTIONS.AddOptions, _new(schema.AddOptionsT, fusedActivationFunction=_NO_ACTIVATION))
    )
    return out


def _dense(graph: _Graph, source: _WeightSource, x: int, name: str, units: int) -> int:
    batch, features = graph.shape(x)
    kernel, bias = source.get(name, [(features, units), (units,)], "kernel")
    # -1: no bias operand, as the converter writes a Dense layer whose bias is all zeros
    bias_input = graph.constant(f"{name}/bias", bias) if np.any(bias) else -1
    out = graph.activation("logits", (batch, units))
    options = _new(schema.FullyConnectedOptionsT, fusedActivationFunction=_NO_ACTIVATION)
    graph.op(
        _OPS.FULLY_CONNECTED,
        [x, graph.constant(f"{name}/kernel", kernel.T), bias_input],
        out,
        (_OPTIONS.FullyConnectedOptions, options),
    )
    return out


def _tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF's "same" padding (before, after) of one spatial dimension: the extra pixel, if any, goes after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _reducer(keep_dims: bool) -> tuple[int, Any]:
    return _OPTIONS.ReducerOptions, _new(schema.ReducerOptionsT, keepDims=keep_dims)


def _new(cls: Any, **fields: Any) -> Any:
    """A schema object with ``fields`` set (attribute by attribute: older schema modules take no constructor args)."""
    obj = cls()
    for key, value in fields.items():
        setattr(obj, key, value)
    return obj


# --- weights ---------------------------------------------------------------------------------------------------


class _WeightSource:
    """Keras-layout weights by layer name: from a mapping (checked), or drawn like Keras' initialisers."""

    def __init__(self, weights: KerasWeights | None, seed: int) -> None:
        self.weights = weights
        self.rng = np.random.default_rng(seed)
        self.used: set[str] = set()

    def get(self, name: str, shapes: list[tuple[int, ...]], kind: str) -> list[np.ndarray]:
        """``name``'s arrays (float32) of ``shapes``; ``kind``: ``kernel`` (kernel [, bias]) or ``batch_norm``."""
        if self.weights is None:
            return self._draw(shapes, kind)
        if name not in self.weights:
            raise ValueError(f"no weights for layer {name!r}: were the weights taken from a model of this arch?")
        arrays = [np.asarray(w, dtype=np.float32) for w in self.weights[name]]
        if [a.shape for a in arrays] != shapes:
            raise ValueError(
                f"layer {name!r} has weight shapes {[a.shape for a in arrays]}, the arch needs {shapes}: were the "
                "weights taken from a model of this arch?"
            )
        self.used.add(name)
        return arrays

    def check_all_used(self) -> None:
        unused = sorted(set(self.weights or ()) - self.used)
        if unused:
            raise ValueError(f"layers {unused} are not in the arch: were the weights taken from a model of this arch?")

    def _draw(self, shapes: list[tuple[int, ...]], kind: str) -> list[np.ndarray]:
        if kind == "batch_norm":  # gamma, beta, moving mean, moving variance of a fresh BatchNormalization
            ones, zeros = (np.ones(shapes[0], np.float32), np.zeros(shapes[0], np.float32))
            return [ones, zeros, zeros, ones]
        kernel_shape, *bias_shapes = shapes
        receptive = int(np.prod(kernel_shape[:-2], dtype=np.int64))
        fan_in, fan_out = kernel_shape[-2] * receptive, kernel_shape[-1] * receptive
        limit = np.float32(np.sqrt(6.0 / (fan_in + fan_out)))  # glorot uniform, Keras' default kernel initializer
        kernel = (self.rng.random(kernel_shape, dtype=np.float32) * 2 - 1) * limit
        return [kernel] + [np.zeros(shape, np.float32) for shape in bias_shapes]


# --- the flatbuffer --------------------------------------------------------------------------------------------


class _Graph:
    """One subgraph under construction: tensors, constant buffers (stored once per content) and operators."""

    def __init__(self) -> None:
        self.tensors: list[Any] = []
        self.buffers: list[bytes] = [b""]  # buffer 0: the empty sentinel every activation points to
        self.operators: list[Any] = []
        self.opcodes: dict[int, int] = {}
        self.constants: dict[tuple[str, tuple[int, ...], bytes], int] = {}

    def shape(self, tensor: int) -> tuple[int, ...]:
        return tuple(int(size) for size in self.tensors[tensor].shape)

    def activation(self, name: str, shape: Sequence[int]) -> int:
        return self._tensor(name, shape, schema.TensorType.FLOAT32, 0)

    def constant(self, name: str, array: np.ndarray) -> int:
        array = np.ascontiguousarray(array, dtype=np.int32 if array.dtype == np.int32 else np.float32)
        data = array.tobytes()
        key = (array.dtype.str, array.shape, data)
        if key not in self.constants:
            self.buffers.append(data)
            self.constants[key] = self._tensor(name, array.shape, _TENSOR_TYPES[array.dtype], len(self.buffers) - 1)
        return self.constants[key]

    def op(self, code: int, inputs: list[int], output: int, options: tuple[int, Any] | None = None) -> None:
        index = self.opcodes.setdefault(code, len(self.opcodes))
        operator = _new(schema.OperatorT, opcodeIndex=index, inputs=inputs, outputs=[output])
        if options is not None:
            operator.builtinOptionsType, operator.builtinOptions = options
        self.operators.append(operator)

    def serialize(self, model_input: int, model_output: int) -> bytes:
        subgraph = _new(
            schema.SubGraphT,
            tensors=self.tensors,
            inputs=[model_input],
            outputs=[model_output],
            operators=self.operators,
            name="main",
        )
        opcodes = [
            _new(
                schema.OperatorCodeT,
                builtinCode=code,
                deprecatedBuiltinCode=min(code, _PLACEHOLDER_FOR_GREATER_OP_CODES),
                version=1,
            )
            for code in self.opcodes  # dicts keep insertion order: opcode index order
        ]
        # the converter's default signature (a SavedModel's serving_default): input "image", output "output_0"
        signature = _new(
            schema.SignatureDefT,
            inputs=[_new(schema.TensorMapT, name="image", tensorIndex=model_input)],
            outputs=[_new(schema.TensorMapT, name="output_0", tensorIndex=model_output)],
            signatureKey="serving_default",
            subgraphIndex=0,
        )
        model = _new(
            schema.ModelT,
            version=3,
            operatorCodes=opcodes,
            subgraphs=[subgraph],
            description="nas_rl.models.tflite_builder",
            buffers=[_AlignedBuffer(data) for data in self.buffers],
            signatureDefs=[signature],
        )
        # sized up front: growing the builder copies everything written so far
        tables = 256 * (len(self.tensors) + len(self.operators) + len(self.buffers))
        builder = flatbuffers.Builder(4096 + tables + sum(len(data) + _BUFFER_ALIGNMENT for data in self.buffers))
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    def _tensor(self, name: str, shape: Sequence[int], tensor_type: int, buffer: int) -> int:
        tensor = _new(
            schema.TensorT,
            shape=np.asarray(shape, np.int32),
            type=tensor_type,
            buffer=buffer,
            name=name,
            hasRank=True,
        )
        self.tensors.append(tensor)
        return len(self.tensors) - 1


class _AlignedBuffer(schema.BufferT):
    """A buffer whose data starts 16-byte aligned, as the schema asks (``force_align: 16``), so float weights
    are aligned in memory wherever the runtime reads them in place."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.payload = data

    def Pack(self, builder: flatbuffers.Builder) -> int:
        vector = None
        if self.payload:
            builder.StartVector(1, len(self.payload), _BUFFER_ALIGNMENT)
            builder.head -= len(self.payload)
            builder.Bytes[builder.head : builder.head + len(self.payload)] = self.payload
            vector = builder.EndVector()
        schema.BufferStart(builder)
        if vector is not None:
            schema.BufferAddData(builder, vector)
        return int(schema.BufferEnd(builder))
