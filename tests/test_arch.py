"""The block-string codec: canonical round trips and strict errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nas_rl.arch import ArchSpec, BlockSpec


@st.composite
def blocks(draw) -> BlockSpec:
    op = draw(st.sampled_from(["cn", "ds", "ir"]))
    return BlockSpec(
        op=op,
        repeats=draw(st.integers(1, 6)),
        kernel=draw(st.sampled_from([1, 3, 5, 7])),
        stride=draw(st.sampled_from([1, 2])),
        out_channels=draw(st.integers(1, 1024)),
        expansion=draw(st.integers(1, 8)) if op == "ir" else 1,
        se_ratio=draw(st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1.0))),  # any ratio accepted
        skip=draw(st.booleans()),
    )


@given(st.lists(blocks(), min_size=1, max_size=8))
def test_round_trip_is_canonical(stages: list[BlockSpec]) -> None:
    arch = ArchSpec(tuple(stages), num_classes=10)
    text = arch.to_string()
    decoded = ArchSpec.from_string(text, num_classes=10)
    assert decoded == arch
    assert hash(decoded) == hash(arch)
    assert decoded.to_string() == text


@pytest.mark.parametrize(
    ("ratio", "token"), [(0.25, "se0.25"), (1.0, "se1"), (1e-05, "se0.00001"), (0.1 + 0.2, "se0.30000000000000004")]
)
def test_se_ratio_is_written_exactly_without_an_exponent(ratio: float, token: str) -> None:
    block = BlockSpec("ds", 1, 3, 1, 8, se_ratio=ratio)
    assert block.to_string() == f"ds_r1_k3_s1_c8_{token}"
    assert BlockSpec.from_string(block.to_string()).se_ratio == ratio


def test_timm_style_string() -> None:
    block = BlockSpec.from_string("ir_r2_k3_s2_e6_c24_se0.25")
    assert block == BlockSpec("ir", 2, 3, 2, 24, expansion=6, se_ratio=0.25)
    assert block.to_string() == "ir_r2_k3_s2_e6_c24_se0.25"
    assert BlockSpec.from_string("ds_r1_k3_s1_c16_noskip").skip is False


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("ir_r2_k3_s2_e6_c24_x9", "'x9'"),  # unknown token
        ("ir_r2_r3_k3_s2_e6_c24", "'r3'"),  # duplicate field
        ("ir_r2_k3_s2_c24", "e"),  # missing expansion
        ("ds_r1_k3_c16", "s"),  # missing stride
        ("zz_r1_k3_s1_c16", "'zz'"),  # unknown block type
        ("ds_r1_k3_s1_e6_c16", "e6"),  # expansion on a non-ir block
        ("ds_r1_k3_s1_c16_noskip_noskip", "noskip"),  # duplicate flag
        ("ds_r1_k4_s1_c16", "odd"),  # even kernel
        ("ds_r1_k3_s3_c16", "stride"),
    ],
)
def test_strict_parsing_names_the_token(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        BlockSpec.from_string(text)


def test_empty_architecture_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        ArchSpec.from_string("")
