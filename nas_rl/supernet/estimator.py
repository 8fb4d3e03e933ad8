"""``accuracy=supernet``: an architecture's accuracy as a slice of a trained weight-sharing supernet.

An architecture is scored in a fraction of a second instead of a proxy training: its weights are sliced out
of the supernet trained by ``nas-rl-supernet`` (:mod:`nas_rl.tools.train_supernet`) into the plain network
of :func:`~nas_rl.models.torch_builder.build_torch_model`, its BatchNorm statistics are recomputed on a
fixed, seeded subset of training images, and its top-1 accuracy is taken on the validation split. The same
architecture always gets the same accuracy (for a given number of threads).

``finetune_steps`` (default 0) first trains the sliced network for a few Adam steps on fixed, seeded training
batches, the same for every architecture. On the default space a subnet as sliced scores near chance and
ranks like noise, while ten steps from its inherited weights rank architectures as well as a second
stand-alone training does (README, "How good the supernet is").
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas_rl._util import first_line, is_int
from nas_rl.accuracy.base import AccuracyEstimator
from nas_rl.accuracy.proxy import ProxyTraining, recalibrate_batchnorm, torch_threads
from nas_rl.arch import ArchSpec
from nas_rl.data.datasets import SplitDataset, calibration_images
from nas_rl.errors import ConfigError, require
from nas_rl.models.torch_builder import Network
from nas_rl.spaces.mnasnet import MnasNetSpace
from nas_rl.supernet.checkpoint import (
    CARD_NAME,
    CHECKPOINT_NAME,
    checkpoint_paths,
    load_checkpoint,
    mismatch,
    read_card,
    sha256,
)
from nas_rl.supernet.network import SuperNet, calibrated_subnet, in_memory_format, top1_accuracy
from nas_rl.supernet.training import Recipe
from nas_rl.supernet.training_run import check_inputs, train

log = logging.getLogger(__name__)
KEY = "accuracy.checkpoint"


def finetune(model: Network, images: torch.Tensor, labels: torch.Tensor, batches: torch.Tensor, lr: float,
             from_stage: int = 0) -> None:  # fmt: skip
    """Train ``model`` in place: one Adam step at ``lr`` (constant) per row of ``batches`` (indices into ``images``).

    With ``from_stage`` > 0 the stem and the stages before it keep their weights: the backward pass stops there,
    which saves the costly high-resolution layers (and ranks as well on the default space; README).
    """
    frozen = [model.stem, *list(model.stages)[:from_stage]] if from_stage else []
    for part in frozen:
        part.requires_grad_(False)
    model.train()
    trained = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.Adam(trained, lr=lr, fused=True)  # fused: one kernel for all tensors, ~10% faster here
    try:
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            batch_images = images[batch].contiguous(memory_format=torch.channels_last)
            torch.nn.functional.cross_entropy(model(batch_images), labels[batch]).backward()
            optimizer.step()
    finally:
        for part in frozen:
            part.requires_grad_(True)  # an export fine-tunes the whole network


class SupernetAccuracy(AccuracyEstimator):
    """Top-1 validation accuracy of the subnet of a trained supernet, after BatchNorm recalibration.

    The checkpoint's card must name this run's search space and dataset (same fingerprints): a supernet
    trained for other settings is refused, naming both. The checkpoint is checked against the card's sha256
    when the estimator is built and loaded on first use.

    :param checkpoint: the folder ``nas-rl-supernet`` wrote (``supernet.pt`` and ``supernet.json``), or the
        ``.pt`` file (its card is the ``.json`` beside it).
    :param search_space: the search's space (a MnasNet space, the one the supernet was trained for).
    :param dataset: the search's data (the one the supernet was trained on); None only to check settings.
    :param calibration_images: training images BatchNorm statistics are recomputed on (a fixed seeded subset).
    :param calibration_seed: seeds the choice of those images.
    :param batch_size: mini-batch size of the recalibration and of fine-tuning.
    :param finetune_steps: Adam steps (at ``finetune_lr``, constant) on ``batch_size`` training images each, fixed
        and seeded by ``seed``, that every architecture's subnet is trained for before it is recalibrated and
        scored (0: scored as sliced).
    :param finetune_from_stage: the stem and the stages (blocks) before this one keep their inherited weights
        during the ``finetune_steps`` (0: every layer trains).
    :param finetune_epochs: epochs :meth:`train` fine-tunes the scored network for before export (0: none;
        :meth:`accuracy` does not use them).
    :param finetune_lr: Adam learning rate of the export's fine-tuning (cosine-annealed to 0) and of the
        ``finetune_steps`` (constant).
    :param validation_subset: score top-1 on this many validation images, a fixed subset seeded by ``seed`` (0:
        the whole split); fewer images score faster and more coarsely.
    :param seed: seeds the batch order of fine-tuning and the validation subset.
    :param threads: torch intra-op threads (0 = torch's default; 1 holds up on a shared machine).
    """

    def __init__(
        self,
        checkpoint: str,
        search_space: MnasNetSpace,
        dataset: SplitDataset | None = None,
        calibration_images: int = 256,
        calibration_seed: int = 0,
        batch_size: int = 64,
        finetune_epochs: int = 0,
        finetune_lr: float = 1e-3,
        finetune_steps: int = 0,
        finetune_from_stage: int = 0,
        validation_subset: int = 0,
        seed: int = 0,
        threads: int = 1,
        train_missing: Recipe | None = None,
    ) -> None:
        lowest = {"calibration_images": 1, "batch_size": 1, "calibration_seed": 0, "finetune_epochs": 0, "seed": 0,
                  "threads": 0, "finetune_steps": 0, "validation_subset": 0}  # fmt: skip
        values = {"calibration_images": calibration_images, "batch_size": batch_size, "seed": seed, "threads": threads,
                  "calibration_seed": calibration_seed, "finetune_epochs": finetune_epochs,
                  "finetune_steps": finetune_steps, "validation_subset": validation_subset}  # fmt: skip
        for key, low in lowest.items():
            require(is_int(values[key]) and values[key] >= low, key, values[key], f"an integer >= {low}")
        require(finetune_lr > 0 and math.isfinite(finetune_lr), "finetune_lr", finetune_lr, "a finite number > 0")
        if not isinstance(search_space, MnasNetSpace):
            raise ConfigError(f"accuracy=supernet covers the MnasNet search space, not {type(search_space).__name__}: "
                              "use search_space=mnasnet")  # fmt: skip
        stages = len(search_space.base_widths)
        require(is_int(finetune_from_stage) and 0 <= finetune_from_stage <= stages, "finetune_from_stage",
                finetune_from_stage, f"an integer from 0 to {stages} (the space's blocks)")  # fmt: skip
        self.space, self.dataset = search_space, dataset
        self.calibration_images, self.calibration_seed = int(calibration_images), int(calibration_seed)
        self.batch_size, self.seed, self.threads = int(batch_size), int(seed), int(threads)
        self.finetune_epochs, self.finetune_lr = int(finetune_epochs), float(finetune_lr)
        self.finetune_steps, self.finetune_from_stage = int(finetune_steps), int(finetune_from_stage)
        self.validation_subset = int(validation_subset)
        if dataset is not None and self.validation_subset > len(dataset.y_val):
            raise ConfigError(f"validation_subset={validation_subset} is more than the {len(dataset.y_val)} validation "
                              f"images of dataset {dataset.name}; accepted: 0 (all) to {len(dataset.y_val)}")  # fmt: skip
        self.checkpoint_path, self.card_path = checkpoint_paths(checkpoint)
        self.train_missing = train_missing
        self._card: dict[str, Any] | None = None
        self._digest: str | None = None
        self._supernet: SuperNet | None = None
        self._tensors: dict[str, torch.Tensor] | None = None
        if train_missing is None or self._trained():
            self._load()  # refuse a missing, foreign or corrupt checkpoint before the search starts

    @property
    def card(self) -> dict[str, Any]:
        """The checkpoint's card; with ``train_missing``, the first use trains the supernet there first."""
        if self._card is None:
            self._train_missing()
            self._load()
        assert self._card is not None
        return self._card

    @property
    def digest(self) -> str:
        self.card  # noqa: B018  (loads it, training first where that is the setting)
        assert self._digest is not None
        return self._digest

    def _load(self) -> None:
        self._card = self._read_card()
        self._digest = self._verify()

    def _train_missing(self) -> None:
        """First use of a registered env: train its supernet into ``checkpoint`` (resumable) and keep it there.

        One process trains at a time (a lock file in the folder); another first use waits for it, then reuses
        its supernet. A first use killed mid-training left a checkpoint of fewer epochs: the next one continues it.
        """
        if self.train_missing is None or self._trained():
            return
        if self.dataset is None:
            raise ConfigError(f"{KEY}={self.checkpoint_path}: no supernet there, and no dataset to train one on")
        folder = self.checkpoint_path.parent
        with _training_lock(folder):
            if self._trained():  # another process trained it while this one waited
                return
            log.warning("accuracy=supernet: no trained supernet at %s yet; training it once, there (%d epochs; a "
                        "killed run continues where it stopped)", folder, self.train_missing.epochs)  # fmt: skip
            check_inputs(self.space, self.dataset)
            with torch_threads(self.train_missing.threads):
                train(self.space, self.dataset, self.train_missing, folder)

    def _trained(self) -> bool:
        """Whether the checkpoint is there with its card and, for a first-use recipe, all of its epochs."""
        if not (self.checkpoint_path.is_file() and self.card_path.is_file()):
            return False
        epochs = self.train_missing.epochs if self.train_missing is not None else 0
        return int(read_card(self.card_path, KEY).get("epochs_done") or 0) >= epochs

    def _read_card(self) -> dict[str, Any]:
        if not self.checkpoint_path.is_file() or not self.card_path.is_file():
            folder = self.checkpoint_path.parent
            dataset = self.dataset.name if self.dataset is not None else "<the search's>"
            raise ConfigError(
                f"{KEY}={self.checkpoint_path}: no supernet there ({CHECKPOINT_NAME} with its {CARD_NAME}); train one "
                f"with: nas-rl-supernet search_space=mnasnet dataset={dataset} out={folder} (and the search's "
                "search_space.* and dataset.* overrides)"
            )
        return read_card(self.card_path, KEY)

    def _verify(self) -> str:
        """Refuse a supernet of another space or dataset, or a checkpoint its card does not describe."""
        ours = {"space": self.space.fingerprint()}
        if self.dataset is not None:
            ours["dataset"] = self.dataset.fingerprint()
        card = self._card or {}
        for what, name in (("space", "search space"), ("dataset", "dataset")):
            if what in ours and (problem := mismatch(name, card.get(what) or {}, ours[what])):
                raise ConfigError(f"{KEY}={self.checkpoint_path} is refused: {problem}; train a supernet for this "
                                  "run's settings with nas-rl-supernet, or point accuracy.checkpoint at one")  # fmt: skip
        digest = sha256(self.checkpoint_path)
        if digest != card.get("sha256"):
            raise ConfigError(
                f"{KEY}={self.checkpoint_path}: the file does not match its card {self.card_path} (sha256 {digest[:12]}, "
                f"card {str(card.get('sha256'))[:12]}): it is corrupt, cut short or replaced; rerun nas-rl-supernet"
            )
        return digest

    def fingerprint(self) -> dict[str, Any]:
        fingerprint = {
            "kind": "supernet",
            **(self.dataset.fingerprint() if self.dataset is not None else {}),
            "checkpoint_sha256": self.digest,
            "calibration": {
                "images": self.calibration_images,
                "seed": self.calibration_seed,
                "batch_size": self.batch_size,
            },  # fmt: skip
        }
        if self.finetune_steps:  # only when used, so stores of scores as sliced keep their keys
            fingerprint["finetune"] = {"steps": self.finetune_steps, "lr": self.finetune_lr, "seed": self.seed,
                                       "from_stage": self.finetune_from_stage}  # fmt: skip
        if self.validation_subset:  # likewise
            fingerprint["validation_subset"] = {"images": self.validation_subset, "seed": self.seed}
        return fingerprint

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_supernet": None, "_tensors": None}  # reloaded on demand (workers)

    def supernet(self) -> SuperNet:
        """The trained supernet, loaded on first use (eval mode)."""
        if self._supernet is None:
            self.card  # noqa: B018  (a registered env's first use trains it here)
            payload = load_checkpoint(self.checkpoint_path, KEY)
            with torch.device("meta"):
                supernet = SuperNet(self.space)
            try:
                supernet.load_state_dict(payload["state_dict"], strict=True, assign=True)
            except (KeyError, RuntimeError) as error:
                raise ConfigError(f"{KEY}={self.checkpoint_path}: weights do not fit this space's supernet "
                                  f"({type(error).__name__}: {first_line(str(error), ' ').strip()})") from None  # fmt: skip
            self._supernet = supernet.eval()
        return self._supernet

    #: Subnets are scored and exported at the widths they were searched at.
    width_multiplier = 1.0

    def validation_images(self) -> np.ndarray:
        return self.tensors()["x_val"].numpy()

    def tensors(self) -> dict[str, torch.Tensor]:
        """The splits as tensors (``x_train``, ``y_train``, ``x_val``, ``y_val``), the calibration images
        (``x_calibration``), the fine-tuning steps' batch indices (``finetune_batches``, one row a step) and the
        validation images top-1 is taken on (``x_scored``, ``y_scored``), computed once per estimator."""
        if self._tensors is None:
            if self.dataset is None:
                raise ConfigError("accuracy=supernet was built without a dataset; accepted: dataset: ${dataset}")
            d = self.dataset
            images = calibration_images(d, None, self.calibration_images, self.calibration_seed)
            x_val, y_val = torch.from_numpy(d.x_val), torch.from_numpy(d.y_val)
            scored: Any = slice(None)  # the whole split: views, not copies
            if self.validation_subset:
                scored = np.sort(np.random.default_rng(self.seed).choice(
                    np.arange(len(d.y_val)), self.validation_subset, replace=False))
            self._tensors = {
                "x_train": torch.from_numpy(d.x_train), "y_train": torch.from_numpy(d.y_train),
                "x_val": x_val, "y_val": y_val,
                "x_calibration": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                "finetune_batches": torch.from_numpy(np.random.default_rng(self.seed).integers(
                    0, len(d.y_train), (self.finetune_steps, self.batch_size))),
                "x_scored": x_val[scored], "y_scored": y_val[scored],
            }  # fmt: skip
        return self._tensors

    def accuracy(self, arch: ArchSpec) -> float:
        with torch_threads(self.threads):
            return self._score(self._calibrated(arch))

    def subnet(self, arch: ArchSpec) -> torch.nn.Module:
        """``build_torch_model(arch)`` holding the supernet's sliced weights and recalibrated BatchNorm
        statistics (eval mode): the network :meth:`accuracy` scores, e.g. to export."""
        with torch_threads(self.threads):
            return in_memory_format(self._calibrated(arch), torch.contiguous_format)

    def train(self, arch: ArchSpec) -> tuple[torch.nn.Module, float]:
        """The subnet of ``arch``, fine-tuned for ``finetune_epochs`` (0: as sliced), and its validation accuracy."""
        with torch_threads(self.threads):
            model = self._calibrated(arch)
            if self.finetune_epochs:
                model, accuracy = self._finetuning().fit(model)
            else:
                accuracy = self._score(model)
            return in_memory_format(model, torch.contiguous_format), accuracy

    def _finetuning(self) -> ProxyTraining:
        """Proxy training's recipe (Adam, cosine, seeded batch order) for ``finetune_epochs`` at ``finetune_lr``."""
        assert self.dataset is not None
        return ProxyTraining(self.dataset, epochs=self.finetune_epochs, lr=self.finetune_lr, optimizer="adam",
                             batch_size=self.batch_size, seed=self.seed, threads=self.threads)  # fmt: skip

    def _calibrated(self, arch: ArchSpec) -> torch.nn.Module:
        """The network :meth:`accuracy` scores: sliced, fine-tuned ``finetune_steps`` steps, recalibrated."""
        data = self.tensors()
        if not self.finetune_steps:
            return calibrated_subnet(self.supernet(), arch, data["x_calibration"], self.batch_size)
        return self.finetuned(in_memory_format(self.supernet().extract(arch), torch.channels_last))

    def finetuned(self, model: Network) -> Network:
        """``model`` (channels-last) after the ``finetune_steps`` steps and the BatchNorm recalibration, in place;
        :meth:`accuracy` applies it to each sliced subnet (a bench, to fresh networks for comparison)."""
        data = self.tensors()
        finetune(model, data["x_train"], data["y_train"], data["finetune_batches"], self.finetune_lr,
                 self.finetune_from_stage)  # fmt: skip
        with torch.no_grad():
            recalibrate_batchnorm(model, data["x_calibration"].contiguous(memory_format=torch.channels_last),
                                  self.batch_size, self._batches())  # fmt: skip
        return model

    def _batches(self) -> int:
        return math.ceil(self.calibration_images / self.batch_size)

    def _score(self, model: torch.nn.Module) -> float:
        data = self.tensors()
        return top1_accuracy(model, data["x_scored"], data["y_scored"])


@contextlib.contextmanager
def _training_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s training lock for the block, waiting (with a log line) while another process holds it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(folder / "supernet.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise ConfigError(f"{KEY}={folder}: cannot write the supernet's folder ({first_line(error)}); set "
                          "NAS_RL_CACHE to a writable folder, or point accuracy.checkpoint at one") from None  # fmt: skip
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("accuracy=supernet: another process is training the supernet in %s; waiting for it", folder)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock
