"""Decoding image files: the one place that says why a file cannot be used, and any mode to RGB.

An image larger than :func:`pixel_limit` (``MAX_PIXELS``, or the environment variable
``SEF_MAX_PIXELS``) is refused from its header, before a byte of it is decoded: a 20000 x 20000
PNG of a few kilobytes would otherwise take gigabytes. The limit replaces PIL's own decompression
bomb check, whose warning sef keeps quiet and whose error it words as its own.

Whether a decoded image is turned upright by its EXIF Orientation tag (:func:`turned`), as image
viewers show it, is its reader's choice (``upright=``): a user's own photos are (a phone photo
stored sideways is trained on, predicted on, shown and cached the right way up), the benchmarks'
images are read as stored (:class:`sef.datasets.ImageList`). An untagged image, or one whose EXIF
block is damaged, is used as stored either way.
"""

from __future__ import annotations

import os
import re
import warnings

from PIL import ExifTags, Image, UnidentifiedImageError

from sef import filekinds
from sef.errors import ConfigError, DataError

# Transparent pixels become white, not whatever colour the file happens to store under alpha 0.
_BACKGROUND = (255, 255, 255)
# Why an image cannot be used (UnreadableImage.kind).
MISSING, NOT_AN_IMAGE, UNDECODABLE = "missing", "not an image", "undecodable"
TOO_LARGE = "too large"
# The most pixels (width x height) sef decodes: 100 MP, e.g. 12,000 x 8,000; about 300 MB as RGB.
MAX_PIXELS = 100_000_000
LIMIT_VARIABLE = "SEF_MAX_PIXELS"
# The transposition that turns an image of EXIF Orientation 2-8 upright (PIL's exif_transpose's).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Formats Pillow names but cannot decode by itself: stubs (HDF5, GRIB, BUFR, MPEG video) and
# those that need Ghostscript or Windows (EPS, WMF): their files in a folder are not photos.
_NOT_DECODED = frozenset({"BUFR", "GRIB", "HDF5", "MPEG", "EPS", "WMF"})
# Photo formats of phones and cameras that Pillow reads only with a plugin, if at all.
PHOTO_EXTENSIONS = (".heic", ".heif", ".avif", ".jxl", ".dng", ".cr2", ".cr3", ".nef", ".arw")
SHOWN_EXTENSIONS = ".jpg, .jpeg, .png, .webp, ..."  # the readable extensions, for a message


def extension(path: str | os.PathLike) -> str:
    """The extension of the file at ``path``, in lower case as :func:`readable_extensions` holds
    it ("" for none)."""
    return os.path.splitext(path)[1].lower()


def readable_extensions() -> frozenset[str]:
    """The file extensions, in lower case, of the formats Pillow decodes (.jfif, .gif and .avif
    too; not those it only writes, as .pdf, nor _NOT_DECODED): the files a folder of images is
    read for."""
    return frozenset(
        ext
        for ext, kind in Image.registered_extensions().items()
        if kind in Image.OPEN and kind not in _NOT_DECODED
    )


def quiet_pil() -> None:
    """Keep PIL's warnings that say nothing to a user of sef from printing (called on import;
    pytest restores the filters around each test, so a test calls it again): sef checks the size
    itself, before PIL's threshold (89 MP) would print its text, and uses an image whose EXIF
    block is damaged as stored, where PIL's EXIF (TIFF tag) reader warns about it."""
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")


quiet_pil()


