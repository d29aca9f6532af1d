"""Checkpoints: written atomically, read without ever unpickling code.

A checkpoint is a plain dict saved with ``torch.save`` that holds only tensors, dicts, lists,
tuples, strings, numbers, booleans and None, so ``torch.load(weights_only=True)`` reads it. It
carries at least ``model`` (the SEF state dict), ``config`` (the resolved config as plain values),
``classes``, ``epoch`` and ``metrics``, so eval, predict and export need nothing else.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sef.errors import CheckpointError, ConfigError, DataError
from sef.model import SEF

REQUIRED_KEYS = ("model", "config", "classes", "epoch", "metrics")
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


def _fsync_directory(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` to ``path`` atomically: temp file, fsync, rename over the old file.

    A crash or kill at any moment leaves either the previous file or the new one, never a mix.
    """
    _check_plain(state, "state")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint with ``weights_only=True``; refuse pickled code and corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; pass a last.pt or best.pt written by `sef train`"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower():
            raise CheckpointError(
                f"refused to load checkpoint {path}: it holds pickled Python objects that could "
                f"run code; use only checkpoints written by `sef train`"
            ) from None
        raise CheckpointError(f"checkpoint {path} is corrupt ({error}); use another copy") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        reason = str(error).split("\n")[0]
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({reason}); use another copy"
        ) from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(
            f"{path} is not a sef checkpoint (missing {', '.join(missing)}); pass a file written "
            f"by `sef train`"
        )
    return state


@dataclass
class TrainedModel:
    """A trained SEF in eval mode, with everything needed to feed it images."""

    model: SEF
    classes: list[str]
    config: dict
    image_size: int
    test_transform: Callable
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def dataset(self, split: str = "test", root: str | os.PathLike | None = None) -> Any:
        """``split`` of the data this model was trained on (or found under ``root``), with its
        test transform; DataError if that data's classes are not the model's."""
        from sef import datasets

        data, seed = self.config["data"], self.config["run"]["seed"]
        root = root if root is not None else data["root"]
        options = {"seed": seed, "val_fraction": data["val_fraction"], **data["options"]}
        options["transform"] = self.test_transform
        loaded = datasets.load(data["dataset"], root, split, **options)
        if list(loaded.classes) != list(self.classes):
            raise DataError(
                f"the classes of the {split} split under {root} differ from the "
                f"{len(self.classes)} classes the model was trained on; pass its own data"
            )
        return loaded


def build_model(config: Any, num_classes: int) -> SEF:
    """The SEF network a :class:`~sef.config.Config` describes, with its initial weights."""
    m = config.model
    try:
        return SEF(
            m.backbone, num_classes, m.groups, weights=m.weights, output_stride=m.output_stride
        )
    except ValueError as error:
        raise ConfigError(
            f"model.backbone={m.backbone!r} with model.groups={m.groups} cannot be built: {error}"
        ) from None


def load_trained_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> TrainedModel:
    """Rebuild the model a checkpoint describes and load its weights; nothing else needed."""
    from sef import transforms
    from sef.config import config_from_dict

    state = load_checkpoint(path)
    try:
        config = config_from_dict(state["config"])
    except ConfigError as error:
        raise CheckpointError(f"checkpoint {path} holds an unusable config: {error}") from None
    classes = [str(name) for name in state["classes"]]
    config.model.weights = None  # the checkpoint's own weights replace any initial ones
    model = build_model(config, len(classes))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        reason = str(error).split("\n")[0]
        raise CheckpointError(
            f"checkpoint {path} weights do not fit its own config ({reason}); the file is damaged"
        ) from None
    size, recipe = config.data.image_size, config.data.recipe
    return TrainedModel(
        model=model.to(device).eval(),
        classes=classes,
        config=state["config"],
        image_size=size,
        test_transform=transforms.test_transform(recipe, size),
        mean=tuple(transforms.IMAGENET_MEAN),
        std=tuple(transforms.IMAGENET_STD),
    )
