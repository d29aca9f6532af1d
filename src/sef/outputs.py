"""Writing outputs: atomically, and failing in one sentence that names the path and the reason.

Every file sef writes goes through :func:`atomic_path`: a temporary file beside the target,
renamed over it only once complete, so a failure or a kill never leaves a half-written file.
:func:`check_writable` tries the same steps up front (and undoes them), so a command that would
work for minutes first learns whether its output can be written at all.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sef import filekinds, space
from sef.errors import DiskFull, OutputError, warn
from sef.extras import require_installed
from sef.text import counted

NAME_MAX = 255  # bytes in one file name, on every common file system
NO_LINKS = getattr(os, "O_NOFOLLOW", 0)  # a file opened through a link would write elsewhere
# How a text file that lists file names is written: UTF-8, and a name that is not UTF-8 (a
# Latin-1 name from a zip, which Python holds with surrogates) as its own bytes, not an error.
FILE_NAME_TEXT = {"encoding": "utf-8", "errors": "surrogateescape"}
Refusal = TypeVar("Refusal", bound=OutputError)


def fitted(name: str, room: int = NAME_MAX) -> str:
    """``name`` if it takes at most ``room`` bytes, else cut and tagged with its hash
    (``~1a2b3c4d``) to fit, so that two names cut alike stay apart."""
    data = name.encode("utf-8", "surrogateescape")
    if len(data) <= room:
        return name
    tag = "~" + hashlib.sha1(data).hexdigest()[:8]
    return data[: room - len(tag)].decode("utf-8", "ignore") + tag


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place (unique to this process):
    ``.NAME.<pid>.tmp``, NAME cut and tagged with its hash where the whole would not fit."""
    end = f".{os.getpid()}.tmp"
    return path.with_name(f".{fitted(path.name, NAME_MAX - len(f'.{end}'))}{end}")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (Windows: taken as yes)."""
    if os.name == "nt":  # os.kill would end it there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def named(folder: Path, pattern: str) -> list[re.Match]:
    """The names of the entries of ``folder`` that the regular expression ``pattern`` matches
    whole; none where ``folder`` cannot be listed."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [m for m in (re.fullmatch(pattern, name) for name in names) if m]


def abandoned(folder: Path, pattern: str) -> list[Path]:
    """The entries of ``folder`` named as the regular expression ``pattern`` says, its group
    ``pid`` the process that made them, whose process is gone: temporaries of killed processes."""
    return [folder / m.string for m in named(folder, pattern) if not process_alive(int(m["pid"]))]


def _reason(path: Path, error: OSError, folder: bool) -> str:
    """Why the file (or ``folder``) ``path`` cannot be written, in a few words."""
    for place in [path, *path.parents] if folder else path.parents:
        if os.path.lexists(place) and not os.path.isdir(place):
            return f"{place} is a file, not a folder"
    if not folder and os.path.isdir(path):
        return f"{path} is a folder"
    return (error.strerror or str(error)).lower()


def output_error(path: str | os.PathLike, error: OSError, folder: bool = False) -> OutputError:
    """The one-sentence error for an OSError met while writing the file (or ``folder``) ``path``;
    a DiskFull, saying what is free there, when the disk or the quota is full."""
    path = Path(path)
    problem = f"cannot write {path}: {_reason(path, error, folder)}"
    if error.errno in space.FULL:
        free = space.free_bytes(path)
        problem += f" ({space.human(free)} free there)" if free is not None else ""
        return DiskFull(f"{problem}; free some space or choose another place", problem)
    return OutputError(f"{problem}; choose another place", problem)


def stdout_error(error: OSError) -> OutputError:
    """The one-sentence error for an OSError met while writing a command's output to stdout
    (`sef predict ... > file` on a full disk), which said only "no space left on device"; a
    DiskFull when the disk or the quota is full."""
    problem = f"cannot write its output to stdout: {(error.strerror or str(error)).lower()}"
    if error.errno in space.FULL:
        said = DiskFull(f"{problem}; free some space or send it elsewhere", problem)
    else:
        said = OutputError(f"{problem}; send it elsewhere", problem)
    said.on_stdout = True
    return said


def on_stdout(error: OutputError) -> bool:
    """Whether ``error`` is :func:`stdout_error`'s: the command's output, not a file, failed."""
    return getattr(error, "on_stdout", False)


def open_unlinked(path: str | os.PathLike, flags: int, mode: int = 0o666) -> int:
    """``os.open`` of ``path``, never through a link at it, which would create or write the file
    it points to (a lock file, say): OSError (ELOOP) where ``path`` is a link, on Windows too,
    which has no O_NOFOLLOW."""
    if not NO_LINKS and os.path.islink(path):
        raise OSError(errno.ELOOP, "a link", str(path))
    return os.open(path, flags | NO_LINKS, mode)


