"""Downloading: checksum verification and unpacking, against a server on 127.0.0.1 only."""

import hashlib
import http.server
import io
import os
import shutil
import tarfile
import threading

import pytest
from conftest import CUB_CLASSES

import sef
import sef.cli
import sef.space
from sef.config import resolve_config
from sef.datasets import download as dl
from sef.distributed import Context
from sef.engine.data import Data, check_images
from sef.errors import ConfigError, DataError, DiskFull, said_to_command


def _tar(source, archive_path, arcname):
    with tarfile.open(archive_path, "w:gz") as archive:
        archive.add(source, arcname=arcname)
    return archive_path


@pytest.fixture
def served_cub(cub_root, http_server, monkeypatch):
    """A tiny CUB_200_2011.tgz on the local server, registered with its own checksum."""
    folder, base = http_server
    archive = _tar(cub_root, folder / "CUB_200_2011.tgz", "CUB_200_2011")
    entry = dl.Archive(f"{base}/CUB_200_2011.tgz", dl.md5_of(archive), "CUB_200_2011.tgz")
    monkeypatch.setitem(dl.ARCHIVES, "cub", [entry])
    return base, entry


def test_download_verifies_unpacks_and_loads(served_cub, tmp_path):
    root = dl.download("cub", tmp_path / "data", progress=False)
    # the archive removed; what it unpacked recorded, for a rerun to skip
    assert sorted(p.name for p in root.iterdir()) == [".CUB_200_2011.tgz.unpacked", "CUB_200_2011"]
    test = sef.datasets.load("cub", root, "test")
    assert len(test) == 6 and sef.datasets.find_bad_images(test.samples, progress=False) == []


def test_training_says_what_to_delete_to_fetch_again_images_deleted_since(served_cub, tmp_path):
    """The same hint as sef data check's (tests/test_cli_data.py), in place of the general one,
    worded for Python code: its call, not the command."""
    root = dl.download("cub", tmp_path / "data", progress=False)
    shutil.rmtree(root / "CUB_200_2011" / "images" / CUB_CLASSES[1])
    config = resolve_config("cub-resnet18", overrides=[f"data.root={root}", "data.workers=1"])
    train, test = (sef.datasets.load("cub", root, split) for split in ("trainval", "test"))
    with pytest.raises(DataError) as stop:
        check_images(Data(train, test, train.classes), config, Context(), progress=False)
    deleted = f"delete {root / 'CUB_200_2011'}"
    fetch = f"{deleted} and call sef.datasets.download.download('cub', {str(root)!r}) again"
    assert str(stop.value).endswith(
        f"a download unpacked them into {root}: {fetch} to fetch them again"
    )


def test_mirror_and_kept_archive(served_cub, tmp_path, monkeypatch):
    base, entry = served_cub
    moved = dl.Archive("http://127.0.0.1:9/unreachable.tgz", entry.md5, entry.filename)
    monkeypatch.setitem(dl.ARCHIVES, "cub", [moved])
    root = dl.download(
        "cub", tmp_path / "data", mirror=base + "/", keep_archives=True, progress=False
    )
    assert (root / "CUB_200_2011.tgz").is_file() and (root / "CUB_200_2011").is_dir()
    # a verified archive already on disk is not fetched again (the URL is unreachable)
    dl.fetch(moved.url, root / "CUB_200_2011.tgz", entry.md5, progress=False)


