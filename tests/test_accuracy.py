"""ProxyTraining: determinism, divergence, proxy resolution and width, checkpoints and distillation, configs."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from nas_rl.accuracy.checkpoint import load_checkpoint, save_checkpoint
from nas_rl.accuracy.proxy import ProxyTraining, scale_width
from nas_rl.arch import ArchSpec
from nas_rl.config import build
from nas_rl.data.datasets import SplitDataset, load_digits
from nas_rl.errors import ConfigError, EvaluationFailed
from nas_rl.evaluation.evaluator import Evaluator
from nas_rl.evaluation.reward import MnasReward
from nas_rl.evaluation.store import EvaluationStore
from tests.helpers.doubles import ChannelLatencyDouble
from tests.helpers.tiny import tiny_space

#: Fast settings: a sliver of an epoch, one thread (the machine's cores are shared).
FAST = {"epochs": 0.2, "batch_size": 32, "lr": 0.01, "optimizer": "adam", "threads": 1}
TEACHER_ARCH = "ds_r1_k3_s1_c8:ir_r1_k3_s2_e3_c16"


@cache
def digits(resolution: int = 16, max_samples: int = 300) -> SplitDataset:
    return load_digits(resolution=resolution, max_samples=max_samples)


def tiny_arch(seed: int = 0) -> ArchSpec:
    space = tiny_space()
    return space.sample_arch(np.random.default_rng(seed))


def small_arch(classes: int = 10, channels: int = 1, text: str = TEACHER_ARCH) -> ArchSpec:
    return ArchSpec.from_string(text, stem_channels=8, head_channels=16, num_classes=classes, in_channels=channels)


def test_same_seed_same_accuracy_and_weights() -> None:
    arch = tiny_arch()
    model_a, accuracy_a = ProxyTraining(digits(), seed=3, **FAST).train(arch)
    model_b, accuracy_b = ProxyTraining(digits(), seed=3, **FAST).train(arch)
    assert accuracy_a == accuracy_b
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    model_c, _ = ProxyTraining(digits(), seed=4, **FAST).train(arch)
    assert not torch.equal(model_c.classifier.weight, model_a.classifier.weight)


@pytest.mark.slow  # two torch threads on cores other tests share: seconds of waiting, not of work
def test_same_seed_same_accuracy_with_two_threads() -> None:
    """Two torch threads (threads=2; the default is 1) give the same model twice."""
    settings = {**FAST, "epochs": 0.5, "threads": 2}
    arch = tiny_arch(1)
    model_a, accuracy_a = ProxyTraining(digits(), seed=5, **settings).train(arch)
    model_b, accuracy_b = ProxyTraining(digits(), seed=5, **settings).train(arch)
    assert accuracy_a == accuracy_b
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("seed", [0, 1])
def test_training_learns_digits_well_above_chance_and_one_step_does_not(seed: int) -> None:
    """Ten balanced classes: chance is 0.1. Three epochs (75 Adam steps at 8x8, a fraction of a second) reach
    about 0.8; the same network after a single step is still near chance, so the first bound can fail."""
    data = digits(resolution=8, max_samples=1000)
    assert np.bincount(data.y_val).max() <= 0.11 * len(data.y_val)  # no class a guesser could ride above 0.11
    settings = {**FAST, "seed": seed}
    trained = ProxyTraining(data, **{**settings, "epochs": 3.0}).accuracy(small_arch())
    one_step = ProxyTraining(data, **{**settings, "epochs": 1e-3}).accuracy(small_arch())
    assert trained > 0.6, trained
    assert one_step < 0.25, one_step


def test_nan_loss_stops_training_early_and_fails_the_evaluation() -> None:
    # A whole epoch (7 steps): the first update blows the weights up, so a later step's loss is NaN and the loss
    # check stops training there (the validation pass after training fails with another message).
    diverging = {**FAST, "epochs": 1.0, "lr": 1e30, "optimizer": "sgd"}
    with pytest.raises(EvaluationFailed, match=r"diverged: loss is (nan|inf|-inf) at step [2-7]/7$"):
        ProxyTraining(digits(), **diverging).accuracy(tiny_arch())
    store = EvaluationStore(":memory:")
    trainer = ProxyTraining(digits(), **diverging)
    outcome = Evaluator(trainer, ChannelLatencyDouble(), MnasReward(1.0), store).evaluate(tiny_arch())
    assert outcome.evaluation.status == "failed" and outcome.reward == 0.0
    assert "loss is" in outcome.evaluation.error


def test_proxy_resolution_and_width_train_a_cheaper_copy() -> None:
    arch = tiny_arch()
    half = scale_width(arch, 0.5)
    assert half.stem_channels == 4 and half.head_channels == 16
    assert [s.out_channels for s in half.stages] == [max(1, round(s.out_channels / 2)) for s in arch.stages]
    assert [(s.op, s.kernel, s.repeats) for s in half.stages] == [(s.op, s.kernel, s.repeats) for s in arch.stages]
    assert scale_width(arch, 1.0) is arch
    trainer = ProxyTraining(digits(), resolution=8, width_multiplier=0.5, **FAST)
    model, accuracy = trainer.train(arch)
    assert 0.0 <= accuracy <= 1.0 and model.head.conv.out_channels == 16
    assert trainer.tensors()["x_val"].shape[-2:] == (8, 8)
    assert trainer.fingerprint()["proxy_resolution"] == 8 and trainer.fingerprint()["width_multiplier"] == 0.5


def test_fingerprint_of_the_original_settings_is_unchanged() -> None:
    keys = {"kind", "dataset", "resolution", "val_fraction", "seed", "epochs", "train_fraction", "batch_size", "lr",
            "optimizer", "weight_decay", "label_smoothing", "max_samples"}  # fmt: skip
    assert set(ProxyTraining(digits(), resolution=16, **FAST).fingerprint()) == keys


@pytest.mark.parametrize(
    ("settings", "key"),
    [({"resolution": 0}, "resolution=0"), ({"width_multiplier": 0}, "width_multiplier=0"),
     ({"distill_weight": 1.5}, "distill_weight=1.5"), ({"distill_temperature": 0}, "distill_temperature=0")],
)  # fmt: skip
def test_bad_settings_name_the_key(settings: dict, key: str) -> None:
    # The constructor names its parameter; nas_rl.config.build puts the config path (accuracy.) in front.
    with pytest.raises(ConfigError, match=rf"^{key} is not accepted: use "):
        ProxyTraining(digits(), **settings)


def test_checkpoint_round_trip_and_bad_files(tmp_path: Path) -> None:
    arch = small_arch()
    torch.manual_seed(0)
    from nas_rl.models.torch_builder import build_torch_model

    model = build_torch_model(arch).eval()
    path = save_checkpoint(tmp_path / "m.pt", arch, model, {"accuracy": 0.5})
    loaded = load_checkpoint(path)
    assert loaded.arch == arch and loaded.metadata == {"accuracy": 0.5}
    image = torch.randn(2, 1, 16, 16)
    assert torch.equal(loaded.build_model()(image), model(image))
    with pytest.raises(ConfigError, match="accuracy.teacher=.*nowhere.pt: no such file"):
        load_checkpoint(tmp_path / "nowhere.pt", key="accuracy.teacher")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(ConfigError, match="junk.pt: not readable as a nas-rl checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "plain.pt")
    with pytest.raises(ConfigError, match="plain.pt: not a nas-rl checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    payload = torch.load(path, weights_only=True)
    payload["arch"] = "ds_r1_k3_s1_c8:ir_r1_k3_s2_e3_c24"  # weights of another architecture
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="other.pt: weights do not match its architecture"):
        load_checkpoint(tmp_path / "other.pt")


def test_distillation_from_a_tiny_teacher(tmp_path: Path) -> None:
    teacher_arch = small_arch()
    teacher, _ = ProxyTraining(digits(), **{**FAST, "epochs": 1.0}).train(teacher_arch)
    path = save_checkpoint(tmp_path / "teacher.pt", teacher_arch, teacher)
    student = tiny_arch()
    plain = ProxyTraining(digits(), **FAST)
    distilled = ProxyTraining(digits(), teacher=str(path), distill_weight=0.9, distill_temperature=2.0, **FAST)
    assert 0.0 <= distilled.accuracy(student) <= 1.0
    logits = distilled.tensors()["teacher_logits"]
    assert logits.shape == (len(digits().y_train), 10)
    assert not torch.equal(distilled.train(student)[0].classifier.weight, plain.train(student)[0].classifier.weight)
    assert distilled.fingerprint()["teacher"]["arch"] == TEACHER_ARCH
    assert "teacher" not in plain.fingerprint()


def test_teacher_of_the_wrong_task_is_refused(tmp_path: Path) -> None:
    from nas_rl.models.torch_builder import build_torch_model

    for name, arch, seen in (("classes", small_arch(classes=7), "predicts 7 classes"),
                             ("channels", small_arch(channels=3), "takes 3 channels")):  # fmt: skip
        path = save_checkpoint(tmp_path / f"{name}.pt", arch, build_torch_model(arch))
        with pytest.raises(ConfigError, match=f"accuracy.teacher=.*{name}.pt: the teacher .*{seen}"):
            ProxyTraining(digits(), teacher=str(path))
    arch = small_arch()
    payload = torch.load(save_checkpoint(tmp_path / "t.pt", arch, build_torch_model(arch)), weights_only=True)
    payload["arch"] = "ds_r1_k3_s1_c8:ir_r1_k3_s2_e3_c24"  # weights of another architecture
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="accuracy.teacher=.*other.pt: weights do not match its architecture"):
        ProxyTraining(digits(), teacher=str(tmp_path / "other.pt"))


def test_proxy_config_builds_with_its_new_keys() -> None:
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=["accuracy=proxy", "accuracy.width_multiplier=0.5", "accuracy.resolution=16"])
    trainer = build(cfg.accuracy, "accuracy")
    assert isinstance(trainer, ProxyTraining) and trainer.width_multiplier == 0.5 and trainer.teacher_path is None
