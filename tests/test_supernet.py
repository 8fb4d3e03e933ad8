"""The weight-sharing supernet: subnets are slices, training and resume, accuracy=supernet, a search with it."""

from __future__ import annotations

import csv
import fcntl
import json
import logging
import os
import shutil
import threading
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from nas_rl.config import build
from nas_rl.data.datasets import SplitDataset, load_digits
from nas_rl.errors import ConfigError
from nas_rl.models.torch_builder import Network, build_torch_model, stage_layers
from nas_rl.spaces.mnasnet import BLOCK_DECISIONS, MnasNetSpace
from nas_rl.supernet.checkpoint import CARD_NAME, CHECKPOINT_NAME, sha256
from nas_rl.supernet.estimator import SupernetAccuracy
from nas_rl.supernet.network import SuperNet
from nas_rl.supernet.training import Recipe, SupernetTrainer
from nas_rl.tools.train_supernet import run
from tests.helpers.cli import run_cli
from tests.helpers.supernets import DATA_OVERRIDES, MAX_SAMPLES, SPACE_OVERRIDES, train_config
from tests.helpers.tiny import tiny_space

torch.set_num_threads(1)  # the machine's cores are shared



@cache
def digits(max_samples: int = MAX_SAMPLES, val_fraction: float = 0.2) -> SplitDataset:
    return load_digits(resolution=16, max_samples=max_samples, val_fraction=val_fraction)


def decisions_space() -> MnasNetSpace:
    """A small space in which every choice of every decision decodes to another network (distinct widths
    for every multiplier, distinct layer counts for every offset, residual layers for the skip decision)."""
    return MnasNetSpace(resolution=16, num_classes=10, in_channels=1, stem_channels=8, head_channels=32,
                        base_widths=(32, 48), base_repeats=(2, 2), strides=(1, 2))  # fmt: skip


