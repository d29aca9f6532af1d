"""`sef data check` and `sef data download` as users run them: the main paths in a subprocess,
variations in-process through ``sef.cli.main`` (same parser and error handling, no start-up)."""

import io
import os
import re
import shutil
import sys
import tarfile
import unicodedata

import pytest
from conftest import CUB_CLASSES, sef_process

import sef
from sef.cli import main
from sef.datasets import download as dl


@pytest.mark.slow
def test_check_reports_splits_classes_and_images(cub_root):
    result = sef_process("data", "check", "cub", cub_root, "--no-progress")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"cub at {cub_root}: 3 classes"
    assert lines[1].split() == ["trainval", "9", "images", "3", "classes"]
    assert lines[3].split() == ["val", "3", "images", "3", "classes"]
    assert lines[4].split() == ["test", "6", "images", "3", "classes"]
    assert all(name in result.stdout for name in CUB_CLASSES)
    assert lines[-1] == "all 15 images open"


@pytest.mark.slow
def test_check_names_every_bad_image_and_exits_1(cub_root):
    images = sorted((cub_root / "images").rglob("*.jpg"))
    images[0].write_bytes(images[0].read_bytes()[:200])  # truncated
    images[1].unlink()  # missing
    images[2].write_text("not a jpeg")
    result = sef_process("data", "check", "cub", cub_root, "--no-progress")
    assert result.returncode == 1
    assert "3 of 15 images cannot be used" in result.stderr
    assert all(str(image) in result.stderr for image in images[:3])
    assert "Traceback" not in result.stderr


def test_check_sums_up_a_split_missing_in_one_line(cars_root, capsys):
    train = cars_root / "cars_train"
    deeper = cars_root / "unpacked"
    train.rename(deeper)
    train.mkdir()
    deeper.rename(train / "cars_train")  # as the Kaggle copy unpacks: cars_train/cars_train/
    (cars_root / "cars_test" / "00001.jpg").write_text("not a jpeg")
    assert main(["data", "check", "cars", str(cars_root), "--no-progress"]) == 1
    count = len(list((train / "cars_train").iterdir()))
    total = count + len(list((cars_root / "cars_test").iterdir()))
    assert capsys.readouterr().err.splitlines() == [
        f"{count + 1} of {total} images cannot be used; fix or remove them, or train without "
        "them with --set data.bad_images=skip:",  # said what is wrong, not what to do
        f"{count} of {total} images under {train}: missing, e.g. 00001.jpg, 00002.jpg, "
        f"00003.jpg; {train / 'cars_train' / '00001.jpg'} exists: the images are one folder "
        f"deeper than listed",
        f"{cars_root / 'cars_test' / '00001.jpg'}: not an image: it is a text file",
    ]


@pytest.mark.parametrize("rows", [1, 18])
def test_check_says_paths_with_backslashes_need_slashes(csv_root, capsys, rows):
    listing = csv_root / "labels.csv"
    lines = listing.read_text().splitlines()
    for i in range(1, rows + 1):
        lines[i] = lines[i].replace("/", "\\")  # written on Windows
    listing.write_text("\n".join(lines) + "\n")
    assert main(["data", "check", "csv", str(csv_root), "--no-progress"]) == 1
    said = capsys.readouterr().err.splitlines()
    shown = ", ".join(rf"img\cat_{k}.jpg" for k in range(min(rows, 3)))
    assert said == [
        f"{rows} of 18 images cannot be used; fix or remove them, or train without them with "
        "--set data.bad_images=skip:",
        f"{rows} of 18 images under {csv_root}: missing, e.g. {shown}; the paths separate "
        f"folders with \\ (as on Windows): write them with / instead",
    ]


def test_the_data_s_own_hint_is_worked_out_only_where_it_is_said(tmp_path):
    # the CSV's hint (which looks at the disk) was worked out for every missing split, then
    # dropped where the paths' backslashes or case said why they are missing
    from sef.datasets.checking import MISSING, describe_bad_images

    def unsaid(paths):
        raise AssertionError(f"worked out, not said: {paths}")

    (tmp_path / "CAT.JPG").write_bytes(b"")
    for paths in (["img\\cat.jpg"], [str(tmp_path / "cat.jpg")] * 4):
        assert describe_bad_images([(path, MISSING) for path in paths], 9, unsaid)
    told = describe_bad_images([(str(tmp_path / "dog.jpg"), MISSING)] * 4, 9, lambda _: "told")
    assert told.endswith("; told")


