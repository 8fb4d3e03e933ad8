"""Small helpers every layer uses: one first line of an error, one atomic write, one integer and one positive-number check, quiet native output."""

from __future__ import annotations

import contextlib
import io
import math
import numbers
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def first_line(error: BaseException | str, default: str = "") -> str:
    """The first non-empty line of an error's message (or of a text); ``default`` (else the type's name) if none."""
    text = error if isinstance(error, str) else str(error)
    lines = text.strip().splitlines()
    if lines:
        return lines[0]
    return default or ("" if isinstance(error, str) else type(error).__name__)


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer setting (numpy integers included; ``True``/``False`` are not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_positive_number(value: Any) -> bool:
    """Whether ``value`` is a finite number > 0 (``True`` is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that add one add nothing); on success it
    replaces ``path`` in one rename, so a reader never sees a half-written file. On failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """``path`` holds ``text`` afterwards, or (on any failure) what it held before."""
    with atomic_write(path) as temporary:
        temporary.write_text(text)


@contextlib.contextmanager
def silenced_output() -> Iterator[None]:
    """Send file descriptors 1 and 2 (where TF's C++ converter and Keras' export print) to /dev/null.

    Works at the descriptor level, so it also silences native code; it affects the whole process, so other
    threads' output during the block is lost too. Exceptions pass through with their messages intact.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved: dict[int, int] = {}
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            with contextlib.suppress(OSError):  # a closed descriptor has nothing to silence
                saved[fd] = os.dup(fd)
                os.dup2(devnull, fd)
        with contextlib.redirect_stdout(io.StringIO()):  # Python-level prints (Keras' "Saved artifact at ...")
            yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


def clear_keras_session() -> None:
    """Free Keras' global graph state (it grows with every model built); never imports Keras just to clear it."""
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
