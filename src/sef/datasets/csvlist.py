"""Users' own images listed in a CSV file: ``path,label[,split]`` per row, header optional (its
columns in any order, beside columns of other names, which are left out).

``root`` is the CSV file, or a folder holding exactly one (``.csv`` in any case, not hidden).
Relative paths are relative to the CSV's folder (or ``image_root``). Labels are class names; the
classes are ``classes`` (a list, or a text file with one name per line) or else all labels in the
file, sorted (numerically when every label is an integer; 1 and 01 together are refused), so
labels agree between splits. Rows without a split column are split seeded and per class, as for
folder data.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

from sef import filekinds
from sef.datasets.imagelist import ImageList
from sef.datasets.images import extension, readable_extensions
from sef.datasets.layout import archive_hint, class_names
from sef.datasets.names import class_of, key, warn_case_twins
from sef.datasets.splits import SPLITS, from_declared, split_named
from sef.errors import ConfigError, DataError, warn
from sef.text import counted, some

LAYOUT = "a CSV file with rows path,label or path,label,split (header 'path,label,split' optional)"


def _csv_file(root: Path) -> Path:
    if root.is_file():
        return root
    if not root.is_dir():
        raise DataError(f"{root} does not exist; point ROOT at {LAYOUT}")
    found = sorted(
        p for p in root.iterdir()
        if p.suffix.lower() == ".csv" and p.is_file() and not p.name.startswith(".")
    )  # fmt: skip
    if not found:
        deeper = sorted(p for p in root.glob("*/*.[cC][sS][vV]") if not _hidden_under(root, p))
        above = sorted(root.resolve().parent.glob("*.[cC][sS][vV]"))  # ROOT: the images' folder
        found = (deeper or above)[:1]
        near = f"; {found[0]} exists: pass it as the data root" if found else archive_hint(root)
        raise DataError(f"{root} holds no CSV file; point ROOT at {LAYOUT}{near}")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DataError(
            f"{root} holds {len(found)} CSV files ({names}); point ROOT at the one to use"
        )
    return found[0]


def _hidden_under(root: Path, path: Path) -> bool:
    """Whether a name of ``path`` below ``root`` is hidden (.ipynb_checkpoints, __MACOSX)."""
    return any(part.startswith((".", "__MACOSX")) for part in path.relative_to(root).parts)


def _numbered(reader) -> Iterator[tuple[int, list[str]]]:
    """(line, row) of each row of a ``csv.reader``, line its first line in the file: a quoted
    cell over several lines (a label with a newline) made every later row's number one short."""
    line = 1
    for row in reader:
        yield line, row
        line = reader.line_num + 1


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every non-empty data row."""
    try:
        text = filekinds.read_text(path)
    except ValueError as problem:
        raise DataError(f"{path} {problem}; point ROOT at {LAYOUT}") from None
    rows = [
        (number, [cell.strip() for cell in row])
        for number, row in _numbered(csv.reader(io.StringIO(text, newline="")))
        if any(cell.strip() for cell in row)
    ]
    rows = _without_empty_columns(rows)
    if rows and len(rows[0][1]) == 1 and any(sep in rows[0][1][0] for sep in ";\t"):
        raise DataError(  # Excel's CSV where the decimal mark is a comma, or a TSV
            f"{path} line {rows[0][0]} is one column ({rows[0][1][0]!r}); separate path, label "
            f"and split with commas, not semicolons or tabs"
        )
    header = rows[0][1] if rows else []
    order = _header_order(header)
    if order:
        rows = rows[1:]
        _warn_left_out_columns(path, header, order)
    elif len(rows) > 1 and not Path(rows[0][1][0]).suffix and Path(rows[1][1][0]).suffix:
        raise DataError(  # a first path without a file extension, unlike the next: a header
            f"{path} line {rows[0][0]} looks like a header ({','.join(rows[0][1])}); name its "
            f"columns path,label or path,label,split, or remove it"
        )
    if not rows:
        raise DataError(f"{path} lists no images; expected {LAYOUT}")
    width = len(rows[0][1]) if not order else len(header)
    for number, row in rows:
        if len(row) != width or (not order and width not in (2, 3)):
            raise DataError(
                f"{path} line {number} has {counted(len(row), 'column')}; expected {LAYOUT}"
            )
    rows = [(number, [row[i] for i in order]) for number, row in rows] if order else rows
    _check_cells(path, rows)
    return rows


def _check_cells(path: Path, rows: list[tuple[int, list[str]]]) -> None:
    """DataError for a row of ``rows`` (path, label[, split]) with an empty path or label, or a
    URL for a path, or a first row that gives the label before the path."""
    for number, row in rows:
        for cell, name in zip(row, ("path", "label"), strict=False):
            if not cell:
                raise DataError(f"{path} line {number} has an empty {name}; expected {LAYOUT}")
        if "://" in row[0]:
            raise DataError(
                f"{path} line {number}: {row[0]} is a URL; download the images and list their "
                f"files (relative to the CSV's folder)"
            )
    number, (first, second, *_) = rows[0]
    if not Path(first).suffix and extension(second) in readable_extensions():
        raise DataError(
            f"{path} line {number} gives the label before the path ({first},{second}); put the "
            f"path first, or name the columns in a header line: label,path"
        )


def _without_empty_columns(rows: list[tuple[int, list[str]]]) -> list[tuple[int, list[str]]]:
    """``rows`` without the columns at their end that are empty in every row, the header's too
    (the commas a spreadsheet writes after the last column it filled: path,label,)."""
    width = max((len(row) for _, row in rows), default=0)
    while width and not any("".join(row[width - 1 : width]) for _, row in rows):  # "" or none
        width -= 1
    return [(number, row[:width]) for number, row in rows]


def _warn_left_out_columns(path: Path, header: list[str], order: list[int]) -> None:
    """Warn of the named columns of ``header`` beside those read (``order``): a split column
    named otherwise (set, fold) would be left out without a word; pandas' index is not named."""
    left = [
        name
        for i, name in enumerate(header)
        if i not in order and name and not name.lower().startswith("unnamed:")
    ]
    if left:
        warn(
            f"{path}: left out the column{'s' * (len(left) > 1)} {some(left)}; sef reads path, "
            f"label and split (name a column of trainval, train, val or test split)"
        )


