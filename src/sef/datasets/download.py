"""Fetching the official archives, verifying their checksums, and unpacking them where they belong.

``ARCHIVES`` lists the files of each dataset that can be downloaded; why the others cannot is in
their record (``sef.datasets.RECORDS``).

After ``download(name, root)``, ``load(name, root, split)`` reads the dataset from the same
``root``. Stanford Cars is no longer served by its authors, so it cannot be downloaded here.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError

from tqdm import tqdm

from sef import outputs, space
from sef.datasets import RECORDS
from sef.errors import ConfigError, DataError, DiskFull, SEFError, for_reader
from sef.text import bars_drawn, some


@dataclass(frozen=True)
class Archive:
    """One official file: where it is served, its MD5, and the name it is saved under."""

    url: str
    md5: str
    filename: str


_DOGS = "http://vision.stanford.edu/aditya86/ImageNetDogs"
ARCHIVES: dict[str, list[Archive]] = {
    "cub": [
        Archive(
            "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
            "97eceeb196236b17998738112f37df78",
            "CUB_200_2011.tgz",
        )
    ],
    "dogs": [
        Archive(f"{_DOGS}/images.tar", "1bb1f2a596ae7057f99d7d75860002ef", "images.tar"),
        Archive(f"{_DOGS}/lists.tar", "edbb9f16854ec66506b5f09b583e0656", "lists.tar"),
    ],
    "aircraft": [
        Archive(
            "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
            "d4acdd33327262359767eeaa97a4f732",
            "fgvc-aircraft-2013b.tar.gz",
        )
    ],
}
_CHUNK = 1 << 20


def md5_of(path: Path) -> str:
    """The MD5 hex digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, destination: Path, md5: str, progress: bool | None = None) -> Path:
    """Download ``url`` to ``destination`` (via a .part file) and verify its MD5.

    A file already at ``destination`` with the right checksum is kept, and a .part file beside it
    removed. A transfer that fails or is interrupted (Ctrl-C, SIGTERM) leaves its .part file,
    which the next call continues where the server allows it (an HTTP range), else starts again; a
    .part file is never taken for the archive. On a checksum mismatch nothing is left behind and a
    DataError says so.
    """
    partial = destination.with_name(destination.name + ".part")
    if destination.is_file() and md5_of(destination) == md5:
        partial.unlink(missing_ok=True)  # an earlier try's, not needed now: space back
        return destination
    try:
        _save(url, partial, progress)
    except (URLError, OSError, http.client.HTTPException) as error:
        raise _download_error(url, partial, error) from None
    except KeyboardInterrupt:  # said by the CLI: what is kept and what to do
        if not _size(partial):
            raise
        raise KeyboardInterrupt(
            f"{partial} holds its first {_size(partial):,} bytes: {_again()} to continue"
        ) from None
    finally:  # a failure or an interrupt before the first byte leaves no empty .part file
        if partial.is_file() and not _size(partial):
            partial.unlink()
    found = md5_of(partial)
    if found != md5:
        page = _is_web_page(partial)
        partial.unlink()
        why = "a web page, not the archive" if page else "corrupt or not the official file"
        raise DataError(
            f"{url} has MD5 {found}, expected {md5}; the download is {why}, so its copy was "
            f"deleted - try again or use another mirror"
        )
    partial.replace(destination)
    return destination


def _again() -> str:
    """How a download is tried again, in its reader's words: the command, or the call."""
    return for_reader("run the same command again", "make the same download call again")


def _download_error(url: str, partial: Path, error: BaseException) -> SEFError:
    """The one-line error for a transfer that failed, with what to do: a full disk names the
    space; a server's refusal its status; a dropped connection says that a rerun continues."""
    if space.is_full(error):
        return outputs.output_error(partial, space.os_error_in(error))
    archive = partial.with_suffix("")  # ROOT/<archive>, where a rerun looks first
    where = f"fetch it by hand to {archive} and {_again()} to check and unpack it"
    if isinstance(error, HTTPError):
        served = (
            "the server failed: try again later"
            if error.code >= 500
            else f"use another {for_reader('--mirror', 'mirror')}"
        )
        status = f"HTTP {error.code} {error.reason}"
        return DataError(f"could not download {url} ({status}); {served}, or {where}")
    why = "the connection closed early" if isinstance(error, http.client.IncompleteRead) else error
    if _size(partial):
        again = f"{_again()} to continue after its first {_size(partial):,} bytes"
    else:
        again = f"check {'the mirror folder' if url.startswith('file:') else 'the connection'}"
    return DataError(f"could not download {url} ({why}); {again}, or {where}")


def _size(path: Path) -> int:
    """The bytes of the file at ``path``; 0 where there is none."""
    return path.stat().st_size if path.is_file() else 0


def _is_web_page(path: Path) -> bool:
    """Whether the file at ``path`` starts as an HTML page does (a server's error or login page
    sent in place of the archive)."""
    with open(path, "rb") as handle:
        start = handle.read(512).lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html"))