def randomized(supernet: SuperNet) -> SuperNet:
    """Random BatchNorm statistics and affine weights and SE biases, so a wrong slice shows in the outputs."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in supernet.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.normal_(generator=generator)
                module.bias.normal_(generator=generator)
            elif isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                module.bias.normal_(generator=generator)
    return supernet.eval()


def assert_one_line(error: pytest.ExceptionInfo, *named: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for text in named:
        assert text in message, (text, message)


# --- slicing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("space_factory", [tiny_space, decisions_space])
def test_subnet_forward_equals_the_standalone_network_with_sliced_weights(space_factory: Any) -> None:
    space = space_factory()
    torch.manual_seed(0)
    supernet = randomized(SuperNet(space))
    images = torch.randn(3, 1, 16, 16)
    archs = [supernet.largest_arch(), supernet.smallest_arch(), *space.sample_archs(seed=1, count=8)]
    assert len(set(archs)) == len(archs)
    for arch in archs:
        standalone = build_torch_model(arch)
        standalone.load_state_dict(supernet.subnet_state_dict(arch))  # strict: the same names and shapes
        with torch.no_grad():
            expected = standalone.eval()(images)
            assert torch.allclose(supernet(images, arch), expected, atol=1e-5), arch.to_string()
            extracted = supernet.extract(arch)
            assert isinstance(extracted, Network) and extracted.arch == arch
            assert torch.allclose(extracted(images), expected, atol=1e-5), arch.to_string()


def test_extracted_subnet_is_a_copy() -> None:
    supernet = SuperNet(tiny_space())
    arch = supernet.largest_arch()
    model = supernet.extract(arch)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.stem.bn.running_mean.fill_(7.0)
    assert not torch.equal(supernet.classifier.weight, model.classifier.weight)
    assert not torch.equal(supernet.stem.bn.running_mean, model.stem.bn.running_mean)


def test_every_decision_changes_the_subnet() -> None:
    """Changing any decision changes the logits and the parameter count; skip changes the logits exactly where
    a layer of the block has matching shapes (and never the parameters)."""
    space = decisions_space()
    torch.manual_seed(0)
    supernet = randomized(SuperNet(space))
    images = torch.randn(2, 1, 16, 16)

    def params(arch: Any) -> int:
        return sum(p.numel() for p in build_torch_model(arch).parameters())

    checked: set[str] = set()
    skips_seen = 0
    for base_tokens in (
        supernet.tokens("largest"),
        supernet.tokens("smallest"),
        space.sample(np.random.default_rng(3)),
    ):
        base = space.decode(base_tokens)
        with torch.no_grad():
            base_logits = supernet(images, base)
        for position, decision in enumerate(space.decisions):
            for choice in range(decision.num_choices):
                if choice == base_tokens[position]:
                    continue
                tokens = list(base_tokens)
                tokens[position] = choice
                arch = space.decode(tokens)
                assert arch != base, decision.name
                with torch.no_grad():
                    changed = not torch.allclose(supernet(images, arch), base_logits)
                if decision.name.endswith(".skip"):  # an identity add only where a layer's shapes match
                    block = position // len(BLOCK_DECISIONS)
                    with_skip = arch if arch.stages[block].skip else base
                    assert changed == any(layer.has_residual for layer in stage_layers(with_skip)[block])
                    assert params(arch) == params(base)
                else:
                    assert changed and params(arch) != params(base), (decision.name, arch.to_string())
                    checked.add(decision.name.split(".")[-1])
        skips_seen += 1 if any(layer.has_residual for layers in stage_layers(base) for layer in layers) else 0
    assert checked == set(BLOCK_DECISIONS) - {"skip"} and skips_seen >= 1


def test_mbconv3_is_the_first_channels_of_mbconv6_and_kernel3_the_centre_of_kernel5() -> None:
    space = decisions_space()
    supernet = SuperNet(space)
    tokens = list(supernet.tokens("largest"))  # ir e6 k5 in every block
    e6 = supernet.subnet_state_dict(space.decode(tokens))
    tokens[0], tokens[1] = 2, 0  # block 1: ir e3, kernel 3
    e3k3 = supernet.subnet_state_dict(space.decode(tokens))
    name = "stages.0.1.dw.conv.weight"  # the depthwise conv of block 1's second layer
    assert e6[name].shape[0] == 2 * e3k3[name].shape[0] and e3k3[name].shape[-1] == 3
    assert torch.equal(e3k3[name], e6[name][: e3k3[name].shape[0], :, 1:4, 1:4])


def test_supernet_refuses_an_architecture_of_another_space() -> None:
    supernet = SuperNet(tiny_space())
    foreign = decisions_space().sample_arch(np.random.default_rng(0))
    with pytest.raises(ValueError, match="stages"):
        supernet(torch.zeros(1, 1, 16, 16), foreign)


# --- recipe -----------------------------------------------------------------------------------------------


def test_progressive_shrinking_samples_only_the_phase_decisions() -> None:
    phases = [{"from_epoch": 1, "elastic": ["kernel"]}, {"from_epoch": 3, "elastic": ["kernel", "layers", "width"]}]
    recipe = Recipe(epochs=4, n_random=6, phases=phases, threads=1)
    supernet = SuperNet(tiny_space())
    trainer = SupernetTrainer(supernet, digits(), recipe)
    largest = supernet.tokens("largest")
    names = [d.name.split(".")[-1] for d in supernet.space.decisions]
    for epoch, elastic in ((1, {"kernel"}), (2, {"kernel"}), (3, {"kernel", "layers", "width"})):
        archs = trainer.subnets(epoch)
        assert archs[0] == supernet.largest_arch() and len(archs) == 8
        varied = {names[i] for arch in archs for i, t in enumerate(supernet.space.encode(arch)) if t != largest[i]}
        assert varied == elastic, (epoch, varied)
    assert len(SupernetTrainer(supernet, digits(), Recipe(phases=[{"from_epoch": 1, "elastic": []}])).subnets(1)) == 1


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("supernet.epochs=0", "supernet.epochs=0 is not accepted: use an integer >= 1"),
        ("supernet.optimizer=rmsprop", "supernet.optimizer='rmsprop' is not accepted: use one of sgd, adam"),
        ("supernet.distill_weight=2", "supernet.distill_weight=2 is not accepted: use a number in [0, 1]"),
        ("supernet.lr=abc", "supernet.lr='abc' is not accepted: use a number"),
        ("supernet.phases=[{from_epoch:2,elastic:[kernel]}]", "supernet.phases[0]={'from_epoch': 2"),
        ("supernet.phases=[{from_epoch:1,elastic:[kernel]},{from_epoch:2,elastic:[op]}]", "supernet.phases[1]="),
        ("supernet.phases=[{from_epoch:1,elastic:[depth]}]", "decisions from op, kernel, se, skip, width, layers"),
    ],
)
def test_bad_recipe_settings_are_one_line(override: str, named: str) -> None:
    with pytest.raises(ConfigError) as error:
        build(train_config(override).supernet, "supernet")
    assert_one_line(error, named)


# --- training and resume ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A tiny supernet trained on the real path: 4 epochs of 10 steps on 320 digits."""
    out = tmp_path_factory.mktemp("supernet")
    card = run(train_config("supernet.epochs=4", "supernet.optimizer=adam", "supernet.lr=0.01"), out)
    return out, card


