"""Controllers from their Hydra configs: each spends exactly its budget through the env and the store; evolution's
tournament and aging; SB3 controllers' rollout sizes, TensorBoard losses and checkpoints; mnasnet's advantages
scaled by the search's reward spread; the MnasNet controller learns (it beats random search on a table with a
planted optimum), and its LSTM reads only the past."""

from __future__ import annotations

import struct
from collections import deque
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from sb3_contrib import MaskablePPO
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.utils import obs_as_tensor

import nas_rl  # noqa: F401  (registers the ids)
from nas_rl.cli import group_options
from nas_rl.config import build
from nas_rl.controllers.evolution import RegularizedEvolution
from nas_rl.controllers.lstm_extractor import TokenLSTMExtractor, TokenLSTMPolicy
from nas_rl.controllers.ppo import SearchScaledMaskablePPO
from nas_rl.errors import ConfigError
from nas_rl.spaces.tabular import TabularSpace
from tests.helpers.tables import write_planted_table

#: gym.make overrides of MnasNet-v0 for a real (proxy training + LiteRT) env that evaluates in about a second.
TINY_SPEC = {
    "search_space": {"resolution": 16, "stem_channels": 8, "head_channels": 32,
                     "base_widths": [8, 8, 8, 16, 16, 24, 32], "base_repeats": [1] * 7},
    "accuracy": {"epochs": 0.1, "threads": 1},
    "latency": {"min_seconds": 0.1, "min_runs": 10, "warmup_min_seconds": 0.05},
}  # fmt: skip


def build_controller(name: str):
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"controller={name}"])
    return build(cfg.controller, "controller")


@pytest.mark.slow  # real proxy training and LiteRT measurement (and SB3 training for the SB3 controllers)
@pytest.mark.parametrize("name", group_options("controller"))
def test_controller_spends_its_budget_on_a_real_env(name: str) -> None:
    env = gym.make("nas_rl/MnasNet-v0", run_id="run", **TINY_SPEC)
    seen = []
    build_controller(name).search(env, budget=2, seed=0, on_evaluation=seen.append)
    assert len(seen) == 2
    assert all(info["status"] == "ok" and 0 < info["reward"] and info["latency_ms"] > 0 for info in seen)
    assert env.unwrapped.evaluator.store.count_episodes("run") == 2


@pytest.mark.slow  # SB3 training
def test_rollout_size_is_counted_in_architectures_of_the_searched_space(tmp_path) -> None:
    """controller.rollout_archs=K: K episodes per PPO update in any space (K x 5 tokens on a 5-decision table)."""
    from nas_rl.tools.build_table import write_synthetic_table

    table = str(write_synthetic_table(tmp_path / "synthetic.npz"))
    env = gym.make("nas_rl/Tabular-v0", table=table)
    controller = build_controller("mnasnet")
    controller.rollout_archs, controller.minibatch_archs = 3, 1
    seen = []
    controller.search(env, budget=7, seed=0, on_evaluation=seen.append)
    tokens = env.unwrapped.search_space.num_decisions
    assert (controller.model.n_steps, controller.model.batch_size, len(seen)) == (3 * tokens, tokens, 7)
    with pytest.raises(ConfigError, match=r"^rollout_archs=0 is not accepted"):
        type(controller)(controller.algorithm, rollout_archs=0)


# ------------------------------------------------------------------------------------ regularized evolution


class PicksDouble:
    """Test double for the generator a tournament draws from: ``choice`` returns the given member indices."""

    def __init__(self, picks: list[int]) -> None:
        self.picks = picks

    def choice(self, n: int, size: int, replace: bool) -> np.ndarray:
        assert (size, replace) == (len(self.picks), False) and max(self.picks) < n
        return np.asarray(self.picks)


def test_tournament_picks_the_best_of_its_sample_not_of_the_population() -> None:
    evolution = RegularizedEvolution(population_size=4, sample_size=2)
    evolution.population = deque([((0,), 0.3), ((1,), 0.9), ((2,), 0.5), ((3,), 0.7)])
    assert evolution.tournament(PicksDouble([2, 3])) == (3,)  # member 1 (0.9) was not drawn
    assert evolution.tournament(PicksDouble([0, 2])) == (2,)
    assert evolution.tournament(PicksDouble([3, 1])) == (1,)
    everyone = RegularizedEvolution(population_size=4, sample_size=4)
    everyone.population = evolution.population
    assert everyone.tournament(np.random.default_rng(0)) == (1,)  # a sample of all: the best member


