"""The direct TFLite emitter writes the converter's flatbuffer: the same ops (options and shapes included), in the
same order, and the same outputs, for every block type and for architectures of both search spaces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from omegaconf import OmegaConf

from nas_rl.arch import ArchSpec
from nas_rl.models.tflite_builder import keras_weights, tflite_from_arch, tflite_from_keras
from nas_rl.models.torch_builder import MNASNET_A1
from nas_rl.spaces.tabular import TabularSpace
from tests.helpers.tiny import tiny_space

SMALL = {"stem_channels": 8, "head_channels": 32, "num_classes": 10}
#: Every block type, SE on/off (also on cn and ds), skip on/off, strides 1/2 (a 1x1 stride-2 conv: no PAD), odd
#: map sizes (a stride-2 PAD folded into a SAME conv), kernels 1-7, expansion 1 (no expand conv), repeats 1-3, a
#: stride-1 stem, grey input; with the input resolution.
DIVERSE = [
    ("cn_r2_k3_s1_c8:cn_r1_k3_s2_c16_se0.25", {}, 16),
    ("cn_r1_k1_s2_c12:ds_r2_k5_s1_c12_se0.25:ir_r2_k3_s2_e1_c16", {"stem_stride": 1}, 16),
    ("ds_r1_k3_s1_c8_noskip:ir_r2_k3_s2_e6_c12:ir_r3_k5_s2_e3_c16_se0.25", {}, 16),
    ("ir_r2_k3_s1_e1_c8_se0.25:ir_r2_k7_s2_e6_c8_noskip:cn_r1_k5_s1_c24", {"in_channels": 1}, 16),
    ("cn_r1_k1_s2_c12:ir_r1_k3_s2_e3_c16_se0.25:ds_r2_k5_s2_c16_se0.25", {}, 18),
]
OP_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}


def diverse_arch(index: int) -> tuple[ArchSpec, int]:
    text, settings, resolution = DIVERSE[index]
    return ArchSpec.from_string(text, **{**SMALL, **settings}), resolution


def ops(model_bytes: bytes) -> list[tuple[Any, ...]]:
    """Per operator: builtin op, op version, input shapes (None: an omitted operand), output shape, options."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    (subgraph,) = model.subgraphs
    shape = [tuple(int(size) for size in tensor.shape) for tensor in subgraph.tensors]
    rows = []
    for op in subgraph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        options = vars(op.builtinOptions) if op.builtinOptions is not None else None
        inputs = [shape[i] if i >= 0 else None for i in op.inputs]
        rows.append((OP_NAMES[code.builtinCode], code.version, inputs, [shape[i] for i in op.outputs], options))
    return rows


def run(model_bytes: bytes, image: np.ndarray) -> np.ndarray:
    interpreter = Interpreter(model_content=model_bytes, num_threads=1)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    return np.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))


def random_image(arch: ArchSpec, resolution: int, seed: int = 0, batch: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (batch, resolution, resolution, arch.in_channels)).astype(np.float32)


def tabular_space() -> TabularSpace:
    conf = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[1] / "conf" / "search_space" / "tabular.yaml"))
    assert isinstance(conf, dict)
    conf.pop("_target_")
    return TabularSpace(**conf)


# --- without TensorFlow -------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(DIVERSE)))
def test_emitted_networks_load_and_run_in_litert(index: int) -> None:
    arch, resolution = diverse_arch(index)
    model_bytes = tflite_from_arch(arch, resolution, batch_size=2)
    logits = run(model_bytes, random_image(arch, resolution, batch=2))
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits)) and np.any(logits != 0)


def test_op_list_follows_the_keras_model_layer_by_layer() -> None:
    arch = ArchSpec.from_string("cn_r1_k3_s2_c8_se0.25:ir_r1_k3_s1_e3_c8", **SMALL)
    relu, linear = schema.ActivationFunctionType.RELU, schema.ActivationFunctionType.NONE
    same, valid = schema.Padding.SAME, schema.Padding.VALID
    rows = ops(tflite_from_arch(arch, (16, 12)))
    assert [row[0] for row in rows] == [
        "PAD", "CONV_2D",  # stem: stride 2 pads explicitly, then a VALID conv
        "PAD", "CONV_2D", "MEAN", "CONV_2D", "CONV_2D", "LOGISTIC", "MUL",  # cn + SE
        "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD",  # ir: expand, depthwise, project, residual
        "CONV_2D", "MEAN", "FULLY_CONNECTED",  # head, pool, classifier
    ]  # fmt: skip
    stem_pad, stem, _, cn, se_pool, se_reduce, se_expand, _, gate, expand, dw, project, add, head, pool, fc = rows
    assert stem_pad[2] == [(1, 16, 12, 3), (4, 2)] and stem_pad[3] == [(1, 18, 14, 3)]
    assert stem[2] == [(1, 18, 14, 3), (8, 3, 3, 3), (8,)] and stem[3] == [(1, 8, 6, 8)]
    assert stem[4]["padding"] == valid and stem[4]["strideH"] == 2 and stem[4]["fusedActivationFunction"] == relu
    assert cn[3] == [(1, 4, 3, 8)] and se_pool[3] == [(1, 1, 1, 8)] and se_pool[4] == {"keepDims": True}
    assert se_reduce[2][1:] == [(2, 1, 1, 8), (2,)] and se_reduce[4]["padding"] == valid
    assert se_reduce[4]["fusedActivationFunction"] == relu and se_expand[4]["fusedActivationFunction"] == linear
    assert gate[2] == [(1, 4, 3, 8), (1, 1, 1, 8)]
    assert expand[4]["padding"] == same and expand[4]["fusedActivationFunction"] == relu
    assert dw[2][1:] == [(1, 3, 3, 24), (24,)] and dw[4]["padding"] == same and dw[4]["depthMultiplier"] == 1
    assert project[4]["fusedActivationFunction"] == linear and add[3] == [(1, 4, 3, 8)]
    assert head[3] == [(1, 4, 3, 32)] and pool[3] == [(1, 32)] and pool[4] == {"keepDims": False}
    assert fc[2] == [(1, 32), (10, 32), None] and fc[3] == [(1, 10)]  # a zero bias is no operand