def test_tiny_supernet_trains_and_its_largest_subnet_beats_chance(trained: tuple[Path, dict[str, Any]]) -> None:
    out, card = trained
    assert card["epochs_done"] == 4 and card["resumed_from_epoch"] == 0
    print(card["val_accuracy"], card["train_seconds"])
    assert card["val_accuracy"]["largest"] > 0.2, card["val_accuracy"]  # 10 classes: chance is 0.1
    assert json.loads((out / CARD_NAME).read_text())["sha256"] == sha256(out / CHECKPOINT_NAME) == card["sha256"]
    assert card["space"] == tiny_space().fingerprint() and card["dataset"] == digits().fingerprint()
    assert card["recipe"]["optimizer"] == "adam" and "epochs" not in card["recipe"]


def test_resume_after_an_interruption_loses_no_epoch_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    settings = ("supernet.epochs=2", "dataset.max_samples=200", "supernet.n_random=1")
    straight = run(train_config(*settings), tmp_path / "straight")

    class Killed(Exception):
        pass

    def kill_after_first_epoch(epoch: int, supernet: SuperNet) -> None:
        raise Killed

    with pytest.raises(Killed):
        run(train_config(*settings), tmp_path / "killed", on_epoch=kill_after_first_epoch)
    assert json.loads((tmp_path / "killed" / CARD_NAME).read_text())["epochs_done"] == 1
    resumed = run(train_config(*settings), tmp_path / "killed")
    assert resumed["resumed_from_epoch"] == 1 and resumed["epochs_done"] == 2
    a = torch.load(tmp_path / "straight" / CHECKPOINT_NAME, weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "killed" / CHECKPOINT_NAME, weights_only=True)["state_dict"]
    assert all(torch.equal(a[name], b[name]) for name in a)  # the same batches, subnets and optimizer steps
    assert resumed["val_accuracy"] == straight["val_accuracy"]


def test_more_epochs_extend_a_finished_training_and_other_settings_are_refused(tmp_path: Path) -> None:
    settings = ("dataset.max_samples=200", "supernet.n_random=0")
    first = run(train_config("supernet.epochs=1", *settings), tmp_path)
    again = run(train_config("supernet.epochs=1", *settings), tmp_path)  # nothing left to train
    assert again["resumed_from_epoch"] == 1 and again["sha256"] == first["sha256"]
    extended = run(train_config("supernet.epochs=2", *settings), tmp_path)
    assert extended["resumed_from_epoch"] == 1 and extended["epochs_done"] == 2
    with pytest.raises(ConfigError) as error:
        run(train_config("supernet.epochs=3", "dataset.max_samples=200", "supernet.n_random=2"), tmp_path)
    assert_one_line(error, f"out={tmp_path} holds a supernet of other settings", "n_random=0", "n_random=2")
    with pytest.raises(ConfigError) as error:
        run(train_config("supernet.epochs=3", *settings, "search_space.head_channels=16"), tmp_path)
    assert_one_line(error, "search space has head_channels=32", "this run's has head_channels=16")


