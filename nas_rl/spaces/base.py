"""The SearchSpace role: the decisions (tokens), their choices, and tokens <-> ArchSpec."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from nas_rl.arch import ArchSpec, BlockSpec

#: ArchSpec fields that a search space fixes for all of its architectures.
NETWORK_FIELDS = ("stem_channels", "stem_stride", "head_channels", "num_classes", "in_channels")


@dataclass(frozen=True)
class Decision:
    """One token position: its name (for logs and tables) and the values it can take."""

    name: str
    choices: tuple[Any, ...]

    @property
    def num_choices(self) -> int:
        return len(self.choices)


class SearchSpace(ABC):
    """A fixed-length sequence of decisions; a full token sequence decodes to one architecture.

    Tokens are choice indices (0-based). Every decision's valid choices are ``0 .. num_choices - 1``;
    ``max_choices`` is the widest decision, which sizes the env's action space. A space sets the network
    settings below (:data:`NETWORK_FIELDS`), which every architecture it decodes shares.
    """

    num_classes: int
    in_channels: int
    stem_channels: int
    stem_stride: int
    head_channels: int

    def __init__(self, decisions: Sequence[Decision]) -> None:
        if not decisions:
            raise ValueError("a search space needs at least one decision")
        self.decisions: tuple[Decision, ...] = tuple(decisions)
        self.max_choices = max(d.num_choices for d in self.decisions)
        self._num_choices = np.array([d.num_choices for d in self.decisions], dtype=np.int64)

    @property
    def num_decisions(self) -> int:
        return len(self.decisions)

    @property
    def size(self) -> int:
        """Number of distinct token sequences."""
        return int(np.prod(self._num_choices.astype(object)))

    def num_choices(self, position: int) -> int:
        return int(self._num_choices[position])

    def action_mask(self, position: int) -> np.ndarray:
        """Boolean mask over ``max_choices`` actions: True where the choice is valid at ``position``."""
        mask = np.zeros(self.max_choices, dtype=bool)
        mask[: self.num_choices(position)] = True
        return mask

    def check_tokens(self, tokens: Sequence[int]) -> tuple[int, ...]:
        tokens = tuple(int(t) for t in tokens)
        if len(tokens) != self.num_decisions:
            raise ValueError(f"expected {self.num_decisions} tokens, got {len(tokens)}")
        for position, token in enumerate(tokens):
            if not 0 <= token < self.num_choices(position):
                decision = self.decisions[position]
                raise ValueError(
                    f"token {token} at position {position} ({decision.name}) is out of range 0..{decision.num_choices - 1}"
                )
        return tokens

    def sample(self, rng: np.random.Generator) -> tuple[int, ...]:
        """Uniformly random token sequence."""
        return tuple(int(rng.integers(n)) for n in self._num_choices)

    def mutate(self, tokens: Sequence[int], rng: np.random.Generator) -> tuple[int, ...]:
        """Change exactly one decision (with more than one choice) to a different value."""
        tokens = list(self.check_tokens(tokens))
        positions = np.flatnonzero(self._num_choices > 1)
        position = int(rng.choice(positions))
        offset = int(rng.integers(1, self.num_choices(position)))
        tokens[position] = (tokens[position] + offset) % self.num_choices(position)
        return tuple(tokens)

    def sample_arch(self, rng: np.random.Generator) -> ArchSpec:
        """A uniformly random architecture of the space."""
        return self.decode(self.sample(rng))

    def sample_archs(self, seed: int, count: int, distinct: bool = False) -> list[ArchSpec]:
        """The first ``count`` architectures drawn with ``seed`` (same seed, same list); ``distinct``: skip
        repeats (fewer if the space is smaller, after ``20 * count`` draws)."""
        rng = np.random.default_rng(seed)
        if not distinct:
            return [self.sample_arch(rng) for _ in range(count)]
        archs: dict[ArchSpec, None] = {}
        for _ in range(count * 20):
            archs.setdefault(self.sample_arch(rng))
            if len(archs) == count:
                break
        return list(archs)

    @abstractmethod
    def decode(self, tokens: Sequence[int]) -> ArchSpec:
        """The architecture a full token sequence describes."""

    @abstractmethod
    def encode(self, arch: ArchSpec) -> tuple[int, ...]:
        """The token sequence of ``arch``; ``ValueError`` if the space cannot express it."""

    def network_settings(self) -> dict[str, int]:
        """The ArchSpec fields besides the stages, which every architecture of the space shares."""
        return {name: int(getattr(self, name)) for name in NETWORK_FIELDS}

    def parse(self, text: str) -> ArchSpec:
        """The architecture of this space written as ``text`` (a block string)."""
        return ArchSpec.from_string(text, **self.network_settings())

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """JSON-serialisable settings that change what the decoded networks are."""

    @property
    @abstractmethod
    def resolution(self) -> int:
        """Input resolution (H = W) the networks of this space are trained at."""


@runtime_checkable
class FactorizedSpace(Protocol):
    """A space whose architectures are any combination of one stage per block, with the same stem, head and
    classifier (what a per-layer latency lookup table needs)."""

    def stage_choices(self) -> list[tuple[BlockSpec, ...]]:
        """Every distinct stage each block can decode to, block by block."""
        ...
