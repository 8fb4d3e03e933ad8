"""What a worker runs: pure functions of data that evaluate one candidate and return its evaluation's fields.

They never open the store (the driver writes what they return) and import nothing heavy themselves: the
accuracy estimator and the latency model arrive as arguments. In the driver's process (``cluster=local``) they
are the driver's objects; on a Dask worker each is built there by :func:`load_role` from its config, plain data
(the role's resolved config section, ``_target_`` and settings), after :func:`check_targets` has refused any
``_target_`` outside the packages the worker accepts (``nas_rl`` unless its Dask config ``nas-rl.allow-targets``
says otherwise). So a board that only measures latency needs only what its latency model imports, and a driver
cannot have a worker import code other than nas-rl's through a config.
Every executor runs these same functions, in the driver's process (``cluster=local``) or on Dask workers.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from nas_rl._util import first_line
from nas_rl.arch import ArchSpec
from nas_rl.errors import ConfigError, EvaluationFailed
from nas_rl.evaluation.store import Evaluation

#: An evaluation's fields as a plain dict (what a remote task returns: data the scheduler never needs to import).
Fields = dict[str, Any]

#: The packages whose classes and functions a worker builds roles from, unless its Dask config says otherwise.
DEFAULT_TARGETS = ("nas_rl.",)
#: The worker's Dask config key listing them (``DASK_NAS_RL__ALLOW_TARGETS='["nas_rl.", "mylab."]'``, or YAML).
TARGETS_CONFIG = "nas-rl.allow-targets"


class TargetRefused(ConfigError):
    """A role's config names a ``_target_`` outside the packages a worker accepts: nothing of it is built."""


def evaluate(arch: ArchSpec, fingerprint: str, accuracy: Any, latency: Any) -> Evaluation:
    """Accuracy, then latency (not measured when accuracy failed); the reward is the driver's to compute.

    An :class:`~nas_rl.errors.EvaluationFailed` or a ``RuntimeError`` (a torch kernel refusing a shape) makes the
    candidate ``failed`` with its reason, not the search; any other exception is a bug and propagates.
    """
    return with_latency(accuracy_part(arch, fingerprint, accuracy), arch, latency)


def accuracy_part(arch: ArchSpec, fingerprint: str, accuracy: Any) -> Evaluation:
    """The evaluation as far as accuracy: ``ok`` with ``accuracy``, or ``failed`` with the reason."""
    evaluation = Evaluation(arch=arch.to_string(), fingerprint=fingerprint, status="ok")
    start = time.perf_counter()
    try:
        evaluation.accuracy = float(accuracy.accuracy(arch))
        evaluation.accuracy_seconds = time.perf_counter() - start
    except (EvaluationFailed, RuntimeError) as failure:
        _record(evaluation, failure)
    evaluation.eval_seconds = time.perf_counter() - start
    return evaluation


def with_latency(evaluation: Evaluation, arch: ArchSpec, latency: Any) -> Evaluation:
    """``evaluation`` (from :func:`accuracy_part`) completed with the latency statistics, unless it failed."""
    if evaluation.status != "ok":
        return evaluation
    start = time.perf_counter()
    try:
        stats = latency.measure(arch)
        evaluation.latency_seconds = time.perf_counter() - start
    except (EvaluationFailed, RuntimeError) as failure:
        _record(evaluation, failure)
    else:
        evaluation.latency_ms = stats.median_ms
        evaluation.latency_mean_ms = stats.mean_ms
        evaluation.latency_std_ms = stats.std_ms
        evaluation.latency_min_ms = stats.min_ms
        evaluation.latency_max_ms = stats.max_ms
        evaluation.latency_runs = stats.runs
    evaluation.eval_seconds = (evaluation.eval_seconds or 0.0) + time.perf_counter() - start
    return evaluation


def _record(evaluation: Evaluation, failure: Exception) -> None:
    """Mark ``evaluation`` failed with the reason: the candidate fails, not the search."""
    evaluation.status = "failed"
    if isinstance(failure, EvaluationFailed):
        evaluation.error = str(failure)
    else:  # e.g. a torch kernel refusing a shape
        evaluation.error = f"{type(failure).__name__}: {first_line(failure, 'no message')}"


# On a worker: the arguments are data (a block string, the network settings, the fingerprint) and the roles built
# there from their configs by load_role (a task of its own, whose result Dask keeps in the worker's memory).


