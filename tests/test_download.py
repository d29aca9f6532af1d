"""Downloading: checksum verification and unpacking, against a server on 127.0.0.1 only."""

import http.server
import io
import tarfile
import threading

import pytest

import sef
from sef.datasets import download as dl
from sef.errors import DataError


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
    assert sorted(p.name for p in root.iterdir()) == ["CUB_200_2011"]  # archive removed
    test = sef.datasets.load("cub", root, "test")
    assert len(test) == 6 and sef.datasets.find_bad_images(test.samples, progress=False) == []


def test_mirror_and_kept_archive(served_cub, tmp_path, monkeypatch):
    base, entry = served_cub
    moved = dl.Archive("http://127.0.0.1:9/unreachable.tgz", entry.md5, entry.filename)
    monkeypatch.setitem(dl.ARCHIVES, "cub", [moved])
    root = dl.download("cub", tmp_path, mirror=base + "/", keep_archives=True, progress=False)
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


class _CutShort(http.server.BaseHTTPRequestHandler):
    """Sends part of a file and closes the connection: announced by Content-Length (/length)
    or in a chunk of the announced size (/chunked), as a dropped transfer does."""

    def do_GET(self):
        self.send_response(200)
        if self.path.startswith("/length"):
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 5000)
        else:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"1000\r\n" + b"x" * 100)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def cut_short_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CutShort)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("path", "why"),
    [("length", "the connection closed after 5,000 of 100,000 bytes"),
     ("chunked", "the connection closed early")],
)  # fmt: skip
def test_a_transfer_cut_short_is_named_as_such_and_leaves_nothing(
    cut_short_server, tmp_path, path, why
):
    url = f"{cut_short_server}/{path}/a.tgz"
    with pytest.raises(DataError, match=f"could not download {url} \\({why}\\); check the conn"):
        dl.fetch(url, tmp_path / "a.tgz", "0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_download_leaves_no_partial_file_nor_the_root_it_made(tmp_path, monkeypatch):
    def interrupted(url, path, progress):  # Ctrl-C (or SIGTERM, in the CLI) mid-transfer
        path.write_bytes(b"x" * 1000)
        raise KeyboardInterrupt

    monkeypatch.setattr(dl, "_save", interrupted)
    monkeypatch.setitem(
        dl.ARCHIVES, "cub", [dl.Archive("http://127.0.0.1:9/a.tgz", "0" * 32, "a.tgz")]
    )
    with pytest.raises(KeyboardInterrupt):
        dl.download("cub", tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(KeyboardInterrupt):
        dl.download("cub", tmp_path / "mine", progress=False)
    assert list((tmp_path / "mine").iterdir()) == []


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