def _header_order(cells: list[str]) -> list[int] | None:
    """Where path, label (and split) are in ``cells``, if they are a header naming them in any
    order and case (label,path as well as path,label), beside columns of other names, which are
    left out (pandas' unnamed index, notes); None if they are not."""
    names = [cell.lower() for cell in cells]
    if "path" not in names or "label" not in names:
        return None
    return [names.index(name) for name in ("path", "label", "split") if name in names]


def _once(path: Path, rows: list[tuple[int, list[str]]], base: Path) -> list[tuple[int, list[str]]]:
    """``rows`` with each image once: a repeated row is dropped, a row that gives an image
    listed before another label or split is refused (else one image could be in two splits)."""
    first: dict[str, tuple[int, list[str]]] = {}
    for number, row in rows:
        earlier = first.setdefault(os.path.normpath(base / row[0]), (number, row))
        if earlier[1][1:] != row[1:]:
            raise DataError(
                f"{path} line {number} lists {row[0]} as {','.join(row[1:])} but line "
                f"{earlier[0]} as {','.join(earlier[1][1:])}; an image has one label and one split"
            )
    return list(first.values())


def _number(label: str) -> int | None:
    try:
        return int(label)
    except ValueError:
        return None


def _sorted_labels(path: Path, labels: list[str]) -> list[str]:
    """The distinct ``labels``, sorted numerically when every one is an integer; DataError for
    two spellings of one number (1 and 01, as a spreadsheet's text and number cells write it),
    whose order would otherwise change from run to run."""
    number_of = {label: _number(label) for label in sorted(set(labels))}
    if None in number_of.values():
        return sorted(number_of)
    spelling: dict[int | None, str] = {}
    for label, number in number_of.items():
        other = spelling.setdefault(number, label)
        if other != label:
            raise DataError(
                f"{path}: labels {other!r} and {label!r} are the number {number} written two "
                f"ways; write the label of a class one way"
            )
    return sorted(number_of, key=number_of.__getitem__)


def _split_of(path: Path, number: int, cell: str) -> str:
    """The split that line ``number``'s split ``cell`` names; DataError for an empty or unknown
    one (a CSV whose test rows alone are marked)."""
    split = split_named(cell)
    if split is None:
        what = f"the unknown split {cell!r}" if cell else "an empty split"
        raise DataError(
            f"{path} line {number} has {what}; give every row one of {', '.join(SPLITS)} "
            f"(valid and validation are val), or leave out the split column"
        )
    return split


def _check_relative_to_csv(path: Path, listed: str) -> None:
    """DataError if the image ``listed`` first is not found relative to the CSV's folder but is
    relative to the current one (a CSV written beside the images' folder's parent, read from
    elsewhere), which would otherwise be every image missing."""
    if not (path.parent / listed).exists() and os.path.exists(listed):
        raise DataError(
            f"{path} lists {listed}, which is in the current folder, not in {path.parent}: paths "
            f"are relative to the CSV's folder; write them so, or set the csv option image_root "
            f"to {os.getcwd()}"
        )