def linked_lock(
    path: str | os.PathLike, lock: str, holder: str, kind: type[Refusal] = OutputError
) -> Refusal | None:
    """``kind`` of error where ``path``, the place of ``lock`` ("a run's lock file"), is a link,
    which :func:`open_unlinked` never opens, so no ``holder`` ("run") holds it: the advice is to
    remove it; None where ``path`` is no link."""
    if not os.path.islink(path):
        return None
    problem = f"{path} is a link to {os.readlink(path)}, not {lock}"
    return kind(f"{problem}; remove it (no {holder} holds it)", problem)


def _fsync_directory(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _make(folder: Path, target: Path, is_folder: bool) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise output_error(target, error, is_folder) from None


def make_folder(folder: str | os.PathLike) -> Path:
    """``folder`` and its parents, created if missing; OutputError if that is impossible."""
    folder = Path(folder)
    _make(folder, folder, True)
    return folder


def missing_folders(folder: Path) -> list[Path]:
    """The folders that creating ``folder`` would create, innermost first."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _holds_a_model(path: Path) -> bool:
    """Whether the file ``path`` is a checkpoint or model (zip, pickle, safetensors)."""
    try:
        kind = filekinds.sniff_file(path)
    except OSError:  # absent, or unreadable: nothing to protect from here
        return False
    return kind in (filekinds.ZIP, filekinds.TORCH_LEGACY, filekinds.PICKLE, filekinds.SAFETENSORS)


# A run's records beside its checkpoints, which --resume reads: no output option replaces them.
RUN_RECORDS = ("config.yaml", "metrics.jsonl", "trackers.json")


def holds_a_run(folder: str | os.PathLike) -> bool:
    """A folder holds a run once a checkpoint is in it: one that failed before its first
    checkpoint (config.yaml, an empty metrics.jsonl, tb/) may be started again."""
    return os.path.isfile(Path(folder, "last.pt")) or os.path.isfile(Path(folder, "best.pt"))


def check_writable(path: str | os.PathLike, *, folder: bool = False) -> None:
    """Raise OutputError now if the file ``path`` (or files in the folder ``path``) could not be
    written later, or if the file would replace a checkpoint or model or a run's record (a typo
    in an output option must not destroy a trained model or its run). Tries exactly the write,
    then removes whatever it created: nothing is left."""
    path = Path(path)
    parent = path if folder else path.parent
    created = missing_folders(parent)
    try:
        _make(parent, path, folder)
        if not folder and os.path.isdir(path):
            problem = f"cannot write {path}: it is a folder"
            raise OutputError(f"{problem}; choose a file name", problem)
        if not folder and _holds_a_model(path):
            problem = (
                f"cannot write {path}: it holds a checkpoint or a model, which this would replace"
            )
            raise OutputError(f"{problem}; choose another file", problem)
        if not folder and path.name in RUN_RECORDS and holds_a_run(path.parent):
            problem = f"cannot write {path}: it is the {path.name} of the run in {path.parent}"
            raise OutputError(f"{problem}; choose another file", problem)
        probe = temporary_path(path / ".sef-probe" if folder else path)
        try:
            probe.open("xb").close()
        except OSError as error:
            raise output_error(path, error, folder) from None
        probe.unlink()
    finally:
        remove_empty(created)


def remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (innermost first, as :func:`missing_folders` lists them) up to the
    first that is not empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


# Signals that may stop a program by a KeyboardInterrupt: Ctrl-C, and SIGTERM and SIGHUP in the
# `sef` command (sef.cli).
STOPS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextmanager
def signals_handled(numbers: Sequence[int], handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for the signals ``numbers`` inside the block, the handlers before put back
    after it. Outside the main thread, where no handler can be set, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, handler) for number in numbers}
    try:
        yield
    finally:
        for number, before in previous.items():
            signal.signal(number, signal.SIG_DFL if before is None else before)


@contextmanager
def interrupt_after() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT), and SIGTERM and SIGHUP where Python handles them, until the block
    has finished, then deliver it: torch.save cut by a KeyboardInterrupt fails with a RuntimeError
    of its zip writer instead. Outside the main thread, where no handler can be set, the block
    runs as it is."""
    caught: list[int] = []
    held = [n for n in STOPS if n == signal.SIGINT or callable(signal.getsignal(n))]
    try:
        with signals_handled(held, lambda number, frame: caught.append(number)):
            yield
    finally:
        if caught:
            signal.raise_signal(caught[0])  # to the handler that was there before


@contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success rename it over ``path``.

    ``durable`` also flushes the file and its folder to disk (checkpoints). An OSError, or
    another error raised while handling one (torch's zip writer on a full disk), becomes
    OutputError; any failure removes the temporary file and leaves ``path`` as it was.
    """
    path = Path(path)
    _make(path.parent, path, False)
    temporary = temporary_path(path)
    try:
        yield temporary
        if durable:
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
        if durable:
            _fsync_directory(path.parent)
    except (OSError, RuntimeError) as error:
        cause = space.os_error_in(error)
        if cause is None:
            raise
        remove_file(temporary)  # first: the space it took is free again when the error says what is
        raise output_error(path, cause) from None
    finally:
        remove_file(temporary)


def remove_file(path: Path) -> None:
    """Remove the file ``path`` if it is there, quietly: cleaning up on the way out of a failure."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def require_matplotlib(*also: str) -> None:
    """matplotlib (and the modules ``also``) imported now, before the work whose figure needs
    it: SEFError naming the pip command where it is missing; set up for drawing into files
    first (:func:`matplotlib_for_files`, which must come before matplotlib's import)."""
    matplotlib_for_files()
    require_installed("matplotlib", *also)


def matplotlib_for_files() -> None:
    """Set matplotlib up, before it is imported, for a command that draws into files only: its
    backend Agg, whatever MPLBACKEND says (`!sef viz` in a Jupyter kernel inherits
    module://matplotlib_inline.backend_inline, which failed the command where sef's environment
    lacks that module), and a home it can write (:func:`_quiet_matplotlib_home`)."""
    os.environ["MPLBACKEND"] = "agg"
    _quiet_matplotlib_home()


def _quiet_matplotlib_home() -> None:
    """Where the user set no MPLCONFIGDIR and matplotlib's own folders cannot be written (a
    read-only HOME), point it at a temporary folder, removed at exit, before matplotlib is
    imported: matplotlib does the same itself, but prints two warnings into the command's output
    ("mkdir -p failed for path ...", "Matplotlib created a temporary cache directory ...")."""
    if os.environ.get("MPLCONFIGDIR") or all(map(_can_write, _matplotlib_folders())):
        return
    try:
        folder = tempfile.mkdtemp(prefix="sef-matplotlib-")
    except OSError:  # no temporary folder either: matplotlib says so
        return
    os.environ["MPLCONFIGDIR"] = folder
    atexit.register(shutil.rmtree, folder, True)


def _matplotlib_folders() -> list[Path | None]:
    """The folders matplotlib writes its settings and font cache in by default (None: a home it
    cannot find); none where it chooses more intricately (Windows)."""
    if sys.platform == "win32":
        return []
    try:
        home = Path.home()
    except RuntimeError:
        return [None]
    if not sys.platform.startswith(("linux", "freebsd")):
        return [home / ".matplotlib"]
    config = os.environ.get("XDG_CONFIG_HOME") or home / ".config"
    cache = os.environ.get("XDG_CACHE_HOME") or home / ".cache"
    return [Path(config) / "matplotlib", Path(cache) / "matplotlib"]


def _can_write(folder: Path | None) -> bool:
    """Whether ``folder`` is, or can be made as, a folder this process writes."""
    if folder is None:
        return False
    existing = folder.resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing.is_dir() and os.access(existing, os.W_OK)


def save_figure(figure: Any, path: str | os.PathLike, dpi: int) -> Path:
    """Write a matplotlib ``figure`` atomically, in the format ``path`` ends with (else PNG);
    characters its font lacks are one warning (:func:`_missing_glyphs_said_once`)."""
    path = Path(path)
    with _missing_glyphs_said_once(), atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=dpi, format=path.suffix[1:].lower() or "png")
    return path


# matplotlib's warning for each character its font cannot draw (matplotlib._text_helpers).
_MISSING_GLYPH = re.compile(r"Glyph (\d+) \(.*\) missing from font\(s\) (.+)\.")


@contextmanager
def _missing_glyphs_said_once() -> Iterator[None]:
    """matplotlib's warnings of characters missing from the font, as one warning that says what
    to do: 200 Chinese class names in a confusion figure were hundreds of "Glyph 20843 (...)
    missing from font(s) DejaVu Sans." lines. Other warnings pass as they are."""
    with warnings.catch_warnings(record=True) as caught:
        yield
    missing: dict[str, None] = {}
    fonts = ""
    for warning in caught:
        found = _MISSING_GLYPH.fullmatch(str(warning.message))
        if found:
            missing[chr(int(found.group(1)))] = None
            fonts = found.group(2)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    if missing:
        warn(
            f"the figure's font ({fonts}) lacks {counted(len(missing), 'character')} of its "
            f"text, drawn as boxes (e.g. {''.join(list(missing)[:5])}); install a font that has "
            f"them and put it in matplotlib's font.family (matplotlibrc), e.g. font.family: "
            f"DejaVu Sans, Noto Sans CJK JP"
        )