def test_a_diverging_training_stops_naming_the_epoch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        run(
            train_config("supernet.epochs=2", "supernet.optimizer=sgd", "supernet.lr=1e6", "dataset.max_samples=200"),
            tmp_path / "a",
        )
    assert_one_line(error, "supernet training diverged: loss is", "at epoch 1,", "supernet.lr=1000000.0",
                    "no checkpoint written")  # fmt: skip
    assert not (tmp_path / "a" / CHECKPOINT_NAME).exists()


def test_a_divergence_after_a_good_epoch_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    def blow_up(epoch: int, supernet: SuperNet) -> None:  # as a too-large step would, after epoch 1's files
        with torch.no_grad():
            supernet.classifier.weight.fill_(float("nan"))

    with pytest.raises(ConfigError) as error:
        run(train_config("supernet.epochs=3", "dataset.max_samples=200"), tmp_path, on_epoch=blow_up)
    assert_one_line(
        error,
        "loss is nan at epoch 2, step 1/",
        f"kept the last good checkpoint {tmp_path / CHECKPOINT_NAME} (epoch 1)",
    )
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert state["epoch"] == 1 and torch.isfinite(state["state_dict"]["classifier.weight"]).all()
    assert json.loads((tmp_path / CARD_NAME).read_text())["sha256"] == sha256(tmp_path / CHECKPOINT_NAME)


# --- accuracy=supernet ------------------------------------------------------------------------------------


def estimator(
    path: Path, space: MnasNetSpace | None = None, data: SplitDataset | None = None, **settings: Any
) -> SupernetAccuracy:
    settings = {"threads": 1, "calibration_images": 64, "batch_size": 32, **settings}
    return SupernetAccuracy(str(path), space or tiny_space(), digits() if data is None else data, **settings)


def test_supernet_accuracy_is_deterministic_and_is_the_subnets(trained: tuple[Path, dict[str, Any]]) -> None:
    out, card = trained
    space = tiny_space()
    archs = [space.parse(card["archs"]["largest"]), *space.sample_archs(seed=5, count=3)]
    first = estimator(out)
    values = [first.accuracy(arch) for arch in archs]
    assert all(0.0 <= v <= 1.0 for v in values) and len(set(values)) > 1  # subnets differ
    assert [first.accuracy(arch) for arch in archs] == values
    assert [estimator(out / CHECKPOINT_NAME).accuracy(arch) for arch in archs] == values  # a fresh one; the file
    model = first.subnet(archs[1])
    assert isinstance(model, Network) and not model.training
    data = first.tensors()
    with torch.no_grad():
        predicted = model(data["x_val"]).argmax(1)
    assert abs(float((predicted == data["y_val"]).float().mean()) - values[1]) < 1e-6
    assert first.fingerprint()["checkpoint_sha256"] == card["sha256"]
    assert estimator(out, calibration_images=32).fingerprint() != first.fingerprint()


def test_train_returns_the_subnet_and_fine_tunes_on_request(trained: tuple[Path, dict[str, Any]]) -> None:
    out, _ = trained
    arch = tiny_space().sample_arch(np.random.default_rng(7))
    plain = estimator(out)
    model, accuracy = plain.train(arch)
    assert accuracy == plain.accuracy(arch) and isinstance(model, Network)
    tuned_model, tuned = estimator(out, finetune_epochs=1).train(arch)
    assert 0.0 <= tuned <= 1.0
    assert not torch.equal(tuned_model.classifier.weight, model.classifier.weight)
    assert estimator(out, finetune_epochs=1).fingerprint() == plain.fingerprint()  # epochs fine-tune only the export


