"""One run, one folder: a run holds an OS lock on its folder for as long as it lives.

The lock is ``flock`` (``msvcrt.locking`` on Windows) on ``DIR/.sef-lock``; the kernel releases it
when the process ends, however it ends (a crash, SIGKILL, a power cut), so a dead run never blocks
its folder and no stale lock has to be deleted by hand. The file records who holds it (pid, host,
start time, command) so that a second run is refused in one line naming the first.

On release the holder deletes the file while still holding the lock, and whoever acquires checks
afterwards that the file it locked is still the one at ``DIR/.sef-lock`` (else it tries again):
two processes can never both believe they hold the folder.

A lock file with another name too (a hard link: `cp -al` copies a run folder so) is not this
folder's own: the run replaces it with one of its own, removing its name here, when no live
process holds it or when its holder wrote that it runs in another folder.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

from sef import outputs
from sef.errors import OutputError, SEFError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

LOCK_NAME = ".sef-lock"
WINDOWS_LOCK_OFFSET = 1 << 30  # msvcrt locks a byte range, which other processes cannot read
# Descriptors of the locks this process holds. A forked child (a DataLoader worker) closes its
# copies: the lock belongs to the open file, so a worker outliving a killed run would hold it.
_HELD: set[int] = set()


def _forget_in_child() -> None:
    for descriptor in _HELD:
        try:
            os.close(descriptor)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class FolderBusy(SEFError):
    """A run folder that another live process holds; ``holder`` describes that process. Made
    from its message alone, like every SEFError, so that callers can reword it."""

    def __init__(self, message: str, folder: Path | None = None, holder: str = "") -> None:
        super().__init__(message)
        self.folder, self.holder = folder, holder

    @classmethod
    def held(cls, folder: Path, holder: str) -> FolderBusy:
        return cls(f"{folder} is in use by another run ({holder})", folder, holder)


class NotALock(OutputError):
    """A ``DIR/.sef-lock`` that is a folder or a link: no run can hold it (``acquire`` opens a
    file to write, and never through a link, which would write into another place), so the
    advice is to remove it."""


BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.EDEADLK)


def _try_lock(descriptor: int) -> bool:
    """Take the exclusive lock without waiting; False if another process holds it (OSError if
    the file system cannot lock at all)."""
    try:
        if fcntl is not None:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # one byte far past the holder's note, so others can still read who holds it
            os.lseek(descriptor, WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
    except OSError as error:
        if error.errno in BUSY:
            return False
        raise
    return True


def _note(path: Path) -> dict | None:
    """What the holder of the lock at ``path`` wrote of itself (a moment's retry while it does)."""
    for _ in range(20):
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            time.sleep(0.05)
    return None


def _holder(path: Path) -> str:
    """Who holds the lock at ``path``, as its holder wrote it."""
    info = _note(path)
    if info is None:
        return "a process that has not yet written who it is"
    where = "" if info.get("host") == socket.gethostname() else f" on {info.get('host')}"
    started, command = info.get("started"), info.get("command")
    return f"pid {info.get('pid')}{where}, started {started}, running `{command}`"


def _command() -> str:
    """This process's command line, the `sef` command named as a user types it."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program in ("sef", "__main__.py"):
        program = "sef"
    return " ".join([program, *sys.argv[1:]])[:200]


def _identity(folder: Path) -> str:
    started, host = time.strftime("%Y-%m-%d %H:%M:%S"), socket.gethostname()
    note = {"pid": os.getpid(), "host": host, "started": started, "command": _command()}
    return json.dumps({**note, "folder": str(folder.resolve())})


def _shared(descriptor: int) -> bool:
    """Whether the lock file open as ``descriptor`` has other names: a hard link that a copy
    of a run folder by `cp -al` shares with the folder copied."""
    return os.fstat(descriptor).st_nlink > 1


def _held_elsewhere(path: Path, folder: Path) -> bool:
    """Whether the holder of the shared lock file ``path`` wrote that it runs in another folder
    than ``folder`` (on this host, where its folder's name means the same)."""
    info = _note(path) or {}
    if info.get("host") != socket.gethostname() or not isinstance(info.get("folder"), str):
        return False
    try:
        return not os.path.samefile(info["folder"], folder)
    except OSError:  # its folder is gone or moved: not this one
        return True


def _unshare(path: Path) -> bool:
    """Remove the name ``path`` of a shared lock file, so that the next open makes this folder a
    lock file of its own; False where it cannot be removed."""
    try:
        path.unlink()
    except FileNotFoundError:  # removed meanwhile: the next open makes one too
        pass
    except OSError:  # a folder this user cannot write
        return False
    return True


class RunLock:
    """The lock a run holds on ``folder``; ``release`` (or leaving a ``with``) gives it up and
    removes the folders that acquiring it created, if the run left them empty."""

    def __init__(self, folder: Path, descriptor: int, created: list[Path]) -> None:
        self.folder, self._descriptor, self._created = folder, descriptor, created

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def release(self) -> None:
        if self._descriptor < 0:
            return
        try:
            self.path.unlink(missing_ok=True)  # while locked: see the module's docstring
        except OSError:
            pass
        _HELD.discard(self._descriptor)
        os.close(self._descriptor)  # the kernel drops the lock with the last descriptor
        self._descriptor = -1
        outputs.remove_empty(self._created)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _remove_unheld(path: Path, folder: Path) -> bool:
    """Remove the lock file ``path`` that this user may not write, left by a dead run (another
    user's, under a stricter umask); FolderBusy if a live run holds it, False if it cannot be
    removed. Removed while locked, as ``release`` does, so no holder is ever cut off."""
    try:
        descriptor = outputs.open_unlinked(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        if not _try_lock(descriptor):
            raise FolderBusy.held(folder, _holder(path))
        if os.path.samestat(os.fstat(descriptor), os.stat(path)):
            path.unlink()
    except FileNotFoundError:  # its holder removed it meanwhile: try again
        pass
    except OSError:  # a folder this user cannot write either
        return False
    finally:
        os.close(descriptor)
    return True


def _not_a_lock(path: Path) -> NotALock | None:
    """NotALock where ``path`` is a folder or a link (to anything), else None."""
    if not path.is_symlink() and path.is_dir():
        problem = f"{path} is a folder, not a run's lock file"
        return NotALock(f"{problem}; remove it (no run holds it)", problem)
    return outputs.linked_lock(path, "a run's lock file", "run", NotALock)


def check_lock_file(folder: str | os.PathLike) -> None:
    """NotALock where ``folder``'s lock is a folder or a link, which no run can take: said before
    a run is due to take it (a reproduction's later rows)."""
    problem = _not_a_lock(Path(folder) / LOCK_NAME)
    if problem is not None:
        raise problem


def is_held(folder: str | os.PathLike) -> bool:
    """Whether a live process holds ``folder``'s lock: tried without waiting and given back at
    once (a folder without one, or on a file system that cannot lock, is not held)."""
    path = Path(folder) / LOCK_NAME
    try:  # read-only: another user's lock may be unwritable to this one
        descriptor = outputs.open_unlinked(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        held = not _try_lock(descriptor)
        return held and not (_shared(descriptor) and _held_elsewhere(path, Path(folder)))
    except OSError:
        return False
    finally:
        os.close(descriptor)  # and with it the lock, if taken


def acquire(folder: str | os.PathLike) -> RunLock:
    """Lock ``folder`` (created if missing) for this process; FolderBusy naming the holder if a
    live process holds it, OutputError if the folder or its lock file cannot be written
    (NotALock where the lock is a folder or a link)."""
    folder = Path(folder)
    created = outputs.missing_folders(folder)
    path = outputs.make_folder(folder) / LOCK_NAME
    while True:
        try:  # 0o666: the umask decides, so a group folder's lock stays the group's to replace
            descriptor = outputs.open_unlinked(path, os.O_RDWR | os.O_CREAT)
        except OSError as error:
            if isinstance(error, PermissionError) and _remove_unheld(path, folder):
                continue
            raise _not_a_lock(path) or outputs.output_error(path, error) from None
        try:
            locked = _try_lock(descriptor)
        except OSError as error:
            os.close(descriptor)
            problem = f"cannot lock {folder} for this run: {(error.strerror or str(error)).lower()}"
            raise OutputError(
                f"{problem}; choose a folder on a file system that supports file locks", problem
            ) from None
        if not locked and not (_shared(descriptor) and _held_elsewhere(path, folder)):
            os.close(descriptor)
            raise FolderBusy.held(folder, _holder(path))
        try:
            same = os.path.samestat(os.fstat(descriptor), os.stat(path))
        except FileNotFoundError:  # its holder removed it as we locked it: take the new one
            same = False
        if same and _shared(descriptor) and _unshare(path):
            same = False  # a hard link to another folder's lock: this one gets its own next
        if same and locked:
            break
        os.close(descriptor)
        if same:  # held elsewhere, and its name here cannot be removed
            raise FolderBusy.held(folder, _holder(path))
    _HELD.add(descriptor)
    try:
        os.ftruncate(descriptor, 0)
        os.lseek(descriptor, 0, os.SEEK_SET)  # Windows: the lock moved the position
        os.write(descriptor, _identity(folder).encode("utf-8"))
    except OSError as error:
        lock = RunLock(folder, descriptor, created)
        lock.release()
        raise outputs.output_error(path, error) from None
    return RunLock(folder, descriptor, created)
