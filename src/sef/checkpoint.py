"""Checkpoints: written atomically, read without ever unpickling code.

A checkpoint is a plain dict saved with ``torch.save`` that holds only tensors, dicts, lists,
tuples, strings, numbers, booleans and None, so ``torch.load(weights_only=True)`` reads it. It
carries at least ``model`` (the SEF state dict), ``config`` (the resolved config as plain values),
``classes``, ``epoch`` and ``metrics``, so eval, predict and export need nothing else.
:func:`save_checkpoint` adds who wrote it: ``format`` (:data:`FORMAT`), ``sef_version`` and
``torch_version``; a checkpoint written before these were recorded lacks them and still loads.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from sef import filekinds
from sef.errors import CheckpointError, IncompleteCheckpoint, NotACheckpoint
from sef.outputs import atomic_path, interrupt_after
from sef.version import __version__

REQUIRED_KEYS = ("model", "config", "classes", "epoch", "metrics")
# The layout of the keys above that this sef writes and reads: raise it when that changes, so
# an older sef refuses a newer checkpoint in words instead of misreading it.
FORMAT = 1
# What the values that rebuild the model, and those saying who wrote it, must be when present.
_KINDS = {
    "model": (dict, "a state dict"),
    "config": (dict, "a dict"),
    "classes": ((list, tuple), "a list of class names"),
    "format": (int, "a format number"),
    "sef_version": (str, "a version"),
    "torch_version": (str, "a version"),
}
_PLAIN = (torch.Tensor, str, int, float, bool, type(None))


def _check_plain(value: Any, where: str) -> None:
    """Fail before writing if a value would need pickled code to read back."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, where)
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(
            f"checkpoint value {where} is a {type(value).__name__}; store only tensors, dicts, "
            f"lists, tuples, str, int, float, bool or None"
        )


def _newer_format(state: object) -> int | None:
    """The format number of ``state`` when it is newer than :data:`FORMAT`, else None."""
    number = state.get("format") if isinstance(state, dict) else None
    return number if isinstance(number, int) and number > FORMAT else None


def _unfit(state: object) -> str | None:
    """What keeps ``state`` from being a checkpoint this sef reads (keys of
    :data:`REQUIRED_KEYS` it lacks, a value of :data:`_KINDS` of another type, or a newer
    format), else None."""
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        return f"missing {', '.join(missing)}"
    for key, (kind, what) in _KINDS.items():
        if key in state and not isinstance(state[key], kind):
            return f"its {key} is a {type(state[key]).__name__}, not {what}"
    newer = _newer_format(state)
    if newer:
        return f"its format {newer} is newer than format {FORMAT}, which sef {__version__} reads"
    return None


def _provenance() -> dict:
    """Who writes a checkpoint now: its format, this sef and this torch."""
    return {"format": FORMAT, "sef_version": __version__, "torch_version": str(torch.__version__)}


def written_by(sef_version: str | None, torch_version: str | None) -> str:
    """Who wrote a checkpoint, in words: "sef 0.1.0 with torch 2.5.1"."""
    if sef_version is None:
        return "an older sef that did not record its version"
    return f"sef {sef_version} with torch {torch_version}"