def test_on_a_1x1_map_the_se_mean_is_dropped_and_the_residual_add_is_a_bias_add() -> None:
    """What TensorFlow does to these two ops on a 1x1 map at batch 1 (the default space's deep stages at 32x32)."""
    arch = ArchSpec.from_string("cn_r1_k3_s2_c16:ir_r2_k3_s1_e1_c16_se0.25", **SMALL)
    names = [row[0] for row in ops(tflite_from_arch(arch, 4))]
    layer = ["DEPTHWISE_CONV_2D", "CONV_2D", "CONV_2D", "LOGISTIC", "MUL", "CONV_2D", "RESHAPE", "ADD"]
    assert names == ["PAD", "CONV_2D", "PAD", "CONV_2D", *layer, *layer, "CONV_2D", "MEAN", "FULLY_CONNECTED"]
    reshape = ops(tflite_from_arch(arch, 4))[10]
    assert reshape[2] == [(1, 1, 1, 16), (1,)] and reshape[3] == [(16,)]
    assert "RESHAPE" not in [row[0] for row in ops(tflite_from_arch(arch, 4, batch_size=2))]


def test_a_stride_2_pad_that_tf_same_padding_equals_is_folded_into_the_conv() -> None:
    arch = ArchSpec.from_string("cn_r1_k3_s2_c16:cn_r1_k3_s2_c16", **SMALL)
    rows = ops(tflite_from_arch(arch, 10))  # stem: 10 -> 5 (even: PAD), 5 -> 3 (odd: SAME), 3 -> 2 (odd: SAME)
    assert [row[0] for row in rows[:5]] == ["PAD", "CONV_2D", "CONV_2D", "CONV_2D", "CONV_2D"]
    same, valid = schema.Padding.SAME, schema.Padding.VALID
    assert [row[4]["padding"] for row in rows[1:4]] == [valid, same, same]
    assert [row[3] for row in rows[1:4]] == [[(1, 5, 5, 8)], [(1, 3, 3, 16)], [(1, 2, 2, 16)]]


def test_drawn_weights_are_seeded_and_identical_constants_are_stored_once() -> None:
    arch, _ = diverse_arch(2)
    first = tflite_from_arch(arch, 16, seed=1)
    assert tflite_from_arch(arch, 16, seed=1) == first and tflite_from_arch(arch, 16, seed=2) != first
    model = schema.ModelT.InitFromPackedBuf(bytearray(first), 0)
    contents = [bytes(buffer.data) for buffer in model.buffers if buffer.data is not None]
    assert len(contents) == len(set(contents))  # e.g. the zero biases of equal width share one buffer
    raw = schema.Model.GetRootAs(first, 0)
    for index in range(raw.BuffersLength()):
        buffer = raw.Buffers(index)
        if buffer.DataLength():
            assert buffer._tab.Vector(buffer._tab.Offset(4)) % 16 == 0  # float weights aligned in place


def test_weights_that_do_not_describe_the_arch_are_refused() -> None:
    arch, _ = diverse_arch(0)
    with pytest.raises(ValueError, match="no weights for layer 'stem_bn'"):
        tflite_from_arch(arch, 16, weights={})
    with pytest.raises(ValueError, match="resolution"):
        tflite_from_arch(arch, 0)


