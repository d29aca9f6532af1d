"""`sef data check` and `sef data download`, run as a user would, in a subprocess."""

import os
import subprocess
import sys
import tarfile
import textwrap

from conftest import CUB_CLASSES

import sef


def _sef(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "sef.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_check_reports_splits_classes_and_images(cub_root):
    result = _sef("data", "check", "cub", cub_root, "--no-progress")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"cub at {cub_root}: 3 classes"
    assert lines[1].split() == ["trainval", "9", "images", "3", "classes"]
    assert lines[3].split() == ["val", "3", "images", "3", "classes"]
    assert lines[4].split() == ["test", "6", "images", "3", "classes"]
    assert all(name in result.stdout for name in CUB_CLASSES)
    assert lines[-1] == "all 15 images open"


def test_check_names_every_bad_image_and_exits_1(cub_root):
    images = sorted((cub_root / "images").rglob("*.jpg"))
    images[0].write_bytes(images[0].read_bytes()[:200])  # truncated
    images[1].unlink()  # missing
    images[2].write_text("not a jpeg")
    result = _sef("data", "check", "cub", cub_root, "--no-progress")
    assert result.returncode == 1
    assert "3 of 15 images cannot be used" in result.stderr
    assert all(str(image) in result.stderr for image in images[:3])
    assert "Traceback" not in result.stderr


def test_check_errors_are_one_line_exit_2(tmp_path):
    result = _sef("data", "check", "cub", tmp_path / "nowhere")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"sef data: error: dataset folder {tmp_path / 'nowhere'}")
    assert len(result.stderr.splitlines()) == 1


def test_check_demo_with_reader_options(tmp_path):
    result = _sef(
        "data", "check", "demo", "-o", "per_class=4", "-o", "test_per_class=2", "--no-progress",
        env={"SEF_CACHE": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "trainval       32 images" in result.stdout and result.stdout.endswith("open\n")
    assert (tmp_path / "demo").is_dir()


def test_download_verifies_the_checksum(http_server, cub_root, tmp_path):
    folder, base = http_server
    (folder / "CUB_200_2011.tgz").write_bytes(b"not the official archive")
    result = _sef("data", "download", "cub", tmp_path / "dl", "--mirror", base, "--no-progress")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "expected 97eceeb196236b17998738112f37df78" in result.stderr
    assert list((tmp_path / "dl").iterdir()) == []


def test_download_then_check(http_server, cub_root, tmp_path):
    """The whole command with the registry pointed at a tiny archive on 127.0.0.1."""
    folder, base = http_server
    with tarfile.open(folder / "CUB_200_2011.tgz", "w:gz") as archive:
        archive.add(cub_root, arcname="CUB_200_2011")
    script = textwrap.dedent(
        f"""
        import sys
        from sef.cli import main
        from sef.datasets import download as dl
        tiny = "{folder / "CUB_200_2011.tgz"}"
        dl.ARCHIVES["cub"] = [dl.Archive("{base}/CUB_200_2011.tgz", dl.md5_of(dl.Path(tiny)),
                                         "CUB_200_2011.tgz")]
        sys.exit(main(sys.argv[1:]))
        """
    )
    root = tmp_path / "dl"
    result = subprocess.run(
        [sys.executable, "-c", script, "data", "download", "cub", str(root), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"cub is ready in {root}; next: sef data check cub {root}"
    assert len(sef.datasets.load("cub", root, "test")) == 6