def _missing_hint(
    path: Path, image_root: str | os.PathLike | None, absolute: frozenset[str], missing: list[str]
) -> str:
    """Where the ``missing`` images (their paths as read) were looked for, said when they are
    missing (the usual hint asks about archives, which CSV data has none of): as listed, where
    every one of them was listed absolute (``absolute``: the paths listed so); else relative to
    the CSV's folder, or to ``image_root`` (and the folder a relative one was resolved from); a
    path that starts with ~ is said to be read as written (no home folder)."""
    base = Path(image_root).expanduser() if image_root is not None else path.parent
    listed = [each if each in absolute else os.path.relpath(each, base) for each in missing]
    if any(listed_path.startswith("~") for listed_path in listed):
        return (
            f"the paths in {path.name} that start with ~ are read as written, a folder named ~, "
            f"not the home folder: write the home folder's path out in full"
        )
    if all(os.path.isabs(listed_path) for listed_path in listed):
        return (
            f"the paths in {path.name} are absolute, read as written: put the images back there, "
            f"or list them where they are now"
        )
    if image_root is None:
        return (
            f"the paths in {path.name} are read relative to its folder {path.parent}: write them "
            f"relative to it or absolute, or set the csv option image_root to the folder they are "
            f"relative to"
        )
    if base.is_absolute():
        gone = "" if base.is_dir() else ", which does not exist"
        return (
            f"the paths in {path.name} are read relative to the csv option image_root "
            f"{base}{gone}: set image_root to the folder they are relative to"
        )
    return (
        f"the csv option image_root {image_root} is relative, so it was resolved from the "
        f"current folder {os.getcwd()}: give image_root as an absolute path, or run from the "
        f"folder it is relative to"
    )


def _class_list(
    path: Path, classes: Sequence[str] | str | os.PathLike | None, labels: list[str]
) -> list[str]:
    if classes is None:
        found = _sorted_labels(path, labels)
        warn_case_twins(found, str(path))
        return found
    if not isinstance(classes, (str, os.PathLike, list, tuple)):
        raise ConfigError(
            f"dataset 'csv' option classes takes a list of class names or a class-list file, "
            f"got {classes!r}"
        )
    if isinstance(classes, (str, os.PathLike)):
        path = Path(classes).expanduser()
        if not path.is_file():
            raise DataError(f"class list {path} does not exist; give a text file, one class a line")
        return class_names(path, LAYOUT)
    truth = next((name for name in classes if isinstance(name, bool)), None)
    if truth is not None:  # YAML's no, off, yes, on: -o classes=[no, yes]
        raise ConfigError(
            f"dataset 'csv' option classes holds {truth}, which YAML reads from yes, no, on, off, "
            f"true or false; quote such class names: ['no', 'yes']"
        )
    names, seen = [str(name) for name in classes], set()
    for name in names:
        if key(name) in seen:  # two classes by one name: the first without images
            raise ConfigError(
                f"dataset 'csv' option classes names {name!r} twice; list each class once"
            )
        seen.add(key(name))
    return names


def _not_a_class(path: Path, number: int, label: str, names: list[str]) -> DataError:
    """The error for line ``number``'s ``label``, which is none of the class ``names``; a number
    among names is said to be no class's number (a CSV of 0- or 1-based class ids with a class
    list of names)."""
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    numbered = _number(label) is not None and all(_number(name) is None for name in names)
    hint = (
        "; a label names its class, not its number in the class list: write the class names, "
        "or leave out the classes option to name the classes by their numbers"
    )
    return DataError(
        f"{path} line {number}: label {label!r} is not a class ({shown}){hint * numbered}"
    )


def read(
    root: str | os.PathLike,
    split: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    holdout: str = "stable",
    classes: Sequence[str] | str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
) -> ImageList:
    """``split`` of the images listed in the CSV at ``root``."""
    if not isinstance(image_root, (str, os.PathLike, type(None))):
        raise ConfigError(f"dataset 'csv' option image_root takes a folder, got {image_root!r}")
    path = _csv_file(Path(root).expanduser())
    rows = _rows(path)
    label = class_of(row[1] for _, row in rows)  # é typed, é from a Mac: one class
    rows = [(number, [row[0], label[row[1]], *row[2:]]) for number, row in rows]
    names = _class_list(path, classes, [row[1] for _, row in rows])
    index = {key(name): i for i, name in enumerate(names)}
    base = Path(image_root).expanduser() if image_root is not None else path.parent
    for number, row in rows:
        if key(row[1]) not in index:
            raise _not_a_class(path, number, row[1], names)
    rows = _once(path, rows, base)
    if image_root is None:
        _check_relative_to_csv(path, rows[0][1][0])
    samples = [(str(base / row[0]), index[key(row[1])]) for _, row in rows]
    tags = [_split_of(path, number, row[2]) if len(row) == 3 else None for number, row in rows]
    # a user's own: seen as a viewer shows them, named relative to base (ImageList.names)
    absolute = frozenset(str(Path(row[0])) for _, row in rows if os.path.isabs(row[0]))
    hint = partial(_missing_hint, path, image_root, absolute)
    photos = ImageList(samples, names, upright=True, root=base, missing_hint=hint)
    return from_declared(
        photos, tags, split, seed, val_fraction, test_fraction, str(path), holdout=holdout
    )
