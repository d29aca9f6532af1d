"""Weights files: reading a state dict safely, and saying in one line why one does not fit.

Shared by torchvision backbones, user modules (:mod:`sef.backbones`) and timm models
(:mod:`sef.timm_backbones`).
"""

from __future__ import annotations

import errno
import os
import textwrap
from collections.abc import Collection
from pathlib import Path

import torch
from torch import nn

from sef import space
from sef.errors import WeightsError
from sef.text import counted


def is_weights_file(weights: object) -> bool:
    """Whether ``weights`` names a file (an existing path, or one with a weights suffix) rather
    than a weight name such as "IMAGENET1K_V1"."""
    text = os.path.expanduser(str(weights))
    return os.path.exists(text) or text.endswith((".pth", ".pt", ".safetensors", ".bin"))


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or a torch file (``~`` expanded), never unpickling
    code."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; pass an existing file path")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise WeightsError(
            f"cannot read weights file {path} safely ({type(error).__name__}); it must be a "
            f"plain state dict saved with torch.save(model.state_dict()) or a .safetensors file"
        ) from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"weights file {path} does not hold a state dict")
    return state


def load_file_into(
    model: nn.Module, path: str | os.PathLike, name: str, unused: Collection[str] = ()
) -> None:
    """Load the state dict file ``path`` into ``model`` (called ``name`` in errors): every key
    and shape must match, but for the ``unused`` keys (a classifier SEF replaces), which the file
    may lack or hold at any shape and are not loaded; WeightsError in one line if not."""
    state = {k: v for k, v in load_state_dict_file(path).items() if k not in unused}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a tensor of another shape
        raise mismatch(path, name, shape_mismatch(error)) from None
    missing = [key for key in result.missing_keys if key not in unused]
    if missing or result.unexpected_keys:
        raise keys_mismatch(path, name, missing, result.unexpected_keys)


# Why a download cache cannot take a file, besides a full disk or quota (space.FULL): a place
# not to be written.
_UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _cannot_write(reason: object) -> bool:
    """Whether a download failed on a file it could not write (a full disk or quota, a
    read-only or forbidden folder), not on the network."""
    if not isinstance(reason, OSError):
        return False
    return reason.errno in space.FULL or (
        reason.errno in _UNWRITABLE and reason.filename is not None
    )


def hub_cache(url: str) -> Path:
    """Where the torch hub cache keeps the download of ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def download_help(
    name: str, weights: object, url: str, reason: object, *, torch_hub: bool = True
) -> WeightsError:
    """Named weights that could not be downloaded: where to put the file instead (also in the
    torch hub cache where ``torch_hub``, the cache of downloads from ``url``); where the cache
    could not be written (a read-only or full home folder), which setting moves it."""
    cache = hub_cache(url)
    elsewhere = "elsewhere and pass its path as weights=PATH (--weights PATH)"
    if _cannot_write(reason):
        where = reason.filename or (cache.parent if torch_hub else "its download cache")
        fix = f"set {'TORCH_HOME' if torch_hub else 'HF_HOME'} to a folder you can write"
        if reason.errno in space.FULL:
            fix = f"free some space there or {fix}"
        return WeightsError(
            f"could not download {weights} weights for {name}: cannot write {where}: "
            f"{(reason.strerror or str(reason)).lower()}; {fix}, or fetch {url} {elsewhere}"
        )
    copy = f", or copy it to {cache}" if torch_hub else ""
    return WeightsError(
        f"could not download {weights} weights for {name} from {url} ({reason}); on a machine "
        f"without internet, fetch that file {elsewhere}{copy}"
    )


def mismatch(path: str | os.PathLike, name: str, what: str) -> WeightsError:
    """The weights file ``path`` does not fit the model ``name``, ``what`` saying how."""
    return WeightsError(
        f"weights file {path} does not match {name}: {what}; pass the full {name} state dict"
    )


def keys_mismatch(
    path: str | os.PathLike, name: str, missing: list[str], unexpected: list[str]
) -> WeightsError:
    """The weights file ``path`` lacks the ``missing`` keys of the model ``name`` and holds the
    ``unexpected`` ones; a whole sef.SEF's state dict (``group_heads.`` keys) is told how to
    load it instead."""
    if any(key.startswith("group_heads.") for key in unexpected):
        return WeightsError(
            f"weights file {path} holds a whole sef.SEF's state dict, not {name}'s: build the "
            f"model without weights and load it with model.load_state_dict(torch.load(path))"
        )
    return mismatch(path, name, unmatched(missing, unexpected))


def unmatched(missing: list[str], unexpected: list[str]) -> str:
    """How many keys a file lacks and has too many, with examples (of the kinds there are)."""
    kinds = (("missing", missing), ("unexpected", unexpected))
    return ", ".join(
        f"{counted(len(keys), f'{kind} key')} (e.g. {keys[:3]})" for kind, keys in kinds if keys
    )


def shape_mismatch(error: RuntimeError, most: int = 300) -> str:
    """The line of load_state_dict's error that names a tensor of another shape, else its first
    line after the heading (missing or unexpected keys), cut to ``most`` characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = lines[1] if len(lines) > 1 else "".join(lines)
    line = next((line for line in lines if "size mismatch" in line), first)
    return textwrap.shorten(line, most, placeholder=" ...")