def writer_of(state: dict) -> str:
    """Who wrote the checkpoint ``state``, in words (:func:`written_by`)."""
    return written_by(state.get("sef_version"), state.get("torch_version"))


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` to ``path`` atomically: temp file, fsync, rename over the old file.

    ``state`` is a dict with at least the keys of :data:`REQUIRED_KEYS`, its model and config
    dicts and its classes a list, of no newer format (what :func:`load_checkpoint` requires),
    else ValueError before anything is written; the file also records :data:`FORMAT`, this sef's
    version and torch's (``state`` itself is left as it is). A crash or kill at any moment leaves
    either the previous file or the new one, never a mix; Ctrl-C waits for the write to finish.
    """
    unfit = _unfit(state)
    if unfit:
        raise ValueError(
            f"a checkpoint is a dict of {', '.join(REQUIRED_KEYS)}, as load_checkpoint requires; "
            f"this state is not one ({unfit})"
        )
    _check_plain(state, "state")
    with (
        interrupt_after(),
        atomic_path(path, durable=True) as temporary,
        open(temporary, "wb") as handle,
    ):
        torch.save(state | _provenance(), handle)


_PASS = "pass a last.pt or best.pt written by `sef train`"


def _not_a_checkpoint(problem: str, advice: str | None = _PASS) -> NotACheckpoint:
    """NotACheckpoint saying ``problem``, then ``advice`` where there is one."""
    return NotACheckpoint(f"{problem}; {advice}" if advice else problem, problem)


# Words of torch's weights-only refusals that mean the pickle names code to import or call.
_CODE_WORDS = ("global", "reduce", "new object", "persistent")


def _check_archive(path: Path) -> None:
    """Refuse a zip file that is truncated, damaged, or not written by ``torch.save``."""
    if not zipfile.is_zipfile(path):
        raise IncompleteCheckpoint(
            f"checkpoint {path} is truncated: the zip archive torch.save writes ends before its "
            f"table of contents (a save, copy or download that did not finish); use a whole copy"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            bad = archive.testzip()  # reads every member and checks its CRC
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise _not_a_checkpoint(
            f"checkpoint {path} is a damaged zip archive ({error})", None
        ) from None
    if bad is not None:
        raise IncompleteCheckpoint(
            f"checkpoint {path} is damaged: its member {bad} does not match its checksum; use "
            f"another copy"
        )
    if any(name.endswith("/constants.pkl") for name in names):
        raise _not_a_checkpoint(
            f"{path} is a TorchScript model (as `sef export` writes), not a checkpoint"
        )
    if not any(name.endswith("/data.pkl") for name in names):
        raise _not_a_checkpoint(
            f"{path} is a zip archive that torch.save did not write (no data.pkl inside)"
        )


def _folder_given(path: Path) -> CheckpointError:
    """A folder given as a checkpoint: the run's checkpoints in it by name, else that it has
    none (an export's folder, the folder of all runs)."""
    held = [str(path / name) for name in ("best.pt", "last.pt") if (path / name).is_file()]
    if not held:
        return CheckpointError(
            f"checkpoint {path} is a folder that holds no best.pt or last.pt; {_PASS}"
        )
    return CheckpointError(f"checkpoint {path} is a folder; pass {' or '.join(held)}")


def _check_kind(path: Path) -> None:
    """Refuse, in one true sentence, a file that cannot be a checkpoint, before torch reads it."""
    if path.is_dir():
        raise _folder_given(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; {_PASS}")
    try:
        kind = filekinds.sniff_file(path)
    except OSError as error:
        raise CheckpointError(f"checkpoint {path} cannot be read: {error.strerror}") from None
    if kind == filekinds.EMPTY:
        raise _not_a_checkpoint(f"checkpoint {path} is empty (0 bytes)")
    if kind == filekinds.ZIP:
        _check_archive(path)
    elif kind == filekinds.PICKLE:  # refused before torch.load warns about its protocol
        raise _not_a_checkpoint(f"{path} is a Python pickle that torch.save did not write")
    elif kind != filekinds.TORCH_LEGACY:
        raise _not_a_checkpoint(
            f"{path} is not a checkpoint: it is {kind}, not the zip archive torch.save writes"
        )


def _load_error(path: Path, error: Exception) -> CheckpointError:
    """What went wrong when ``torch.load(weights_only=True)`` refused or failed on ``path``."""
    reason = str(error).split("\n")[0]
    if isinstance(error, pickle.UnpicklingError):
        detail = str(error).rpartition("WeightsUnpickler error:")[2].strip() or reason
        if any(word in detail.lower() for word in _CODE_WORDS):
            return _not_a_checkpoint(
                f"refused to load checkpoint {path}: it holds pickled Python objects that could "
                f"run code",
                "use only checkpoints written by `sef train`",
            )
        return _not_a_checkpoint(
            f"checkpoint {path} is damaged: its pickle is invalid ({detail})", None
        )
    if isinstance(error, EOFError):
        return IncompleteCheckpoint(
            f"checkpoint {path} is truncated: its pickle ends early; use a whole copy"
        )
    return IncompleteCheckpoint(f"checkpoint {path} is damaged ({reason}); use another copy")


def _check_format(path: Path, state: object) -> None:
    """Refuse a checkpoint of a format newer than this sef's, before its keys are judged (a newer
    format may name them otherwise)."""
    newer = _newer_format(state)
    if newer:
        writer = state.get("sef_version")
        by = f"sef {writer}" if isinstance(writer, str) else "a newer sef"
        raise CheckpointError(
            f"checkpoint {path} is in format {newer}, written by {by}; this sef {__version__} "
            f"reads format {FORMAT} at most: upgrade sef to read it"
        )


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint with ``weights_only=True``; refuse pickled code, and name what is wrong
    with any other file (empty, truncated, damaged, written by something else, or by a newer sef
    in a format this one cannot read)."""
    path = Path(path)
    _check_kind(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        raise _load_error(path, error) from None
    except (KeyError, IndexError, TypeError, AttributeError) as error:  # a pickle's bad opcodes
        reason = f"{type(error).__name__}: {error}"
        raise _not_a_checkpoint(
            f"checkpoint {path} is damaged: its pickle is invalid ({reason})", None
        ) from None
    _check_format(path, state)
    unfit = _unfit(state)
    if unfit:
        raise _not_a_checkpoint(
            f"{path} is not a sef checkpoint ({unfit})", "pass a file written by `sef train`"
        )
    return state