def test_a_mirror_may_be_a_local_folder(served_cub, tmp_path, monkeypatch):
    base, entry = served_cub
    folder = tmp_path / "archives"
    folder.mkdir()
    dl.fetch(entry.url, folder / entry.filename, entry.md5, progress=False)
    moved = dl.Archive("http://127.0.0.1:9/unreachable.tgz", entry.md5, entry.filename)
    monkeypatch.setitem(dl.ARCHIVES, "cub", [moved])
    root = dl.download("cub", tmp_path / "data", mirror=str(folder), progress=False)
    assert (root / "CUB_200_2011").is_dir() and (folder / entry.filename).is_file()
    with pytest.raises(DataError, match="; check the mirror folder, or fetch it by hand"):
        dl.download("cub", tmp_path / "more", mirror=str(tmp_path / "nothing"), progress=False)
    # the archive itself given as the mirror (was: file:///.../x.tgz/x.tgz, not a directory)
    archive = folder / entry.filename
    root = dl.download("cub", tmp_path / "again", mirror=str(archive), progress=False)
    assert (root / "CUB_200_2011").is_dir() and archive.is_file()
    (folder / "other.tgz").write_bytes(b"x")
    other = str(folder / "other.tgz")
    with pytest.raises(ConfigError, match=r"^mirror \S+other.tgz is a file, not the folder that"):
        dl._mirrored(other, entry.filename)
    with said_to_command(), pytest.raises(ConfigError, match=r"^--mirror \S+other.tgz is a file"):
        dl.download("cub", tmp_path / "more", mirror=other, progress=False)


