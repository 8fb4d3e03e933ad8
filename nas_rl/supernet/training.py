"""How the supernet is trained: the sandwich rule with in-place distillation, and progressive shrinking.

Every step (BigNAS, Yu et al. 2020; AttentiveNAS, Wang et al. 2021) runs the largest subnet, the smallest
and ``n_random`` uniformly random ones on the same mini-batch and accumulates their gradients before one
optimizer step. The largest learns from the labels; the others from the largest's logits of that batch
(detached: in-place distillation), with the loss
``(1 - w) * CE(student, labels) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))``.

Progressive shrinking (Once-for-All, Cai et al. 2020) is an option: ``phases`` lists from which epoch which
decisions are elastic (sampled); the others stay at the largest subnet's choice. E.g. kernel first, then
layers, then op / width / se / skip. Without phases the whole space is elastic from the first epoch.

The learning rate follows a cosine from ``lr`` to 0 over ``epochs`` (per step); raising ``epochs`` to extend a
finished training restarts the cosine at the point the new total puts it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas_rl._util import is_int
from nas_rl.arch import ArchSpec
from nas_rl.data.datasets import SplitDataset
from nas_rl.errors import EvaluationFailed, require
from nas_rl.spaces.mnasnet import BLOCK_DECISIONS
from nas_rl.supernet.network import SuperNet, in_memory_format, sample_tokens

OPTIMIZERS = ("sgd", "adam")



@dataclass
class Phase:
    """From epoch ``from_epoch`` (1-based) on, the decisions named in ``elastic`` are sampled."""

    from_epoch: int
    elastic: frozenset[str]


@dataclass
class Recipe:
    """The settings of a supernet training (the ``supernet`` config group).

    :param epochs: passes over the training split (raise it and rerun to train on from the checkpoint).
    :param batch_size: mini-batch size.
    :param lr: peak learning rate (cosine-annealed to 0 over ``epochs``).
    :param optimizer: ``sgd`` (Nesterov momentum 0.9) or ``adam``.
    :param weight_decay: L2 penalty.
    :param n_random: random subnets per step besides the largest and the smallest.
    :param distill_temperature: softmax temperature ``T`` of in-place distillation.
    :param distill_weight: weight ``w`` of the distillation term for all but the largest subnet, in [0, 1].
    :param seed: seeds the initialisation, batch order and subnet sampling.
    :param threads: torch intra-op threads (0 = torch's default).
    :param phases: progressive shrinking, a list of ``{from_epoch: E, elastic: [decisions]}`` (decisions:
        op, kernel, se, skip, width, layers), the first from epoch 1, each enabling more; None: all elastic.
    :param resume: continue from the output folder's checkpoint when there is one (false: start over).
    :param calibration_images: training images the validation of the largest and smallest subnets
        recomputes BatchNorm statistics on (after every epoch, for the card).
    :param progress: show a progress bar.
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.005
    optimizer: str = "adam"
    weight_decay: float = 4e-5
    n_random: int = 2
    distill_temperature: float = 1.0
    distill_weight: float = 1.0
    seed: int = 0
    threads: int = 1
    phases: list[dict[str, Any]] | None = None
    resume: bool = True
    calibration_images: int = 256
    progress: bool = True
    schedule: list[Phase] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        integers = {"epochs": 1, "batch_size": 1, "n_random": 0, "seed": 0, "threads": 0, "calibration_images": 1}
        for key, low in integers.items():
            value = getattr(self, key)
            require(is_int(value) and value >= low, key, value, f"an integer >= {low}")
        require(self.lr > 0 and math.isfinite(self.lr), "lr", self.lr, "a finite number > 0")
        require(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"one of {', '.join(OPTIMIZERS)}")
        require(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
        require(self.distill_temperature > 0, "distill_temperature", self.distill_temperature, "a number > 0")
        require(0 <= self.distill_weight <= 1, "distill_weight", self.distill_weight, "a number in [0, 1]")
        self.schedule = parse_phases(self.phases)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change the trained weights, less ``epochs`` (a run may be extended)."""
        left_out = ("epochs", "threads", "resume", "calibration_images", "progress", "schedule")
        return {key: value for key, value in asdict(self).items() if key not in left_out}

    def elastic(self, epoch: int) -> frozenset[str] | None:
        """The decisions sampled in ``epoch`` (None: all of them)."""
        active = [phase for phase in self.schedule if phase.from_epoch <= epoch]
        return active[-1].elastic if active else None


def parse_phases(phases: list[dict[str, Any]] | None) -> list[Phase]:
    """Check and read ``supernet.phases``; every problem is one line naming the phase."""
    if phases is None:
        return []
    accepted = (f"a list of {{from_epoch: E, elastic: [decisions]}} with decisions from {', '.join(BLOCK_DECISIONS)}, "
                "from_epoch 1 first and rising, each phase's decisions including the previous ones")  # fmt: skip
    require(isinstance(phases, list) and len(phases) >= 1, "phases", phases, f"null or {accepted}")
    schedule: list[Phase] = []
    for number, phase in enumerate(phases):
        ok = isinstance(phase, dict) and set(phase) == {"from_epoch", "elastic"} and is_int(phase["from_epoch"])
        ok = ok and isinstance(phase["elastic"], list) and set(phase["elastic"]) <= set(BLOCK_DECISIONS)
        if ok:
            start, elastic = int(phase["from_epoch"]), frozenset(phase["elastic"])
            previous = schedule[-1] if schedule else Phase(0, frozenset())
            ok = (start == 1 if not schedule else start > previous.from_epoch) and elastic >= previous.elastic
        require(ok, f"phases[{number}]", phase, accepted)
        schedule.append(Phase(start, elastic))
    return schedule


def distillation_loss(
    logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor, recipe: Recipe
) -> torch.Tensor:
    """The loss of a subnet other than the largest: label CE and the KL to the largest's logits, weighted."""
    t, w = recipe.distill_temperature, recipe.distill_weight
    kl = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher / t, dim=1), log_target=True,
                  reduction="batchmean")  # fmt: skip
    if w == 1:
        return t * t * kl
    return (1 - w) * F.cross_entropy(logits, labels) + w * t * t * kl


