"""NasEnv: architecture search as a Gymnasium environment, one decision (token) per step."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from nas_rl.arch import ArchSpec
from nas_rl.errors import ConfigError
from nas_rl.evaluation.evaluator import Evaluator, Outcome
from nas_rl.spaces.base import SearchSpace

#: What an action outside the valid choices of the current decision does (unmasked algorithms send them).
INVALID_ACTION_POLICIES = ("wrap", "clip")

#: The ``info`` of ``reset`` and of every step before the terminal one: the same keys as the terminal step's,
#: ``status="pending"``, no architecture yet, and 0.0 for the numbers (no evaluation ran, nothing was paid).
#: Not NaN: Gymnasium's ``check_env`` compares the infos of two identical steps, and NaN != NaN.
PENDING_INFO: dict[str, Any] = {
    "arch": "",
    "tokens": (),
    "accuracy": np.float64(0.0),
    "latency_ms": np.float64(0.0),
    "reward": np.float64(0.0),
    "cached": False,
    "eval_seconds": np.float64(0.0),
    "status": "pending",
    "error": "",
}


class EnvArgumentError(ConfigError, TypeError):
    """A keyword argument the env does not accept (an unknown one, or a render mode it does not have).

    A :class:`~nas_rl.errors.ConfigError` for people, and a ``TypeError`` as Python raises for an unexpected
    keyword: other libraries retry without an optional keyword only on a ``TypeError`` (SB3's ``make_vec_env``
    first asks for ``render_mode="rgb_array"``).
    """


class NasEnv(gym.Env):
    """Each step chooses one token; the last token's step evaluates the decoded architecture.

    Observation: ``tokens`` (0 = not chosen yet, else choice + 1) and ``position`` (index of the next
    decision; ``L`` once done), plus ``action_mask`` with ``mask_in_obs``; with ``flat_obs`` the same as one
    float32 ``Box`` vector (for libraries that take only a Box): the layout of
    ``gymnasium.spaces.flatten(env.dict_observation_space, obs)``, i.e. one-hot blocks in the Dict's (sorted)
    key order: ``action_mask`` (as is), ``position`` (``L + 1``), ``tokens`` (``L`` blocks of ``max_choices + 1``).

    Actions index the choices of the current decision; ``action_masks()`` (bool, read by sb3-contrib) and
    ``info["action_mask"]`` (int8, read by Gymnasium's ``action_space.sample(mask=...)``) mark the valid ones
    for the next step (all valid once the episode is over). An invalid action is mapped into range by
    ``invalid_action``: ``wrap`` takes it modulo the number of valid choices, ``clip`` takes the last valid
    choice. Non-terminal steps pay 0; the terminal step pays the reward.

    ``info`` has the same keys at reset and on every step: ``arch``, ``tokens``, ``status``, ``error``
    (str / tuple), ``accuracy``, ``latency_ms``, ``reward``, ``eval_seconds`` (``np.float64``), ``cached``
    (``bool``) and ``action_mask``. Before the terminal step they are :data:`PENDING_INFO`; on it, the
    evaluation: ``status`` ``ok`` or ``failed`` (``error`` says why, else ""), accuracy and latency NaN when
    the evaluation produced none, ``reward`` the reward paid.

    :param search_space: the decisions and their decoding.
    :param evaluator: accuracy, latency, reward and store.
    :param invalid_action: ``wrap`` or ``clip``.
    :param render_mode: None or ``"ansi"`` (a line of text with the tokens chosen so far).
    :param mask_in_obs: add the next decision's mask (``MultiBinary``, int8) as observation key ``action_mask``.
    :param flat_obs: observe one float32 ``Box`` vector instead of the Dict.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        search_space: SearchSpace,
        evaluator: Evaluator,
        invalid_action: str = "wrap",
        render_mode: str | None = None,
        mask_in_obs: bool = False,
        flat_obs: bool = False,
    ) -> None:
        if invalid_action not in INVALID_ACTION_POLICIES:
            raise ConfigError(
                f"env.invalid_action={invalid_action!r} is not accepted: use one of {INVALID_ACTION_POLICIES}"
            )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise EnvArgumentError(
                f"render_mode={render_mode!r} is not accepted: use None or one of {self.metadata['render_modes']}"
            )
        for name, value in (("mask_in_obs", mask_in_obs), ("flat_obs", flat_obs)):
            if not isinstance(value, (bool, np.bool_)):
                raise ConfigError(f"env.{name}={value!r} is not accepted: use true or false")
        self.search_space = search_space
        self.evaluator = evaluator
        self.invalid_action = invalid_action
        self.render_mode = render_mode
        self.mask_in_obs = bool(mask_in_obs)
        self.flat_obs = bool(flat_obs)
        length, width = search_space.num_decisions, search_space.max_choices
        self._length = length
        self._valid = [search_space.num_choices(position) for position in range(length)]
        # Row p: the mask of the decision at position p; row L (episode over): all valid. Computed once: the
        # non-terminal step only copies a row.
        self._bool_masks = np.ones((length + 1, width), dtype=bool)
        for position in range(length):
            self._bool_masks[position] = search_space.action_mask(position)
        self._masks = self._bool_masks.astype(np.int8)
        self.action_space = spaces.Discrete(width)
        observation = {
            "tokens": spaces.MultiDiscrete([width + 1] * length),
            "position": spaces.Discrete(length + 1),
        }
        if self.mask_in_obs:
            observation["action_mask"] = spaces.MultiBinary(width)
        #: The Dict observation space; with ``flat_obs``, ``spaces.unflatten(dict_observation_space, obs)`` reads
        #: a flat observation back.
        self.dict_observation_space = spaces.Dict(observation)
        self.observation_space: spaces.Space = self.dict_observation_space
        self._tokens = np.zeros(length, dtype=np.int64)
        self._position = 0
        self._flat: np.ndarray | None = None
        if self.flat_obs:
            self.observation_space = spaces.Box(0.0, 1.0, (spaces.flatdim(self.dict_observation_space),), np.float32)
            self._flat_position = width if self.mask_in_obs else 0  # offset of the position block
            self._flat_tokens = self._flat_position + length + 1  # offset of the token blocks
            self._flat = np.zeros(self.observation_space.shape, dtype=np.float32)
            self._flat_start = self._flat.copy()
            self._flat_start[self._flat_position] = 1.0
            self._flat_start[self._flat_tokens :: width + 1] = 1.0  # every token "not chosen yet"
            if self.mask_in_obs:
                self._flat_start[:width] = self._masks[0]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any] | np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._tokens[:] = 0
        self._position = 0
        if self._flat is not None:
            self._flat[:] = self._flat_start
        return self._observation(), self._pending_info()

    def step(self, action: Any) -> tuple[dict[str, Any] | np.ndarray, float, bool, bool, dict[str, Any]]:
        position = self._position
        if position >= self._length:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        choice = self._choice(action)
        self._tokens[position] = choice + 1
        self._position = position + 1
        if self._flat is not None:
            self._advance_flat(position, choice)
        if self._position < self._length:
            return self._observation(), 0.0, False, False, self._pending_info()
        tokens = tuple(int(t) - 1 for t in self._tokens)
        outcome = self.evaluator.evaluate(self.search_space.decode(tokens))
        return self._observation(), float(outcome.reward), True, False, self._terminal_info(outcome, tokens)

    def arch_after(self, action: Any) -> ArchSpec | None:
        """The architecture ``step(action)`` would evaluate; None when that step does not end the episode. A
        controller stepping several envs has their candidates evaluated together first (``Evaluator.start``)."""
        if self._position != self._length - 1:
            return None
        tokens = tuple(int(t) - 1 for t in self._tokens[:-1]) + (self._choice(action),)
        return self.search_space.decode(tokens)

    def _choice(self, action: Any) -> int:
        """The choice ``action`` makes at the current position (an invalid one mapped by ``invalid_action``)."""
        valid = self._valid[self._position]
        choice = _action_index(action)
        if not 0 <= choice < valid:
            choice = choice % valid if self.invalid_action == "wrap" else min(max(choice, 0), valid - 1)
        return choice

    def action_masks(self) -> np.ndarray:
        """Valid choices (bool) at the current position; all True once the episode is over (never all False)."""
        return self._bool_masks[self._position].copy()

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        chosen = self._tokens[: self._position] - 1
        return f"position {self._position}/{self._length}: tokens {chosen.tolist()}"

    def close(self) -> None:
        self.evaluator.close()

    def _observation(self) -> dict[str, Any] | np.ndarray:
        if self._flat is not None:
            return self._flat.copy()
        observation = {"tokens": self._tokens.copy(), "position": self._position}
        if self.mask_in_obs:
            observation["action_mask"] = self._masks[self._position].copy()
        return observation

    def _advance_flat(self, position: int, choice: int) -> None:
        """Update the flat observation for token ``choice`` chosen at ``position`` (a few writes, no rebuild)."""
        flat, block = self._flat, self._flat_tokens + position * (self.search_space.max_choices + 1)
        assert flat is not None
        flat[block] = 0.0
        flat[block + choice + 1] = 1.0
        flat[self._flat_position + position] = 0.0
        flat[self._flat_position + position + 1] = 1.0
        if self.mask_in_obs:
            flat[: self.search_space.max_choices] = self._masks[position + 1]

    def _pending_info(self) -> dict[str, Any]:
        # A new dict and mask every call: wrappers add keys to infos and users keep them.
        info = PENDING_INFO.copy()
        info["action_mask"] = self._masks[self._position].copy()
        return info

    def _terminal_info(self, outcome: Outcome, tokens: tuple[int, ...]) -> dict[str, Any]:
        evaluation = outcome.evaluation
        return {
            "arch": evaluation.arch,
            "tokens": tokens,
            "accuracy": _number(evaluation.accuracy),
            "latency_ms": _number(evaluation.latency_ms),
            "reward": np.float64(outcome.reward),
            "cached": bool(outcome.cached),
            "eval_seconds": np.float64(outcome.seconds),
            "status": evaluation.status,
            "error": evaluation.error or "",
            "action_mask": self._masks[self._length].copy(),
        }


def _action_index(action: Any) -> int:
    """``action`` as a Python int: a Python or numpy integer, or an integer array of one element (shape ``()`` or
    ``(1,)``, as some wrappers pass a Discrete action). Anything else raises a TypeError: ``int()`` would take
    1.9 as 1, ``"2"`` as 2 and True as 1, and silently play a choice the caller did not mean."""
    if isinstance(action, (int, np.integer)) and not isinstance(action, bool):
        return int(action)
    if isinstance(action, np.ndarray) and action.shape in ((), (1,)) and action.dtype.kind in "iu":
        return int(action.reshape(()))
    shown = (
        f"array of dtype {action.dtype} and shape {action.shape}"
        if isinstance(action, np.ndarray)
        else (f"{action!r} ({type(action).__name__})")
    )
    raise TypeError(
        f"action={shown} is not accepted: use an integer index of a choice (a Python int or a numpy integer, or an "
        "integer array of shape () or (1,)); not a float, string or bool"
    )


def _number(value: float | None) -> np.float64:
    """``value`` as np.float64; NaN for None (a failed evaluation has no accuracy or latency)."""
    return np.float64(np.nan if value is None else value)
