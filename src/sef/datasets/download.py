"""Fetching the official archives, verifying their checksums, and unpacking them where they belong.

``ARCHIVES`` lists the files of each dataset that can be downloaded; why the others cannot is in
their record (``sef.datasets.RECORDS``).

After ``download(name, root)``, ``load(name, root, split)`` reads the dataset from the same
``root``. Stanford Cars is no longer served by its authors, so it cannot be downloaded here.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

from tqdm import tqdm

from sef import outputs
from sef.datasets import RECORDS
from sef.errors import ConfigError, DataError


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


def fetch(url: str, destination: Path, md5: str, progress: bool = True) -> Path:
    """Download ``url`` to ``destination`` (via a .part file) and verify its MD5.

    A file already at ``destination`` with the right checksum is kept. On a checksum mismatch
    nothing is left behind and a DataError says so; nor after a failed or interrupted transfer.
    """
    if destination.is_file() and md5_of(destination) == md5:
        return destination
    partial = destination.with_name(destination.name + ".part")
    try:
        try:
            _save(url, partial, progress)
        except (URLError, OSError, http.client.HTTPException) as error:
            where = "the mirror folder" if url.startswith("file:") else "the connection"
            why = (
                "the connection closed early"
                if isinstance(error, http.client.IncompleteRead)
                else error
            )
            raise DataError(
                f"could not download {url} ({why}); check {where}, or fetch it by hand into "
                f"{destination.parent}"
            ) from None
        found = md5_of(partial)
        if found != md5:
            raise DataError(
                f"{url} has MD5 {found}, expected {md5}; the download is corrupt or not the "
                f"official file, so its copy was deleted - try again or use another mirror"
            )
        partial.replace(destination)
    finally:  # a failure or an interrupt (Ctrl-C, SIGTERM) leaves no partial file
        partial.unlink(missing_ok=True)
    return destination


def _save(url: str, path: Path, progress: bool) -> None:
    """Write what ``url`` serves to ``path``; ConnectionError if the server sends fewer bytes than
    it announced (a transfer cut short, not a wrong file)."""
    received = 0
    with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        name = path.name.removesuffix(".part")
        with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not progress) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received < total:
        raise ConnectionError(f"the connection closed after {received:,} of {total:,} bytes")


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


def extract(path: Path, root: Path) -> None:
    """Unpack a tar archive (any compression) into ``root``, refusing members that escape it."""
    try:
        with tarfile.open(path) as archive:
            if hasattr(tarfile, "data_filter"):
                archive.extractall(root, filter="data")
            else:  # Python < 3.10.12 / 3.11.4 has no extraction filters
                archive.extractall(root, members=_safe_members(archive, root))
    except (tarfile.TarError, OSError) as error:
        raise DataError(f"cannot unpack {path} ({error}); delete it and download again") from None


def download(
    name: str,
    root: str | os.PathLike,
    *,
    mirror: str | None = None,
    keep_archives: bool = False,
    progress: bool = True,
) -> Path:
    """Download, verify and unpack dataset ``name`` into ``root``; return ``root``.

    ``mirror`` replaces the official host: each file is fetched from ``<mirror>/<filename>``
    (a mirror without a scheme is a local folder) and must still have the official checksum.
    A ``root`` this call created is removed again if the download fails or is interrupted before
    it holds anything.
    """
    reason = RECORDS[name].no_download if name in RECORDS else ""
    if reason:
        raise DataError(f"cannot download {name!r}: {reason}")
    if name not in ARCHIVES:
        known = ", ".join(ARCHIVES)
        raise ConfigError(f"unknown dataset {name!r} to download; choose one of {known}")
    created = not Path(root).expanduser().exists()
    root = outputs.make_folder(Path(root).expanduser())  # a file there: named, in one line
    try:
        for archive in ARCHIVES[name]:
            url = _mirrored(mirror, archive.filename) if mirror else archive.url
            path = fetch(url, root / archive.filename, archive.md5, progress)
            extract(path, root)
            if not keep_archives:
                path.unlink()
    except (DataError, KeyboardInterrupt):  # KeyboardInterrupt: Ctrl-C, SIGTERM in the CLI
        if created and not any(root.iterdir()):
            root.rmdir()
        raise
    return root


def _mirrored(mirror: str, filename: str) -> str:
    """``<mirror>/<filename>`` as a URL: a mirror without a scheme (``://``) is a local folder."""
    if "://" not in mirror:
        return (Path(mirror).expanduser().absolute() / filename).as_uri()
    return f"{mirror.rstrip('/')}/{filename}"