def _save(url: str, path: Path, progress: bool | None) -> None:
    """Write what ``url`` serves to ``path``, after the bytes ``path`` holds where the server
    sends the rest (206), else from the start; a DiskFull before the first byte if the archive
    cannot fit; ConnectionError if the server sends fewer bytes than it announced (a transfer cut
    short, not a wrong file)."""
    held = _size(path)
    try:
        response = _request(url, held)
    except HTTPError as error:
        if error.code != 416 or not held:  # 416: no byte from ``held`` on
            raise
        if error.headers.get("Content-Range") == f"bytes */{held}":  # stopped while checked
            return
        held = 0  # a .part file of another file: start again
        response = _request(url, held)
    with response:
        start = held if getattr(response, "status", None) == 206 else 0
        length = int(response.headers.get("Content-Length") or 0) or None
        _check_space(path, length, held - start)
        received = 0
        with open(path, "ab" if start else "wb") as out, tqdm(
            total=start + length if length else None, initial=start, unit="B", unit_scale=True,
            desc=path.name.removesuffix(".part"), disable=not bars_drawn(progress),
        ) as bar:  # fmt: skip
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if length is not None and received < length:
        raise ConnectionError(
            f"the connection closed after {start + received:,} of {start + length:,} bytes"
        )


def _request(url: str, held: int) -> http.client.HTTPResponse:
    """The server's answer for ``url``, from byte ``held`` on (an HTTP range) if ``held``."""
    headers = {"Range": f"bytes={held}-"} if held else {}
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)


def _check_space(path: Path, length: int | None, freed: int) -> None:
    """A DiskFull before writing ``length`` bytes to ``path`` (which gives back ``freed`` bytes
    as it starts again) where they cannot fit."""
    free = space.free_bytes(path)
    if length is None or free is None or length <= free + freed:
        return
    needed, left = space.apart(length, free + freed)
    raise DiskFull(
        f"{path.name.removesuffix('.part')} needs {needed} more and {path.parent} has {left} "
        f"free; free some space or download into another ROOT"
    )


def _safe_members(archive: tarfile.TarFile, root: Path) -> list[tarfile.TarInfo]:
    """Members that stay inside ``root`` (for Pythons without tarfile's 'data' filter)."""
    inside = root.resolve()
    for member in archive.getmembers():
        target = (inside / member.name).resolve()
        if inside not in (target, *target.parents) or member.issym() or member.islnk():
            raise DataError(
                f"{archive.name} has an unsafe member {member.name!r}; not unpacking it"
            )
    return archive.getmembers()


def extract(path: Path, root: Path) -> list[str]:
    """Unpack a tar archive (any compression) into ``root``, refusing members that escape it;
    return the names it unpacked at the top of ``root``."""
    try:
        with tarfile.open(path) as archive:
            if hasattr(tarfile, "data_filter"):
                archive.extractall(root, filter="data")
            else:  # Python < 3.10.12 / 3.11.4 has no extraction filters
                archive.extractall(root, members=_safe_members(archive, root))
            return sorted(
                {top for member in archive.getmembers() for top in Path(member.name).parts[:1]}
            )
    except (tarfile.TarError, OSError) as error:
        if space.is_full(error):
            free = space.free_bytes(root)  # None where the file system cannot say
            there = f" ({space.human(free)} free)" if free is not None else ""
            raise DiskFull(
                f"cannot unpack {path.name} into {root}: the disk is full{there}; free some "
                f"space and {_again()}"
            ) from None
        why = " ".join(str(error).split())  # tarfile lists each compression it tried, a line each
        raise DataError(f"cannot unpack {path} ({why}); delete it and download again") from None


def _marker(root: Path, archive: Archive) -> Path:
    """The file that says ``archive`` was unpacked into ``root``, and what it unpacked."""
    return root / f".{archive.filename}.unpacked"


def _unpacked_names(root: Path, archive: Archive) -> list[str] | None:
    """The names an earlier download unpacked ``archive`` to at the top of ``root``, where it
    did and they are all there; else None."""
    try:
        record = json.loads(_marker(root, archive).read_text(encoding="utf-8"))
        names = [str(name) for name in record["names"]]
        there = record["md5"] == archive.md5 and all((root / n).exists() for n in names)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return names if there else None


def _is_unpacked(root: Path, archive: Archive) -> bool:
    """Whether an earlier download unpacked ``archive`` into ``root`` and all it unpacked is
    there."""
    return _unpacked_names(root, archive) is not None


def unpacked(name: str, root: str | os.PathLike) -> bool:
    """Whether every archive of dataset ``name`` was unpacked into ``root`` by an earlier
    download, and is still there (a download interrupted while unpacking was not)."""
    root = Path(root).expanduser()
    return name in ARCHIVES and all(_is_unpacked(root, archive) for archive in ARCHIVES[name])