def load_role(config: Mapping[str, Any]) -> Any:
    """A role (accuracy estimator, latency model) built from its config, plain data: the ``_target_`` of each
    node checked first (:func:`check_targets`, against the worker's :func:`accepted_targets`). Dask keeps it in
    the worker's memory under the config's digest for every later task there (its caches, such as resized
    datasets, with it)."""
    from hydra.utils import instantiate  # on the worker only: the driver builds its roles through nas_rl.config

    check_targets(config, accepted_targets(), setting=f"this worker's Dask config {TARGETS_CONFIG}")
    return instantiate(config, _convert_="all")


def accepted_targets() -> tuple[str, ...]:
    """The packages this process builds roles from: its Dask config ``nas-rl.allow-targets``, else ``nas_rl.``."""
    try:
        import dask.config
    except ImportError:  # no Dask here: nothing but the default can have been configured
        return DEFAULT_TARGETS
    accepted = dask.config.get(TARGETS_CONFIG, default=None)
    if accepted is None:
        return DEFAULT_TARGETS
    if isinstance(accepted, str) or not isinstance(accepted, Sequence):
        raise TargetRefused(
            f"the Dask config {TARGETS_CONFIG}={accepted!r} is not accepted: use a list of packages, e.g. [nas_rl., mylab.]"
        )
    return tuple(str(prefix) for prefix in accepted)


def check_targets(config: Any, accepted: Sequence[str], where: str = "", setting: str = "") -> None:
    """Refuse (:class:`TargetRefused`, one line) a ``_target_`` anywhere in ``config``, nested ones too, that is
    not a class or function defined under one of the ``accepted`` packages: the name must be under one, and so
    must the module of what it names (``nas_rl.x.os.system`` names ``os.system``). Only names under an accepted
    package are ever imported to check them. The message names ``setting``, where ``accepted`` comes from."""
    if isinstance(config, Mapping):
        for name, value in config.items():
            path = f"{where}.{name}" if where else str(name)
            if name == "_target_":
                _check_target(value, accepted, path, setting)
            else:
                check_targets(value, accepted, path, setting)
    elif isinstance(config, (list, tuple)):
        for index, item in enumerate(config):
            check_targets(item, accepted, f"{where}[{index}]", setting)


def _check_target(target: Any, accepted: Sequence[str], path: str, setting: str) -> None:
    from hydra.utils import get_object

    words = " or ".join(f"{prefix.rstrip('.')}.*" for prefix in accepted) or "nothing"
    source = f" ({setting})" if setting else ""
    refused = f"{path}={target!r} is not accepted on a Dask worker: use a class or function under {words}{source}"
    if not isinstance(target, str) or not _under(target, accepted):
        raise TargetRefused(refused)
    named = get_object(target)  # under an accepted package: importing it runs only code the worker accepts
    module = getattr(named, "__module__", None)
    if not (callable(named) and isinstance(module, str) and _under(module, accepted)):
        what = f"{module}.{getattr(named, '__qualname__', '')}".rstrip(".") if module else f"a {type(named).__name__}"
        raise TargetRefused(f"{refused}; it names {what}")


def _under(name: str, packages: Sequence[str]) -> bool:
    """Whether the dotted ``name`` is one of ``packages`` (``nas_rl.`` or ``nas_rl``) or inside one."""
    return any(name == package.rstrip(".") or name.startswith(package.rstrip(".") + ".") for package in packages)


def config_digest(config: Mapping[str, Any]) -> str:
    """A role config's digest (its key on the cluster): the same settings give the same role."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, allow_nan=True).encode()).hexdigest()


def remote_evaluate(arch: str, network: dict[str, int], fingerprint: str, accuracy: Any, latency: Any) -> Fields:
    """:func:`evaluate` on a worker."""
    return asdict(evaluate(ArchSpec.from_string(arch, **network), fingerprint, accuracy, latency))


def remote_accuracy(arch: str, network: dict[str, int], fingerprint: str, accuracy: Any) -> Fields:
    """:func:`accuracy_part` on a worker (any worker that can train)."""
    return asdict(accuracy_part(ArchSpec.from_string(arch, **network), fingerprint, accuracy))


def remote_latency(partial: Fields, network: dict[str, int], latency: Any) -> Fields:
    """:func:`with_latency` on a worker (one holding the device's resource), after :func:`remote_accuracy`."""
    evaluation = Evaluation(**partial)
    return asdict(with_latency(evaluation, ArchSpec.from_string(evaluation.arch, **network), latency))
