"""TensorFlow's TFLite converter: an architecture or a Keras model -> a TFLite flatbuffer, fp32 or int8.

Every device backend converts through here today (this computer's LiteRT and a phone's ``benchmark_model`` run the
same flatbuffer). TensorFlow and Keras are imported inside the functions that need them: importing this module is
cheap, and a search whose latency comes from elsewhere never loads TensorFlow.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from nas_rl._util import clear_keras_session, first_line, silenced_output
from nas_rl.arch import ArchSpec
from nas_rl.devices.base import PRECISIONS, check_precision
from nas_rl.errors import ConfigError, EvaluationFailed

#: Calibration samples drawn when int8 conversion is asked for without representative data.
SYNTHETIC_CALIBRATION_SAMPLES = 8

#: How an architecture becomes a flatbuffer. ``direct`` (the default): emitted from the ArchSpec through TFLite's
#: schema (:mod:`nas_rl.models.tflite_builder`: the converter's ops, BatchNorm folded and ReLU fused, at a few
#: percent of the benchmark's time); fp32 only, so int8 (and a bare Keras model) goes through ``saved_model``.
#: The converter's two ways in: ``saved_model``: ``TFLiteConverter.from_keras_model`` (Keras
#: exports a SavedModel, the converter reads it back). ``frozen_graph``: trace the model once, fold its
#: variables into constants and convert that function; it skips the SavedModel export, which is most of the
#: time of converting a small model (about 2x faster for one layer), and gives the same ops and shapes.
CONVERSIONS = ("direct", "saved_model", "frozen_graph")

__all__ = ["CONVERSIONS", "PRECISIONS", "SYNTHETIC_CALIBRATION_SAMPLES", "check_conversion", "convert_arch",
           "convert_keras", "convert_to_tflite", "quiet_tensorflow_logs"]  # fmt: skip


def convert_to_tflite(
    keras_model: Any,
    precision: str = "fp32",
    representative_data: np.ndarray | None = None,
    conversion: str = "saved_model",
) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer with TensorFlow's TFLite converter.

    ``int8`` is post-training full-integer quantization: every op, the input and the output are int8, so
    the flatbuffer is what an integer-only deployment runs (no float quantize/dequantize at the ends).
    The converter calibrates activation ranges on ``representative_data``.

    :param keras_model: a ``keras.Model`` with a fixed NHWC input shape.
    :param precision: ``fp32`` or ``int8``.
    :param representative_data: NHWC float samples, one per row; required for ``int8``, ignored for ``fp32``.
    :param conversion: one of :data:`CONVERSIONS`.
    :return: the flatbuffer bytes.
    :raises ConfigError: on an unknown precision or conversion, or missing calibration data for ``int8``.
    """
    check_precision(precision)
    check_conversion(conversion)
    if precision == "int8" and (representative_data is None or len(representative_data) == 0):
        raise ConfigError(
            "representative_data=None is not accepted for precision='int8'; accepted: an NHWC float array "
            "of calibration samples"
        )
    quiet_tensorflow_logs()
    import tensorflow as tf

    if conversion == "frozen_graph":
        converter = _frozen_graph_converter(keras_model)
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if precision == "int8":
        samples = np.asarray(representative_data, dtype=np.float32)

        def representative_dataset() -> Iterator[list[np.ndarray]]:
            for sample in samples:
                yield [sample[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with silenced_output(), warnings.catch_warnings():
        # Legacy check that ignores the representative dataset: with int8 I/O it always fires.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return converter.convert()


def _frozen_graph_converter(keras_model: Any) -> Any:
    """A converter of the inference function of ``keras_model`` with its variables folded into constants."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    specs = [tf.TensorSpec(tensor.shape, tensor.dtype) for tensor in keras_model.inputs]

    def inference(*inputs: Any) -> Any:
        return keras_model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)

    with silenced_output():
        concrete = tf.function(inference).get_concrete_function(*specs)
        return tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(concrete)])


def convert_keras(
    keras_model: Any,
    precision: str,
    conversion: str = "saved_model",
    representative_data: np.ndarray | None = None,
    seed: int = 0,
) -> bytes:
    """:func:`convert_to_tflite` with int8 calibration on ``representative_data`` when its samples have the model's
    input shape, else on :data:`SYNTHETIC_CALIBRATION_SAMPLES` seeded normal samples (latency depends on the
    quantized graph, not on the calibration values).

    :raises EvaluationFailed: the conversion failed; the message is one line.
    """
    data = None
    if precision == "int8":
        data = calibration_data(keras_model, representative_data, seed)
    try:
        return convert_to_tflite(keras_model, precision, data, conversion)
    except ConfigError:
        raise
    except Exception as error:
        raise EvaluationFailed(f"TFLite conversion failed: {type(error).__name__}: {first_line(error)}") from error


def convert_arch(
    arch: ArchSpec,
    resolution: int,
    precision: str,
    conversion: str = "saved_model",
    representative_data: np.ndarray | None = None,
    seed: int = 0,
) -> bytes:
    """``arch`` at batch 1 and ``resolution`` x ``resolution`` as a flatbuffer: emitted directly (``direct``, fp32),
    or built in Keras and converted by :func:`convert_keras`.

    :raises EvaluationFailed: the emission, the Keras build or the conversion failed; the message is one line.
    """
    check_conversion(conversion)
    if conversion == "direct" and precision == "fp32":
        from nas_rl.models.tflite_builder import tflite_from_arch

        try:
            return tflite_from_arch(arch, resolution, seed=seed)
        except Exception as error:
            raise EvaluationFailed(f"TFLite emission failed: {type(error).__name__}: {first_line(error)}") from error
    quiet_tensorflow_logs()
    from nas_rl.models.keras_builder import build_keras_model

    keras_model = None
    try:
        try:
            keras_model = build_keras_model(arch, resolution, batch_size=1)
        except ConfigError:
            raise
        except Exception as error:
            raise EvaluationFailed(f"Keras build failed: {type(error).__name__}: {first_line(error)}") from error
        return convert_keras(keras_model, precision, conversion, representative_data, seed)
    finally:
        # Graphs and variables accumulate in Keras' global state; a long search must not grow.
        del keras_model
        clear_keras_session()


def calibration_data(keras_model: Any, representative_data: np.ndarray | None, seed: int) -> np.ndarray:
    """int8 calibration samples for ``keras_model``: ``representative_data`` if its samples have the model's input
    shape, else seeded synthetic ones."""
    input_shape = tuple(keras_model.inputs[0].shape)[1:]
    if representative_data is not None:
        data = np.asarray(representative_data, dtype=np.float32)
        if data.shape[1:] == input_shape:
            return data
    if any(size is None for size in input_shape):
        raise ConfigError(
            f"input shape {input_shape} is not accepted for int8 without representative_data; accepted: a fixed shape"
        )
    rng = np.random.default_rng(seed)
    return rng.standard_normal((SYNTHETIC_CALIBRATION_SAMPLES, *input_shape)).astype(np.float32)


def check_conversion(conversion: str) -> None:
    if conversion not in CONVERSIONS:
        accepted = ", ".join(repr(c) for c in CONVERSIONS)
        raise ConfigError(f"conversion={conversion!r} is not accepted: use {accepted}")


def quiet_tensorflow_logs() -> None:
    # Must be set before TensorFlow's C++ runtime loads; harmless afterwards.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
