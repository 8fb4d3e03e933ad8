"""Architecture IR: frozen, hashable network descriptions and their canonical block-string codec.

A network is a stem, a list of stages and a head. Every stage is one :class:`BlockSpec`, written in the
MnasNet/timm style ``ir_r2_k3_s2_e6_c24_se0.25``; an :class:`ArchSpec` is its stage strings joined by
``:``. Unlike timm, parsing is strict: an unknown, duplicate or missing field raises ``ValueError``.
The encoder writes exactly one (canonical) string per spec, so strings are safe store keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

#: Block types: regular conv-bn-relu, depthwise-separable conv, inverted residual (MBConv).
BLOCK_TYPES = ("cn", "ds", "ir")
STAGE_SEPARATOR = ":"

_FIELD = re.compile(r"^(r|k|s|e|c|se)(\d+(?:\.\d+)?)$")


def format_ratio(value: float) -> str:
    """The shortest decimal that reads back as exactly ``value``, written without an exponent (``1e-05`` is
    ``0.00001``) and without a trailing ``.0`` (``1.0`` is ``1``), so the ``se`` token round-trips for any ratio."""
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(frozen=True)
class BlockSpec:
    """One stage: ``repeats`` layers of one block type; the first layer has the stride.

    :param op: ``cn`` (kxk conv), ``ds`` (depthwise-separable conv) or ``ir`` (MBConv).
    :param repeats: number of layers (>= 1).
    :param kernel: odd spatial kernel size of the (depthwise) conv.
    :param stride: stride of the first layer (1 or 2).
    :param out_channels: output channels of every layer.
    :param expansion: MBConv expansion ratio; 1 for ``cn`` and ``ds``.
    :param se_ratio: squeeze-excite ratio relative to the layer's input channels; 0 disables SE.
    :param skip: identity residual on the layers whose input and output shapes match.
    """

    op: str
    repeats: int
    kernel: int
    stride: int
    out_channels: int
    expansion: int = 1
    se_ratio: float = 0.0
    skip: bool = True

    def __post_init__(self) -> None:
        if self.op not in BLOCK_TYPES:
            raise ValueError(f"block type {self.op!r} is not one of {BLOCK_TYPES}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd number, got {self.kernel}")
        if self.stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {self.stride}")
        if self.out_channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.out_channels}")
        if self.op == "ir" and self.expansion < 1:
            raise ValueError(f"expansion must be >= 1 for ir blocks, got {self.expansion}")
        if self.op != "ir" and self.expansion != 1:
            raise ValueError(f"expansion is only valid for ir blocks, got e{self.expansion} on {self.op!r}")
        if not 0.0 <= self.se_ratio <= 1.0:
            raise ValueError(f"se ratio must be in [0, 1], got {self.se_ratio}")

    def to_string(self) -> str:
        parts = [self.op, f"r{self.repeats}", f"k{self.kernel}", f"s{self.stride}"]
        if self.op == "ir":
            parts.append(f"e{self.expansion}")
        parts.append(f"c{self.out_channels}")
        if self.se_ratio > 0:
            parts.append(f"se{format_ratio(self.se_ratio)}")
        if not self.skip:
            parts.append("noskip")
        return "_".join(parts)

    @classmethod
    def from_string(cls, text: str) -> BlockSpec:
        """Parse one stage string strictly; the error names the offending token."""
        tokens = text.strip().split("_")
        op, fields = tokens[0], tokens[1:]
        if op not in BLOCK_TYPES:
            raise ValueError(f"block {text!r}: unknown block type {op!r}; accepted: {', '.join(BLOCK_TYPES)}")
        values: dict[str, str] = {}
        skip = True
        for token in fields:
            if token == "noskip":
                if not skip:
                    raise ValueError(f"block {text!r}: duplicate token 'noskip'")
                skip = False
                continue
            match = _FIELD.match(token)
            if match is None:
                raise ValueError(
                    f"block {text!r}: unknown token {token!r}; accepted: r<int> k<int> s<int> e<int> c<int> "
                    "se<float> noskip"
                )
            key, value = match.groups()
            if key in values:
                raise ValueError(f"block {text!r}: duplicate token {token!r}")
            values[key] = value
        required = ["r", "k", "s", "c"] + (["e"] if op == "ir" else [])
        missing = [key for key in required if key not in values]
        if missing:
            raise ValueError(f"block {text!r}: missing field(s) {', '.join(missing)}")
        if op != "ir" and "e" in values:
            raise ValueError(f"block {text!r}: token 'e{values['e']}' is only valid for ir blocks")
        try:
            ints = {key: int(values[key]) for key in ("r", "k", "s", "c", "e") if key in values}
        except ValueError as error:
            raise ValueError(f"block {text!r}: r, k, s, e and c take integers ({error})") from None
        try:
            return cls(
                op=op,
                repeats=ints["r"],
                kernel=ints["k"],
                stride=ints["s"],
                out_channels=ints["c"],
                expansion=ints.get("e", 1),
                se_ratio=float(values.get("se", 0.0)),
                skip=skip,
            )
        except ValueError as error:
            raise ValueError(f"block {text!r}: {error}") from None


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: stem conv, stages, 1x1 head conv, global pooling and a linear classifier.

    The spec is independent of the input resolution (the network is fully convolutional up to the pool),
    so one spec is trained at a proxy resolution and measured at the deployment resolution.
    """

    stages: tuple[BlockSpec, ...]
    stem_channels: int = 32
    stem_stride: int = 2
    head_channels: int = 1280
    num_classes: int = 1000
    in_channels: int = 3

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("an architecture needs at least one stage")
        for name in ("stem_channels", "head_channels", "num_classes", "in_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {self.stem_stride}")
        object.__setattr__(self, "stages", tuple(self.stages))

    def to_string(self) -> str:
        """The canonical block string of the stages (stem/head/classes are settings of the space)."""
        return STAGE_SEPARATOR.join(stage.to_string() for stage in self.stages)

    @classmethod
    def from_string(cls, text: str, **settings: int) -> ArchSpec:
        """Parse ``stage:stage:...``; ``settings`` are the non-stage fields (stem_channels, num_classes, ...)."""
        if not text or not text.strip():
            raise ValueError("empty architecture string")
        return cls(stages=tuple(BlockSpec.from_string(part) for part in text.split(STAGE_SEPARATOR)), **settings)

    def __str__(self) -> str:
        return self.to_string()