def test_the_emitter_does_not_import_tensorflow() -> None:
    code = (
        "import sys; from nas_rl.arch import ArchSpec; from nas_rl.models.tflite_builder import tflite_from_arch; "
        "tflite_from_arch(ArchSpec.from_string('ir_r1_k3_s2_e3_c8_se0.25'), 32); "
        "assert not {'tensorflow', 'keras'} & set(sys.modules), 'tensorflow/keras was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- against TensorFlow's converter ---------------------------------------------------------------------------


def randomize(keras_model: Any, seed: int) -> None:
    """Non-trivial BN statistics and non-zero biases, so BN folding and every bias show in the outputs."""
    rng = np.random.default_rng(seed)
    for layer in keras_model.layers:
        weights = layer.get_weights()
        if type(layer).__name__ == "BatchNormalization":
            size = weights[0].shape
            gamma, beta, mean = rng.uniform(0.5, 1.5, size), rng.normal(0, 0.2, size), rng.normal(0, 0.2, size)
            layer.set_weights([gamma, beta, mean, rng.uniform(0.5, 1.5, size)])
        elif len(weights) == 2:  # SE convs and the classifier
            layer.set_weights([weights[0], rng.normal(0, 0.2, weights[1].shape)])


def check_against_converter(arch: ArchSpec, resolution: int, randomized: bool, seed: int = 0) -> None:
    from nas_rl._util import clear_keras_session
    from nas_rl.latency.litert import convert_to_tflite
    from nas_rl.models.keras_builder import build_keras_model

    try:
        keras_model = build_keras_model(arch, resolution)
        if randomized:
            randomize(keras_model, seed)
        converted = convert_to_tflite(keras_model, conversion="frozen_graph")
        emitted = tflite_from_keras(arch, keras_model)
    finally:
        clear_keras_session()
    expected = ops(converted)
    assert ops(emitted) == expected, f"arch {arch}"
    if not randomized:  # a fresh Keras model is what latency measures: the seeded emission is the same graph
        assert ops(tflite_from_arch(arch, resolution, seed=seed)) == expected, f"arch {arch}"
    image = random_image(arch, resolution, seed)
    reference = run(converted, image)
    np.testing.assert_allclose(run(emitted, image), reference, rtol=0, atol=1e-4 * max(1.0, np.abs(reference).max()))


@pytest.mark.slow
def test_weights_of_a_keras_model_of_another_arch_are_refused() -> None:
    from nas_rl._util import clear_keras_session
    from nas_rl.models.keras_builder import build_keras_model

    arch, _ = diverse_arch(0)
    try:
        keras_model = build_keras_model(arch, 16)
        weights = keras_weights(keras_model)
        wider = ArchSpec.from_string("cn_r2_k3_s1_c12:cn_r1_k3_s2_c16_se0.25", **SMALL)
        with pytest.raises(ValueError, match="layer 'stages_0_0_bn' has weight shapes"):
            tflite_from_arch(wider, 16, weights)
        extra = {**weights, "stages_2_0_conv": weights["stages_1_0_conv"]}
        with pytest.raises(ValueError, match=r"layers \['stages_2_0_conv'\] are not in the arch"):
            tflite_from_arch(arch, 16, extra)
        with pytest.raises(ValueError, match="input channels"):
            tflite_from_keras(ArchSpec.from_string(DIVERSE[0][0], **SMALL, in_channels=1), keras_model)
    finally:
        clear_keras_session()


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(DIVERSE)))
def test_diverse_blocks_match_the_converter(index: int) -> None:
    check_against_converter(*diverse_arch(index), randomized=index % 2 == 0, seed=index)


@pytest.mark.slow
def test_sampled_mnasnet_space_architectures_match_the_converter() -> None:
    space = tiny_space()
    for number, arch in enumerate(space.sample_archs(seed=3, count=3)):
        check_against_converter(arch, space.resolution, randomized=number != 0, seed=number)


@pytest.mark.slow
def test_sampled_tabular_space_architectures_match_the_converter() -> None:
    space = tabular_space()
    for number, arch in enumerate(space.sample_archs(seed=4, count=3)):
        check_against_converter(arch, space.resolution, randomized=number != 0, seed=number)


@pytest.mark.slow
def test_default_space_at_32_and_mnasnet_a1_at_224_match_the_converter() -> None:
    from nas_rl.config import build
    from nas_rl.envs.registry import load_spec

    space = build(load_spec("MnasNet-v0").search_space, "search_space")  # deep stages run at 1x1
    check_against_converter(space.sample_archs(seed=5, count=1)[0], space.resolution, randomized=False)
    a1 = ArchSpec.from_string(MNASNET_A1, stem_channels=32, head_channels=1280, num_classes=1000, in_channels=3)
    check_against_converter(a1, 224, randomized=True)


def test_measured_latency_emits_directly_unless_told_to_convert() -> None:
    """latency=litert's default conversion is the emitter: the flatbuffer it measures is tflite_from_arch's; int8
    still goes through TensorFlow's converter (fp32 only here), which gives the same op list as the emitter."""
    from nas_rl.latency.litert import LiteRTLatency

    arch = tiny_space().sample_arch(np.random.default_rng(3))
    direct = LiteRTLatency(resolution=16, in_channels=1)
    assert direct.conversion == "direct"
    assert direct.convert(arch) == tflite_from_arch(arch, 16, seed=0)
    assert direct.benchmark(direct.convert(arch)).median_ms > 0
    with pytest.raises(Exception, match="conversion='nope' is not accepted: use 'direct', 'saved_model', 'frozen_graph'"):
        LiteRTLatency(resolution=16, in_channels=1, conversion="nope")
