"""Errors a user can cause and fix. The CLI prints their message as one line and exits 2.
Warnings, which :func:`warn` gives at the user's own line. Who their advice speaks to: the `sef`
command's user or Python code (:func:`said_to_command`)."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from types import FrameType

# Whether the `sef` command runs: its advice names options (--resume), Python code's the calls
# and config keys a script or notebook sets (fit(config, resume=True), optim.accumulate=2).
_COMMAND: ContextVar[bool] = ContextVar("sef_command", default=False)


class SEFError(Exception):
    """Base class: the message names the file or value at fault and what to do."""


class _Problem:
    """``problem`` is what went wrong, without the advice the message ends with (for callers
    that advise otherwise)."""

    def __init__(self, message: str, problem: str | None = None) -> None:
        super().__init__(message)
        self.problem = problem or message


class ConfigError(SEFError, ValueError):
    """A bad preset, config key, or config value."""


class DataError(SEFError):
    """A dataset root, metadata file, or image that cannot be used."""


class CheckpointError(SEFError):
    """A checkpoint that is missing, corrupt, or unsafe to load."""


class IncompleteCheckpoint(CheckpointError):
    """A checkpoint cut short or damaged (a copy that did not finish): another copy is the fix."""


class NotACheckpoint(_Problem, CheckpointError):
    """A file that is no sef checkpoint: another kind of file, another program's, or one damaged
    past reading as one."""


class OutputError(_Problem, SEFError):
    """An output file or folder that cannot be written."""


class DiskFull(OutputError):
    """An output that did not fit: its disk (or quota) is full."""


class WeightsError(SEFError):
    """Pretrained weights that cannot be found, downloaded, or loaded."""


class TrainingError(SEFError):
    """Training that cannot go on, e.g. a loss that became NaN or infinite."""


class OutOfMemory(SEFError):
    """The CPU's or a GPU's memory ran out: the message says which batch and what to lower."""


def original_message(error: Exception) -> str:
    """The message of an error raised in a DataLoader worker, which torch raises again with the
    worker's traceback for message ("Caught X in DataLoader worker process 0. Original
    Traceback ... X: message"); any other error's message as it is."""
    text, name = str(error), type(error).__qualname__
    if not text.startswith(f"Caught {type(error).__name__} ") or f"{name}: " not in text:
        return text
    return text[text.rindex(f"{name}: ") + len(name) + 2 :].strip()


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn of ``message`` at the line of the user's code that called into sef (a script's, a
    notebook cell's), however deep in sef it is met: the warning names that line, and Python
    shows it once there, as it does a warning of the user's own. Raised with a fixed depth
    (stacklevel), one met inside sef named a line of sef or of torch (a generator's wrapper, a
    module's ``__call__``), and Python then showed it once per session whatever later called
    it: a notebook cell run again, with the same problem, said nothing."""
    frame = _users_frame(sys._getframe(1))
    if frame is None:  # no caller outside sef (a thread of its own): where it is met
        warnings.warn(message, category, stacklevel=2)
        return
    names = frame.f_globals
    warnings.warn_explicit(
        message,
        category,
        frame.f_code.co_filename,
        frame.f_lineno,
        module=names.get("__name__"),
        registry=names.setdefault("__warningregistry__", {}),
    )  # no module_globals, as warnings.warn: its loader may not serve __main__ (python -m)


def _users_frame(frame: FrameType | None) -> FrameType | None:
    """The frame that called the outermost of sef's frames on ``frame``'s stack, torch's own
    frames between them passed over (``nn.Module.__call__`` around a loss or a model)."""
    outermost = None
    while frame is not None:
        if _of(frame, "sef"):
            outermost = frame
        frame = frame.f_back
    caller = outermost.f_back if outermost is not None else None
    while caller is not None and _of(caller, "torch"):
        caller = caller.f_back
    return caller


def _of(frame: FrameType, package: str) -> bool:
    """Whether ``frame`` runs code of ``package`` (or of one of its modules)."""
    module = frame.f_globals.get("__name__") or ""
    return module == package or module.startswith(f"{package}.")


@contextlib.contextmanager
def said_to_command() -> Iterator[None]:
    """While the `sef` command runs: advice names what its user does (see :func:`to_command`)."""
    token = _COMMAND.set(True)
    try:
        yield
    finally:
        _COMMAND.reset(token)


def to_command() -> bool:
    """Whether advice goes to the `sef` command's user, not to a script's or notebook's code."""
    return _COMMAND.get()


def for_reader(command: str, code: str) -> str:
    """Advice in its reader's words: ``command`` to the `sef` command's user (an option,
    ``--split val``), ``code`` to Python code (a function's argument, ``split='val'``)."""
    return command if to_command() else code
