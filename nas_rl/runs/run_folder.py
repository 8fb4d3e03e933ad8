"""A run folder's identity and lock, shared by the search (which writes the folder) and the report (which reads it).

``run.json`` says which history in the evaluation store is the run's (its ``run_id``), where the run was
started and with which overrides. ``run.lock`` is held (an OS file lock) by the one process that runs or
resumes the run, so a second one is refused instead of writing the same folder and history; the OS releases
it when its holder ends, killed ones included. The module imports nothing heavy (Hydra only inside
:func:`resumed_run_overrides`): the entry point uses it before torch is loaded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nas_rl._util import first_line, write_text_atomically
from nas_rl.errors import ConfigError, DataError

RUN_FILE = "run.json"
LOCK_FILE = "run.lock"
CONFIG_FILE = "config.yaml"


def unwritable(path: Path, error: OSError) -> ConfigError:
    """The one-line error of an output that cannot be written: the file, the reason, what a run needs."""
    reason = error.strerror or first_line(error)
    return ConfigError(f"{path} cannot be written ({reason}): a run writes its outputs into its run folder, which "
                       "must be a writable directory (hydra.run.dir=DIR, or resume= a run you can write to)")  # fmt: skip


def check_writable_folder(folder: Path) -> None:
    """Refuse, in one line, a run folder that cannot be made or written: the folder, or the nearest of its parents
    that exists, must be a directory this process may write (a read-only file system counts, even for root).

    :raises ConfigError: naming the folder and what is in the way.
    """
    existing = Path(os.path.abspath(folder))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{folder} cannot be a run folder: {existing} is a file, not a directory; a run writes its "
                          "outputs into its run folder (hydra.run.dir=DIR)")  # fmt: skip
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{folder} cannot be written ({existing} is read-only): a run writes its outputs into its run "
                          "folder, which must be a writable directory (hydra.run.dir=DIR)")  # fmt: skip


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError raised by the block (a read-only folder, a full disk) into :func:`unwritable` for ``path``
    (the file meant, not the temporary file an atomic write was writing)."""
    try:
        yield
    except OSError as error:
        raise unwritable(path, error) from None


# ------------------------------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class RunIdentity:
    """What ``run.json`` holds.

    :param run_id: the tag of the run's episodes in the store.
    :param run_dir: the absolute folder the run was started in (None for runs from before it was recorded: then
        Hydra's ``.hydra/hydra.yaml`` may tell, see :func:`started_in`).
    :param overrides: the command-line overrides the run was started with (None: unknown).
    """

    run_id: str
    run_dir: str | None = None
    overrides: tuple[str, ...] | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = {"run_id": self.run_id, "run_dir": self.run_dir}
        if self.overrides is not None:
            data["overrides"] = list(self.overrides)
        return json.dumps(data, indent=2)


def write_identity(run_dir: Path, identity: RunIdentity) -> None:
    with writing(run_dir / RUN_FILE):
        write_text_atomically(run_dir / RUN_FILE, identity.to_json())


def read_identity(run_dir: Path, setting: str = "resume") -> RunIdentity:
    """The identity of the run in ``run_dir``.

    :raises ConfigError: ``run_dir`` is no run folder, or a run that stopped before its identity was written
        (nothing was evaluated: the message says to start it again, with its overrides); ``run.json`` is
        unreadable or not a run's (DataError naming the file and what it must hold).
    """
    path = run_dir / RUN_FILE
    if not run_dir.is_dir():
        what = "a file, not a folder" if run_dir.exists() else "no such directory"
        raise ConfigError(f"{setting}={run_dir} is not accepted: not a nas-rl run directory ({what})")
    if not path.is_file():
        if (run_dir / ".hydra").is_dir():
            recorded = _hydra_overrides(run_dir)
            again = " ".join(["nas-rl", *recorded]) if recorded is not None else "nas-rl with its overrides"
            raise ConfigError(
                f"{setting}={run_dir} is not accepted: that run stopped before it started (no {RUN_FILE}), so "
                f"nothing was evaluated and there is nothing to resume; start it again: {again}"
            )
        raise ConfigError(f"{setting}={run_dir} is not accepted: not a nas-rl run directory (no {RUN_FILE})")
    expected = 'a JSON object with the run\'s "run_id" (the tag of its history in the evaluation store)'
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"{path} is not readable as a nas-rl run.json ({first_line(error)}); expected {expected}; "
                        "without it the run cannot be resumed (its evaluations stay in the store)") from None  # fmt: skip
    run_id = data.get("run_id") if isinstance(data, dict) else None
    if not isinstance(run_id, str) or not run_id:
        found = first_line(json.dumps(data))[:80]
        raise DataError(f"{path} is not a nas-rl run.json: found {found}; expected {expected}")
    overrides = data.get("overrides")
    return RunIdentity(
        run_id,
        data.get("run_dir") if isinstance(data.get("run_dir"), str) else None,
        tuple(map(str, overrides)) if isinstance(overrides, list) else None,
    )


def started_in(run_dir: Path, identity: RunIdentity) -> Path | None:
    """The folder the run was started in: ``run.json``'s, else Hydra's record of its output folder."""
    if identity.run_dir:
        return Path(identity.run_dir)
    output_dir = _hydra_setting(run_dir, "runtime", "output_dir")
    return Path(output_dir) if isinstance(output_dir, str) else None


