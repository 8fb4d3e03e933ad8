"""The MnasNet search space: token decoding, encoding, masks, sampling and mutation."""

from __future__ import annotations

import numpy as np
import pytest

from nas_rl.arch import ArchSpec
from nas_rl.errors import ConfigError
from nas_rl.models.flops import multiply_adds, parameter_count
from nas_rl.models.torch_builder import MNASNET_A1
from nas_rl.spaces.mnasnet import MnasNetSpace


def test_default_space_has_the_papers_decisions() -> None:
    space = MnasNetSpace()
    assert space.num_decisions == 7 * 6
    assert space.max_choices == 4
    assert [d.num_choices for d in space.decisions[:6]] == [4, 2, 2, 2, 3, 3]


def test_space_expresses_mnasnet_a1_with_its_papers_cost() -> None:
    """With A1's base widths the space encodes A1 exactly; the decoded network costs what the paper says."""
    space = MnasNetSpace(resolution=224, num_classes=1000, base_widths=(16, 24, 40, 80, 112, 160, 320))
    a1 = ArchSpec.from_string(MNASNET_A1)
    tokens = space.encode(a1)
    decoded = space.decode(tokens)
    assert decoded == a1
    params, macs = parameter_count(decoded), multiply_adds(decoded, 224)
    assert abs(params - 3.9e6) / 3.9e6 < 0.03, params
    assert abs(macs - 312e6) / 312e6 < 0.03, macs


def test_round_trip_of_sampled_tokens() -> None:
    space, rng = MnasNetSpace(), np.random.default_rng(0)
    for _ in range(50):
        tokens = space.sample(rng)
        arch = space.decode(tokens)
        assert space.decode(space.encode(arch)) == arch


def test_masks_mutation_and_bad_tokens() -> None:
    space, rng = MnasNetSpace(), np.random.default_rng(1)
    assert space.action_mask(1).tolist() == [True, True, False, False]
    tokens = space.sample(rng)
    mutated = space.mutate(tokens, rng)
    assert sum(a != b for a, b in zip(tokens, mutated)) == 1
    with pytest.raises(ValueError, match="position 1"):
        space.decode((0, 3) + tokens[2:])
    with pytest.raises(ValueError, match="stage 5 .*width 112"):
        space.encode(ArchSpec.from_string(MNASNET_A1))  # 112 is not 96 x {0.75, 1, 1.25} (A1's 40 = 32 x 1.25 is)


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^resolution="):
        MnasNetSpace(resolution=2)
    with pytest.raises(ConfigError, match=r"^kernels="):
        MnasNetSpace(kernels=(3, 4))


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("resolution", "abc"),
        ("in_channels", 0),
        ("stem_channels", 0),
        ("stem_stride", 3),
        ("head_channels", 0),
        ("head_channels", -8),
        ("base_widths", (16, 24, 0, 64, 96, 160, 320)),
        ("base_repeats", (1, 2, 0, 4, 3, 3, 1)),
        ("strides", (3, 1, 1, 1, 1, 1, 1)),
        ("strides", (2, 2, 2, 2, 1, 2, 1.5)),
        ("width_multipliers", (0.0, 1.0)),
        ("width_multipliers", (-0.5,)),
        ("width_multipliers", (1.0, 1.0)),
        ("layer_offsets", (0, 0.5)),
        ("layer_offsets", ()),
        ("kernels", ()),
        ("se_ratios", (0.0, 1.5)),
    ],
)
def test_settings_that_would_fail_mid_run_are_refused_naming_key_value_and_accepted(setting: str, value) -> None:
    """Each would crash the run at its first architecture (stem_channels=0, a stride of 3, ...) or mean nothing
    (a width multiplier <= 0): the space refuses it when built, so the CLI stops with one line."""
    with pytest.raises(ConfigError) as refused:
        MnasNetSpace(**{setting: value})
    shown = list(value) if isinstance(value, tuple) else value
    # The space names its parameter; nas_rl.config.build puts the config path (search_space.) in front.
    message = str(refused.value)
    assert message.startswith(f"{setting}={shown!r} is not accepted: use "), refused.value


def test_a_layer_offset_below_one_layer_keeps_one_layer() -> None:
    """Offsets may take a block below one layer (the paper's -1 on 1-layer blocks): decoding keeps one."""
    space = MnasNetSpace(layer_offsets=(-5, 0, 1))
    lowest = space.decode([0] * space.num_decisions)
    assert [stage.repeats for stage in lowest.stages] == [1] * 7
    highest = space.decode([decision.num_choices - 1 for decision in space.decisions])
    assert [stage.repeats for stage in highest.stages] == [r + 1 for r in space.base_repeats]
