"""Top-k class predictions of a trained SEF for image files and folders.

Unreadable or missing files never stop a run: they are returned (and reported) with the reason,
and every other image is still predicted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sef import threads
from sef.datasets.folder import visible_files
from sef.datasets.images import (
    UnreadableImage,
    extension,
    missing,
    open_rgb,
    readable_extensions,
    reason,
)
from sef.errors import warn
from sef.metrics import not_finite_images, not_finite_said
from sef.modes import evaluation_mode
from sef.text import bars_drawn, column_widths, counted, some, table_lines
from sef.trained import TrainedModel


@dataclass
class Prediction:
    """The ``top`` (class name, probability) pairs of one image, most likely first."""

    path: str
    top: list[tuple[str, float]]

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "predictions": [{"class": name, "probability": p} for name, p in self.top],
        }


# Why a file in a folder is not read (any file named on its own is decoded whatever its name).
_NO_IMAGE_EXTENSION = "has no extension of an image format sef reads"


def find_images(paths: Sequence[str | os.PathLike]) -> tuple[list[str], list[tuple[str, str]]]:
    """Expand files and folders (recursively, the extensions of formats Pillow reads only;
    hidden names left out and links followed, as the ``folder`` dataset reads them) into image
    paths, each file and missing path named as it was given.

    Returns (images in a stable order, each file once however often it is named, [(path,
    reason)] for paths that do not exist, the files in folders that no image format's
    extension names and the other names of a file listed once).
    """
    images, problems, extensions = [], [], readable_extensions()
    for given in map(os.fspath, paths):
        path = Path(given)  # Path("./a.png") is "a.png", Path("http://x/a") "http:/x/a"
        if path.is_dir():
            found = []
            for file in visible_files(path):
                if extension(file) in extensions:
                    found.append(file)
                else:  # a phone's .heic among .jpg would otherwise go unpredicted without a word
                    problems.append((file, f"{_NO_IMAGE_EXTENSION} ({extension(file) or 'none'})"))
            if not found:
                problems.append((given, "is a folder that holds no image sef reads"))
            images.extend(found)
        elif path.is_file():
            images.append(given)  # any extension: decoding decides
        else:
            problems.append((given, _absent(given)))
    unique, others = _once(images)
    return unique, list(dict.fromkeys(problems + others))


def _absent(given: str) -> str:
    """Why ``given``, neither a file nor a folder, is skipped (:func:`missing`: a shell pattern
    that matched no file is said to be one)."""
    if os.path.exists(given):
        return "is not a file"
    said = missing(given)
    return said if said == "does not exist" else f"{said}; pass the folder to predict its images"


def skipped_said(skipped: Sequence[tuple[str, str]]) -> list[str]:
    """What `sef predict` says of the files ``skipped``: each on its line, except that several
    left out of folders for one extension are one line (the .json Google Takeout writes beside
    each photo, or a camera's .xmp sidecars, buried the table under a line each)."""
    by_reason: dict[str, list[str]] = {}
    for path, why in skipped:
        by_reason.setdefault(why, []).append(path)
    lines = []
    for path, why in skipped:
        paths = by_reason[why]
        if not why.startswith(_NO_IMAGE_EXTENSION) or len(paths) == 1:
            lines.append(f"skipped {path}, which {why}")
        elif path == paths[0]:
            listed = " (--json lists them all)" if len(paths) > 3 else ""  # some() shows 3
            lines.append(
                f"skipped {counted(len(paths), 'file')}, each of which {why}: {some(paths)}{listed}"
            )
    return lines


def _once(paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """``paths`` with each file only where it first appears (by its resolved path), and [(path,
    reason)] for its other names (a link, ``dir/../a.png``): a script looking for the name it
    gave finds why it was not predicted under that name."""
    first: dict[str, str] = {}
    unique, others = [], []
    for path in paths:
        real = os.path.realpath(path)
        if real not in first:
            first[real] = path
            unique.append(path)
        elif path != first[real]:
            others.append((path, f"is the same file as {first[real]}, predicted under that name"))
    return unique, others


class _ImageFiles(Dataset):
    """Decoded, transformed images; a file that fails yields its reason instead."""

    def __init__(self, paths: Sequence[str], transform: Callable) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            rgb = open_rgb(self.paths[index], upright=True)  # a user's photo, as a viewer shows it
        except UnreadableImage as bad:
            return index, None, reason(bad)
        return index, self.transform(rgb), None


def predict_images(
    trained: TrainedModel,
    paths: Sequence[str | os.PathLike],
    *,
    top_k: int = 5,
    batch_size: int = 32,
    workers: int = 0,
    progress: bool | None = None,
) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """Predict every image under ``paths``; return (predictions, [(path, reason)] skipped).
    The model runs in eval mode, each submodule's own mode restored afterwards."""
    files, skipped = find_images(paths)
    predictions = []
    for done, failed in predict_files(
        trained, files, top_k=top_k, batch_size=batch_size, workers=workers, progress=progress
    ):
        predictions.extend(done)
        skipped.extend(failed)
    return predictions, skipped


@torch.no_grad()  # around each step of the iteration, not between them
def predict_files(
    trained: TrainedModel,
    files: Sequence[str],
    *,
    top_k: int = 5,
    batch_size: int = 32,
    workers: int = 0,
    progress: bool | None = None,
) -> Iterator[tuple[list[Prediction], list[tuple[str, str]]]]:
    """Predict image ``files`` (as :func:`find_images` lists them) a batch at a time: yields
    (predictions, [(path, reason)] of files that cannot be decoded) as each batch is done, so a
    caller shows them then, not after the last. The model is in eval mode until the iteration
    ends, each submodule's own mode restored then; a model whose outputs are not finite (an
    overflowed checkpoint: NaN probabilities) is warned of once the last batch is done."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    k = min(top_k, len(trained.classes))
    loader = DataLoader(
        _ImageFiles(files, trained.test_transform),
        batch_size=batch_size,
        num_workers=threads.loader_workers(workers),
        collate_fn=list,  # keep (index, image | None, reason) items: failures are per image
    )
    device = next(trained.model.parameters()).device
    predicted = non_finite = 0
    with evaluation_mode(trained.model):
        for batch in tqdm(
            loader, desc="predicting", unit="batch", disable=not bars_drawn(progress)
        ):
            good = [(i, image) for i, image, _ in batch if image is not None]
            failed = [(files[i], reason) for i, _, reason in batch if reason is not None]
            predictions = []
            if good:
                images = torch.stack([image for _, image in good]).to(device)
                logits = trained.model(images).float()
                predicted += len(good)
                non_finite += not_finite_images(logits)
                probabilities = logits.softmax(dim=1).cpu()
                values, indices = probabilities.topk(k, dim=1)
                for (i, _), row_p, row_i in zip(
                    good, values.tolist(), indices.tolist(), strict=True
                ):
                    top = [(trained.classes[c], p) for c, p in zip(row_i, row_p, strict=True)]
                    predictions.append(Prediction(files[i], top))
            yield predictions, failed
    if non_finite:
        said = not_finite_said(
            non_finite, counted(predicted, "image"), "their predictions mean nothing"
        )
        warn(f"{said}; predict with an earlier checkpoint of its run")


TABLE_HEADER = ("image", "rank", "class", "probability")
_TABLE_ALIGN = "<><>"


def table_widths(files: Sequence[str], classes: Sequence[str], top_k: int) -> list[int]:
    """The column widths of the table of ``files``' predictions, known before any is made: a
    table printed a batch at a time (:func:`format_rows`) stays aligned."""
    return column_widths(
        [
            TABLE_HEADER,
            *((file, str(top_k), "", "") for file in files),
            *(("", "", name, "0.0000") for name in classes),
        ]
    )


def format_rows(
    predictions: Sequence[Prediction], widths: Sequence[int], *, header: bool = False
) -> str:
    """Plain-text table lines: image, rank, class, probability (one per class shown), in
    columns ``widths`` wide (:func:`table_widths`), under TABLE_HEADER if ``header``."""
    rows = [
        (p.path if rank == 1 else "", str(rank), name, f"{probability:.4f}")
        for p in predictions
        for rank, (name, probability) in enumerate(p.top, start=1)
    ]
    return table_lines([TABLE_HEADER, *rows] if header else rows, widths, _TABLE_ALIGN)
