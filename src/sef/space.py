"""Disk space: whether an error means a full disk, what is free, what tensors will take.

A full disk reaches sef as an OSError (ENOSPC, EDQUOT) or as torch's zip writer's RuntimeError
raised while handling one; :func:`os_error_in` finds the OSError either way, so that the writer
can name the file and the space instead of printing two tracebacks.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FULL = (errno.ENOSPC, errno.EDQUOT)


def os_error_in(error: BaseException) -> OSError | None:
    """``error`` if it is an OSError, else the OSError it was raised while handling, if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def is_full(error: BaseException) -> bool:
    """Whether ``error`` (or the OSError within it) says the disk or the quota is full."""
    found = os_error_in(error)
    return found is not None and found.errno in FULL


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes free for this user on the disk that holds ``path`` (its nearest existing folder)."""
    place = Path(os.path.abspath(path))
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        return shutil.disk_usage(place).free
    except OSError:
        return None


def tensor_bytes(value: Any) -> int:
    """The bytes of every tensor in ``value`` (nested dicts, lists, tuples): what torch.save
    writes for them, give or take a few kilobytes of structure."""
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    if hasattr(value, "element_size") and hasattr(value, "numel"):
        return value.element_size() * value.numel()
    return 0


def human(count: float) -> str:
    """``count`` bytes as 512 B, 3.1 KB, 45.3 MB, 1.2 GB, 2.0 TB (powers of 1000, as df -H)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def apart(first: float, second: float) -> tuple[str, str]:
    """``first`` and ``second`` bytes as :func:`human` words, or as exact bytes where those would
    read alike: "needs 1.0 MB and 1.0 MB are free" did not say which is larger."""
    words = human(first), human(second)
    if words[0] != words[1] or first == second:
        return words
    return f"{first:,.0f} bytes", f"{second:,.0f} bytes"


@contextlib.contextmanager
def quiet_full_disk_in_threads() -> Iterator[None]:
    """While inside, a thread that dies of a full disk prints no traceback: TensorBoard's writer
    thread, whose error its writer raises again in the calling thread, where sef reports it."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not (isinstance(args.exc_value, BaseException) and is_full(args.exc_value)):
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous
