"""Finding images that cannot be used, and what to do about them before training starts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from sef.choices import BAD_IMAGE_POLICIES
from sef.datasets.imagelist import ImageList
from sef.datasets.images import UNDECODABLE, UnreadableImage, decode
from sef.errors import ConfigError, DataError


def _problem(path: str) -> str | None:
    """Why the image at ``path`` cannot be used, or None if it decodes fully."""
    try:
        decode(path)
    except UnreadableImage as bad:
        kind = "cannot decode" if bad.kind == UNDECODABLE else bad.kind
        return f"{kind}: {bad.detail}" if bad.detail else kind
    return None


def find_bad_images(
    samples: Sequence[tuple[str, int]], workers: int | None = None, progress: bool = True
) -> list[tuple[str, str]]:
    """Decode every listed image; return (path, reason) for each missing or unreadable one.

    Decoding runs in threads (PIL releases the GIL while decoding); the result keeps the order of
    ``samples``.
    """
    paths = [path for path, _ in samples]
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = list(
            tqdm(
                pool.map(_problem, paths, chunksize=16),
                total=len(paths),
                desc="checking images",
                unit="img",
                disable=not progress,
            )
        )
    return [(path, reason) for path, reason in zip(paths, reasons, strict=True) if reason]


def describe_bad_images(bad: Sequence[tuple[str, str]]) -> str:
    """One line per bad image: ``path: reason``."""
    return "\n".join(f"{path}: {reason}" for path, reason in bad)


def apply_bad_image_policy(
    dataset: ImageList | Sequence[ImageList],
    policy: str = "stop",
    workers: int | None = None,
    progress: bool = True,
) -> list[tuple[str, str]]:
    """Check every image of ``dataset`` (or of several, e.g. a run's two splits, each image once)
    before training; return the bad ones as (path, reason).

    ``stop`` raises a DataError listing every bad file of them all; ``skip`` removes them from
    each dataset in place and returns them so the caller can report them; ``off`` checks nothing.
    """
    if policy not in BAD_IMAGE_POLICIES:
        raise ConfigError(
            f"unknown bad-image policy {policy!r}; choose one of {', '.join(BAD_IMAGE_POLICIES)}"
        )
    if policy == "off":
        return []
    lists = [dataset] if isinstance(dataset, ImageList) else list(dataset)
    samples = list({path: label for d in lists for path, label in d.samples}.items())
    bad = find_bad_images(samples, workers=workers, progress=progress)
    if bad and policy == "stop":
        raise DataError(
            f"{len(bad)} of {len(samples)} images cannot be used; fix or remove them, or train "
            f"without them with --set data.bad_images=skip:\n{describe_bad_images(bad)}"
        )
    for each in lists:
        each.drop([path for path, _ in bad])
    return bad
