"""Opening any image file as an RGB PIL image, with errors that name the file."""

from __future__ import annotations

import os

from PIL import Image, UnidentifiedImageError

from sef.errors import DataError

# Transparent pixels become white, not whatever colour the file happens to store under alpha 0.
_BACKGROUND = (255, 255, 255)


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


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Fully decode the image at ``path`` as RGB; a DataError names the file if that fails."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except FileNotFoundError:
        raise DataError(
            f"image {path} is listed by the dataset but missing; restore it or run "
            f"`sef data check` to list every bad file"
        ) from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise DataError(
            f"image {path} cannot be decoded ({error}); replace it, or train with "
            f"bad_images='skip' to leave it out"
        ) from None
