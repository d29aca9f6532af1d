"""Decoding image files: the one place that says why a file cannot be used, and any mode to RGB."""

from __future__ import annotations

import os

from PIL import Image, UnidentifiedImageError

from sef.errors import DataError

# Transparent pixels become white, not whatever colour the file happens to store under alpha 0.
_BACKGROUND = (255, 255, 255)
# Why an image cannot be used (UnreadableImage.kind).
MISSING, NOT_AN_IMAGE, UNDECODABLE = "missing", "not an image", "undecodable"


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, P, CMYK, RGBA, LA, I;16, ...) to RGB, flattening alpha on white."""
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode.startswith("I"):  # 16/32-bit grey: scale to 8 bits instead of clipping
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    return image.convert("RGB")


class UnreadableImage(DataError):
    """An image file that cannot be used: ``kind`` says why (MISSING, NOT_AN_IMAGE, UNDECODABLE)
    and ``detail`` is the decoder's own message, for callers that word it their own way. Built
    from one message like any DataError, so it crosses from DataLoader workers intact."""

    def __init__(self, message: str, kind: str = UNDECODABLE, detail: str = "") -> None:
        super().__init__(message)
        self.kind, self.detail = kind, detail


def decode(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode the image at ``path`` (in its own mode); UnreadableImage if not."""
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except FileNotFoundError:
        raise UnreadableImage(
            f"image {path} is listed by the dataset but missing; restore it or run "
            f"`sef data check` to list every bad file",
            MISSING,
        ) from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        kind = NOT_AN_IMAGE if isinstance(error, UnidentifiedImageError) else UNDECODABLE
        raise UnreadableImage(
            f"image {path} cannot be decoded ({error}); replace it, or train with "
            f"bad_images='skip' to leave it out",
            kind,
            str(error),
        ) from None


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Fully decode the image at ``path`` as RGB; an UnreadableImage (a DataError) names the
    file if that fails."""
    return to_rgb(decode(path))
