"""Evaluations on a Dask cluster (``cluster=dask``): a cluster at ``address``, or a LocalCluster of processes.

The driver (the :class:`~nas_rl.evaluation.evaluator.Evaluator`) submits a batch's misses together and stores each
evaluation as it comes back (``distributed.as_completed``); workers run only the functions of
:mod:`nas_rl.evaluation.tasks`, and every argument the driver sends is data: a block string, the network
settings, the fingerprint, and each role's config (the resolved ``accuracy`` / ``latency`` section it was built
from, given by :meth:`DaskExecutor.describe_role`). A worker builds a role from its config once (a task of its
own, keyed by the config's digest, that Dask keeps in memory and recomputes if the worker holding it dies), after
refusing any ``_target_`` outside nas-rl (:func:`~nas_rl.evaluation.tasks.check_targets`). Workers never open
the store.

With ``latency_resources`` an evaluation is two tasks: accuracy (on any worker, or those holding
``accuracy_resources``), then latency, only on a worker started with those resources (``dask worker ...
--resources "device-pixel7=1"``), the one that holds the device.

Faults: a worker that dies mid-evaluation has its task run again elsewhere, up to ``retries`` times; then
the candidate is stored as failed, with the reason. A lost scheduler stops the search (:class:`ClusterLost`);
every evaluation that came back before is stored, so ``resume=`` continues without losing or repeating one.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import OmegaConf

from nas_rl._util import first_line, is_int
from nas_rl.accuracy.base import AccuracyEstimator
from nas_rl.arch import ArchSpec
from nas_rl.errors import ConfigError, DataError, not_accepted, require
from nas_rl.evaluation import tasks
from nas_rl.evaluation.executor import Executor, K
from nas_rl.evaluation.store import Evaluation
from nas_rl.latency.base import LatencyModel
from nas_rl.spaces.base import NETWORK_FIELDS

log = logging.getLogger(__name__)

#: The TLS files ``cluster.security`` takes (the client's side of ``distributed.security.Security``).
SECURITY_KEYS = ("tls_ca_file", "tls_client_cert", "tls_client_key")
SCHEMES = ("tcp", "tls")


#: The Dask setting that makes each worker's nanny start it with ``MALLOC_TRIM_THRESHOLD_=65536``. Setting any
#: malloc threshold turns off glibc's adaptive mmap threshold, so torch's tensors are mapped and unmapped on every
#: step: proxy training ran about 1.4x slower in such a worker (``bench/cluster_throughput.py``). The LocalCluster
#: this executor starts leaves it unset; remote workers need it unset in their Dask config (README).
UNTRIMMED = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


class ClusterLost(ConfigError):
    """The connection to the Dask scheduler was lost: the search stops (its finished evaluations are stored)."""


@dataclass
class _Submitted:
    """One candidate on the cluster: its final future (and the accuracy one, when latency is a task of its own)."""

    arch: str
    fingerprint: str
    future: Any
    accuracy_future: Any = None


class DaskExecutor(Executor):
    """Evaluates candidates concurrently on a Dask cluster.

    The settings are checked when it is made; it connects (or starts its LocalCluster) on first use.

    :param address: the scheduler, ``tls://host:8786`` (or ``tcp://``); null: start a LocalCluster on this
        machine (processes, listening on 127.0.0.1 only).
    :param workers: the LocalCluster's worker processes.
    :param threads_per_worker: the LocalCluster's threads per worker (1: one evaluation per process at a time,
        as the estimators' own thread settings assume).
    :param retries: how often a candidate's task is run again after its worker died (the LocalCluster's
        scheduler's ``allowed-failures``; a remote scheduler's own setting of it counts there) or it raised;
        then it is stored as failed, with the reason.
    :param latency_resources: worker resources a latency task needs, e.g. ``{device-pixel7: 1}``: latency is
        then measured only on workers started with ``--resources "device-pixel7=1"``. Null: one task does both.
    :param accuracy_resources: worker resources an accuracy task needs (keep training off a board that only
        measures); null: any worker.
    :param security: TLS files: ``tls_ca_file``, ``tls_client_cert``, ``tls_client_key`` (paths); for ``tls://``.
        Null, or all three null: no TLS.
    :param allow_insecure: accept plain text (``tcp://``) to an address that is not loopback. Dask's messages
        are pickled frames: anyone on that network could submit code to the workers or read the results.
    :param connect_timeout_s: seconds to reach the scheduler (and to reconnect before giving up).
    :param allow_targets: the packages whose classes and functions a role's config may name (``_target_``),
        checked here before anything is sent, and accepted by the workers of the LocalCluster this starts. A
        worker started elsewhere accepts those of its own Dask config ``nas-rl.allow-targets`` (default: nas_rl).
    """

    concurrent = True

    def __init__(
        self,
        address: str | None = None,
        workers: int = 2,
        threads_per_worker: int = 1,
        retries: int = 2,
        latency_resources: dict[str, float] | None = None,
        accuracy_resources: dict[str, float] | None = None,
        security: dict[str, str] | None = None,
        allow_insecure: bool = False,
        connect_timeout_s: float = 30.0,
        allow_targets: Sequence[str] = tasks.DEFAULT_TARGETS,
    ) -> None:
        for name, value in (("workers", workers), ("threads_per_worker", threads_per_worker)):
            require(is_int(value) and value >= 1, f"cluster.{name}", value, "an integer >= 1")
        require(is_int(retries) and retries >= 0, "cluster.retries", retries, "an integer >= 0")
        number = isinstance(connect_timeout_s, (int, float)) and not isinstance(connect_timeout_s, bool)
        require(number and connect_timeout_s > 0, "cluster.connect_timeout_s", connect_timeout_s, "seconds > 0")
        require(isinstance(allow_insecure, bool), "cluster.allow_insecure", allow_insecure, "true or false")
        packages_ok = not isinstance(allow_targets, str) and isinstance(allow_targets, Sequence) and bool(allow_targets)
        require(packages_ok and all(isinstance(name, str) and name.strip(".") for name in allow_targets),
                "cluster.allow_targets", allow_targets, "a list of package names, e.g. [nas_rl., mylab.]")  # fmt: skip
        self.allow_targets = tuple(allow_targets)
        self.latency_resources = _resources("latency_resources", latency_resources)
        self.accuracy_resources = _resources("accuracy_resources", accuracy_resources)
        self.security_files = _security_files(security)
        self.address = None if address in (None, "") else _checked_address(str(address), self.security_files,
                                                                           allow_insecure)  # fmt: skip
        if self.address is None:
            if self.security_files:
                raise ConfigError(
                    "cluster.security is set but cluster.address is null: the LocalCluster nas-rl starts listens on "
                    "127.0.0.1 only; set cluster.address=tls://HOST:PORT of your scheduler, or drop cluster.security"
                )
            if self.latency_resources or self.accuracy_resources:
                raise ConfigError(
                    "cluster.latency_resources and cluster.accuracy_resources pin tasks to workers started with "
                    "--resources, and the LocalCluster of cluster.address=null has none: set cluster.address to a "
                    "scheduler whose workers hold them, or leave both null"
                )
        self.workers = int(workers)
        self.threads_per_worker = int(threads_per_worker)
        self.retries = int(retries)
        self.connect_timeout_s = float(connect_timeout_s)
        self._distributed = _import_distributed()
        self._client: Any = None
        self._cluster: Any = None
        # id(role) -> (role, the config it was built from, that config's digest: its key on the cluster)
        self._configs: dict[int, tuple[Any, dict[str, Any], str]] = {}
        self._roles: dict[str, Any] = {}  # a role config's digest -> the future of the role built from it
        self._scheduler_lost = False

    def __reduce__(self) -> Any:
        raise ConfigError(
            "an evaluator on a Dask cluster (cluster=dask) cannot be copied to another process: the driver alone "
            "submits and stores evaluations; use controller.vec_env=dummy (the cluster evaluates the n_envs "
            "candidates of a step at once)"
        )

    # Connection ---------------------------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The Dask client, connected (or its LocalCluster started) on first use."""
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _local_cluster(self, distributed: Any) -> Any:
        """A LocalCluster of this executor's worker processes on loopback."""
        return distributed.LocalCluster(
            n_workers=self.workers, threads_per_worker=self.threads_per_worker, processes=True,
            host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
            scheduler_kwargs={"allowed_failures": self.retries},
            config={tasks.TARGETS_CONFIG: list(self.allow_targets)},  # the workers' Dask config
        )  # fmt: skip

    def _connect(self) -> Any:
        distributed = self._distributed
        # Dask logs every connection and worker at INFO (and Hydra shows INFO): keep the terminal for the search.
        logging.getLogger("distributed").setLevel(logging.WARNING)
        if self.address is None:
            import dask.config

            with dask.config.set({UNTRIMMED: None}):  # see UNTRIMMED
                self._cluster = self._local_cluster(distributed)
            return distributed.Client(self._cluster, timeout=self.connect_timeout_s)
        security = None
        if self.security_files:
            security = distributed.security.Security(require_encryption=True, **self.security_files)
        try:
            client = distributed.Client(self.address, security=security, timeout=self.connect_timeout_s)
        except (OSError, TimeoutError) as error:
            raise ConfigError(
                f"cluster.address={self.address} cannot be reached ({first_line(error, type(error).__name__)}): "
                "expected a running Dask scheduler there (dask scheduler), reachable from this machine"
                + (" with the certificates of cluster.security" if security else "")
            ) from None
        self._check_resources(client)
        return client

    def _check_resources(self, client: Any) -> None:
        """Warn when no worker holds a resource the tasks need yet (they wait for one to join)."""
        held: set[str] = set()
        for worker in client.scheduler_info().get("workers", {}).values():
            held.update(worker.get("resources") or {})
        for setting, resources in (("latency_resources", self.latency_resources),
                                   ("accuracy_resources", self.accuracy_resources)):  # fmt: skip
            missing = sorted(set(resources or {}) - held)
            if missing:
                log.warning("cluster.%s: no worker of %s holds %s yet; those tasks wait until one joins (dask worker "
                            "... --resources \"%s=1\")", setting, self.address, ", ".join(missing), missing[0])  # fmt: skip

    def close(self) -> None:
        self._roles.clear()
        client, cluster, self._client, self._cluster = self._client, self._cluster, None, None
        if client is not None:
            quiet = logging.getLogger("distributed.client")
            level = quiet.level
            if self._scheduler_lost:  # closing stops its reconnection, which logs a traceback: ClusterLost said it
                quiet.setLevel(logging.CRITICAL)
            try:
                client.close(timeout=self.connect_timeout_s)
            except Exception as error:  # a client whose scheduler is gone: nothing left to release
                log.debug("closing the Dask client: %s", error)
            finally:
                quiet.setLevel(level)
        if cluster is not None:
            cluster.close()

    # Roles ------------------------------------------------------------------------------------------------------

    def describe_role(self, role: Any, config: Any, key: str = "role") -> None:
        """Workers build ``role`` from ``config``, the resolved section it was built from (a mapping or an OmegaConf
        node; plain data once resolved): refused here, in one line naming ``key``, when it is not plain data or a
        ``_target_`` in it is outside :attr:`allow_targets`."""
        if OmegaConf.is_config(config):
            config = OmegaConf.to_container(config, resolve=True)
        try:  # what the workers receive: JSON's types only (a tuple arrives as a list)
            plain = json.loads(json.dumps(config, allow_nan=True))
        except (TypeError, ValueError) as error:
            raise ConfigError(
                f"{key}: a Dask worker builds roles from plain data (a config of strings, numbers, booleans, lists "
                f"and mappings), and this one is not: {first_line(error)}"
            ) from None
        if not isinstance(plain, dict) or "_target_" not in plain:
            raise not_accepted(key, config, "a role's config: a mapping with its _target_ and settings")
        tasks.check_targets(plain, self.allow_targets, key, "cluster.allow_targets")
        self._configs[id(role)] = (role, plain, tasks.config_digest(plain))

    def _config(self, role: Any, what: str) -> dict[str, Any]:
        """The config ``role`` was built from (:meth:`describe_role`): what the workers build it from."""
        return self._described(role, what)[0]

    def _described(self, role: Any, what: str) -> tuple[dict[str, Any], str]:
        """The config ``role`` was built from and its digest, as :meth:`describe_role` recorded them: what the
        workers build it from."""
        described = self._configs.get(id(role))
        if described is None:
            raise ConfigError(
                f"cluster=dask: the {what} {type(role).__name__} was not built from a config, and Dask workers build "
                "each role from its config (they receive data, not objects): build the env from its config "
                "(nas_rl.envs.factory.build_env), give its config with DaskExecutor.describe_role, or use cluster=local"
            )
        return described[1], described[2]

    def _role(self, described: tuple[dict[str, Any], str], resources: dict[str, float] | None) -> Any:
        """The future of the role built from a config (with its digest) by a task on a worker that may run its
        tasks."""
        config, digest = described
        future = self._roles.get(digest)
        if future is None:
            future = self._roles[digest] = self.client.submit(
                tasks.load_role, config, key=f"nas-rl-role-{digest[:32]}", resources=resources, retries=self.retries
            )
        return future

    # Evaluations --------------------------------------------------------------------------------------------------

    def submit(self, arch: ArchSpec, fingerprint: str, accuracy: AccuracyEstimator, latency: LatencyModel) -> Any:
        configs = self._described(accuracy, "accuracy estimator"), self._described(latency, "latency model")
        client, text = self.client, arch.to_string()
        network = {name: getattr(arch, name) for name in NETWORK_FIELDS}
        name = f"{hashlib.sha256(f'{text}|{fingerprint}'.encode()).hexdigest()[:12]}-{uuid.uuid4().hex[:8]}"
        options = {"retries": self.retries, "pure": False}
        try:
            accuracy_role = self._role(configs[0], self.accuracy_resources)
            latency_role = self._role(configs[1], self.latency_resources or self.accuracy_resources)
            if not self.latency_resources:
                future = client.submit(tasks.remote_evaluate, text, network, fingerprint, accuracy_role, latency_role,
                                       key=f"nas-rl-evaluate-{name}", resources=self.accuracy_resources,
                                       **options)  # fmt: skip
                return _Submitted(text, fingerprint, future)
            partial = client.submit(
                tasks.remote_accuracy,
                text,
                network,
                fingerprint,
                accuracy_role,
                key=f"nas-rl-accuracy-{name}",
                resources=self.accuracy_resources,
                **options,
            )
            future = client.submit(
                tasks.remote_latency,
                partial,
                network,
                latency_role,
                key=f"nas-rl-latency-{name}",
                resources=self.latency_resources,
                **options,
            )
        except Exception as error:
            if isinstance(error, CancelledError) or client.status != "running":
                raise self._lost(error) from None
            raise
        return _Submitted(text, fingerprint, future, partial)

    def as_completed(self, handles: Mapping[K, Any]) -> Iterator[tuple[K, Evaluation]]:
        by_future = {handle.future.key: (key, handle) for key, handle in handles.items()}
        for future in self._distributed.as_completed([handle.future for handle in handles.values()]):
            key, handle = by_future[future.key]
            yield key, self._evaluation(handle)

    def _evaluation(self, handle: _Submitted) -> Evaluation:
        """The evaluation a finished future holds; a task that could not finish as a failed one, with the reason."""
        distributed = self._distributed
        try:
            return Evaluation(**handle.future.result())
        except distributed.scheduler.KilledWorker as error:
            reason = (f"its Dask worker died {self.retries + 1} times while evaluating it (cluster.retries="
                      f"{self.retries}): {first_line(error, 'KilledWorker')}")  # fmt: skip
        except CancelledError as error:
            raise self._lost(error) from None
        except tasks.TargetRefused as error:  # a worker refused a role's config: no candidate can be evaluated
            raise tasks.TargetRefused(first_line(error)) from None
        except Exception as error:  # raised on a worker, after its retries: not the candidate's own failure
            log.warning("the evaluation of %s raised on a Dask worker", handle.arch, exc_info=True)
            reason = f"on a Dask worker, after {self.retries} retries: {type(error).__name__}: {first_line(error, '')}"
        return Evaluation(arch=handle.arch, fingerprint=handle.fingerprint, status="failed", error=reason)

    def _lost(self, error: BaseException) -> ClusterLost:
        self._scheduler_lost = True
        where = self.address or "of the LocalCluster"
        return ClusterLost(
            f"the search stopped: the connection to the Dask scheduler {where} was lost "
            f"({first_line(error, 'cancelled')}); every evaluation that came back before is stored"
        )

    def cancel(self, handles: Iterable[Any]) -> None:
        futures = [f for h in handles for f in (h.future, h.accuracy_future) if f is not None]
        if futures and self._client is not None:
            try:
                self._client.cancel(futures)
            except Exception as error:  # a cluster already gone has nothing to cancel
                log.debug("cancelling evaluations: %s", error)


def _import_distributed() -> Any:
    try:
        import distributed
        import distributed.scheduler
        import distributed.security
    except ImportError as error:
        raise ConfigError(
            f"cluster=dask needs Dask distributed, which cannot be imported ({first_line(error)}): install it with "
            "pip install 'nas-rl[dask]' (or dask[distributed]), or use cluster=local"
        ) from None
    return distributed


def _resources(name: str, value: Any) -> dict[str, float] | None:
    if value is None:
        return None
    accepted = "null or a mapping of worker resource names to amounts > 0, e.g. {device-pixel7: 1}"
    if not isinstance(value, Mapping) or not value:
        raise not_accepted(f"cluster.{name}", value, accepted)
    for resource, amount in value.items():
        ok = isinstance(amount, (int, float)) and not isinstance(amount, bool) and amount > 0
        require(isinstance(resource, str) and bool(resource) and ok, f"cluster.{name}", dict(value), accepted)
    return {str(resource): float(amount) for resource, amount in value.items()}


def _security_files(value: Any) -> dict[str, str]:
    """The TLS files of ``cluster.security``, each checked to exist; empty for null (or every file null)."""
    if value is None or (isinstance(value, Mapping) and not any(value.values())):
        return {}
    accepted = f"null or a mapping with {', '.join(SECURITY_KEYS)} (paths of PEM files)"
    if not isinstance(value, Mapping):
        raise not_accepted("cluster.security", value, accepted)
    unknown = sorted(set(value) - set(SECURITY_KEYS))
    if unknown:
        raise not_accepted(
            f"cluster.security.{unknown[0]}", value[unknown[0]], f"one of the keys {', '.join(SECURITY_KEYS)}"
        )
    missing = [key for key in SECURITY_KEYS if not value.get(key)]
    if missing:
        raise ConfigError(f"cluster.security.{missing[0]} is not set: TLS needs all of {', '.join(SECURITY_KEYS)}")
    files = {key: str(Path(str(value[key])).expanduser()) for key in SECURITY_KEYS}
    for key, path in files.items():
        if not Path(path).is_file():
            raise DataError(f"cluster.security.{key}={path} is not a file: expected a PEM file readable here")
    return files


def _checked_address(address: str, security: dict[str, str], allow_insecure: bool) -> str:
    """``address`` with its scheme (tcp when none), refused when it would send tasks in plain text off this host."""
    text = address if "://" in address else f"tcp://{address}"
    parts = urlsplit(text)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if parts.scheme not in SCHEMES or not host or port is None:
        raise not_accepted("cluster.address", address, "tls://HOST:PORT (or tcp://HOST:PORT), or null to start a "
                           "LocalCluster")  # fmt: skip
    if parts.scheme == "tls" and not security:
        raise ConfigError(
            f"cluster.address={address} needs cluster.security: the TLS files tls_ca_file, tls_client_cert and "
            "tls_client_key of this client"
        )
    if parts.scheme == "tcp" and security:
        raise ConfigError(
            f"cluster.address={address} is plain text but cluster.security is set: use tls://{host}:{port}"
        )
    if parts.scheme == "tcp" and not _loopback(host) and not allow_insecure:
        raise ConfigError(
            f"cluster.address={address} is not accepted: plain text (tcp://) to another host would let anyone on "
            "the network run code on the workers or read the results (Dask's messages are pickled frames, which "
            "the scheduler and workers unpickle); use tls:// with cluster.security, or pass "
            "cluster.allow_insecure=true on a network you trust"
        )
    return text


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: not known to be this machine without asking DNS