class SupernetTrainer:
    """Trains ``supernet`` on ``dataset``'s training split with ``recipe``, one epoch at a time.

    The numpy generator (batch order, subnet sampling) and the optimizer are state to checkpoint: see
    :meth:`state_dict`; a resumed training continues exactly as an uninterrupted one.
    """

    def __init__(self, supernet: SuperNet, dataset: SplitDataset, recipe: Recipe) -> None:
        # Channels-last weights and images: a third less time per step on CPU (depthwise convs), same results.
        self.supernet, self.recipe = supernet, recipe
        in_memory_format(supernet, torch.channels_last)
        self.x_train, self.y_train = torch.from_numpy(dataset.x_train), torch.from_numpy(dataset.y_train)
        self.steps_per_epoch = max(1, len(self.y_train) // recipe.batch_size)
        self.optimizer = self._optimizer()
        self.rng = np.random.default_rng(recipe.seed)

    def _optimizer(self) -> torch.optim.Optimizer:
        params, r = self.supernet.parameters(), self.recipe
        if r.optimizer == "adam":
            return torch.optim.Adam(params, lr=r.lr, weight_decay=r.weight_decay)
        return torch.optim.SGD(params, lr=r.lr, momentum=0.9, nesterov=True, weight_decay=r.weight_decay)

    def lr(self, step: int) -> float:
        """Cosine-annealed learning rate of global step ``step`` (0-based)."""
        total = self.recipe.epochs * self.steps_per_epoch
        return self.recipe.lr * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    def subnets(self, epoch: int) -> list[ArchSpec]:
        """The sandwich of one step: the largest, the smallest and ``n_random`` random subnets of the phase."""
        elastic, net = self.recipe.elastic(epoch), self.supernet
        if elastic is not None and not elastic:
            return [net.largest_arch()]  # nothing elastic: only the largest trains
        largest, smallest = net.tokens("largest"), net.tokens("smallest")
        if elastic is not None:  # the phase's smallest: the non-elastic decisions stay at the largest's
            names = [d.name.split(".")[-1] for d in net.space.decisions]
            smallest = tuple(s if name in elastic else g for name, s, g in zip(names, smallest, largest))
        tokens = [largest, smallest] + [sample_tokens(net, self.rng, elastic) for _ in range(self.recipe.n_random)]
        return [net.space.decode(t) for t in tokens]

    def train_epoch(self, epoch: int, on_step: Callable[[float], None] | None = None) -> float:
        """One pass over the training split; returns the largest subnet's mean loss. A non-finite loss raises
        :class:`EvaluationFailed` naming the epoch, the step and the subnet."""
        self.supernet.train()
        order = torch.from_numpy(self.rng.permutation(len(self.y_train)))
        losses = []
        for step in range(self.steps_per_epoch):
            batch = order[step * self.recipe.batch_size : (step + 1) * self.recipe.batch_size]
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr((epoch - 1) * self.steps_per_epoch + step)
            images = self.x_train[batch].contiguous(memory_format=torch.channels_last)
            losses.append(self._step(images, self.y_train[batch], epoch, step))
            if on_step is not None:
                on_step(losses[-1])
        return float(np.mean(losses))

    def _step(self, images: torch.Tensor, labels: torch.Tensor, epoch: int, step: int) -> float:
        """One sandwich step: gradients of every subnet accumulated, then one optimizer step."""
        self.optimizer.zero_grad(set_to_none=True)
        teacher, first = None, 0.0
        for number, arch in enumerate(self.subnets(epoch)):
            logits = self.supernet(images, arch)
            if teacher is None:
                loss = F.cross_entropy(logits, labels)
                teacher, first = logits.detach(), float(loss.detach())
            else:
                loss = distillation_loss(logits, labels, teacher, self.recipe)
            if not torch.isfinite(loss):
                which = ("largest", "smallest")[number] if number < 2 else f"random {number - 1}"
                raise EvaluationFailed(
                    f"loss is {loss.item()} at epoch {epoch}, step {step + 1}/{self.steps_per_epoch} ({which} subnet)"
                )
            loss.backward()
        self.optimizer.step()
        return first

    def state_dict(self) -> dict[str, Any]:
        """Optimizer and random generators: with the supernet's weights, all a resumed training needs."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