def test_evolution_mutates_a_member_and_removes_the_oldest() -> None:
    env = gym.make("nas_rl/Tabular-v0")
    evolution = RegularizedEvolution(population_size=3, sample_size=2)
    seen: list[dict] = []
    evolution.search(env, budget=8, seed=0, on_evaluation=seen.append)
    proposed = [(tuple(info["tokens"]), info["reward"]) for info in seen]
    assert list(evolution.population) == proposed[-3:]  # the five oldest were removed, in age order
    for index in range(3, 8):  # after the first 3 (random), each child is one decision away from a member alive
        alive = [tokens for tokens, _ in proposed[index - 3 : index]]
        child = proposed[index][0]
        assert any(sum(a != b for a, b in zip(child, parent)) == 1 for parent in alive), (child, alive)


def test_evolution_warns_when_its_budget_never_reaches_mutation(caplog: pytest.LogCaptureFixture) -> None:
    env, ignore = gym.make("nas_rl/Tabular-v0"), lambda info: None
    with caplog.at_level("WARNING", logger="nas_rl.controllers.evolution"):
        RegularizedEvolution(population_size=20, sample_size=5).search(env, budget=16, seed=0, on_evaluation=ignore)
    assert "search.budget=16" in caplog.text and "population_size=20" in caplog.text and "random" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="nas_rl.controllers.evolution"):
        RegularizedEvolution(population_size=3, sample_size=2).search(env, budget=4, seed=0, on_evaluation=ignore)
    assert caplog.text == ""


# ------------------------------------------------------------------------------------------ SB3 controllers


@pytest.mark.parametrize("name", ["mnasnet", "ppo", "a2c", "recurrent_ppo"])
def test_on_policy_rollouts_are_set_in_architectures(name: str) -> None:
    """No config hard-codes n_steps for one space's token count."""
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"controller={name}"])
    assert cfg.controller.rollout_archs >= 1
    assert "n_steps" not in cfg.controller.algorithm and "batch_size" not in cfg.controller.algorithm


def scalar_tags(folder: Path) -> set[str]:
    """The scalar tags of every TensorBoard events file under ``folder`` (TFRecord framing, read directly)."""
    from tensorboard.compat.proto.event_pb2 import Event

    tags: set[str] = set()
    for path in folder.rglob("events.out.tfevents.*"):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            tags.update(value.tag for value in Event.FromString(data[offset + 12 : offset + 12 + length]).summary.value)
            offset += 12 + length + 4  # length, its CRC, the record, its CRC
    return tags


@pytest.mark.slow  # SB3 training
@pytest.mark.parametrize("name", ["ppo", "mnasnet"])
def test_sb3_controller_logs_its_losses_and_continues_from_its_checkpoint(tmp_path: Path, name: str) -> None:
    env = gym.make("nas_rl/Tabular-v0")
    first = build_controller(name)
    first.search(env, budget=8, seed=0, on_evaluation=lambda info: None, log_dir=tmp_path / "tensorboard")
    assert first.model.n_steps == first.rollout_archs * env.unwrapped.search_space.num_decisions
    assert any(tag.startswith("train/") for tag in scalar_tags(tmp_path / "tensorboard")), scalar_tags(tmp_path)
    first.save(tmp_path / "controller")
    second = build_controller(name)
    assert second.load(tmp_path / "controller")
    second.search(env, budget=8, seed=8, on_evaluation=lambda info: None)  # one update, as the first made
    assert second.model.num_timesteps >= first.model.num_timesteps + 8 * 5  # counted on from the checkpoint
    if name == "mnasnet":  # the returns' running spread went on from the checkpoint's too (a fresh one: equal)
        assert second.model.return_spread.count > first.model.return_spread.count > 0


# ------------------------------------------------------------------------- advantages scaled by the search