def test_check_names_a_relative_image_root_and_the_folder_it_was_resolved_from(
    csv_root, capsys, monkeypatch
):
    """Every image missing asked whether the dataset root is where archives unpacked, which says
    nothing to CSV data whose image_root was resolved from the current folder."""
    monkeypatch.chdir(csv_root / "img")
    argv = ["data", "check", "csv", str(csv_root), "-o", "image_root=own-csv", "--no-progress"]
    assert main(argv) == 1
    said = capsys.readouterr().err.splitlines()
    assert said[1] == (
        "18 of 18 images under own-csv/img: missing, e.g. cat_0.jpg, cat_1.jpg, cat_2.jpg; "
        f"own-csv/img does not exist: the csv option image_root own-csv is relative, so it was "
        f"resolved from the current folder {csv_root / 'img'}: give image_root as an absolute "
        f"path, or run from the folder it is relative to"
    )


def test_check_names_the_csv_folder_its_missing_images_were_looked_for_in(csv_root, capsys):
    """Every image missing asked whether the dataset root is where archives unpacked, which says
    nothing to CSV data whose paths are read relative to the CSV's folder."""
    shutil.rmtree(csv_root / "img")
    assert main(["data", "check", "csv", str(csv_root), "--no-progress"]) == 1
    said = capsys.readouterr().err.splitlines()
    assert said[1].endswith(
        f"does not exist: the paths in labels.csv are read relative to its folder {csv_root}: "
        f"write them relative to it or absolute, or set the csv option image_root to the folder "
        f"they are relative to"
    )


def test_check_says_absolute_csv_paths_were_read_as_written_not_asks_about_archives(
    csv_root, tmp_path, capsys
):
    """Absolute paths (or an absolute image_root) whose images moved asked whether the dataset
    root is where archives unpacked: CSV data has no archives."""
    listing = csv_root / "labels.csv"
    listing.write_text(listing.read_text().replace("img/", f"{csv_root}/img/"))
    (csv_root / "img").rename(tmp_path / "moved")
    assert main(["data", "check", "csv", str(csv_root), "--no-progress"]) == 1
    assert capsys.readouterr().err.splitlines()[1] == (
        f"18 of 18 images under {csv_root / 'img'}: missing, e.g. cat_0.jpg, cat_1.jpg, "
        f"cat_2.jpg; {csv_root / 'img'} does not exist: the paths in labels.csv are absolute, "
        f"read as written: put the images back there, or list them where they are now"
    )
    listing.write_text(listing.read_text().replace(f"{csv_root}/img/", "~/img/"))
    # said "read relative to its folder": the ~ was not seen
    assert _hint_for_every_image(csv_root) == (
        "the paths in labels.csv that start with ~ are read as written, a folder named ~, not "
        "the home folder: write the home folder's path out in full"
    )
    listing.write_text(listing.read_text().replace("~/img/", "img/"))
    for image_root, gone in ((tmp_path, ""), (tmp_path / "gone", ", which does not exist")):
        assert _hint_for_every_image(csv_root, image_root=image_root) == (
            f"the paths in labels.csv are read relative to the csv option image_root "
            f"{image_root}{gone}: set image_root to the folder they are relative to"
        )


def _hint_for_every_image(csv_root, **options) -> str:
    """What the CSV data's hint says were all its test images missing."""
    images = sef.datasets.load("csv", csv_root, "test", **options)
    return images.missing_hint([path for path, _ in images.samples])


def test_the_csv_hint_fits_the_missing_paths_where_absolute_and_relative_ones_mix(csv_root):
    """The absolute paths of a CSV that mixes both were said to be read relative to its folder."""
    listing = csv_root / "labels.csv"
    listing.write_text(listing.read_text().replace("img/cat_", f"{csv_root}/img/cat_"))
    images = sef.datasets.load("csv", csv_root, "test")
    absolute = [path for path, _ in images.samples if "cat_" in path]
    relative = [path for path, _ in images.samples if "cat_" not in path]
    assert absolute and relative
    assert images.missing_hint(absolute) == (
        "the paths in labels.csv are absolute, read as written: put the images back there, or "
        "list them where they are now"
    )
    assert images.missing_hint(relative).startswith(
        f"the paths in labels.csv are read relative to its folder {csv_root}: "
    )


