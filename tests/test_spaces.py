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
    with pytest.raises(ValueError, match="width"):
        space.encode(ArchSpec.from_string(MNASNET_A1))  # 40 channels is not 32 x {0.75, 1, 1.25}


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match="search_space.resolution"):
        MnasNetSpace(resolution=2)
    with pytest.raises(ConfigError, match="search_space.kernels"):
        MnasNetSpace(kernels=(3, 4))
