"""A record of the images that decoded fully, so that training checks an image once while its file
stays as it is (:func:`sef.datasets.checking.find_bad_images`).

One record per folder of images (the deepest folder that holds every image checked together, e.g.
CUB_200_2011/images), a JSON file in $SEF_CACHE/verified (else ~/.cache/sef/verified) named by a
digest of that folder's path. For each image that decoded it holds the file's path under that
folder with its :func:`stamp` (size, modification and status-change times, inode), taken before
it was decoded: a file written, replaced or touched since differs in one of them and is checked
again; a new file is not in the record; a removed one drops out when the record is next written.
Bad images are never recorded, so a fixed one is checked (and recorded) at the next check. The
build of a decoded-image cache, which decodes every image fully, records those it decoded the
same way (:mod:`sef.datasets.cache`), so a check of their files after it decodes none of them. A
check also trusts the entries of the records of the folders above its own (`sef eval` checks the
test split alone, under a folder below the one training recorded both splits under). The
record also says what the check depended on: its version (:data:`VERSION`), Pillow's version and
the pixel limit (``SEF_MAX_PIXELS``); a record of another check or Pillow is not trusted, nor one
made under a larger limit than the one in force.

A record is written whole and renamed into place (:func:`sef.outputs.write_text`), merged first
with the record there then: where two runs write at once, the last may drop what the other wrote
meanwhile (checked again later), and neither records a file it did not find good as it is. Where
the record cannot be read or written, every image is checked, with one warning per process.
`sef data caches` lists the records, and its ``--prune DAYS`` removes those that no check wrote or
used for DAYS days (:func:`sef.datasets.caches.prune_verified`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import PIL

from sef.datasets.caches import verified_root
from sef.datasets.images import pixel_limit
from sef.errors import OutputError, warn
from sef.outputs import write_text

VERSION = 1  # of the check: what it finds changed, records of another version are not trusted
Stamp = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode
_warned: list[str] = []  # the one warning this process gave


def stamp(path: str) -> Stamp | None:
    """The file at ``path``'s size, modification and status-change times and inode (a file put
    in its place by a rename is another inode, whatever its times); None if it is not there."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino


def _folder_of(paths: list[str]) -> str | None:
    """The deepest folder holding every one of ``paths`` (absolute); None for none, or paths on
    several drives."""
    try:
        folder = os.path.commonpath(paths) if paths else None
    except ValueError:
        return None
    return os.path.dirname(folder) if folder in paths else folder


def _file_of(folder: str | None) -> Path:
    """The record of the images under ``folder``, named by a digest of its path (as
    caches.RECORD says)."""
    return verified_root() / f"{hashlib.sha256(str(folder).encode()).hexdigest()[:16]}.json"


def _warn_once(problem: str) -> None:
    """Say once per process that the record cannot be used, and why (``problem``)."""
    if not _warned:
        _warned.append(problem)
        warn(
            f"{problem}, so every image is checked at every start: set SEF_CACHE to a folder "
            f"you can write"
        )


class Record:
    """The record of verified images under one folder: :meth:`unchanged` says which of some
    images it verified as they are now, :meth:`save` records those that decoded."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.absolute = {path: os.path.abspath(path) for path in paths}
        self.folder = _folder_of(list(self.absolute.values()))
        self.limit = pixel_limit()
        self.file = _file_of(self.folder)
        self.prefix = os.path.join(self.folder, "") if self.folder else ""
        self.used: list[Path] = []  # the records of folders above whose entries it trusts
        self.entries = {**self._above(), **self._read()} if self.folder else {}

    def _above(self) -> dict[str, Stamp]:
        """The entries of the records of the folders above this one (a check of both splits,
        data/ for data/train and data/test) for the images under this one; a nearer folder's
        entry wins."""
        entries: dict[str, Stamp] = {}
        below, folder = self.folder, os.path.dirname(self.folder)
        while folder != below:  # up to the root, its own folder
            file, under = _file_of(folder), os.path.join(os.path.relpath(self.folder, folder), "")
            found = self._read(file, folder)
            ours = {name[len(under) :]: s for name, s in found.items() if name.startswith(under)}
            if ours:
                self.used.append(file)
            entries = {**ours, **entries}
            below, folder = folder, os.path.dirname(folder)
        return entries

    def _read(self, file: Path | None = None, folder: str | None = None) -> dict[str, Stamp]:
        """The entries of the record there now (of ``folder``'s ``file``, else this one's) that
        this check may trust; none where there is no such record, or it is of another check,
        folder or Pillow, or of a larger limit."""
        file, folder = file or self.file, folder or self.folder
        try:
            record = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except OSError as error:
            _warn_once(f"cannot read {file}: {(error.strerror or str(error)).lower()}")
            return {}
        except ValueError:  # a damaged record: replaced at the next write
            return {}
        usable = (
            isinstance(record, dict)
            and record.get("version") == VERSION
            and record.get("pillow") == PIL.__version__
            and record.get("folder") == folder
            and isinstance(record.get("max_pixels"), int)
            and record["max_pixels"] <= self.limit
            and isinstance(record.get("images"), dict)
        )
        return {name: tuple(s) for name, s in record["images"].items()} if usable else {}

    def _name(self, path: str) -> str:
        return self.absolute[path][len(self.prefix) :]

    def unchanged(self, stamps: Mapping[str, Stamp | None]) -> set[str]:
        """The paths of ``stamps`` that the record verified with the stamp they have now."""
        return {
            path
            for path, now in stamps.items()
            if now is not None and self.entries.get(self._name(path)) == now
        }

    def save(self, decoded: Mapping[str, Stamp | None]) -> None:
        """Record the images ``decoded`` (with their stamps from before they were decoded), and
        keep of the record there now the entries of other images whose files are unchanged; the
        images of this record's paths not in ``decoded`` (bad ones) are left out. Where that
        changes nothing this record read, the record is only touched (its last use, for `sef
        data caches --prune`), not read and written again, and none is made; the records of
        folders above whose entries it trusted are touched too."""
        if not self.folder:
            return
        ours = {self._name(path): s for path, s in decoded.items() if s is not None}
        mine = {self._name(path) for path in self.absolute}
        try:
            if not self._holds(ours, mine):
                self._write(ours, mine)
            elif self.file.exists():  # nothing to write: none where nothing was decoded
                os.utime(self.file)
            for file in self.used:  # the records above that it trusted were used too
                if file.exists():
                    os.utime(file)
        except OSError as error:  # the time of a file another process removed meanwhile
            _warn_once(f"cannot use {self.file}: {(error.strerror or str(error)).lower()}")
        except OutputError as error:
            _warn_once(error.problem)

    def _write(self, ours: dict[str, Stamp], mine: set[str]) -> None:
        """Write the record of ``ours`` and of the other images whose files are unchanged."""
        kept = {**self.entries, **self._read()}  # another process's entries too
        entries = {
            name: s
            for name, s in kept.items()
            if name not in mine and stamp(os.path.join(self.folder, name)) == s
        }
        record = {"version": VERSION, "pillow": PIL.__version__, "max_pixels": self.limit,
                  "folder": self.folder, "images": {**entries, **ours}}  # fmt: skip
        write_text(self.file, json.dumps(record, separators=(",", ":")) + "\n")

    def _holds(self, ours: dict[str, Stamp], mine: set[str]) -> bool:
        """Whether this record read holds ``ours`` and no other entry of ``mine``."""
        return all(self.entries.get(name) == s for name, s in ours.items()) and not any(
            name in self.entries and name not in ours for name in mine
        )
