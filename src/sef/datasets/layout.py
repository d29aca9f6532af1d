"""Finding a dataset's files under the folder a user points at, with errors that show the layout."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sef import filekinds
from sef.errors import DataError
from sef.text import some

# What an archive ends with (given as a data root, or in it): a download not unpacked yet.
ARCHIVE_EXTENSIONS = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar")


# A file only each benchmark's folder holds, and the folder of its own name it may be in.
MARKERS = {
    "cub": ("train_test_split.txt",),
    "cars": ("devkit/cars_meta.mat",),
    "dogs": ("train_list.mat", "lists/train_list.mat"),
    "aircraft": ("data/variants.txt", "variants.txt"),
}
OWN_FOLDERS = {"cub": "CUB_200_2011", "cars": "stanford_cars", "aircraft": "fgvc-aircraft-2013b"}


def benchmark_in(
    folder: Path, but: str | None = None, below: bool = True
) -> tuple[str, Path] | None:
    """(name, marker) of the benchmark other than ``but`` whose folder ``folder`` is (or holds
    in a folder of its own name, if ``below``), by the first of its MARKERS there; None for
    none."""
    for name, markers in MARKERS.items():
        places = [folder] + ([folder / OWN_FOLDERS[name]] if below and name in OWN_FOLDERS else [])
        found = [place / marker for place in places for marker in markers]
        found = [path for path in found if path.is_file()]
        if name != but and found:
            return name, found[0]
    return None


def find_root(root: str | os.PathLike, marker: str, subfolders: Sequence[str], layout: str) -> Path:
    """The folder among ``root`` and ``root/<subfolder>`` that holds ``marker``.

    ``layout`` describes the expected arrangement for the error message, e.g.
    "CUB_200_2011/{images/, images.txt, ...}".
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist; point ROOT at {layout}")
    for folder in (root, *(root / sub for sub in subfolders)):
        if (folder / marker).exists():
            return folder
    raise DataError(
        f"{marker} not found in {root}; the dataset should be laid out as {layout}"
        f"{nearby_hint(root, marker)}"
    )


def nearby_hint(root: Path, marker: str) -> str:
    """What to say where ``marker`` is not in ``root`` but near it, as "; <what>: <what to do>":
    one or two folders under it (an archive unpacked into a folder of its own, or ROOT one
    folder too high), up to three above it (ROOT a folder of the dataset, its ``images/``), or
    where ROOT holds an archive not unpacked yet; "" where none is."""
    found = _below(root, marker) or _above(root, marker)
    if found:
        return f"; {found} exists: pass {found.parent} as the data root"
    return archive_hint(root)


def _below(root: Path, marker: str) -> Path | None:
    for pattern in (f"*/{marker}", f"*/*/{marker}"):
        found = sorted(
            path
            for path in root.glob(pattern)
            if not any(part.startswith(".") for part in path.relative_to(root).parts)
        )
        if found:
            return found[0]
    return None


def _above(root: Path, marker: str) -> Path | None:
    for folder in list(root.expanduser().absolute().parents)[:3]:
        if (folder / marker).exists():
            return folder / marker
    return None


def archive_hint(root: Path) -> str:
    """What to say where ``root`` holds an archive (the dataset downloaded and not unpacked yet,
    or unpacked only in part): "; <archive> is not unpacked: ..."; "" where it holds none."""
    archives = sorted(
        entry.name
        for entry in root.iterdir()
        if entry.name.lower().endswith(ARCHIVE_EXTENSIONS)
        and not entry.name.startswith(".")
        and entry.is_file()
    )
    if not archives:
        return ""
    are = "is" if len(archives) == 1 else "are"
    return (
        f"; {some([str(root / name) for name in archives])} {are} not unpacked: unpack "
        f"{'it' if len(archives) == 1 else 'them'} into {root} and pass {root} again"
    )


def require(path: Path, layout: str) -> Path:
    """``path`` if it exists, else a DataError naming it and the expected layout."""
    if not path.exists():
        raise DataError(f"{path} is missing; the dataset should be laid out as {layout}")
    return path