def test_a_failed_download_removes_the_root_it_created_and_keeps_one_that_was_there(
    tmp_path, monkeypatch
):
    monkeypatch.setitem(
        dl.ARCHIVES, "cub", [dl.Archive("http://127.0.0.1:9/a.tgz", "0" * 32, "a.tgz")]
    )
    with pytest.raises(DataError, match="could not download"):
        dl.download("cub", tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(DataError, match="could not download"):
        dl.download("cub", tmp_path / "mine", progress=False)
    assert (tmp_path / "mine").is_dir()


def test_checksum_mismatch_leaves_nothing(served_cub, tmp_path):
    base, entry = served_cub
    target = tmp_path / "downloads"
    target.mkdir()
    with pytest.raises(
        DataError, match=f"has MD5 {entry.md5}, expected 0+; .* so its copy was deleted"
    ):
        dl.fetch(entry.url, target / "x.tgz", "0" * 32, progress=False)
    assert list(target.iterdir()) == []


def test_unreachable_server_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="could not download http://127.0.0.1:9/a.tgz"):
        dl.fetch("http://127.0.0.1:9/a.tgz", tmp_path / "a.tgz", "0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


BLOB = bytes(range(256)) * 40  # 10,240 bytes: what /resume serves in two pieces


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Serves what a dropped or refusing server does: part of a file and a closed connection,
    announced by Content-Length (/length) or in a chunk of the announced size (/chunked); BLOB
    cut at 4,000 bytes, then its rest for a Range request (/resume); /404, /500."""

    def do_GET(self):
        if self.path[1:4].isdigit():
            self.send_error(int(self.path[1:4]))
            return
        if self.path.startswith("/resume"):
            self._resume()
        elif self.path.startswith("/length"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 5000)
        else:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"1000\r\n" + b"x" * 100)
        self.wfile.flush()
        self.close_connection = True

    def _resume(self):
        asked = self.headers.get("Range")
        start = int(asked.removeprefix("bytes=").rstrip("-")) if asked else 0
        if start >= len(BLOB):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(BLOB)}")
            self.end_headers()
            return
        self.send_response(206 if asked else 200)
        if asked:
            self.send_header("Content-Range", f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}")
        self.send_header("Content-Length", str(len(BLOB) - start))
        self.end_headers()
        self.wfile.write(BLOB[start:] if asked else BLOB[:4000])

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_transfer_cut_short_is_named_as_such_and_a_rerun_continues_it(flaky_server, tmp_path):
    url = f"{flaky_server}/length/a.tgz"
    with pytest.raises(
        DataError,
        match=f"could not download {url} \\(the connection closed after 5,000 of 100,000 bytes"
        "\\); make the same download call again to continue after its first 5,000 bytes, or fetch",
    ):
        dl.fetch(url, tmp_path / "a.tgz", "0" * 32, progress=False)
    # kept under a name never taken for the archive
    assert [p.name for p in tmp_path.iterdir()] == ["a.tgz.part"]
    with pytest.raises(DataError, match="closed after 5,000 of 100,000"):  # no range: restarted
        dl.fetch(url, tmp_path / "a.tgz", "0" * 32, progress=False)
    assert (tmp_path / "a.tgz.part").stat().st_size == 5000
    url = f"{flaky_server}/resume/a.tgz"
    (tmp_path / "a.tgz.part").unlink()
    with pytest.raises(DataError, match="closed after 4,000 of 10,240 bytes"):
        dl.fetch(url, tmp_path / "a.tgz", hashlib.md5(BLOB).hexdigest(), progress=False)
    dl.fetch(url, tmp_path / "a.tgz", hashlib.md5(BLOB).hexdigest(), progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["a.tgz"]
    assert (tmp_path / "a.tgz").read_bytes() == BLOB


def test_a_connection_closed_before_any_byte_leaves_nothing(flaky_server, tmp_path):
    url = f"{flaky_server}/chunked/a.tgz"
    why = "the connection closed early\\); check the connection, or fetch it by hand to"
    again = "and make the same download call again to check and unpack it$"
    with pytest.raises(DataError, match=f"could not download {url} \\({why} .*a.tgz {again}"):
        dl.fetch(url, tmp_path / "a.tgz", "0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("status", "advice"),
    [("404", "\\(HTTP 404 Not Found\\); use another mirror, or fetch it by hand"),
     ("500", "\\(HTTP 500 Internal Server Error\\); the server failed: try again later, or")],
)  # fmt: skip
def test_a_server_that_refuses_is_told_from_a_lost_connection(
    flaky_server, tmp_path, status, advice
):
    # said "check the connection", which was fine
    with pytest.raises(DataError, match=f"could not download {flaky_server}/{status} {advice}"):
        dl.fetch(f"{flaky_server}/{status}", tmp_path / "a.tgz", "0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []
    if status == "404":  # download(mirror=) from Python, `sef data download --mirror`
        with said_to_command(), pytest.raises(DataError, match="; use another --mirror, or "):
            dl.fetch(f"{flaky_server}/{status}", tmp_path / "a.tgz", "0" * 32, progress=False)


def test_a_web_page_served_in_place_of_the_archive_is_named(http_server, tmp_path):
    folder, base = http_server
    (folder / "a.tgz").write_text("\n<!DOCTYPE html><html><body>Please log in</body></html>")
    with pytest.raises(DataError, match="; the download is a web page, not the archive, so its"):
        dl.fetch(f"{base}/a.tgz", tmp_path / "a.tgz", "0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_an_archive_too_large_for_the_disk_is_refused_before_its_first_byte(
    served_cub, tmp_path, monkeypatch
):
    base, entry = served_cub
    monkeypatch.setattr(sef.space, "free_bytes", lambda path: 100)
    with pytest.raises(DiskFull, match=r"CUB_200_2011.tgz needs [\d.]+ KB more and .* has 100 B"):
        dl.download("cub", tmp_path / "data", progress=False)
    assert not (tmp_path / "data").exists()


def test_a_disk_that_fills_while_downloading_says_so_and_keeps_what_came(
    http_server, small_disk, monkeypatch
):
    folder, base = http_server
    (folder / "a.tgz").write_bytes(os.urandom(300_000))
    root = small_disk(128)
    monkeypatch.setattr(dl, "_check_space", lambda *args: None)  # another program fills it
    # said "check the connection"
    with pytest.raises(DiskFull, match=r"cannot write .*a.tgz.part: no space left on device \("):
        dl.fetch(f"{base}/a.tgz", root / "a.tgz", "0" * 32, progress=False)
    assert [p.name for p in root.iterdir()] == ["a.tgz.part"]  # continued once space is freed


def _zeros_archive(path):
    """A .tgz of 1 MB of zeros in a few KB: it fills a small disk as it is unpacked."""
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("big/zeros.bin")
        info.size = 1 << 20
        archive.addfile(info, io.BytesIO(bytes(info.size)))


def test_a_disk_that_fills_while_unpacking_says_so(small_disk):
    root = small_disk(256)
    _zeros_archive(root / "big.tgz")
    # said "delete it and download again", which fills the disk again
    with pytest.raises(
        DiskFull, match="cannot unpack big.tgz into .*: the disk is full \\(.* free"
    ):
        dl.extract(root / "big.tgz", root)


def test_a_full_disk_that_cannot_say_its_free_space_is_still_named(small_disk, monkeypatch):
    root = small_disk(256)
    _zeros_archive(root / "big.tgz")
    monkeypatch.setattr(dl.space, "free_bytes", lambda path: None)  # human(None) was a TypeError
    full = "the disk is full; free some space and make the same download call again"
    with pytest.raises(DiskFull, match=full):
        dl.extract(root / "big.tgz", root)


def test_ctrl_c_mid_transfer_leaves_the_part_file_and_a_rerun_continues_it(
    flaky_server, tmp_path, monkeypatch
):
    save, request = dl._save, dl._request

    def interrupted(url, path, progress):  # Ctrl-C (or SIGTERM, in the CLI) mid-transfer
        path.write_bytes(BLOB[:1000])
        raise KeyboardInterrupt

    md5 = hashlib.md5(BLOB).hexdigest()
    monkeypatch.setattr(dl, "_save", interrupted)
    with pytest.raises(KeyboardInterrupt) as stop:
        dl.fetch(f"{flaky_server}/resume", tmp_path / "a.tgz", md5, progress=False)
    assert stop.value.args == (  # what Python code is told (the CLI: after "interrupted; ")
        f"{tmp_path / 'a.tgz.part'} holds its first 1,000 bytes: make the same download call "
        "again to continue",
    )
    assert [p.name for p in tmp_path.iterdir()] == ["a.tgz.part"]
    monkeypatch.setattr(dl, "_save", save)
    dl.fetch(f"{flaky_server}/resume", tmp_path / "a.tgz", md5, progress=False)  # 206: the rest
    assert (tmp_path / "a.tgz").read_bytes() == BLOB

    def only_the_rest(url, held):
        assert held, "the whole file asked for again"
        return request(url, held)

    # Ctrl-C while the complete .part was checked: the server has nothing more (416), and the
    # file is not asked for again
    (tmp_path / "a.tgz").rename(tmp_path / "a.tgz.part")
    monkeypatch.setattr(dl, "_request", only_the_rest)
    dl.fetch(f"{flaky_server}/resume", tmp_path / "a.tgz", md5, progress=False)
    assert (tmp_path / "a.tgz").read_bytes() == BLOB


def test_a_verified_archive_drops_the_part_file_an_earlier_try_left(tmp_path):
    (tmp_path / "a.tgz").write_bytes(BLOB)  # fetched by hand after an interrupted download
    (tmp_path / "a.tgz.part").write_bytes(BLOB[:1000])
    md5 = hashlib.md5(BLOB).hexdigest()
    dl.fetch("http://127.0.0.1:9/a.tgz", tmp_path / "a.tgz", md5, progress=False)  # asks nothing
    assert [p.name for p in tmp_path.iterdir()] == ["a.tgz"]


def test_an_interrupt_before_any_byte_leaves_nothing_nor_the_root_it_made(tmp_path, monkeypatch):
    def interrupted(url, path, progress):
        raise KeyboardInterrupt

    monkeypatch.setattr(dl, "_save", interrupted)
    monkeypatch.setitem(
        dl.ARCHIVES, "cub", [dl.Archive("http://127.0.0.1:9/a.tgz", "0" * 32, "a.tgz")]
    )
    with pytest.raises(KeyboardInterrupt):
        dl.download("cub", tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()


def test_a_root_an_earlier_download_unpacked_is_not_fetched_again(
    served_cub, tmp_path, monkeypatch
):
    base, entry = served_cub
    root = tmp_path / "data"
    extract = dl.extract

    def interrupted(path, into):  # Ctrl-C while unpacking: half the files there
        extract(path, into)
        raise KeyboardInterrupt

    monkeypatch.setattr(dl, "extract", interrupted)
    with pytest.raises(KeyboardInterrupt, match=r"CUB_200_2011.tgz was being unpacked: make the "):
        dl.download("cub", root, progress=False)
    assert not dl.unpacked("cub", root)
    monkeypatch.setattr(dl, "extract", extract)
    gone = dl.Archive("http://127.0.0.1:9/gone.tgz", entry.md5, entry.filename)
    monkeypatch.setitem(dl.ARCHIVES, "cub", [gone])
    dl.download("cub", root, progress=False)  # unpacks the archive the interrupt left, unfetched
    assert dl.unpacked("cub", root) and not (root / entry.filename).exists()
    assert dl.download("cub", root, progress=False) == root  # the server is not asked
    shutil.rmtree(root / "CUB_200_2011")  # what it unpacked is gone: fetched again
    assert not dl.unpacked("cub", root)
    with pytest.raises(DataError, match="could not download http://127.0.0.1:9/gone.tgz"):
        dl.download("cub", root, progress=False)


def test_a_dataset_unpacked_by_hand_is_neither_fetched_nor_overwritten(
    cub_root, tmp_path, monkeypatch, capsys, files_in
):
    gone = dl.Archive("http://127.0.0.1:9/gone.tgz", "0" * 32, "CUB_200_2011.tgz")
    monkeypatch.setitem(dl.ARCHIVES, "cub", [gone])
    (cub_root / "classes.txt").write_text((cub_root / "classes.txt").read_text() + "\n")  # edited
    before = files_in(cub_root.parent)
    for root in (cub_root.parent, cub_root):  # the folder holding it, or its own
        assert sef.cli.main(["data", "download", "cub", str(root), "--no-progress"]) == 0
        assert capsys.readouterr().out == (
            f"cub is already in {root} (not unpacked by a download), so nothing was "
            f"downloaded or overwritten (to download it again, move its files out of {root}); "
            f"next: sef data check cub {root}\n"
        )
    assert files_in(cub_root.parent) == before


@pytest.mark.parametrize("name", ["cars", "demo", "folder", "csv"])
def test_datasets_without_archives_say_why(name, tmp_path):
    with pytest.raises(DataError, match=f"cannot download '{name}'"):
        dl.download(name, tmp_path)


def _evil_archive(path):
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 4
        archive.addfile(info, io.BytesIO(b"evil"))
    return path


def test_a_file_that_is_no_archive_is_refused_in_one_line(tmp_path):
    (tmp_path / "a.tgz").write_bytes(b"no archive")
    with pytest.raises(
        DataError, match="cannot unpack .*a.tgz \\(file could not be opened"
    ) as error:
        dl.extract(tmp_path / "a.tgz", tmp_path)
    assert "\n" not in str(error.value)  # was a line per compression tarfile tried


def test_archives_that_escape_the_folder_are_refused(tmp_path):
    target = tmp_path / "inside"
    target.mkdir()
    archive = _evil_archive(tmp_path / "evil.tar")
    with pytest.raises(DataError, match="cannot unpack"):
        dl.extract(archive, target)
    with tarfile.open(archive) as opened, pytest.raises(DataError, match="unsafe member"):
        dl._safe_members(opened, target)  # the check used where tarfile has no filters
    assert not (tmp_path / "escaped.txt").exists()


def test_registry_has_official_urls_and_md5s():
    for archives in dl.ARCHIVES.values():
        for archive in archives:
            assert archive.url.startswith(("https://", "http://")) and len(archive.md5) == 32
            int(archive.md5, 16)
