"""The MnasNet controller's RNN: an LSTM over the token history as an SB3 features extractor, and the
MaskablePPO policy that feeds it."""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.distributions import MaskableDistribution
from sb3_contrib.common.maskable.policies import MaskableMultiInputActorCriticPolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn
from torch.nn import functional

from nas_rl._util import is_positive_number
from nas_rl.errors import require


class TokenLSTMExtractor(BaseFeaturesExtractor):
    """Reads the tokens chosen so far autoregressively and returns the LSTM state at the current position.

    Step ``t`` of the LSTM sees the token chosen at ``t - 1`` (a start symbol at ``t = 0``) and which decision
    ``t`` is; the features for the next action are the output at ``position``. Tokens not yet chosen never
    reach that output, so re-reading the history every step is the paper's autoregressive RNN policy,
    which SB3's feed-forward MaskablePPO can train.

    :param observation_space: the env's Dict space (``tokens`` MultiDiscrete, ``position`` Discrete).
    :param hidden_size: LSTM units (the features' size).
    :param embed_size: size of the per-step input embedding.
    """

    def __init__(self, observation_space: spaces.Dict, hidden_size: int = 64, embed_size: int = 32) -> None:
        super().__init__(observation_space, features_dim=hidden_size)
        nvec = _tokens_space(observation_space).nvec
        self.length, self.vocabulary = len(nvec), int(nvec[0])
        self.embed = nn.Linear(self.vocabulary + self.length, embed_size)
        self.lstm = nn.LSTM(embed_size, hidden_size, batch_first=True)
        self.register_buffer("steps", torch.eye(self.length), persistent=False)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        # SB3 hands MultiDiscrete and Discrete observations over one-hot encoded.
        tokens = observations["tokens"].view(-1, self.length, self.vocabulary)
        batch = tokens.shape[0]
        position = observations["position"].reshape(batch, -1).argmax(dim=1).clamp(max=self.length - 1)
        # The LSTM reads only as far as the batch's furthest position: later steps cannot change an output
        # before them, and in a rollout (all envs at one position) this halves its work on average.
        read = int(position.max()) + 1
        previous = torch.cat([torch.zeros_like(tokens[:, :1]), tokens[:, : read - 1]], dim=1)
        previous[:, 0, 0] = 1.0  # index 0 ("not chosen") doubles as the start symbol
        steps: torch.Tensor = self.steps  # type: ignore[assignment]
        inputs = torch.cat([previous, steps[:read].expand(batch, -1, -1)], dim=2)
        outputs, _ = self.lstm(torch.relu(self.embed(inputs)))
        return outputs[torch.arange(batch, device=outputs.device), position]


class TokenLSTMPolicy(MaskableMultiInputActorCriticPolicy):
    """MaskablePPO's multi-input policy, one-hot encoding the token history in one call per step, with
    optionally bounded logits.

    SB3 encodes a MultiDiscrete observation one dimension at a time (42 small calls per step in the MnasNet
    space, about a third of a rollout step's time); the encoding it hands the features extractor is the same.

    :param logit_bound: with a number C, the action logits pass through ``C * tanh(logits / C)`` (the tanh
        constant of ENAS's controller): two choices' probabilities then differ by at most ``exp(2C)``, so a
        policy that has settled still tries every other choice now and then (with C = 2, a two-way decision
        about 1.8% of the time) instead of repeating one architecture. None: unbounded, as SB3's.
    """

    def __init__(self, *args: Any, logit_bound: float | None = None, **kwargs: Any) -> None:
        if logit_bound is not None:
            require(is_positive_number(logit_bound), "logit_bound", logit_bound,
                    "a number > 0, or null for unbounded logits")  # fmt: skip
        self.logit_bound = None if logit_bound is None else float(logit_bound)
        super().__init__(*args, **kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "logit_bound": self.logit_bound}

    def _get_action_dist_from_latent(self, latent_pi: torch.Tensor) -> MaskableDistribution:
        logits = self.action_net(latent_pi)
        if self.logit_bound is not None:
            logits = self.logit_bound * torch.tanh(logits / self.logit_bound)
        return self.action_dist.proba_distribution(action_logits=logits)

    def extract_features(  # type: ignore[override]
        self, obs: PyTorchObs, features_extractor: BaseFeaturesExtractor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        assert isinstance(obs, dict) and isinstance(self.observation_space, spaces.Dict)
        space, normalize = self.observation_space, self.normalize_images
        encoded = {key: _one_hot(value, space[key], normalize) for key, value in obs.items()}
        if self.share_features_extractor:
            return (features_extractor or self.features_extractor)(encoded)
        return self.pi_features_extractor(encoded), self.vf_features_extractor(encoded)


def _one_hot(observation: torch.Tensor, space: spaces.Space, normalize_images: bool) -> torch.Tensor:
    """SB3's encoding of one observation key; a MultiDiscrete of equal sizes in one ``one_hot`` call."""
    if isinstance(space, spaces.MultiDiscrete) and space.nvec.ndim == 1 and len(set(space.nvec.tolist())) == 1:
        batch = observation.shape[0]
        return functional.one_hot(observation.long(), int(space.nvec[0])).float().view(batch, -1)
    return preprocess_obs(observation, space, normalize_images)  # type: ignore[return-value]


class FlatTokenExtractor(BaseFeaturesExtractor):
    """The one-hot tokens and position, concatenated: the input of SB3's recurrent policies, which keep their
    own LSTM state across the episode (SB3's CombinedExtractor reports a numpy-typed size that
    ``torch.nn.LSTM`` refuses for MultiDiscrete spaces)."""

    def __init__(self, observation_space: spaces.Dict) -> None:
        position = observation_space["position"]
        assert isinstance(position, spaces.Discrete)
        size = int(sum(int(n) for n in _tokens_space(observation_space).nvec)) + int(position.n)
        super().__init__(observation_space, features_dim=size)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = observations["tokens"].shape[0]
        return torch.cat([observations["tokens"].reshape(batch, -1), observations["position"].reshape(batch, -1)], 1)


def _tokens_space(observation_space: spaces.Dict) -> spaces.MultiDiscrete:
    tokens = observation_space["tokens"]
    assert isinstance(tokens, spaces.MultiDiscrete), f"expected the env's MultiDiscrete tokens, got {tokens}"
    return tokens