def pixel_limit() -> int:
    """The most pixels an image may have: ``SEF_MAX_PIXELS`` if set, else ``MAX_PIXELS``."""
    text = os.environ.get(LIMIT_VARIABLE, "").strip()
    if not text:
        return MAX_PIXELS
    try:
        limit = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        limit = 0
    if limit < 1:
        raise ConfigError(
            f"{LIMIT_VARIABLE}={text!r} must be a positive whole number of pixels, e.g. "
            f"{LIMIT_VARIABLE}=200000000"
        )
    return limit


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, P, CMYK, RGBA, LA, I;16, F, ...) to RGB, flattening alpha on
    white; 16-bit grey is scaled to 0-255, and so is 32-bit grey (I) unless every value is in
    0-255; float grey (F) in 0-1 is scaled to 0-255, other floats are taken as 0-255."""
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode.startswith("I"):  # 16/32-bit grey: scale to 8 bits instead of clipping
        # through "I": point() refuses big-endian I;16B (a Mac or camera TIFF)
        wide = image.convert("I")
        # 32-bit grey of 8-bit values (a TIFF of L converted to I) is as is: scaled, it was black
        scale = 1 if image.mode == "I" and wide.getextrema()[1] <= 255 else 256
        return wide.point(lambda v: v / scale).convert("L").convert("RGB")
    if image.mode == "F" and image.getextrema()[1] <= 1:  # 0-1 floats: black if clipped as is
        return image.point(lambda v: v * 255).convert("L").convert("RGB")
    return image.convert("RGB")


# How a run leaves bad images out (evaluation and predict name the file the same way).
_LEAVE_OUT = "leave it out (sef train: --set data.bad_images=skip)"


class UnreadableImage(DataError):
    """An image file that cannot be used: ``kind`` says why (MISSING, NOT_AN_IMAGE, UNDECODABLE)
    and ``detail`` is the decoder's own message, for callers that word it their own way. Built
    from one message like any DataError, so it crosses from DataLoader workers intact."""

    def __init__(self, message: str, kind: str = UNDECODABLE, detail: str = "") -> None:
        super().__init__(message)
        self.kind, self.detail = kind, detail


def turned(image: Image.Image) -> Image.Image:
    """``image`` (loaded) turned as its EXIF Orientation says; itself where it has no such tag,
    an invalid one, or an EXIF block PIL cannot read: metadata never makes an image unusable."""
    try:
        transposition = _UPRIGHT.get(image.getexif().get(ExifTags.Base.Orientation))
    except Exception:  # a damaged block: PIL raises SyntaxError, struct.error, ... as it reads
        return image
    return image if transposition is None else image.transpose(transposition)


def without_leaving_out(message: str) -> str:
    """An UnreadableImage's ``message`` without its advice to leave the image out (a setting of
    a new run, which a resume cannot take), keeping the rest: `replace it`."""
    return message.replace(f", or {_LEAVE_OUT}", "")


def _too_large(path: str | os.PathLike, pixels: int | None, limit: int) -> UnreadableImage:
    size = f"{pixels:,} pixels" if pixels is not None else "more pixels than PIL allows"
    detail = f"{size} > limit {limit:,} ({LIMIT_VARIABLE})"
    return UnreadableImage(
        f"image {path} is too large: {detail}; shrink it or raise {LIMIT_VARIABLE}, "
        f"or {_LEAVE_OUT}",
        TOO_LARGE,
        detail,
    )


def _unidentified(path: str | os.PathLike, error: Exception) -> tuple[str, str]:
    """(kind, detail) of a file PIL cannot identify: an image it cannot decode if its bytes
    begin like one, else not an image, saying what the bytes are."""
    try:
        what = filekinds.sniff_file(path)
    except OSError:
        return NOT_AN_IMAGE, str(error)
    if what.endswith("image"):
        return UNDECODABLE, str(error)
    return NOT_AN_IMAGE, f"it is {what}"


def decode(path: str | os.PathLike, *, upright: bool) -> Image.Image:
    """Open and fully decode the image at ``path`` (in its own mode), turned upright by its EXIF
    orientation (:func:`turned`) if ``upright``, else as stored; UnreadableImage if not. Its size
    is checked against :func:`pixel_limit` from the header, before decoding (a turn keeps width x
    height)."""
    limit = pixel_limit()
    if Image.MAX_IMAGE_PIXELS is not None and 2 * Image.MAX_IMAGE_PIXELS < limit:
        Image.MAX_IMAGE_PIXELS = limit  # PIL's check must not refuse what the user allowed
    try:
        with Image.open(path) as image:
            if image.width * image.height > limit:
                raise _too_large(path, image.width * image.height, limit)
            image.load()
            return turned(image) if upright else image
    except FileNotFoundError:
        raise UnreadableImage(
            f"image {path} is listed by the dataset but missing; restore it or run "
            f"`sef data check` to list every bad file",
            MISSING,
        ) from None
    except Image.DecompressionBombError as error:  # PIL's check ran first, in Image.open
        found = re.search(r"\((\d+) pixels\)", str(error))
        raise _too_large(path, int(found.group(1)) if found else None, limit) from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        kind = UNDECODABLE
        detail = str(error)
        if isinstance(error, IsADirectoryError):
            kind, detail = NOT_AN_IMAGE, "it is a folder"
        elif isinstance(error, UnidentifiedImageError):
            kind, detail = _unidentified(path, error)
        raise UnreadableImage(
            f"image {path} cannot be decoded ({detail}); replace it, or {_LEAVE_OUT}",
            kind,
            detail,
        ) from None


def missing(typed: str | os.PathLike) -> str:
    """Why a path the user typed that does not exist is not read, in words that follow it: a
    shell pattern that matched no file reaches sef as typed (`photos/*.jpg` of a camera's .JPG
    photos), which "does not exist" alone left a puzzle beside a folder of photos."""
    if not any(character in os.fspath(typed) for character in "*?["):
        return "does not exist"
    return (
        "does not exist (a shell pattern that matched no file, passed as typed: patterns are "
        "case-sensitive, *.jpg misses .JPG)"
    )


def reason(bad: UnreadableImage) -> str:
    """Why an image cannot be used, in words that follow its path: for messages about a path
    the user typed ("photo.txt is not an image (it is a text file)")."""
    if bad.kind == MISSING:
        return "does not exist"
    if bad.kind == NOT_AN_IMAGE:
        return f"is not an image ({bad.detail})"
    if bad.kind == TOO_LARGE:
        return f"is too large: {bad.detail}"
    return f"cannot be decoded ({bad.detail})"


def open_rgb(path: str | os.PathLike, *, upright: bool) -> Image.Image:
    """Fully decode the image at ``path`` as RGB, turned upright by its EXIF orientation if
    ``upright``; an UnreadableImage (a DataError) names the file if that fails."""
    return to_rgb(decode(path, upright=upright))