def recorded_overrides(run_dir: Path, identity: RunIdentity) -> list[str]:
    """The overrides the run was started with (``run.json``'s, else Hydra's record in ``.hydra/``), less
    ``resume=`` and Hydra's own settings; [] if neither is there."""
    recorded = identity.overrides if identity.overrides is not None else _hydra_overrides(run_dir)
    return [o for o in recorded or () if not o.lstrip("+~").startswith(("resume=", "hydra.", "hydra/"))]


def resumed_run_overrides(overrides: Sequence[str], config_module: str = "nas_rl.conf") -> list[str]:
    """For a command with ``resume=RUN``: the overrides RUN was started with (:func:`recorded_overrides`) that the
    command does not repeat, for the entry point to put before the command's, so Hydra composes the command's
    settings on the run's config (``controller.sample_size=3`` on an evolution run).

    [] without ``resume=``, when RUN is not a readable run (the search then says why, in one line), or when the
    command's settings do not compose on the run's (``experiment=tabular`` on a run that set MnasNet keys): then
    they are composed alone, and the search judges what they change.
    """
    values = [o.split("=", 1)[1] for o in overrides if o.lstrip("+~").startswith("resume=")]
    if not values or values[-1] in ("", "null"):
        return []
    run_dir = Path(values[-1])
    try:
        identity = read_identity(run_dir)
    except ConfigError:
        return []
    recorded = [o for o in recorded_overrides(run_dir, identity) if o not in overrides]
    return recorded if recorded and _composes(config_module, [*recorded, *overrides]) else []


def _composes(config_module: str, overrides: list[str]) -> bool:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    context = contextlib.nullcontext() if GlobalHydra.instance().is_initialized() else initialize_config_module(
        config_module=config_module, version_base="1.3")  # fmt: skip
    try:
        with context:
            compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException):
        return False
    return True


def _hydra_overrides(run_dir: Path) -> list[str] | None:
    """The run's overrides from Hydra's ``overrides.yaml``, else from ``hydra.yaml`` (``hydra.overrides.task``).

    Hydra writes ``hydra.yaml`` and closes it before it opens ``overrides.yaml``, so a run killed at that moment
    leaves an empty ``overrides.yaml`` beside a whole ``hydra.yaml``."""
    recorded = _hydra_record(run_dir, "overrides.yaml")
    if not isinstance(recorded, list):
        recorded = _hydra_setting(run_dir, "overrides", "task")
    return [str(o) for o in recorded] if isinstance(recorded, list) else None


def _hydra_setting(run_dir: Path, *keys: str) -> Any:
    """``hydra.<keys>`` of the run's ``.hydra/hydra.yaml``; None when the file or any level of the path is missing."""
    value = _hydra_record(run_dir, "hydra.yaml")
    for key in ("hydra", *keys):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _hydra_record(run_dir: Path, name: str) -> Any:
    try:
        return yaml.safe_load((run_dir / ".hydra" / name).read_text())
    except (OSError, yaml.YAMLError):
        return None


def locate_store(run_dir: Path, recorded: str | os.PathLike[str], origin: Path | None) -> Path:
    """Where the run's store is: the recorded ``search.store``, except when that lay inside the folder the run was
    started in (``origin``) and the run now lies elsewhere (the folder was moved or copied): then the same file
    inside ``run_dir``. A store outside the run folder (one shared by several runs) stays where it was recorded.
    """
    store = Path(recorded)
    if origin is None or str(recorded) == ":memory:":
        return store
    here, there = run_dir.resolve(), Path(os.path.abspath(origin))
    if here in (there, there.resolve()):
        return store  # the run is where it was started
    try:
        inside = Path(os.path.abspath(store)).relative_to(there)
    except ValueError:
        return store
    return here / inside


def reported_episodes(episodes: Sequence[dict[str, Any]], budget: int | None) -> list[dict[str, Any]]:
    """A run's architectures: the first ``budget`` of its history in the store.

    A controller stepping ``n_envs`` envs together may finish up to ``n_envs - 1`` architectures past its budget
    in the last step; they stay in the store (a cache for later runs) but are not the run's.
    """
    return list(episodes if budget is None else episodes[:budget])


# ----------------------------------------------------------------------------------------------------- lock


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block: one process runs or resumes a run at a time.

    :raises ConfigError: another process holds it (the message names its pid and host, from the lock file), or
        the folder cannot be written (the lock file is the first thing a run writes).
    """
    path = run_dir / LOCK_FILE
    with writing(path):
        run_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise unwritable(path, error) from None
            raise ConfigError(
                f"{run_dir} is in use by another nas-rl process ({holder(run_dir)}, from {path}): a run folder takes "
                "one process at a time; wait for that one to end, or stop it, then resume"
            ) from None
        with writing(path):
            os.ftruncate(descriptor, 0)
            facts = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.pwrite(descriptor, json.dumps(facts).encode(), 0)
        yield
    finally:
        os.close(descriptor)  # releases the lock (so does the end of the process, however it ends)


def in_use(run_dir: Path) -> bool:
    """Whether a process holds ``run_dir``'s lock now (a run or resume in progress); needs no write access."""
    try:
        descriptor = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(descriptor)
    return False


def holder(run_dir: Path) -> str:
    """``pid N on HOST since TIME`` from the lock file (what its holder wrote), or a plain phrase if unreadable."""
    try:
        data = json.loads((run_dir / LOCK_FILE).read_text())
        return f"pid {int(data['pid'])} on {data['host']} since {data['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its pid yet"