def read_lines(path: Path, layout: str) -> list[tuple[int, str]]:
    """(line number, line stripped) of every non-blank line of a UTF-8 text list."""
    try:
        text = filekinds.read_text(require(path, layout))
    except ValueError as problem:
        raise DataError(f"{path} {problem}") from None
    lines = enumerate(text.splitlines(), start=1)
    return [(number, line.strip()) for number, line in lines if line.strip()]


def class_names(path: Path, layout: str) -> list[str]:
    """The names of a class list, one a line; a name listed twice is refused (it would be two
    classes, the first without images)."""
    first: dict[str, int] = {}
    for number, name in read_lines(path, layout):
        earlier = first.setdefault(name, number)
        if earlier != number:
            raise DataError(
                f"{path} line {number} repeats the class {name!r} of line {earlier}; list each "
                f"class once"
            )
    return list(first)


def read_pairs(path: Path, layout: str) -> list[tuple[str, str]]:
    """Lines ``<key> <value...>`` of a text list (the value may contain spaces); a key listed
    twice is refused (an image id twice would give one image two labels or splits)."""
    pairs, first = [], {}
    for number, line in read_lines(path, layout):
        fields = line.split(maxsplit=1)
        if len(fields) != 2:
            raise DataError(f"{path} line {number} is {line!r}, expected '<id> <value>'")
        earlier = first.setdefault(fields[0], number)
        if earlier != number:
            raise DataError(
                f"{path} line {number} repeats id {fields[0]} of line {earlier}; list each id once"
            )
        pairs.append((fields[0], fields[1]))
    return pairs


def listed_once(files: Sequence[str], source: Path) -> None:
    """DataError naming a file that ``source``, a list of images, names twice: both copies in
    trainval, a val carved from it could hold one while training on the other."""
    seen: set[str] = set()
    for file in files:
        if file in seen:
            raise DataError(f"{source} lists {file} twice; list each image once")
        seen.add(file)


def one_based_label(value: str | float, num_classes: int, where: str) -> int:
    """Convert a 1-based class id to a 0-based label, checking it names one of the classes."""
    try:
        label = int(float(value))
    except ValueError:
        raise DataError(f"{where}: label {value!r} is not a number") from None
    if label == 0 == float(value):  # a list numbered from 0, as Python counts
        raise DataError(
            f"{where}: label 0 names no class: this list numbers the classes from 1 "
            f"(1..{num_classes}); add 1 to every label of a list numbered from 0"
        )
    if not 1 <= label <= num_classes or label != float(value):
        raise DataError(
            f"{where}: label {value!r} is outside the class list (1..{num_classes}); "
            f"the label file and the class list do not belong together"
        )
    return label - 1


def box_with_area(
    box: tuple[float, float, float, float], where: str
) -> tuple[float, float, float, float]:
    """``box`` (left, upper, right, lower) if it encloses some pixels, else a DataError."""
    left, upper, right, lower = box
    if not (left < right and upper < lower):  # NaN fails too
        raise DataError(
            f"{where}: the box from ({left:g}, {upper:g}) to ({right:g}, {lower:g}) encloses "
            f"no pixels; fix the box or train without bbox_crop"
        )
    return box


def read_mat(path: Path, keys: Sequence[str], layout: str) -> dict[str, np.ndarray]:
    """The variables ``keys`` of a MATLAB file, each as an at-least-1-D array (squeezed).
    SciPy is imported here: the readers of CUB, FGVC-Aircraft and CSV lists never need it."""
    import scipy.io
    from scipy.io.matlab import MatReadError

    try:
        content = scipy.io.loadmat(require(path, layout), squeeze_me=True)
    except NotImplementedError:  # scipy reads MATLAB files up to v7; v7.3 is HDF5
        raise DataError(f"{path} is a MATLAB v7.3 file; use the official (v5) file") from None
    except (MatReadError, ValueError, OSError, TypeError) as error:
        raise DataError(
            f"{path} is not a readable MATLAB file ({error}); download it again"
        ) from None
    missing = [key for key in keys if key not in content]
    if missing:
        raise DataError(f"{path} has no '{missing[0]}' variable; is it the official file?")
    return {key: np.atleast_1d(content[key]) for key in keys}
