"""The tabular benchmark's space: one decision per stage, each choosing that stage among a short list of blocks.

Small enough to evaluate every architecture once (the default, ``conf/search_space/tabular.yaml``, has five
stages with four choices each: 1,024 networks), yet MnasNet-like: the choices of a stage differ in ConvOp,
kernel, expansion, width, depth or squeeze-excite, written as block strings (``ir_r1_k5_s2_e3_c16``), so the
table's keys are the same canonical strings the rest of nas-rl uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nas_rl.arch import ArchSpec, BlockSpec
from nas_rl.errors import ConfigError
from nas_rl.spaces.base import Decision, SearchSpace


class TabularSpace(SearchSpace):
    """Stage ``i`` is one of ``stages[i]``; every combination is an architecture of the space.

    Decoded architectures are built once and reused, so decoding is a tuple lookup (the tabular env decodes
    thousands of architectures per second).

    :param stages: per stage, its choices as block strings (parsed strictly; duplicates are refused).
    :param resolution: input resolution the networks are trained at.
    :param num_classes: classifier outputs.
    :param in_channels: image channels.
    :param stem_channels: width of the 3x3 stem conv.
    :param stem_stride: stride of the stem.
    :param head_channels: width of the final 1x1 conv.
    """

    def __init__(
        self,
        stages: Sequence[Sequence[str]],
        resolution: int = 16,
        num_classes: int = 10,
        in_channels: int = 1,
        stem_channels: int = 8,
        stem_stride: int = 1,
        head_channels: int = 64,
    ) -> None:
        if int(resolution) < 4:
            raise ConfigError(f"resolution={resolution} is not accepted: use an integer >= 4")
        if int(num_classes) < 2:
            raise ConfigError(f"num_classes={num_classes} is not accepted: use an integer >= 2")
        self._resolution = int(resolution)
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.stem_channels = int(stem_channels)
        self.stem_stride = int(stem_stride)
        self.head_channels = int(head_channels)
        self.stages: tuple[tuple[BlockSpec, ...], ...] = tuple(_parse_stage(i, c) for i, c in enumerate(stages or ()))
        if not self.stages:
            raise ConfigError("stages=[] is not accepted: use a list of stages, each a list of block strings")
        super().__init__(
            [Decision(f"stage{i + 1}", tuple(b.to_string() for b in choices)) for i, choices in enumerate(self.stages)]
        )
        self._index = [{block: index for index, block in enumerate(choices)} for choices in self.stages]
        self._decoded: dict[tuple[int, ...], ArchSpec] = {}

    @property
    def resolution(self) -> int:
        return self._resolution

    def decode(self, tokens: Sequence[int]) -> ArchSpec:
        key = tuple(tokens)
        arch = self._decoded.get(key)
        if arch is None:
            key = self.check_tokens(tokens)
            stages = tuple(choices[t] for choices, t in zip(self.stages, key))
            arch = self._decoded.setdefault(key, ArchSpec(stages=stages, **self.network_settings()))
        return arch

    def encode(self, arch: ArchSpec) -> tuple[int, ...]:
        for name, expected in self.network_settings().items():
            if getattr(arch, name) != expected:
                raise ValueError(f"architecture has {name}={getattr(arch, name)}, this space has {expected}")
        if len(arch.stages) != len(self.stages):
            raise ValueError(f"architecture has {len(arch.stages)} stages, this space has {len(self.stages)}")
        tokens = []
        for position, (stage, index) in enumerate(zip(arch.stages, self._index)):
            if stage not in index:
                choices = ", ".join(b.to_string() for b in self.stages[position])
                raise ValueError(f"stage {position + 1} ({stage.to_string()}) is not one of this space's choices: {choices}")
            tokens.append(index[stage])
        return tuple(tokens)

    def index(self, tokens: Sequence[int]) -> int:
        """Position of ``tokens`` in :meth:`all_tokens` (row-major over the decisions, last decision fastest)."""
        number = 0
        for position, token in enumerate(self.check_tokens(tokens)):
            number = number * self.num_choices(position) + token
        return number

    def all_tokens(self) -> list[tuple[int, ...]]:
        """Every token sequence of the space, in :meth:`index` order."""
        sequences: list[tuple[int, ...]] = [()]
        for decision in self.decisions:
            sequences = [s + (t,) for s in sequences for t in range(decision.num_choices)]
        return sequences

    def fingerprint(self) -> dict[str, Any]:
        return {
            "space": "tabular",
            "resolution": self.resolution,
            **self.network_settings(),
            "stages": [[b.to_string() for b in choices] for choices in self.stages],
        }


def _parse_stage(position: int, choices: Sequence[str]) -> tuple[BlockSpec, ...]:
    where = f"stages[{position}]"
    if isinstance(choices, str) or not choices:
        raise ConfigError(f"{where}={choices!r} is not accepted: use a non-empty list of block strings")
    try:
        blocks = tuple(BlockSpec.from_string(str(text)) for text in choices)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None
    if len(set(blocks)) != len(blocks):
        raise ConfigError(f"{where}={list(choices)} is not accepted: a stage's choices must differ")
    return blocks