def test_check_escapes_control_characters_in_class_names(tmp_path, write_image, capsys):
    """A folder named with a newline printed as two lines; one named with a terminal's escape
    codes would have cleared the screen."""
    for name in ("two\nlines", "\x1b[2Jclear"):
        for image in ("1.png", "2.png"):  # one held out for test
            write_image(tmp_path / "own" / name / image)
    assert main(["data", "check", "folder", str(tmp_path / "own"), "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines()[-3:] == [
        "     0  \\x1b[2Jclear",
        "     1  two\\nlines",
        "all 4 images open",
    ]


def test_check_says_paths_typed_for_files_named_on_a_mac_store_accents_otherwise(csv_root, capsys):
    """A CSV typed on Linux (é, one character) for images copied from a Mac (e, then the
    accent): the files were called missing, with no word of why."""
    on_mac = csv_root / "img" / unicodedata.normalize("NFD", "fée.jpg")
    (csv_root / "img" / "cat_0.jpg").rename(on_mac)
    listing = csv_root / "labels.csv"
    listing.write_text(listing.read_text().replace("cat_0.jpg", "fée.jpg"), encoding="utf-8")
    assert main(["data", "check", "csv", str(csv_root), "--no-progress"]) == 1
    assert capsys.readouterr().err.splitlines()[1] == (
        f"1 of 18 images under {csv_root / 'img'}: missing, e.g. fée.jpg; {on_mac} exists, its "
        f"accents stored as NFD (as macOS writes file names): list the files as they are named"
    )


def test_check_says_paths_listed_in_another_case_than_the_files(csv_root, capsys):
    """A CSV written on Windows, where IMG.JPG opens img.jpg: on Linux every image was missing,
    with a hint at the dataset root."""
    listing = csv_root / "labels.csv"
    listing.write_text(listing.read_text().replace(".jpg", ".JPG"))
    assert main(["data", "check", "csv", str(csv_root), "--no-progress"]) == 1
    found = csv_root / "img" / "cat_0.jpg"
    said = capsys.readouterr().err.splitlines()[1]
    assert said.endswith(
        f"missing, e.g. cat_0.JPG, cat_1.JPG, cat_2.JPG; {found} exists, its name in another case "
        f"(macOS and Windows ignore case, Linux does not): list the files as they are named"
    )


def test_check_says_training_stops_on_a_benchmark_whose_split_file_lists_no_test_image(
    cub_root, capsys
):
    """A train_test_split.txt marking every image 1 passed the check; training then stopped,
    blaming classes of one image, which CUB has none of."""
    split = cub_root / "train_test_split.txt"
    split.write_text("".join(f"{line.split()[0]} 1\n" for line in split.read_text().splitlines()))
    assert main(["data", "check", "cub", str(cub_root), "--no-progress"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"training stops on this data: the test split of {cub_root} holds no images: there is "
        f"nothing to evaluate on; cub's own split files list no test image: check them"
    )


def test_check_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["data", "check", "cub", str(tmp_path / "nowhere")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"sef data check: error: dataset folder {tmp_path / 'nowhere'}")
    assert len(error.splitlines()) == 1
    assert main(["data", "download", "cars", str(tmp_path)]) == 2
    assert "Stanford Cars is no longer served" in capsys.readouterr().err


def test_check_demo_with_reader_options(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEF_CACHE", str(tmp_path))
    options = ["-o", "per_class=4", "-o", "test_per_class=2", "--no-progress"]
    assert main(["data", "check", "demo", *options]) == 0
    out = capsys.readouterr().out
    assert "trainval       32 images" in out and out.endswith("all 48 images open\n")
    assert (tmp_path / "demo").is_dir()


def test_a_seed_given_as_a_reader_option_is_refused_in_one_line(tmp_path, capsys):
    for action, hint in (("check", "pass --seed instead"), ("cache", "leave it out")):
        assert main(["data", action, "folder", str(tmp_path), "-o", "seed=3"]) == 2
        error = capsys.readouterr().err
        said = f"-o seed=3: the seed is not a reader option; {hint}"
        assert error == f"sef data {action}: error: {said}\n"


def test_check_birds32b_draws_its_own_set(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEF_CACHE", str(tmp_path))
    options = ["-o", "per_class=2", "-o", "test_per_class=2", "-o", "resolution=48"]
    assert main(["data", "check", "birds32b", *options, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("birds32b at the birds32b cache: 32 classes\n")
    assert "0  plain-plain-short-clear-short" in out and out.endswith("all 128 images open\n")
    assert [p.name for p in (tmp_path / "birds32b").iterdir()] == ["v1-seed1-2x2-48px"]
    assert main(["data", "download", "birds32b", str(tmp_path)]) == 2
    assert "birds32b is generated on first use" in capsys.readouterr().err


def test_check_names_a_download_that_did_not_finish(cub_root, tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    (root / "CUB_200_2011.tgz.part").write_bytes(b"x")  # interrupted mid-transfer
    assert main(["data", "check", "cub", str(root), "--no-progress"]) == 2
    left = f"{root / 'CUB_200_2011.tgz.part'} is left by a download that did not finish: run sef "
    assert capsys.readouterr().err.endswith(f"; {left}data download cub {root} again\n")
    (root / "CUB_200_2011.tgz.part").rename(root / "CUB_200_2011.tgz")  # fetched, not unpacked
    assert main(["data", "check", "cub", str(root), "--no-progress"]) == 2
    said = capsys.readouterr().err  # one piece of advice, not two
    assert "CUB_200_2011.tgz is not unpacked" in said and "is left by" not in said
    (cub_root.parent / "CUB_200_2011.tgz").write_bytes(b"x")  # interrupted while unpacking
    next((cub_root / "images").rglob("*.jpg")).unlink()
    assert main(["data", "check", "cub", str(cub_root.parent), "--no-progress"]) == 1
    said = capsys.readouterr().err.splitlines()
    assert (
        said[-1] == f"{cub_root.parent / 'CUB_200_2011.tgz'} is left by a download that did "
        f"not finish: run sef data download cub {cub_root.parent} again"
    )


def test_download_verifies_the_checksum(http_server, cub_root, tmp_path):
    folder, base = http_server
    (folder / "CUB_200_2011.tgz").write_bytes(b"not the official archive")
    result = sef_process(
        "data", "download", "cub", tmp_path / "dl", "--mirror", base, "--no-progress"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "expected 97eceeb196236b17998738112f37df78" in result.stderr
    assert not (tmp_path / "dl").exists()  # nothing left: not the archive, nor the ROOT it made


def test_download_then_check(http_server, cub_root, tmp_path, monkeypatch, capsys):
    """The whole command with the registry pointed at a tiny archive on 127.0.0.1."""
    folder, base = http_server
    with tarfile.open(folder / "CUB_200_2011.tgz", "w:gz") as archive:
        archive.add(cub_root, arcname="CUB_200_2011")
    entry = dl.Archive(f"{base}/CUB_200_2011.tgz", dl.md5_of(folder / "CUB_200_2011.tgz"), "x.tgz")
    monkeypatch.setitem(dl.ARCHIVES, "cub", [entry])
    root = tmp_path / "dl"
    assert main(["data", "download", "cub", str(root), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"cub is ready in {root}; next: sef data check cub {root}"
    (folder / "CUB_200_2011.tgz").unlink()  # the same command again asks the server nothing
    assert main(["data", "download", "cub", str(root), "--no-progress"]) == 0
    again = (
        f"cub is already in {root}, unpacked by an earlier download (to fetch it again, delete "
        f"{root / 'CUB_200_2011'}); next: sef data check"
    )
    assert capsys.readouterr().out.startswith(again)
    assert len(sef.datasets.load("cub", root, "test")) == 6
    assert main(["data", "check", "cub", str(root), "--no-progress"]) == 0
    assert capsys.readouterr().out.endswith("all 15 images open\n")
    # a class folder deleted since: check says how to fetch it again, not to move ROOT
    shutil.rmtree(root / "CUB_200_2011" / "images" / CUB_CLASSES[1])
    assert main(["data", "check", "cub", str(root), "--no-progress"]) == 1
    fetch = f"delete {root / 'CUB_200_2011'} and run sef data download cub {root} again"
    said = capsys.readouterr().err.splitlines()[-1]
    assert said.endswith(
        f" does not exist: sef data download unpacked them into {root}: {fetch} to fetch them again"
    )


def test_cache_builds_once_then_finds_it_up_to_date(cub_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEF_CACHE", str(tmp_path / "home"))
    arguments = ["data", "cache", "cub", str(cub_root), "--image-size", "32", "--no-progress"]
    assert main([*arguments, "--workers", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    folder = next((tmp_path / "home" / "decoded").iterdir())
    assert folder.name.startswith("cub-resize_crop-43px-")  # the preset's recipe, at 32 px
    assert lines[0].startswith(f"cached 15 images in {folder}: 83.2 KB, built in ")
    assert lines[0].endswith(" s (resize_crop, 43 x 43 px uint8)")
    assert lines[1] == "train with --cache auto --image-size 32"  # else another cache, at 448
    assert main(arguments) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{folder} is up to date: 15 images of 43 x 43 px"
    )
    out = tmp_path / "mine"
    assert main([*arguments, "--recipe", "resize", "--out", str(out), "-o", "bbox_crop=true"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        f"train with --cache {out} --image-size 32 --set data.recipe=resize "
        f"--set data.options.bbox_crop=true"
    )


def test_check_of_own_data_without_a_test_split(no_test_split, capsys):
    assert main(["data", "check", "folder", str(no_test_split), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[1:5]] == [
        ["trainval", "12"], ["train", "8"], ["val", "4"], ["test", "none"],
    ]  # fmt: skip
    assert lines[4].endswith("(the data declares no test images)")
    assert lines[-1] == "all 12 images open"


def test_cache_of_own_data_without_a_test_split(no_test_split, tmp_path, capsys):
    arguments = ["data", "cache", "folder", str(no_test_split), "--image-size", "32"]
    assert main([*arguments, "--out", str(tmp_path / "c"), "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith(f"cached 12 images in {tmp_path / 'c'}: ")


@pytest.mark.parametrize(("given", "used"), [([], min(8, os.cpu_count())), (["0"], 0), (["1"], 1)])
def test_cache_decodes_with_the_workers_asked_for(cub_root, tmp_path, monkeypatch, given, used):
    workers = []
    real = sef.datasets.cache.DataLoader

    def loader(*args, num_workers, **kwargs):
        workers.append(num_workers)
        return real(*args, num_workers=0, **kwargs)

    monkeypatch.setattr(sef.datasets.cache, "DataLoader", loader)
    arguments = ["data", "cache", "cub", str(cub_root), "--out", str(tmp_path / "c")]
    assert main([*arguments, "--no-progress", *(["--workers", *given] if given else [])]) == 0
    assert workers == [used]


def test_cache_errors_are_one_line_exit_2(cub_root, tmp_path, capsys):
    assert main(["data", "cache", "cub"]) == 2
    assert (
        capsys.readouterr().err
        == "sef data cache: error: cub needs ROOT, the dataset folder: sef data cache cub ROOT\n"
    )
    arguments = ["data", "cache", "cub", str(cub_root), "--no-progress", "--out", str(cub_root)]
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"sef data cache: error: {cub_root} holds other files (")
    assert error.count("\n") == 1
    for foreign in ("[1, 2]", '{"pages": []}'):  # another program's index.json: left alone
        (tmp_path / "site").mkdir(exist_ok=True)
        (tmp_path / "site" / "index.json").write_text(foreign)
        arguments[-1] = str(tmp_path / "site")
        assert main(arguments) == 2
        assert capsys.readouterr().err == (
            f"sef data cache: error: {tmp_path / 'site' / 'index.json'} is not an image cache's "
            f"index, so nothing is written to {tmp_path / 'site'}; choose an empty or new folder\n"
        )
        assert [p.name for p in (tmp_path / "site").iterdir()] == ["index.json"]
        assert (tmp_path / "site" / "index.json").read_text() == foreign
    with pytest.raises(SystemExit):  # a usage error: sef train trains at 16 px or more
        main(["data", "cache", "cub", str(cub_root), "--image-size", "4"])
    assert "argument --image-size: must be an integer >= 16, got 4" in capsys.readouterr().err


def test_each_data_action_is_named_in_the_help_of_sef(capsys):
    """`sef --help` is where a user looks for what `sef data` does; it left out `cache`."""
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    actions = re.findall(r"^    (\w+) ", capsys.readouterr().out, re.M)
    with pytest.raises(SystemExit):
        main(["--help"])
    line = re.search(r"^    data +(.*(?:\n {14}.*)*)", capsys.readouterr().out, re.M).group(1)
    assert actions == ["check", "download", "cache", "caches"]
    assert all(action in line for action in actions), line


@pytest.mark.parametrize("name", ["demo", "birds32"])
def test_data_cache_help_gives_the_image_size_a_built_in_set_defaults_to(name, capsys):
    """It said 448, the paper's datasets' size, for every dataset."""
    from sef.config import dataset_preset, resolve_config

    side = resolve_config(dataset_preset(name)).data.image_size
    with pytest.raises(SystemExit):
        main(["data", "cache", "--help"])
    size_help = " ".join(capsys.readouterr().out.split("--image-size IMAGE_SIZE")[2].split())
    assert f"{name} {side}" in size_help.split(" --out")[0]


def test_check_counts_one_image_and_one_class_in_the_singular(tmp_path, write_image, capsys):
    for path in ("train/a/1.png", "train/a/2.png", "train/b/1.png", "test/a/1.png"):
        write_image(tmp_path / "own" / path)
    assert main(["data", "check", "folder", str(tmp_path / "own"), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"folder at {tmp_path / 'own'}: 2 classes"
    assert lines[4].split() == ["test", "1", "image", "1", "class"]


@pytest.mark.parametrize(
    ("encoding", "chinese"), [("ascii", b"\\u516b\\u54e5"), ("utf-8", "八哥".encode())]
)
def test_check_prints_class_names_the_terminal_cannot_encode(
    encoding, chinese, tmp_path, write_image, monkeypatch
):
    """A Chinese class on an ASCII terminal, a folder name that is not UTF-8 on one that refuses
    surrogates (as Python's stdout does under a UTF-8 locale such as en_US.UTF-8): the name's
    bytes as they are, as `ls` writes them."""
    root = tmp_path / "own"
    for name in ("八哥", os.fsdecode(b"Gr\xfcn")):
        write_image(root / name / "1.png")
        write_image(root / name / "2.png")
    terminal = io.TextIOWrapper(io.BytesIO(), encoding=encoding)  # errors: strict
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(["data", "check", "folder", str(root), "--no-progress"]) == 0
    terminal.flush()
    shown = terminal.buffer.getvalue().splitlines()
    assert shown[-3:] == [b"     0  Gr\xfcn", b"     1  " + chinese, b"all 4 images open"]


def test_check_of_one_image_says_it_opens(tmp_path, write_image, capsys):
    write_image(tmp_path / "own" / "a" / "1.png")  # it said "all 1 images open"
    assert main(["data", "check", "folder", str(tmp_path / "own"), "--no-progress"]) == 1
    said = capsys.readouterr()
    assert said.out.splitlines()[-1] == "the image opens"
    assert said.err == (  # it passed, exit 0, the data that training refuses
        f"training stops on this data: {tmp_path / 'own'} holds 1 class ('a'); a classifier "
        f"needs at least two classes to tell apart\n"
    )


def test_check_says_when_training_would_stop_on_a_class_without_images(
    tmp_path, write_image, capsys
):
    for path in ("a/1.png", "a/2.png", "b/1.png", "b/2.png"):
        write_image(tmp_path / "own" / path)
    (tmp_path / "own" / "c").mkdir()  # made for images not copied yet
    assert main(["data", "check", "folder", str(tmp_path / "own"), "--no-progress"]) == 1
    said = capsys.readouterr()
    assert said.out.endswith("all 4 images open\n")
    assert said.err == (
        f"training stops on this data: the trainval split of {tmp_path / 'own'} has no images of "
        f"1 of its 3 classes ('c'); add images of them or remove them\n"
    )