def test_a_few_finetuning_steps_before_scoring_are_deterministic_and_leave_the_supernet_as_it_was(
    trained: tuple[Path, dict[str, Any]],
) -> None:
    out, _ = trained
    archs = tiny_space().sample_archs(seed=11, count=3)
    plain, tuned = estimator(out), estimator(out, finetune_steps=5, finetune_lr=0.01)
    before = {name: tensor.clone() for name, tensor in tuned.supernet().state_dict().items()}
    scores = [tuned.accuracy(arch) for arch in archs]
    assert all(0.0 <= v <= 1.0 for v in scores)
    assert scores != [plain.accuracy(arch) for arch in archs]  # it trains
    assert [estimator(out, finetune_steps=5, finetune_lr=0.01).accuracy(arch) for arch in archs] == scores
    after = tuned.supernet().state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)  # each subnet trains a copy
    model = tuned.subnet(archs[0])  # what an export starts from: the network scored
    data = tuned.tensors()
    with torch.no_grad():
        predicted = model(data["x_val"]).argmax(1)
    assert abs(float((predicted == data["y_val"]).float().mean()) - scores[0]) < 1e-6
    assert tuned.fingerprint()["finetune"] == {"steps": 5, "lr": 0.01, "seed": 0, "from_stage": 0}
    assert "finetune" not in plain.fingerprint()  # stores of scores as sliced keep their keys
    with pytest.raises(ConfigError) as error:
        estimator(out, finetune_steps=-1)
    assert_one_line(error, "finetune_steps", "-1", "an integer >= 0")


def test_finetuning_from_a_stage_keeps_the_stem_and_earlier_stages_as_inherited(
    trained: tuple[Path, dict[str, Any]],
) -> None:
    out, _ = trained
    arch = tiny_space().sample_arch(np.random.default_rng(3))
    stages = len(tiny_space().base_widths)
    frozen = estimator(out, finetune_steps=3, finetune_lr=0.01, finetune_from_stage=1)
    sliced, tuned = frozen.supernet().extract(arch), frozen.subnet(arch)
    weights = dict(sliced.named_parameters())

    def kept(prefix: str) -> bool:
        return all(torch.equal(p, weights[name]) for name, p in tuned.named_parameters() if name.startswith(prefix))

    assert kept("stem.") and kept("stages.0.")
    assert not kept("stages.1.") and not kept("classifier.")  # the later layers train
    assert all(p.requires_grad for p in tuned.parameters())  # an export still fine-tunes every layer
    everything = estimator(out, finetune_steps=3, finetune_lr=0.01)
    assert frozen.fingerprint()["finetune"]["from_stage"] == 1 and frozen.fingerprint() != everything.fingerprint()
    assert 0.0 <= frozen.accuracy(arch) <= 1.0
    assert estimator(out, finetune_steps=3, finetune_lr=0.01, finetune_from_stage=1).accuracy(arch) == frozen.accuracy(arch)
    with pytest.raises(ConfigError) as error:
        estimator(out, finetune_from_stage=stages + 1)
    assert_one_line(error, "finetune_from_stage", str(stages + 1), f"an integer from 0 to {stages}")


def test_a_validation_subset_scores_top1_on_those_images_only(trained: tuple[Path, dict[str, Any]]) -> None:
    """validation_subset: the same seeded images every time, a key of the fingerprint, at most the split."""
    out, _ = trained
    archs = tiny_space().sample_archs(seed=13, count=3)
    subset = estimator(out, finetune_steps=2, finetune_lr=0.01, validation_subset=40)
    data = subset.tensors()
    assert len(data["y_scored"]) == 40 and len(data["y_val"]) > 40
    rows = [int(np.flatnonzero((data["x_val"] == image).flatten(1).all(1))[0]) for image in data["x_scored"]]
    assert len(set(rows)) == 40 and torch.equal(data["y_val"][rows], data["y_scored"])  # images of the split
    scores = [subset.accuracy(arch) for arch in archs]
    for arch, score in zip(archs, scores):
        model = subset.subnet(arch)  # the network scored
        with torch.no_grad():
            predicted = model(data["x_scored"]).argmax(1)
        assert abs(float((predicted == data["y_scored"]).float().mean()) - score) < 1e-6
    again = estimator(out, finetune_steps=2, finetune_lr=0.01, validation_subset=40)
    assert [again.accuracy(arch) for arch in archs] == scores
    assert torch.equal(again.tensors()["x_scored"], data["x_scored"])
    assert subset.fingerprint()["validation_subset"] == {"images": 40, "seed": 0}
    assert "validation_subset" not in estimator(out).fingerprint()  # stores scored on the whole split keep their keys
    assert estimator(out, validation_subset=40, seed=1).tensors()["y_scored"].tolist() != data["y_scored"].tolist()
    size = len(data["y_val"])
    with pytest.raises(ConfigError) as error:
        estimator(out, validation_subset=size + 1)
    assert_one_line(error, "validation_subset", str(size + 1), f"0 (all) to {size}")
    with pytest.raises(ConfigError) as error:
        estimator(out, validation_subset=-1)
    assert_one_line(error, "validation_subset", "-1", "an integer >= 0")


