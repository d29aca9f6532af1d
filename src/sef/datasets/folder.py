"""Users' own images in class folders: ROOT/<split>/<class>/<image> or ROOT/<class>/<image>.

Split folders are named trainval, train, val (or valid, validation) or test, in any case, and
hold class folders (a train/ of images beside bus/ and car/ is a class); the classes are the
sorted union of the class folder names in all of them (two spellings of one accented name are one
class, :mod:`sef.datasets.names`), so labels agree between splits. Without split folders, test
and val are seeded per-class hold-outs (:func:`sef.datasets.splits.from_declared`). Images have
the extensions of the formats Pillow reads (:func:`sef.datasets.images.readable_extensions`, as
``sef predict`` reads a folder); photos of another (.HEIC) are left out with a warning. Hidden
names (``.*``, e.g. macOS's ``._photo.jpg`` and ``.ipynb_checkpoints``), ``__MACOSX`` folders
and Windows' ``Thumbs.db`` and ``desktop.ini`` are neither classes nor images.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from sef.datasets.imagelist import ImageList
from sef.datasets.images import (
    PHOTO_EXTENSIONS,
    SHOWN_EXTENSIONS,
    extension,
    readable_extensions,
)
from sef.datasets.layout import archive_hint, benchmark_in
from sef.datasets.names import class_of, warn_case_twins
from sef.datasets.splits import SPLITS, from_declared, split_named
from sef.errors import DataError, warn
from sef.text import counted, some

LAYOUT = (
    "ROOT/<split>/<class>/<image> with split in trainval, train, val, test, or ROOT/<class>/<image>"
)


# Files Windows writes, hidden, into folders of pictures: no class's images.
_SYSTEM_FILES = ("thumbs.db", "desktop.ini")


def _hidden(name: str) -> bool:
    return name.startswith((".", "__MACOSX")) or name.lower() in _SYSTEM_FILES


def _class_folders(folders: list[Path]) -> dict[str, str]:
    """The class folder names in ``folders``, each to the name of its class
    (:func:`sef.datasets.names.class_of`: a folder copied from a Mac, its name in NFD, and one
    spelled on Linux are one class)."""
    return class_of(set().union(*map(_subfolders, folders)))


def visible_files(folder: str | os.PathLike) -> Iterator[str]:
    """Every file under ``folder``, sorted within each folder, hidden names left out; symbolic
    links followed, each real folder read once (a link to a folder above would loop)."""
    seen: set[str] = set()
    for parent, subfolders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(parent)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders[:] = sorted(sub for sub in subfolders if not _hidden(sub))
        yield from (os.path.join(parent, file) for file in sorted(files) if not _hidden(file))


def _images(folder: Path, label_of: dict[str, int]) -> list[tuple[str, int]]:
    """(path, label) of every image under ``folder/<class folder>/`` (:func:`visible_files`),
    ``label_of`` giving each class folder's label; DataError for a class folder whose files are
    none of them images (a phone's .HEIC photos), which would otherwise read as a class without
    images, and a warning of photos left out beside images."""
    samples, photos, readable = [], [], readable_extensions()
    for name in sorted(label_of, key=lambda name: (label_of[name], name)):
        files = list(visible_files(folder / name))
        images = [path for path in files if extension(path) in readable]
        if files and not images:
            raise DataError(
                f"{folder / name} holds {counted(len(files), 'file')} but no image sef reads "
                f"({SHOWN_EXTENSIONS}), e.g. {files[0]}; convert them to JPEG or PNG, or move the "
                f"folder out of {folder} if {name} is no class"
            )
        samples += [(path, label_of[name]) for path in images]
        photos += [path for path in files if extension(path) in PHOTO_EXTENSIONS]
    _warn_left_out([path for path in photos if extension(path) not in readable], folder)
    return samples


def _warn_left_out(photos: list[str], folder: Path) -> None:
    """Warn of ``photos`` (under ``folder``) in a format sef cannot read: left out of the data."""
    if photos:
        kinds = ", ".join(sorted({extension(path) for path in photos}))
        warn(
            f"left out {counted(len(photos), 'photo')} under {folder} in a format sef cannot "
            f"read ({kinds}), e.g. {photos[0]}; convert them to JPEG or PNG to train on them"
        )


def _subfolders(folder: str | os.PathLike) -> set[str]:
    """The names of the folders in ``folder``, hidden ones left out."""
    return {
        entry.name for entry in os.scandir(folder) if entry.is_dir() and not _hidden(entry.name)
    }


def _split_folders(root: Path) -> dict[str, Path]:
    """The split folders in ``root`` by split (:func:`sef.datasets.splits.split_named`: Train/,
    valid/); one that holds no folder is a class of ROOT/<class>/<image> (train/ beside bus/)."""
    found: dict[str, Path] = {}
    for entry in sorted(os.scandir(root), key=lambda entry: entry.name):
        split = split_named(entry.name)
        if split and entry.is_dir() and _subfolders(entry.path):
            if split in found:
                raise DataError(
                    f"{root} has two {split} folders, {found[split].name} and {entry.name}; "
                    f"keep one"
                )
            found[split] = Path(entry.path)
    return {split: found[split] for split in SPLITS if split in found}


def _files(folder: Path) -> list[str]:
    """The files in ``folder`` (not in its subfolders), hidden ones left out."""
    with os.scandir(folder) as entries:
        return [entry.path for entry in entries if entry.is_file() and not _hidden(entry.name)]


def _warn_misnamed_splits(
    root: Path, split_folders: dict[str, Path], class_folders: dict[str, str]
) -> None:
    """Warn of split folders named otherwise than SPLITS: one beside split folders that holds
    class folders (ROOT/extra/<class>/, left out; or one named as a split that holds images and
    no class folders, :func:`_warn_unlabelled`), or class folders that hold the same folders
    and no image of their own (ROOT/training/<class>/ and ROOT/testing/<class>/, read as two
    classes)."""
    splits = f"split folders are named {', '.join(SPLITS[:-1])} or {SPLITS[-1]}"
    if split_folders:
        for entry in sorted(os.scandir(root), key=lambda entry: entry.name):
            known = Path(entry.path) in split_folders.values() or _hidden(entry.name)
            if known or not entry.is_dir():
                continue
            if split_named(entry.name):
                _warn_unlabelled(Path(entry.path))
            shared = _subfolders(entry) & set(class_folders)
            if shared:
                warn(
                    f"{entry.path} holds class folders ({some(sorted(shared))}) but is no split "
                    f"folder, so its images are left out; {splits}"
                )
        return
    bare = [name for name in sorted(class_folders) if not _files(root / name)]
    shared = set.intersection(*map(_subfolders, [root / name for name in bare])) if bare else set()
    inverted = sorted(name for name in shared if split_named(name))
    if len(bare) > 1 and inverted:  # ROOT/<class>/<split>/: the split folders one level low
        warn(
            f"the classes {some(bare)} of {root} each hold the split folders {some(inverted)}, "
            f"read as one set, test and val held out of it anew: split folders hold class "
            f"folders, ROOT/<split>/<class>/<image>; move {root / bare[0] / inverted[0]} to "
            f"{root / inverted[0] / bare[0]}, and so on"
        )
    elif len(bare) > 1 and shared:
        warn(
            f"the classes {some(bare)} of {root} hold the same folders ({some(sorted(shared))}) "
            f"and no image of their own, as split folders do; {splits}"
        )


def _loose_images(folder: Path) -> list[str]:
    """The images straight in ``folder``, not in a subfolder."""
    return sorted(path for path in _files(folder) if extension(path) in readable_extensions())


def _warn_loose(folder: Path) -> None:
    """Warn of the images straight in ``folder``, beside its class folders: left out."""
    loose = _loose_images(folder)
    if loose:
        warn(
            f"left out {counted(len(loose), 'image')} straight in {folder}, beside its class "
            f"folders, e.g. {loose[0]}: an image is in its class's folder, "
            f"{folder}/<class>/<image>"
        )


def _warn_unlabelled(folder: Path) -> None:
    """Warn of the images straight in ``folder``, a split folder without class folders beside
    split folders with them (Kaggle's unlabelled test/ beside train/<class>/): left out."""
    loose = _loose_images(folder)
    if loose:
        warn(
            f"{folder} holds {counted(len(loose), 'image')} but no class folders, so the "
            f"folder is left out: an image of a split is in its class's folder, "
            f"{folder}/<class>/<image> (sef predict reads images without classes)"
        )


def _named(root: Path) -> Path:
    """``root`` as given where its last part is a folder's name (for messages), else resolved
    (``.`` or ``..``), so that its parent is the folder above it."""
    return root if root.name not in ("", "..") else root.resolve()


def _class_folder_hint(root: Path) -> str:
    """What to say where ``root``, a folder of images, is one class folder beside others (ROOT
    given one folder too deep): "; ... pass <the folder of the class folders>"; else ""."""
    root = _named(root)
    if len(_subfolders(root.parent)) < 2:
        return ""
    data = root.parent.parent if split_named(root.parent.name) else root.parent
    return f"; {root} looks like one class folder of {root.parent}: pass {data} as the data root"


def _warn_split_folder_as_root(root: Path) -> None:
    """Warn where ``root`` is one split folder of a dataset (``--data-root data/train`` beside
    ``data/test``): its val and test would be held out of its own images, and the split folders
    beside it never read."""
    root = _named(root)
    if split_named(root.name) is None:
        return
    others = [folder.name for folder in _split_folders(root.parent).values() if folder != root]
    if others:
        warn(
            f"{root} is the {root.name} folder of {root.parent}, which holds {some(others)} "
            f"too: {'it is' if len(others) == 1 else 'they are'} not read, and test and val are "
            f"held out of {root.name}'s images; pass {root.parent} as the data root to read its "
            f"split folders"
        )


def _warn_benchmark_images(root: Path) -> None:
    """Warn where ``root`` is the images folder of a benchmark (CUB_200_2011/images, Dogs'
    Images): read as folder data, its test split is held out anew, not the benchmark's own."""
    root = _named(root)
    found = benchmark_in(root.parent, below=False)  # not a benchmark beside ROOT
    if found:
        name, marker = found
        warn(
            f"{root} is the images folder of {name} ({marker} is there): read as folder data, "
            f"its test images are held out anew, not the test split of {name}; read "
            f"{root.parent} as dataset {name} to use it"
        )


def read(
    root: str | os.PathLike,
    split: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    holdout: str = "stable",
) -> ImageList:
    """``split`` of the class-folder dataset at ``root``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist; lay it out as {LAYOUT}")
    split_folders = _split_folders(root)
    class_folders = _class_folders(list(split_folders.values()) or [root])
    classes = sorted(set(class_folders.values()))
    if not classes:
        loose = _loose_images(root)
        held = f"holds {counted(len(loose), 'image')} but " if loose else "holds "
        hint = _class_folder_hint(root) if loose else archive_hint(root)
        raise DataError(f"{root} {held}no class folders; lay it out as {LAYOUT}{hint}")
    only = min(class_folders) if len(classes) == 1 and not split_folders else None
    inner = sorted(set(_class_folders([root / only]).values())) if only else []
    if inner:  # an archive unpacked into a folder of its own: ROOT/photos/<class>/
        raise DataError(
            f"{root} holds one folder, {only}, which holds the folders {some(inner)}: the "
            f"classes are one folder deeper; pass {root / only} as the data root"
        )
    _warn_misnamed_splits(root, split_folders, class_folders)
    if not split_folders:
        _warn_split_folder_as_root(root)
        _warn_benchmark_images(root)
    for folder in split_folders.values() or [root]:  # two sources merged: Cat/ beside cat/
        warn_case_twins(sorted({class_folders[name] for name in _subfolders(folder)}), str(folder))
    index = {name: label for label, name in enumerate(classes)}
    label_of = {folder: index[name] for folder, name in class_folders.items()}
    samples, tags = [], []
    for tag, folder in split_folders.items() or [(None, root)]:
        found = _images(folder, label_of)
        _warn_loose(folder)
        samples += found
        tags += [tag] * len(found)
    if not samples:
        raise DataError(f"no images ({SHOWN_EXTENSIONS}) under {root}; lay it out as {LAYOUT}")
    # a user's own: seen as a viewer shows them, named relative to root (ImageList.names)
    photos = ImageList(samples, classes, upright=True, root=root)
    return from_declared(
        photos, tags, split, seed, val_fraction, test_fraction, str(root), holdout=holdout
    )