def scaled_advantages(
    table: Path, monkeypatch: pytest.MonkeyPatch, updates: int, **settings: Any
) -> list[tuple[np.ndarray, ...]]:
    """Each update's returns, values and the advantages SearchScaledMaskablePPO hands to MaskablePPO's training
    (replaced by a recorder, so the policy stays as it was)."""
    seen = []

    def record(model: MaskablePPO) -> None:  # stands in for MaskablePPO.train
        buffer = model.rollout_buffer
        seen.append((buffer.returns.copy(), buffer.values.copy(), buffer.advantages.copy()))

    monkeypatch.setattr(MaskablePPO, "train", record)
    env = gym.make("nas_rl/Tabular-v0", table=str(table))
    tokens = env.unwrapped.search_space.num_decisions
    model = SearchScaledMaskablePPO(
        "MultiInputPolicy", env, n_steps=4 * tokens, batch_size=tokens, gamma=1.0, gae_lambda=1.0, seed=0, **settings
    )  # as controller=mnasnet: returns are rewards
    model.learn(updates * 4 * tokens)
    assert len(seen) == updates
    return seen


@pytest.mark.slow  # SB3 rollouts
def test_advantages_are_divided_by_the_spread_of_every_return_so_far(planted_table: Path, monkeypatch) -> None:
    """Centred per rollout and scaled by the search's spread, not each minibatch's: a rollout of near-identical
    architectures keeps its small advantages small."""
    history = []
    for returns, values, advantages in scaled_advantages(planted_table, monkeypatch, updates=3):
        history.append(returns.ravel())
        raw = returns - values  # SB3's advantages before scaling (its returns are advantages plus values)
        np.testing.assert_allclose(advantages, (raw - raw.mean()) / np.concatenate(history).std(), rtol=1e-4)


@pytest.mark.slow  # SB3 rollouts
def test_elite_advantages_reinforce_only_what_beats_the_top_share_of_recent_returns(
    planted_table: Path, monkeypatch
) -> None:
    """Risk-seeking: reward minus the top quarter's threshold of the last 2 rollouts above it, 0 below, over the
    running spread; the critic's values play no part."""
    history, shares = [], []
    for returns, _, advantages in scaled_advantages(planted_table, monkeypatch, 4, elite_quantile=0.25, elite_window=2):
        history.append(returns.ravel())
        threshold = np.quantile(np.concatenate(history[-2:]), 0.75)
        expected = np.maximum(returns - threshold, 0) / np.concatenate(history).std()
        np.testing.assert_allclose(advantages, expected, rtol=1e-4, atol=1e-7)
        shares.append(float((advantages > 0).mean()))
    assert max(shares) <= 0.5 and sum(shares) > 0  # a minority of architectures is reinforced, and some are


@pytest.mark.slow  # SB3 rollouts
def test_advantages_are_zero_while_every_return_is_the_same(tmp_path: Path, monkeypatch) -> None:
    space = TabularSpace([PLANTED_CHOICES] * len(PLANTED_BEST), resolution=8, stem_channels=4, head_channels=8)
    flat = write_planted_table(tmp_path / "flat.npz", space, PLANTED_BEST, step=0.0)  # every reward 0.4
    for _, _, advantages in scaled_advantages(flat, monkeypatch, updates=2):
        assert not advantages.any()


def test_search_scaled_ppo_refuses_per_minibatch_normalisation() -> None:
    with pytest.raises(ConfigError, match=r"^normalize_advantage=True is not accepted by SearchScaledMaskablePPO"):
        SearchScaledMaskablePPO("MultiInputPolicy", gym.make("nas_rl/Tabular-v0"), normalize_advantage=True)


def steered(table: Path, monkeypatch: pytest.MonkeyPatch, updates: int, **settings: float) -> list[tuple[float, ...]]:
    """Each update's (policy entropy on its rollout, entropy coefficient it trains with), MaskablePPO's training
    replaced by a recorder (the policy stays as initialised: near uniform)."""
    seen = []
    monkeypatch.setattr(MaskablePPO, "train", lambda model: seen.append((model.rollout_entropy(), model.ent_coef)))
    env = gym.make("nas_rl/Tabular-v0", table=str(table))
    tokens = env.unwrapped.search_space.num_decisions
    model = SearchScaledMaskablePPO("MultiInputPolicy", env, n_steps=2 * tokens, batch_size=tokens, gamma=1.0,
                                    gae_lambda=1.0, seed=0, **settings)  # fmt: skip
    model.learn(updates * 2 * tokens)
    assert len(seen) == updates
    return seen


@pytest.mark.slow  # SB3 rollouts
def test_entropy_coefficient_is_steered_towards_the_target_entropy(planted_table: Path, monkeypatch) -> None:
    """Multiplied by exp(rate (target - entropy) / target) each update: up while the policy is narrower than
    the target, down (to the floor) while it is broader; the entropy is the masked policy's, here near uniform."""
    uniform = np.log(len(PLANTED_CHOICES))
    for target, start in ((2 * uniform, 0.001), (uniform / 2, 0.05)):
        coefficient = start
        for entropy, ent_coef in steered(planted_table, monkeypatch, 3, target_entropy=target, ent_coef=start):
            assert entropy == pytest.approx(uniform, rel=1e-3)  # the freshly initialised policy is near uniform
            coefficient = min(max(coefficient * np.exp(0.25 * (target - entropy) / target), 1e-4), 0.1)
            assert ent_coef == pytest.approx(coefficient, rel=1e-6)
    fixed = steered(planted_table, monkeypatch, 2, ent_coef=0.01)  # no target: MaskablePPO's fixed bonus
    assert [ent_coef for _, ent_coef in fixed] == [0.01, 0.01]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"target_entropy": 0.0}, r"^target_entropy=0.0 is not accepted: use a number > 0 \(nats per decision\)"),
        ({"target_entropy": 0.1, "entropy_rate": -1}, r"^entropy_rate=-1 is not accepted: use a number > 0$"),
        ({"target_entropy": 0.1, "ent_coef": 2.0}, r"^ent_coef=2.0 is not accepted: use a number from 0 to 0.1"),
        ({"elite_quantile": 1.0}, r"^elite_quantile=1.0 is not accepted: use a share between 0 and 1"),
        ({"elite_quantile": 0.2, "elite_window": 0}, r"^elite_window=0 is not accepted: use an integer >= 1"),
        ({"imitate_best": 0}, r"^imitate_best=0 is not accepted: use an integer >= 1 \(best architectures found"),
        ({"imitate_best": 4, "imitate_coef": 0}, r"^imitate_coef=0 is not accepted: use a number > 0$"),
    ],
)
def test_search_scaled_ppo_refuses_a_bad_setting(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SearchScaledMaskablePPO("MultiInputPolicy", gym.make("nas_rl/Tabular-v0"), **settings)


def test_imitating_the_best_needs_an_env_that_observes_its_tokens() -> None:
    with pytest.raises(ConfigError, match=r"^imitate_best=4 is not accepted: use null with this env: it needs a Dict"):
        SearchScaledMaskablePPO("MlpPolicy", gym.make("CartPole-v1"), imitate_best=4)


def best_log_likelihood(model: SearchScaledMaskablePPO) -> float:
    """The policy's mean log-probability of the tokens of the best architectures it keeps."""
    kept = model.best_found
    stacked = {key: np.concatenate([e.observations[key] for e in kept]) for key in kept[0].observations}
    observations = obs_as_tensor(stacked, model.device)
    actions = torch.as_tensor(np.concatenate([e.actions for e in kept])).long().flatten()
    masks = torch.as_tensor(np.concatenate([e.action_masks for e in kept]))
    with torch.no_grad():
        return float(model.policy.evaluate_actions(observations, actions, action_masks=masks)[1].mean())


@pytest.mark.slow  # SB3 rollouts
def test_imitation_keeps_the_best_distinct_architectures_and_makes_them_likelier(planted_table: Path,
                                                                                 monkeypatch) -> None:  # fmt: skip
    """imitate_best=3: after each rollout the 3 best distinct architectures proposed so far (each with its own
    reward), and the steps after MaskablePPO's update raise the policy's likelihood of their tokens."""
    proposed: dict[bytes, float] = {}
    before = []

    def record(model: MaskablePPO) -> None:  # stands in for MaskablePPO.train; the buffer is (step, env) still
        buffer, tokens = model.rollout_buffer, model.episode_length
        episodes = zip(buffer.actions[:, 0].reshape(-1, tokens), buffer.returns[:, 0].reshape(-1, tokens))
        for actions, returns in episodes:
            proposed[actions.tobytes()] = float(returns[-1])
        before.append(best_log_likelihood(model))

    monkeypatch.setattr(MaskablePPO, "train", record)
    env = gym.make("nas_rl/Tabular-v0", table=str(planted_table))
    tokens = env.unwrapped.search_space.num_decisions
    model = SearchScaledMaskablePPO("MultiInputPolicy", env, n_steps=4 * tokens, batch_size=tokens, gamma=1.0,
                                    gae_lambda=1.0, seed=0, learning_rate=3e-3, imitate_best=3)  # fmt: skip
    for update in range(3):
        model.learn(4 * tokens, reset_num_timesteps=False)
        kept = model.best_found
        assert len(kept) == 3 and len({e.key for e in kept}) == 3
        assert [e.reward for e in kept] == sorted(proposed.values(), reverse=True)[:3]
        assert all(proposed[e.key] == e.reward for e in kept)
        assert all(e.observations["tokens"].shape[0] == tokens for e in kept)
        assert best_log_likelihood(model) > before[update]  # the imitation steps after the update


# ------------------------------------------------------------------------- the MnasNet controller learns


#: Five decisions of four choices (1,024 networks); the planted optimum takes these choices.
PLANTED_CHOICES = ["ds_r1_k3_s1_c4", "ir_r1_k3_s1_e3_c4", "ir_r1_k5_s1_e3_c4", "ir_r1_k3_s1_e6_c4"]
PLANTED_BEST = (3, 1, 2, 0, 3)


@pytest.fixture(scope="module")
def planted_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Accuracy 0.4 + 0.1 per decision that takes its planted choice, one latency for all: the reward is the
    accuracy, 0.9 only at PLANTED_BEST; a random architecture earns 0.525 on average."""
    space = TabularSpace([PLANTED_CHOICES] * len(PLANTED_BEST), resolution=8, stem_channels=4, head_channels=8)
    return write_planted_table(tmp_path_factory.mktemp("planted") / "planted.npz", space, PLANTED_BEST)


def proposals(name: str, table: Path, seed: int, budget: int) -> list[dict]:
    env = gym.make("nas_rl/Tabular-v0", table=str(table))
    seen: list[dict] = []
    build_controller(name).search(env, budget=budget, seed=seed, on_evaluation=seen.append)
    assert len(seen) == budget
    return seen


@pytest.mark.slow  # SB3 training: three searches of 200 architectures (about 10 s)
def test_mnasnet_controller_beats_random_search_on_a_planted_optimum(planted_table: Path) -> None:
    """As SB3's identity tests: a reward a policy can climb one decision at a time. With the same budget, the
    MnasNet controller finds the optimum in every seed, random search (about a 18% chance per seed) in fewer,
    and the controller's late proposals earn clearly more than random ones (a learned policy, not luck)."""
    budget, seeds = 200, (0, 1, 2)
    found, late_reward = {}, {}
    for name in ("mnasnet", "random"):
        runs = [proposals(name, planted_table, seed, budget) for seed in seeds]
        found[name] = sum(any(tuple(info["tokens"]) == PLANTED_BEST for info in run) for run in runs)
        late_reward[name] = np.mean([[info["reward"] for info in run[-budget // 4 :]] for run in runs])
    assert found["mnasnet"] == len(seeds) > found["random"], found
    assert late_reward["random"] == pytest.approx(0.525, abs=0.05)  # uniform proposals, as the table was built
    assert late_reward["mnasnet"] > late_reward["random"] + 0.15, late_reward


# ------------------------------------------------------------------------- the LSTM reads only the past


def lstm_features(extractor: TokenLSTMExtractor, space: gym.spaces.Dict, tokens: np.ndarray, position: int):
    """The extractor's features for one observation, one-hot encoded as SB3 hands it over."""
    observation = {"tokens": tokens[None], "position": np.asarray([position])}
    with torch.no_grad():
        return extractor(preprocess_obs(obs_as_tensor(observation, torch.device("cpu")), space))[0]


def test_lstm_features_at_a_position_do_not_depend_on_its_token_or_later_ones() -> None:
    """The features that choose token p see tokens 0..p-1 only: rewriting tokens p.. (even the ones the env
    would show as 'not chosen yet') leaves them unchanged, while changing token p-1 changes them."""
    space = gym.make("nas_rl/Tabular-v0").observation_space
    length, vocabulary = len(space["tokens"].nvec), int(space["tokens"].nvec[0])
    torch.manual_seed(0)
    extractor = TokenLSTMExtractor(space, hidden_size=16, embed_size=8).eval()
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocabulary, size=length)
    for position in range(length):
        features = lstm_features(extractor, space, tokens, position)
        for _ in range(4):
            future = tokens.copy()
            future[position:] = rng.integers(0, vocabulary, size=length - position)
            future[position] = (tokens[position] + 1) % vocabulary  # differs at position p at least
            assert torch.equal(lstm_features(extractor, space, future, position), features), position
        if position > 0:
            past = tokens.copy()
            past[position - 1] = (tokens[position - 1] + 1) % vocabulary
            assert not torch.allclose(lstm_features(extractor, space, past, position), features), position


def test_lstm_features_of_a_batch_equal_each_observation_alone() -> None:
    """The LSTM reads a batch only as far as its furthest position: observations at other positions in the same
    batch (as in a PPO minibatch) get the features they get alone."""
    space = gym.make("nas_rl/MnasNet-v0").observation_space
    length, vocabulary = len(space["tokens"].nvec), int(space["tokens"].nvec[0])
    torch.manual_seed(0)
    extractor = TokenLSTMExtractor(space, hidden_size=16, embed_size=8).eval()
    rng = np.random.default_rng(0)
    positions = np.asarray([0, 7, 3, 20])
    tokens = rng.integers(0, vocabulary, size=(len(positions), length))
    batch = {"tokens": tokens, "position": positions}
    with torch.no_grad():
        features = extractor(preprocess_obs(obs_as_tensor(batch, torch.device("cpu")), space))
    for row, position in enumerate(positions):
        alone = lstm_features(extractor, space, tokens[row], int(position))
        torch.testing.assert_close(features[row], alone, rtol=1e-5, atol=1e-6)


def test_token_lstm_policy_hands_its_extractor_what_sb3_would() -> None:
    """The mnasnet policy's one-call encoding of the tokens equals SB3's per-token one, so its actions, values
    and log-probabilities are MaskablePPO's MultiInputPolicy's on the same weights."""
    from sb3_contrib.common.maskable.policies import MaskableMultiInputActorCriticPolicy

    env = gym.make("nas_rl/MnasNet-v0")
    kwargs = dict(observation_space=env.observation_space, action_space=env.action_space, lr_schedule=lambda _: 1e-3,
                  net_arch=[], features_extractor_class=TokenLSTMExtractor)  # fmt: skip
    torch.manual_seed(0)
    ours = TokenLSTMPolicy(**kwargs)
    theirs = MaskableMultiInputActorCriticPolicy(**kwargs)
    theirs.load_state_dict(ours.state_dict())
    rng = np.random.default_rng(1)
    observations = {"tokens": rng.integers(0, int(env.observation_space["tokens"].nvec[0]), size=(5, 42)),
                    "position": rng.integers(0, 42, size=5)}  # fmt: skip
    observations_tensor = obs_as_tensor(observations, torch.device("cpu"))
    actions = torch.as_tensor(rng.integers(0, 2, size=5))
    with torch.no_grad():
        for mine, reference in zip(ours.evaluate_actions(observations_tensor, actions),
                                   theirs.evaluate_actions(observations_tensor, actions)):  # fmt: skip
            assert torch.equal(mine, reference)


def test_bounded_logits_keep_every_choice_possible() -> None:
    """With logit_bound C the most and least likely valid choices differ by at most exp(2C), however sure the
    network is; without it a large logit makes the other choices all but impossible."""
    env = gym.make("nas_rl/Tabular-v0")
    observation, _ = env.reset(seed=0)
    masks = torch.as_tensor(env.unwrapped.action_masks())[None]
    obs = obs_as_tensor({key: np.asarray(value)[None] for key, value in observation.items()}, torch.device("cpu"))
    for bound in (None, 2.0):
        model = SearchScaledMaskablePPO(TokenLSTMPolicy, env, policy_kwargs={"logit_bound": bound}, seed=0)
        with torch.no_grad():
            model.policy.action_net.bias[:] = -50.0
            model.policy.action_net.bias[0] = 50.0  # the network all but certain of choice 0
            distribution = model.policy.get_distribution(obs, action_masks=masks.numpy())
        probs = distribution.distribution.probs[masks]
        ratio = float(probs.max() / probs.min())
        if bound is None:
            assert ratio > 1e15
        else:
            assert ratio == pytest.approx(np.exp(2 * bound), rel=0.05)
            assert model.policy._get_constructor_parameters()["logit_bound"] == bound  # saved with the policy


def test_bounded_logits_refuse_a_bound_that_is_not_a_positive_number() -> None:
    with pytest.raises(ConfigError, match=r"^logit_bound=0 is not accepted: use a number > 0, or null"):
        SearchScaledMaskablePPO(TokenLSTMPolicy, gym.make("nas_rl/Tabular-v0"), policy_kwargs={"logit_bound": 0})
