"""Builders: MnasNet-A1 matches the paper's cost, and the torch and Keras networks are the same network."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from nas_rl.arch import BLOCK_TYPES, ArchSpec, BlockSpec
from nas_rl.models.flops import multiply_adds, parameter_count
from nas_rl.models.keras_builder import build_keras_model, copy_torch_weights
from nas_rl.models.torch_builder import MNASNET_A1, build_torch_model
from nas_rl.spaces.mnasnet import MnasNetSpace

SMALL = {"stem_channels": 8, "head_channels": 32, "num_classes": 10}

#: Every block type, SE on/off (also on cn), skip on/off, strides 1/2 (incl. a 1x1 stride-2 conv), repeats 1-3.
DIVERSE_ARCHS = [
    "cn_r2_k3_s1_c8:cn_r1_k3_s2_c16_se0.25",
    "cn_r1_k1_s2_c12:ds_r2_k5_s1_c12:ir_r2_k3_s2_e1_c16",
    "ds_r1_k3_s1_c8_noskip:ir_r2_k3_s2_e6_c12:ir_r3_k5_s2_e3_c16_se0.25",
    "ds_r3_k3_s2_c16_se0.5:ir_r1_k7_s1_e4_c16_se0.25_noskip",
    "ir_r2_k3_s1_e1_c8_se0.25:ir_r2_k5_s2_e6_c8_noskip:cn_r1_k5_s1_c24",
    "ir_r1_k3_s2_e2_c4:ds_r2_k7_s2_c4_noskip:ds_r1_k3_s1_c20",
    "cn_r3_k5_s2_c6_noskip:ir_r2_k3_s1_e3_c6_se1",
    "ir_r1_k3_s1_e6_c16:ir_r4_k3_s2_e6_c24_se0.25:ir_r2_k5_s2_e6_c40:ir_r1_k3_s1_e6_c48_se0.25",
]


def random_arch(seed: int) -> ArchSpec:
    """A small random architecture: 2-4 stages drawn over every block setting."""
    rng = random.Random(seed)
    stages = []
    for _ in range(rng.randint(2, 4)):
        op = rng.choice(BLOCK_TYPES)
        stages.append(
            BlockSpec(
                op=op,
                repeats=rng.randint(1, 3),
                kernel=rng.choice((1, 3, 5, 7)),
                stride=rng.choice((1, 2)),
                out_channels=rng.choice((4, 8, 12)),
                expansion=rng.choice((1, 3, 6)) if op == "ir" else 1,
                se_ratio=rng.choice((0.0, 0.25)),
                skip=rng.random() < 0.8,
            )
        )
    return ArchSpec(tuple(stages), stem_channels=rng.choice((4, 8)), head_channels=16, num_classes=10)


def keras_trainable_parameters(model) -> int:
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


def randomize_batchnorm(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Non-trivial BN statistics and affine parameters, so a mix-up of BN tensors shows in the outputs."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(size, generator=generator) - 0.5)


def test_mnasnet_a1_matches_paper_cost() -> None:
    arch = ArchSpec.from_string(MNASNET_A1, stem_channels=32, stem_stride=2, head_channels=1280, num_classes=1000)
    params, macs = parameter_count(arch), multiply_adds(arch, 224)
    assert abs(params / 3.9e6 - 1) < 0.03, f"MnasNet-A1 has {params:,} parameters, paper: 3.9M"
    assert abs(macs / 312e6 - 1) < 0.03, f"MnasNet-A1 has {macs:,} multiply-adds at 224, paper: 312M"


@pytest.mark.parametrize("text", DIVERSE_ARCHS)
def test_torch_and_keras_have_same_parameter_count(text: str) -> None:
    arch = ArchSpec.from_string(text, **SMALL)
    keras_params = keras_trainable_parameters(build_keras_model(arch, 32))
    assert parameter_count(arch) == keras_params


def test_torch_and_keras_agree_on_architectures_sampled_from_the_search_space() -> None:
    """What a search proposes, not only hand-written strings: a small MnasNet space (repeats up to 3, so the
    residual layers inside a block are built too), seeded samples."""
    space = MnasNetSpace(resolution=16, num_classes=10, in_channels=1, stem_channels=8, head_channels=32,
                         base_widths=(8, 8, 16, 16, 24, 24, 32), base_repeats=(1, 2, 2, 2, 1, 2, 1))  # fmt: skip
    rng = np.random.default_rng(0)
    archs = list(dict.fromkeys(space.sample_arch(rng) for _ in range(8)))
    assert len(archs) == 8
    for arch in archs:
        keras_params = keras_trainable_parameters(build_keras_model(arch, space.resolution))
        assert parameter_count(arch) == keras_params, f"arch {arch}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_copied_weights_give_same_outputs(seed: int) -> None:
    arch = random_arch(seed)
    generator = torch.Generator().manual_seed(seed)
    torch_model = build_torch_model(arch).eval()
    with torch.no_grad():
        randomize_batchnorm(torch_model, generator)
    keras_model = build_keras_model(arch, 32, batch_size=2)
    copy_torch_weights(torch_model, keras_model)

    image = torch.randn(2, arch.in_channels, 32, 32, generator=generator)
    with torch.no_grad():
        expected = torch_model(image).numpy()
    actual = np.asarray(keras_model(image.permute(0, 2, 3, 1).numpy(), training=False))
    np.testing.assert_allclose(actual, expected, atol=1e-4, err_msg=f"arch {arch}")


def test_copy_between_different_archs_raises() -> None:
    torch_model = build_torch_model(ArchSpec.from_string(DIVERSE_ARCHS[0], **SMALL))
    keras_model = build_keras_model(ArchSpec.from_string(DIVERSE_ARCHS[1], **SMALL), 32)
    with pytest.raises(ValueError, match="same arch"):
        copy_torch_weights(torch_model, keras_model)


@pytest.mark.parametrize("resolution", [32, 33])
def test_output_shape_is_batch_by_classes(resolution: int) -> None:
    arch = ArchSpec.from_string(DIVERSE_ARCHS[2], **SMALL)
    with torch.no_grad():
        logits = build_torch_model(arch).eval()(torch.zeros(3, 3, resolution, resolution))
    assert tuple(logits.shape) == (3, 10)
    keras_model = build_keras_model(arch, (resolution, resolution + 2), batch_size=3)
    assert tuple(keras_model.output.shape) == (3, 10)
    assert np.asarray(keras_model(np.zeros((3, resolution, resolution + 2, 3), np.float32))).shape == (3, 10)


def test_torch_builders_do_not_import_tensorflow() -> None:
    code = (
        "import sys, nas_rl.models, nas_rl.models.torch_builder, nas_rl.models.flops; "
        "assert not {'tensorflow', 'keras'} & set(sys.modules), 'tensorflow/keras was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