def unpacked_into(name: str, root: str | os.PathLike) -> list[Path]:
    """What the earlier downloads of dataset ``name`` unpacked at the top of ``root``
    (``ROOT/CUB_200_2011``), where every archive of it was and is still there; else []."""
    if not unpacked(name, root):
        return []
    root = Path(root).expanduser()
    return [root / n for archive in ARCHIVES[name] for n in _unpacked_names(root, archive) or ()]


def refetch_hint(name: str, root: str | os.PathLike | None) -> Callable[[list[str]], str] | None:
    """What to say of images missing under what a download of dataset ``name`` unpacked into
    ``root`` (a folder of them deleted since): what to delete to fetch them again; None where no
    download unpacked ``root`` (then the general hint, :data:`sef.datasets.checking.ARCHIVES`)."""
    unpacked = unpacked_into(name, root) if root else []
    if not unpacked:
        return None
    # worded here, in the caller's context: the hint may be said from another thread
    who = for_reader("sef data download", "a download")
    again = for_reader(
        f"run sef data download {name} {root} again",
        f"call sef.datasets.download.download({name!r}, {str(root)!r}) again",
    )

    def hint(paths: list[str]) -> str:
        missing = [Path(os.path.abspath(path)) for path in paths]
        held = [top for top in unpacked if any(p.is_relative_to(top.absolute()) for p in missing)]
        tops = [str(top) for top in held or unpacked]
        return (
            f"{who} unpacked them into {root}: delete {some(tops)} and {again} to fetch them again"
        )

    return hint


def unfinished(name: str, root: str | os.PathLike) -> Path | None:
    """The file an interrupted download of dataset ``name`` left in ``root`` (a .part file, or an
    archive it had not unpacked yet), if any."""
    root = Path(root).expanduser()
    for archive in ARCHIVES.get(name, []):
        left = [root / f"{archive.filename}.part", root / archive.filename]
        found = [path for path in left if path.is_file()]
        if found and not _is_unpacked(root, archive):
            return found[0]
    return None


def unpacked_otherwise(name: str, root: str | os.PathLike) -> bool:
    """Whether dataset ``name`` reads from ``root`` though no download finished unpacking it
    there (unpacked by hand, or ``root`` the dataset's own folder): a download would fetch it
    again and unpack it over those files."""
    from sef.datasets import load

    if unpacked(name, root) or unfinished(name, root) is not None:
        return False
    try:
        load(name, root, "test")
    except SEFError:
        return False
    return True


def download(
    name: str,
    root: str | os.PathLike,
    *,
    mirror: str | None = None,
    keep_archives: bool = False,
    progress: bool | None = None,
) -> Path:
    """Download, verify and unpack dataset ``name`` into ``root``; return ``root``.

    ``mirror`` replaces the official host: each file is fetched from ``<mirror>/<filename>``
    (a mirror without a scheme is a local folder) and must still have the official checksum.
    An archive an earlier call unpacked into ``root`` is not fetched again (see :func:`unpacked`),
    nor is anything where the dataset reads from ``root`` already (:func:`unpacked_otherwise`):
    its files stay as they are.
    A ``root`` this call created is removed again if the download fails or is interrupted before
    it holds anything.
    """
    reason = RECORDS[name].no_download if name in RECORDS else ""
    if reason:
        raise DataError(f"cannot download {name!r}: {reason}")
    if name not in ARCHIVES:
        known = ", ".join(ARCHIVES)
        raise ConfigError(f"unknown dataset {name!r} to download; choose one of {known}")
    if unpacked_otherwise(name, root):
        return Path(root).expanduser()
    created = not Path(root).expanduser().exists()
    root = outputs.make_folder(Path(root).expanduser())  # a file there: named, in one line
    try:
        for archive in ARCHIVES[name]:
            if _is_unpacked(root, archive):
                continue
            url = _mirrored(mirror, archive.filename) if mirror else archive.url
            path = fetch(url, root / archive.filename, archive.md5, progress)
            try:
                names = extract(path, root)
            except KeyboardInterrupt:
                raise KeyboardInterrupt(
                    f"{path} was being unpacked: {_again()} to unpack it again"
                ) from None
            record = {"md5": archive.md5, "names": names}
            outputs.write_text(_marker(root, archive), json.dumps(record) + "\n")
            if not keep_archives:
                path.unlink()
    except (SEFError, KeyboardInterrupt):  # KeyboardInterrupt: Ctrl-C, SIGTERM in the CLI
        if created and not any(root.iterdir()):
            root.rmdir()
        raise
    return root


def _mirrored(mirror: str, filename: str) -> str:
    """``<mirror>/<filename>`` as a URL: a mirror without a scheme (``://``) is a local folder,
    or the archive itself (``--mirror ~/Downloads/CUB_200_2011.tgz``)."""
    if "://" not in mirror:
        local = Path(mirror).expanduser().absolute()
        if local.is_file() and local.name != filename:
            raise ConfigError(
                f"{for_reader('--mirror', 'mirror')} {mirror} is a file, not the folder that "
                f"holds {filename}; give that folder"
            )
        return (local if local.is_file() else local / filename).as_uri()
    return f"{mirror.rstrip('/')}/{filename}"