def test_supernet_of_another_space_or_dataset_is_refused_naming_both(trained: tuple[Path, dict[str, Any]]) -> None:
    out, _ = trained
    settings = {key: value for key, value in tiny_space().fingerprint().items() if key != "space"}
    wider = MnasNetSpace(**{**settings, "head_channels": 64})
    with pytest.raises(ConfigError) as error:
        estimator(out, space=wider)
    assert_one_line(error, f"accuracy.checkpoint={out / CHECKPOINT_NAME} is refused", "search space has head_channels=32",
                    "this run's has head_channels=64")  # fmt: skip
    with pytest.raises(ConfigError) as error:
        estimator(out, data=digits(val_fraction=0.3))
    assert_one_line(error, "dataset has val_fraction=0.2", "this run's has val_fraction=0.3")


def test_missing_or_corrupt_checkpoints_are_one_line_naming_the_file(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    out, _ = trained
    with pytest.raises(ConfigError) as error:
        estimator(tmp_path / "nowhere")
    assert_one_line(
        error,
        str(tmp_path / "nowhere" / CHECKPOINT_NAME),
        "train one with: nas-rl-supernet search_space=mnasnet dataset=digits",
    )
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = (copy / CHECKPOINT_NAME).read_bytes()
    (copy / CHECKPOINT_NAME).write_bytes(data[: len(data) // 2])  # cut short
    with pytest.raises(ConfigError) as error:
        estimator(copy)
    assert_one_line(error, str(copy / CHECKPOINT_NAME), "does not match its card", "corrupt")
    card = json.loads((copy / CARD_NAME).read_text())  # a card rewritten for the broken file: caught on loading
    (copy / CARD_NAME).write_text(json.dumps({**card, "sha256": sha256(copy / CHECKPOINT_NAME)}))
    with pytest.raises(ConfigError) as error:
        estimator(copy).accuracy(tiny_space().sample_arch(np.random.default_rng(0)))
    assert_one_line(error, f"accuracy.checkpoint={copy / CHECKPOINT_NAME}: not readable as a supernet checkpoint")
    (copy / CARD_NAME).write_text("{")
    with pytest.raises(ConfigError) as error:
        estimator(copy)
    assert_one_line(error, str(copy / CARD_NAME), "not a readable supernet card")


# --- a search with accuracy=supernet ----------------------------------------------------------------------


@pytest.mark.slow
def test_search_with_supernet_accuracy_end_to_end(trained: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """The real ``nas-rl`` command: the tiny space, accuracy=supernet, latency=flops, export of the best."""
    out, _ = trained
    run_dir = tmp_path / "run"
    args = [*SPACE_OVERRIDES, *DATA_OVERRIDES, "accuracy=supernet", f"accuracy.checkpoint={out}", "accuracy.threads=1",
            "accuracy.calibration_images=64", "accuracy.batch_size=32", "latency=flops", "latency.ms_per_mac=1e-6",
            "search.budget=3", f"hydra.run.dir={run_dir}"]  # fmt: skip
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(run_dir / "evaluations.csv")))
    assert len(rows) == 3 and all(row["status"] == "ok" for row in rows)
    scorer = estimator(out)
    space = tiny_space()
    for row in rows:  # the search's accuracies are the supernet's, reproduced in this process
        assert float(row["accuracy"]) == pytest.approx(scorer.accuracy(space.parse(row["arch"])), abs=1e-9)
    best = json.loads((run_dir / "best.json").read_text())
    assert best["export"]["retrained_accuracy"] == best["best"]["accuracy"]
    assert "error" not in best["export"], best["export"]
    for name in ("best.pt", "best.onnx", "best.tflite"):
        assert (run_dir / name).is_file(), name


SEARCH_OVERRIDES = [*SPACE_OVERRIDES, *DATA_OVERRIDES, "accuracy=supernet", "latency=flops", "latency.ms_per_mac=1e-6"]


def test_accuracy_supernet_config_builds(trained: tuple[Path, dict[str, Any]]) -> None:
    out, _ = trained
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=[*SEARCH_OVERRIDES, f"accuracy.checkpoint={out}", "accuracy.threads=1"])
    built = build(cfg.accuracy, "accuracy")
    assert isinstance(built, SupernetAccuracy)
    assert built.fingerprint()["checkpoint_sha256"] == sha256(out / CHECKPOINT_NAME)
    assert built.fingerprint()["calibration"] == {"images": 256, "seed": 0, "batch_size": 64}


@pytest.mark.slow
def test_search_without_a_trained_supernet_is_one_line_saying_how_to_train_one(tmp_path: Path) -> None:
    result = run_cli([*SEARCH_OVERRIDES, f"accuracy.checkpoint={tmp_path / 'none'}"], tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nas-rl-supernet search_space=mnasnet" in lines[0] and str(tmp_path / "none") in lines[0]
    assert not (tmp_path / "outputs").exists()


def test_a_missing_supernet_is_trained_on_first_use_when_a_recipe_is_given(tmp_path: Path) -> None:
    """What a registered one-shot env does: gym.make is instant, the first evaluation trains and caches the
    supernet, and later estimators (later processes) reuse it without training."""
    folder = tmp_path / "cache" / "supernet"
    recipe = Recipe(epochs=1, batch_size=32, threads=1, progress=False, calibration_images=64)
    lazy = SupernetAccuracy(str(folder), tiny_space(), digits(), calibration_images=64, threads=1, train_missing=recipe)
    assert not folder.exists()  # nothing is trained before it is needed
    arch = tiny_space().sample_arch(np.random.default_rng(4))
    first = lazy.accuracy(arch)
    assert (folder / CHECKPOINT_NAME).is_file() and json.loads((folder / CARD_NAME).read_text())["epochs_done"] == 1
    written = (folder / CHECKPOINT_NAME).stat().st_mtime_ns
    again = SupernetAccuracy(str(folder), tiny_space(), digits(), calibration_images=64, threads=1,
                             train_missing=recipe)  # fmt: skip
    assert again.accuracy(arch) == first and (folder / CHECKPOINT_NAME).stat().st_mtime_ns == written
    assert again.fingerprint() == lazy.fingerprint()
    with pytest.raises(ConfigError, match="no supernet there"):
        SupernetAccuracy(str(tmp_path / "elsewhere"), tiny_space(), digits())  # without a recipe: one line at once


def test_a_first_use_killed_mid_training_is_continued_and_a_second_first_use_waits_for_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A first use killed after epoch 1 of 2 leaves a 1-epoch checkpoint: the next first use continues it rather
    than scoring with it. One process trains at a time: a use that finds the folder's lock held waits for it."""
    folder = tmp_path / "supernet"
    recipe = {"batch_size": 32, "threads": 1, "progress": False, "calibration_images": 64}
    killed = SupernetAccuracy(str(folder), tiny_space(), digits(), calibration_images=64, threads=1,
                              train_missing=Recipe(epochs=1, **recipe))  # fmt: skip
    assert killed.card["epochs_done"] == 1  # what a first use of a 2-epoch recipe killed in epoch 2 leaves
    other = os.open(folder / "supernet.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(other, fcntl.LOCK_EX)  # another process training there
    threading.Timer(1.0, os.close, [other]).start()
    with caplog.at_level(logging.WARNING, logger="nas_rl.supernet.estimator"):
        resumed = SupernetAccuracy(str(folder), tiny_space(), digits(), calibration_images=64, threads=1,
                                   train_missing=Recipe(epochs=2, **recipe))  # fmt: skip
        card = resumed.card
    assert "waiting for it" in caplog.text
    assert card["epochs_done"] == 2 and resumed.digest != killed.digest
