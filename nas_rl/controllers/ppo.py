"""MaskablePPO with advantages scaled by the spread of the search's returns so far, not by each minibatch's own,
and optionally an entropy bonus steered to a target entropy, a risk-seeking (elitist) update, or training towards
the best architectures found so far."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3.common.running_mean_std import RunningMeanStd

from nas_rl._util import is_int, is_positive_number
from nas_rl.errors import ConfigError, require


class BestEpisode(NamedTuple):
    """One of the best architectures found so far, as the rollout buffer held its episode."""

    reward: float
    key: bytes  # its actions, as bytes: the same architecture is one key
    observations: dict[str, np.ndarray]
    actions: np.ndarray
    action_masks: np.ndarray


#: The range the steered entropy coefficient moves in: from next to nothing to ten times the fixed bonus (0.01)
#: that held the policy diffuse.
ENT_COEF_RANGE = (1e-4, 0.1)


class SearchScaledMaskablePPO(MaskablePPO):
    """MaskablePPO whose advantages are centred per rollout and divided by the standard deviation of every return
    seen since the search began (SB3's running statistics), instead of each minibatch's own.

    With the reward at an episode's last token, gamma 1 and GAE lambda 1, an architecture's return is its reward,
    so the scale is the spread of the rewards found so far. A converging search proposes near-identical
    architectures: per-minibatch normalisation blows their tiny differences, mostly critic error, up to unit
    spread and the policy drifts off what it found; here they stay as small as they are, and the policy settles.

    With ``target_entropy`` (nats per decision, the mean over a rollout's steps) the entropy coefficient is no
    longer fixed: before each update it is multiplied by ``exp(entropy_rate * (target - entropy) / target)``,
    within ENT_COEF_RANGE, starting from ``ent_coef``. While the policy is broader than the target the bonus
    fades to nothing; once it has settled, the bonus holds it near the target, so the search keeps proposing
    variations of what it found instead of repeating it (at 0.15 nats a two-way decision takes its less likely
    choice about 3.6% of the time). Off by default: on MnasNet-OneShot-v1 it overshot and oscillated (README).

    With ``elite_quantile`` (a share, e.g. 0.25) the update is risk-seeking, as a search's goal is its best
    architecture, not its average one: an architecture's advantage is how far its reward beats the top quarter
    (say) of the last ``elite_window`` rollouts' rewards, and 0 below that, in place of reward minus the
    critic's value (still divided by the running spread). With gamma 1 and GAE lambda 1, as here, a step's
    return is its architecture's reward.

    With ``imitate_best`` (a number K, e.g. 10) the policy also learns to propose the K best distinct
    architectures found so far (priority-queue training, Abolafia et al. 2018): after each update, ``n_epochs``
    steps on ``imitate_coef`` times their tokens' mean negative log-likelihood. The policy-gradient update moves
    the policy towards what beat its baseline on average, so its mode need not be the best architecture found;
    this keeps the best found among its likely proposals, as regularized evolution keeps them among its parents,
    and its samples are then variations of them. Needs the env's Dict observation with ``tokens`` (episodes of
    one token per decision, as the nas_rl envs have).

    Takes MaskablePPO's arguments, except ``normalize_advantage``, which this scaling replaces.
    """

    def __init__(self, *args: Any, target_entropy: float | None = None, entropy_rate: float = 0.25,
                 elite_quantile: float | None = None, elite_window: int = 8, imitate_best: int | None = None,
                 imitate_coef: float = 1.0, **kwargs: Any) -> None:  # fmt: skip
        if "normalize_advantage" in kwargs:
            raise ConfigError(f"normalize_advantage={kwargs['normalize_advantage']!r} is not accepted by "
                              f"{type(self).__name__}: it scales advantages by the returns' running spread instead; "
                              "use sb3_contrib.MaskablePPO for per-minibatch normalisation")  # fmt: skip
        if target_entropy is not None:
            require(is_positive_number(target_entropy), "target_entropy", target_entropy,
                    "a number > 0 (nats per decision), or null for a fixed ent_coef")  # fmt: skip
            require(is_positive_number(entropy_rate), "entropy_rate", entropy_rate, "a number > 0")
            ent_coef = kwargs.get("ent_coef", 0.0)
            require(isinstance(ent_coef, (int, float)) and 0 <= ent_coef <= ENT_COEF_RANGE[1], "ent_coef", ent_coef,
                    f"a number from 0 to {ENT_COEF_RANGE[1]} (the starting coefficient, with target_entropy)")  # fmt: skip
        if elite_quantile is not None:
            require(is_positive_number(elite_quantile) and elite_quantile < 1, "elite_quantile", elite_quantile,
                    "a share between 0 and 1 (of recent architectures reinforced), or null for all")  # fmt: skip
            require(is_int(elite_window) and elite_window >= 1, "elite_window", elite_window,
                    "an integer >= 1 (rollouts)")  # fmt: skip
        if imitate_best is not None:
            require(is_int(imitate_best) and imitate_best >= 1, "imitate_best", imitate_best,
                    "an integer >= 1 (best architectures found so far to learn from), or null for none")  # fmt: skip
            require(is_positive_number(imitate_coef), "imitate_coef", imitate_coef, "a number > 0")
        super().__init__(*args, **{**kwargs, "normalize_advantage": False})
        if imitate_best is not None:
            tokens = getattr(self.observation_space, "spaces", {}).get("tokens")
            require(tokens is not None, "imitate_best", imitate_best,
                    "null with this env: it needs a Dict observation with the tokens (a nas_rl env's)")  # fmt: skip
            self.episode_length = int(tokens.shape[0])  # type: ignore[union-attr]  # refused above when None
        self.return_spread = RunningMeanStd(epsilon=1e-8, shape=())  # its prior (variance 1) weighs next to nothing
        self.target_entropy = None if target_entropy is None else float(target_entropy)
        self.entropy_rate = float(entropy_rate)
        self.elite_quantile = None if elite_quantile is None else float(elite_quantile)
        self.elite_window = int(elite_window)
        self.recent_returns: list[np.ndarray] = []  # the last elite_window rollouts' returns
        self.imitate_best = None if imitate_best is None else int(imitate_best)
        self.imitate_coef = float(imitate_coef)
        self.best_found: list[BestEpisode] = []  # with imitate_best: the best distinct episodes, best first

    def train(self) -> None:
        buffer = self.rollout_buffer
        if self.imitate_best is not None:
            self._keep_best()  # before MaskablePPO's training flattens the buffer's (step, env) layout
        self.return_spread.update(buffer.returns.ravel())
        spread = float(np.sqrt(self.return_spread.var))
        centred = buffer.advantages - buffer.advantages.mean() if self.elite_quantile is None else self._elite()
        # Returns that agree to 1e-4 (of 1, or of their size) have not differed yet (say every architecture
        # failed): nothing to learn from, and dividing by their rounding error would amplify noise.
        same = spread <= 1e-4 * max(1.0, abs(float(self.return_spread.mean)))
        buffer.advantages = (np.zeros_like(centred) if same else centred / spread).astype(np.float32)
        self.logger.record("train/return_spread", spread)
        if self.target_entropy is not None:
            self._steer_ent_coef()
        super().train()
        if self.imitate_best is not None:
            self._imitate_best()

    def _keep_best(self) -> None:
        """Add the rollout's whole episodes to :attr:`best_found`, keeping the ``imitate_best`` best distinct ones
        (an architecture is its actions; its return, with gamma 1 and GAE lambda 1, is its reward)."""
        buffer, length = self.rollout_buffer, self.episode_length
        observations: dict[str, np.ndarray] = buffer.observations  # type: ignore[assignment]  # a Dict space's buffer
        kept = {episode.key: episode for episode in self.best_found}
        for env in range(buffer.n_envs):
            for start in np.flatnonzero(buffer.episode_starts[:, env]):
                end = start + length
                if end > buffer.buffer_size or buffer.episode_starts[start + 1 : end, env].any():
                    continue  # cut by the rollout's end, or not one token per decision
                actions = buffer.actions[start:end, env].copy()
                episode = BestEpisode(
                    float(buffer.returns[end - 1, env]),
                    actions.tobytes(),
                    {key: value[start:end, env].copy() for key, value in observations.items()},
                    actions,
                    buffer.action_masks[start:end, env].copy(),
                )
                if episode.key not in kept or kept[episode.key].reward < episode.reward:
                    kept[episode.key] = episode
        self.best_found = sorted(kept.values(), key=lambda episode: -episode.reward)[: self.imitate_best]

    def _imitate_best(self) -> None:
        """``n_epochs`` gradient steps raising the likelihood of :attr:`best_found`'s tokens."""
        if not self.best_found:
            return
        observations = {
            key: torch.as_tensor(np.concatenate([e.observations[key] for e in self.best_found]), device=self.device)
            for key in self.best_found[0].observations
        }
        actions = torch.as_tensor(np.concatenate([e.actions for e in self.best_found]), device=self.device)
        masks = torch.as_tensor(np.concatenate([e.action_masks for e in self.best_found]), device=self.device)
        self.policy.set_training_mode(True)
        for _ in range(self.n_epochs):
            _, log_prob, _ = self.policy.evaluate_actions(
                observations,  # type: ignore[arg-type]  # SB3 types a Dict space's as one tensor
                actions.long().flatten(),
                action_masks=masks,
            )
            loss = -self.imitate_coef * log_prob.mean()
            self.policy.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self.logger.record("train/imitation_loss", loss.item())
        self.logger.record("train/imitated_lowest_reward", self.best_found[-1].reward)

    def _elite(self) -> np.ndarray:
        """Each step's return above the top ``elite_quantile`` of the last ``elite_window`` rollouts' returns, 0
        below it: only architectures among the best recently proposed are reinforced, by how far they beat that
        threshold (risk-seeking policy gradient)."""
        returns = self.rollout_buffer.returns
        self.recent_returns = [*self.recent_returns, returns.ravel().copy()][-self.elite_window :]
        assert self.elite_quantile is not None
        threshold = float(np.quantile(np.concatenate(self.recent_returns), 1 - self.elite_quantile))
        self.logger.record("train/elite_threshold", threshold)
        return np.maximum(returns - threshold, 0.0)

    def _steer_ent_coef(self) -> None:
        """Move the entropy coefficient towards holding the policy's entropy on this rollout at the target."""
        entropy = self.rollout_entropy()
        assert self.target_entropy is not None
        low, high = ENT_COEF_RANGE
        step = self.entropy_rate * (self.target_entropy - entropy) / self.target_entropy
        self.ent_coef = float(np.clip(max(float(self.ent_coef), low) * math.exp(step), low, high))
        self.logger.record("train/policy_entropy", entropy)
        self.logger.record("train/ent_coef", self.ent_coef)

    def rollout_entropy(self) -> float:
        """The policy's mean entropy (nats) over the rollout buffer's steps, among each step's valid actions."""
        self.policy.set_training_mode(False)
        with torch.no_grad():
            entropies = [
                self.policy.evaluate_actions(
                    data.observations, data.actions.long().flatten(), action_masks=data.action_masks
                )[2]
                for data in self.rollout_buffer.get(batch_size=None)
            ]
        return float(torch.cat([e.flatten() for e in entropies if e is not None]).mean())
