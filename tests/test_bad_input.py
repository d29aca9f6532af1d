"""Every command walked through the bad inputs of issue 19: a file where a folder belongs and the
reverse, a binary file given as CSV or YAML, broken YAML, empty CSV labels, a single class, bad
images in both splits, a huge image, typed paths that are not images, and a bare `sef`. Each
answer is one line naming what is wrong (exit code 2), never a traceback."""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from conftest import said_as
from PIL import Image

from sef.cli import main

NO_WEIGHTS = ["--weights", "none", "--image-size", "32", "--workers", "0", "--no-progress"]
TINY = ["--image-size", "32", "--epochs", "1", "--batch-size", "4", "--workers", "0"]


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` pixels and holds almost no data: what a huge
    image looks like to a check that reads only the header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


@pytest.fixture
def places(tmp_path: Path, demo_checkpoint: Path, folder_root: Path, demo_root: Path) -> dict:
    """Named paths the cases below use."""
    png = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), (9, 90, 200)).save(png)
    folder = tmp_path / "a-folder"
    folder.mkdir()
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text("optim:\n  lr: 0.1\n epochs: 3\n")
    empty_label = tmp_path / "labels" / "list.csv"
    empty_label.parent.mkdir()
    empty_label.write_text("path,label\na.jpg,cat\nb.jpg,\nc.jpg,dog\n")
    one_class = tmp_path / "one-class"
    (one_class / "cat").mkdir(parents=True)
    for k in range(6):
        Image.new("RGB", (32, 32), (40 * k, 9, 9)).save(one_class / "cat" / f"{k}.png")
    empty_class = shutil.copytree(one_class, tmp_path / "empty-class")
    for name in ("dog", ".ipynb_checkpoints", "__MACOSX"):  # an empty class, two hidden folders
        (empty_class / name).mkdir()
    for hidden in (".ipynb_checkpoints/0.png", "__MACOSX/0.png"):
        shutil.copyfile(one_class / "cat" / "0.png", empty_class / hidden)
    truncated = shutil.copytree(folder_root, tmp_path / "truncated")
    (truncated / "test" / "cat" / "trunc.png").write_bytes(
        (truncated / "train" / "cat" / "cat0.png").read_bytes()[:60]
    )
    singles = tmp_path / "one-image-each"  # no class can give an image to a test split
    for name in ("cat", "dog"):
        (singles / name).mkdir(parents=True)
        Image.new("RGB", (32, 32), (9, 9, 99)).save(singles / name / "0.png")
    case = shutil.copytree(folder_root, tmp_path / "case")  # train/Cat made elsewhere than test/cat
    (case / "train" / "cat").rename(case / "train" / "Cat")
    own_checkpoint = tmp_path / "mine.pt"  # a copy: a case that failed would overwrite it
    shutil.copyfile(demo_checkpoint, own_checkpoint)
    return {
        "png": png, "folder": folder, "notes": notes, "yaml": broken_yaml, "ckpt": demo_checkpoint,
        "empty_label": empty_label, "one_class": one_class,
        "empty_class": empty_class, "truncated": truncated, "own": folder_root,
        "missing": tmp_path / "missing.png", "tmp": tmp_path, "singles": singles,
        "own_ckpt": own_checkpoint, "case": case,
        "latin1": os.fsdecode(os.fsencode(tmp_path / "r") + b"\xe9sultats"),  # a Windows zip's
    }  # fmt: skip


# (command line, words of its one-line answer); {name} is a path from ``places``
CASES = {
    # a file where a folder belongs
    "train-folder-root-file": (
        ["train", "--set", "data.dataset=folder", "--data-root", "{png}", *NO_WEIGHTS],
        "data root {png} is a file, not a folder; dataset folder reads a folder",
    ),
    "train-cub-root-file": (
        ["train", "--preset", "cub-resnet18", "--data-root", "{png}", *NO_WEIGHTS],
        "data root {png} is a file, not a folder; dataset cub reads a folder",
    ),
    "train-demo-root-file": (
        ["train", "--data-root", "{png}", *NO_WEIGHTS],
        "data root {png} is a file, not a folder; dataset demo reads a folder",
    ),
    "train-out-file": (
        ["train", "--out", "{png}", *NO_WEIGHTS],
        "cannot write {png}: {png} is a file, not a folder",
    ),
    "eval-root-file": (
        ["eval", "--checkpoint", "{ckpt}", "--data-root", "{png}", "--no-progress"],
        "data root {png} is a file, not a folder",
    ),
    "eval-report-file": (
        ["eval", "--checkpoint", "{ckpt}", "--report", "{png}", "--no-progress"],
        "cannot write {png}: {png} is a file, not a folder",
    ),
    "viz-corr-root-file": (
        ["viz", "corr", "--checkpoint", "{ckpt}", "--data-root", "{png}", "--no-progress"],
        "data root {png} is a file, not a folder",
    ),
    "export-out-file": (
        ["export", "--checkpoint", "{ckpt}", "--out", "{png}"],
        "cannot write {png}: {png} is a file, not a folder",
    ),
    "check-root-file": (
        ["data", "check", "folder", "{png}", "--no-progress"],
        "data root {png} is a file, not a folder",
    ),
    "download-root-file": (
        ["data", "download", "cub", "{png}", "--no-progress"],
        "cannot write {png}: {png} is a file, not a folder",
    ),
    # a folder where a file belongs
    "train-config-folder": (
        ["train", "--config", "{folder}"],
        "config file {folder} is a folder, not a file; pass a YAML file",
    ),
    "eval-checkpoint-folder": (
        ["eval", "--checkpoint", "{folder}"],
        "checkpoint {folder} is a folder that holds no best.pt or last.pt; pass a last.pt",
    ),
    "eval-predictions-folder": (
        ["eval", "--checkpoint", "{ckpt}", "--predictions", "{folder}"],
        "cannot write {folder}: it is a folder; choose a file name",
    ),
    "score-folder": (["score", "{folder}"], "accuracy table {folder} is a folder, not a file"),
    "viz-cam-path-folder": (
        ["viz", "cam", "--checkpoint", "{ckpt}", "{folder}"],
        "{folder} is not an image (it is a folder); give image files as PATH",
    ),
    "viz-cam-out-folder": (
        ["viz", "cam", "--checkpoint", "{ckpt}", "--out", "{folder}"],
        "cannot write {folder}: it is a folder; choose a file name",
    ),
    "predict-checkpoint-folder": (
        ["predict", "--checkpoint", "{folder}", "{png}"],
        "checkpoint {folder} is a folder",
    ),
    "export-checkpoint-folder": (
        ["export", "--checkpoint", "{folder}", "--out", "{tmp}/shipped"],
        "checkpoint {folder} is a folder",
    ),
    "csv-root-folder-without-csv": (
        ["train", "--preset", "csv-resnet18", "--data-root", "{folder}", *NO_WEIGHTS],
        "{folder} holds no CSV file; point ROOT at a CSV file",
    ),
    # a binary file as CSV or YAML, a text file as an image, broken YAML
    "train-csv-binary": (
        ["train", "--preset", "csv-resnet18", "--data-root", "{png}", *NO_WEIGHTS],
        "{png} is not a text file: it is a PNG image",
    ),
    "check-csv-binary": (
        ["data", "check", "csv", "{png}", "--no-progress"],
        "{png} is not a text file: it is a PNG image",
    ),
    "score-binary": (["score", "{png}"], "accuracy table {png} is not a text file: it is a PNG"),
    "train-config-binary": (
        ["train", "--config", "{png}"],
        "config file {png} is not a text file: it is a PNG image; pass a YAML file",
    ),
    "curves-binary": (
        ["viz", "curves", "{png}"],
        "{png} is not a text file: it is a PNG image; pass the output folder of a `sef train`",
    ),
    "train-config-broken-yaml": (
        ["train", "--config", "{yaml}"],
        "config file {yaml} is not valid YAML: line 3, column 2: expected <block end>",
    ),
    "viz-cam-text-file": (
        ["viz", "cam", "--checkpoint", "{ckpt}", "{notes}"],
        "{notes} is not an image (it is a text file); give image files as PATH",
    ),
    "viz-cam-missing": (
        ["viz", "cam", "--checkpoint", "{ckpt}", "{missing}"],
        "{missing} does not exist; give image files as PATH",
    ),
    "viz-cam-unmatched-pattern": (  # said only "does not exist"
        ["viz", "cam", "--checkpoint", "{ckpt}", "{tmp}/*.jpg"],
        "{tmp}/*.jpg does not exist (a shell pattern that matched no file, passed as typed: "
        "patterns are case-sensitive, *.jpg misses .JPG); give image files as PATH",
    ),
    "predict-missing": (
        ["predict", "--checkpoint", "{ckpt}", "{missing}", "--no-progress"],
        "no image could be predicted among {missing}",
    ),
    # bad data
    "train-empty-label": (
        ["train", "--preset", "csv-resnet18", "--data-root", "{empty_label}", *NO_WEIGHTS],
        "{empty_label} line 3 has an empty label",
    ),
    "check-empty-label": (
        ["data", "check", "csv", "{empty_label}", "--no-progress"],
        "{empty_label} line 3 has an empty label",
    ),
    "check-option-kind": (
        ["data", "check", "folder", "{own}", "-o", "test_fraction=abc", "--no-progress"],
        "dataset 'folder' option test_fraction takes a number, got 'abc'",
    ),
    "train-one-class": (
        [
            "train",
            "--set",
            "data.dataset=folder",
            "--data-root",
            "{one_class}",
            *TINY,
            "--no-progress",
        ],
        "{one_class} holds 1 class ('cat'); a classifier needs at least two classes",
    ),  # fmt: skip
    "train-empty-class": (
        ["train", "--set", "data.dataset=folder", "--data-root", "{empty_class}", *TINY],
        "the trainval split of {empty_class} has no images of 1 of its 2 classes ('dog'); add "
        "images of them or remove them",
    ),
    "train-classes-differing-in-case": (
        ["train", "--set", "data.dataset=folder", "--data-root", "{case}", *TINY],
        "the trainval split of {case} has no images of 1 of its 4 classes ('cat'); add images of "
        "them or remove them ('cat' and 'Cat' differ only in case: spell them alike)",
    ),
    "train-out-not-utf8": (
        ["train", "--set", "data.dataset=folder", "--data-root", "{own}", "--out", "{latin1}"],
        "--out {tmp}/r\ufffdsultats is not UTF-8 text (\ufffd marks its other bytes), and "
        "TensorBoard writes only under UTF-8 paths; choose another name, or --set "
        "run.tensorboard=false",
    ),
    "train-eval-split-in-train-split": (
        [
            "train",
            "--set",
            "data.dataset=folder",
            "--data-root",
            "{own}",
            *TINY,
            "--set",
            "data.eval_split=val",
        ],
        "data.eval_split=val shares 3 images with data.train_split=trainval (e.g. {own}/train/",
    ),  # fmt: skip
    "train-error-in-loader-worker": (
        [
            "train",
            "--set",
            "data.dataset=folder",
            "--data-root",
            "{truncated}",
            *TINY,
            "--workers",
            "1",
            "--set",
            "data.bad_images=off",
        ],
        "sef train: error: image {truncated}/test/cat/trunc.png cannot be decoded (",
    ),  # fmt: skip
    "train-empty-eval-split": (
        [
            "train",
            "--set",
            "data.dataset=folder",
            "--data-root",
            "{singles}",
            *TINY,
            "--no-progress",
        ],
        "the test split of {singles} holds no images: there is nothing to evaluate on",
    ),  # fmt: skip
    # an output over an input
    "eval-predictions-over-checkpoint": (
        ["eval", "--checkpoint", "{own_ckpt}", "--predictions", "{own_ckpt}", "--no-progress"],
        "cannot write {own_ckpt}: it holds a checkpoint or a model, which this would replace",
    ),
    "viz-corr-out-over-checkpoint": (
        ["viz", "corr", "--checkpoint", "{ckpt}", "--out", "{own_ckpt}", "--no-progress"],
        "cannot write {own_ckpt}: it holds a checkpoint or a model",
    ),
    "train-resume-out-file": (
        ["train", "--resume", "--out", "{ckpt}"],
        "cannot resume: {ckpt} is a file; give --out the run's folder",
    ),
    # devices
    "eval-device": (
        ["eval", "--checkpoint", "{ckpt}", "--device", "gpu", "--no-progress"],
        "device 'gpu' is invalid: it must be auto, cpu, cuda or cuda:N",
    ),
    "predict-device": (
        ["predict", "--checkpoint", "{ckpt}", "{png}", "--device", "mps"],
        "device 'mps' is invalid: it must be auto, cpu, cuda or cuda:N",
    ),
    "viz-corr-device": (
        ["viz", "corr", "--checkpoint", "{ckpt}", "--device", "meta", "--no-progress"],
        "device 'meta' is invalid: it must be auto, cpu, cuda or cuda:N",
    ),
    "viz-cam-too-many": (
        ["viz", "cam", "--checkpoint", "{ckpt}", "--images", "33"],
        "a group-map figure has a column per image and at most 32 fit; asked for 33",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_every_command_answers_bad_input_in_one_line(
    case: str, places: dict, capsys, monkeypatch
) -> None:
    words, expected = CASES[case]
    argv = [w.format(**places) for w in words]
    monkeypatch.chdir(places["tmp"])
    code = main(argv)
    captured = capsys.readouterr()
    command = said_as(argv)
    last = captured.err.splitlines()[-1] if captured.err else ""
    assert code == 2, captured
    assert last.startswith(f"sef {command}: error: "), captured.err
    assert expected.format(**places) in last
    assert captured.err.count("\n") == 1 + captured.err.count("skipped "), captured.err
    assert "Traceback" not in captured.err


def test_bad_images_of_both_splits_are_reported_in_one_pass(
    folder_root: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    (folder_root / "train" / "cat" / "broken.png").write_bytes(b"not an image")
    (folder_root / "test" / "dog" / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    png_header(folder_root / "test" / "fox" / "huge.png", 20000, 20000)
    argv = ["train", "--set", "data.dataset=folder", "--data-root", str(folder_root), *TINY]
    assert main([*argv, "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("sef train: error: 3 of 21 images cannot be used")
    assert "train/cat/broken.png: not an image" in error and "test/dog/cut.png" in error
    assert "test/fox/huge.png: too large: 400,000,000 pixels > limit 100,000,000" in error
    assert not (tmp_path / "runs").exists()


def test_a_whole_missing_image_folder_stops_training_in_one_line(
    csv_root: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.rmtree(csv_root / "img")  # the CSV without its images: 18 missing
    argv = ["train", "--set", "data.dataset=csv", "--data-root", str(csv_root), *TINY]
    assert main([*argv, "--no-progress"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("sef train: error: 18 of 18 images cannot be used")
    assert lines[1:] == [
        f"18 of 18 images under {csv_root / 'img'}: missing, e.g. cat_0.jpg, cat_1.jpg, "
        f"cat_2.jpg; {csv_root / 'img'} does not exist: the paths in labels.csv are read "
        f"relative to its folder {csv_root}: write them relative to it or absolute, or set the "
        f"csv option image_root to the folder they are relative to"
    ]


@pytest.mark.slow
def test_a_huge_image_is_skipped_by_predict_and_listed_by_check_without_pil_text(
    demo_checkpoint: Path, folder_root: Path, tmp_path: Path, run_sef
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(photos / "good.png")
    huge = png_header(photos / "huge.png", 20000, 20000)  # PIL refuses it (> 179 MP)
    big = png_header(photos / "big.png", 12000, 12000)  # PIL only warns (> 89 MP)
    predicted = run_sef("predict", "--checkpoint", demo_checkpoint, photos, "--no-progress")
    assert predicted.returncode == 0, predicted.stderr
    assert "good.png" in predicted.stdout
    for path, pixels in ((huge, "400,000,000"), (big, "144,000,000")):
        said = f"sef predict: skipped {path}, which is too large: {pixels} pixels > limit 100,000,"
        assert said in predicted.stderr
    assert predicted.stderr.count("\n") == 2  # no PIL warning, no traceback
    (folder_root / "test" / "dog" / "big.png").write_bytes(big.read_bytes())
    checked = run_sef("data", "check", "folder", folder_root, "--no-progress")
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert "big.png: too large: 144,000,000 pixels > limit 100,000,000 (SEF_MAX_PIXELS)" in (
        checked.stderr
    )
    assert "DecompressionBomb" not in checked.stderr + predicted.stderr


@pytest.mark.slow
def test_bare_sef_prints_its_help_and_exits_2(run_sef) -> None:
    bare = run_sef()
    assert bare.returncode == 2 and bare.stdout == ""
    assert bare.stderr.startswith("usage: sef ") and "COMMAND" in bare.stderr


# pytest restores the warning filters around each test, so the one sef sets on import is gone
# here; a `sef` process keeps it (the test above checks that no PIL text reaches the user).
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_the_pixel_limit_is_a_documented_variable(monkeypatch, tmp_path: Path) -> None:
    from sef.datasets.images import UnreadableImage, decode, pixel_limit
    from sef.errors import ConfigError

    big = png_header(tmp_path / "big.png", 12000, 12000)
    with pytest.raises(UnreadableImage, match="144,000,000 pixels > limit 100,000,000"):
        decode(big, upright=False)
    monkeypatch.setenv("SEF_MAX_PIXELS", "200_000_000")
    assert pixel_limit() == 200_000_000
    with pytest.raises(UnreadableImage, match="cannot be decoded"):  # allowed; its data is cut
        decode(big, upright=False)
    monkeypatch.setenv("SEF_MAX_PIXELS", "lots")
    with pytest.raises(ConfigError, match="SEF_MAX_PIXELS='lots' must be a positive whole"):
        pixel_limit()


def _all_subclasses(cls: type) -> set[type]:
    return {sub for direct in cls.__subclasses__() for sub in {direct, *_all_subclasses(direct)}}


def test_every_sef_error_can_be_reworded_from_its_message_alone():
    """Callers add context as ``type(error)(f"{where}: {error}")`` (sef reproduce names the run
    that failed); an error class that needs more than a message would turn that into a
    TypeError traceback, as FolderBusy once did."""
    import importlib
    import pkgutil

    import sef
    from sef.errors import SEFError

    for module in pkgutil.walk_packages(sef.__path__, "sef."):
        optional = module.name.startswith("sef.integrations.")  # extras' imports
        if not optional and not module.name.endswith("__main__"):  # runs the CLI
            importlib.import_module(module.name)
    classes = _all_subclasses(SEFError)
    names = {c.__name__ for c in classes}
    assert {"FolderBusy", "DiskFull", "UnreadableImage", "StaleCache"} <= names
    for cls in classes:
        assert str(cls("where: what went wrong")) == "where: what went wrong", cls


@pytest.mark.parametrize(
    ("words", "usage", "answer"),
    [
        (["export", "--checkpoint", "x.pt", "--out", "q", "--bogus"], "sef export",
         "sef export: error: unrecognized arguments: --bogus"),
        (["viz", "cam", "--checkpoint", "x.pt", "--batch-size", "4"], "sef viz cam",
         "sef viz cam: error: unrecognized arguments: --batch-size"),
        (["score", "t.csv", "--decimals", "-1"], "sef score",
         "sef score: error: argument --decimals: must be an integer >= 0, got -1"),
        (["info", "--image-size", "0"], "sef info",
         "sef info: error: argument --image-size: must be an integer >= 16, got 0"),
        (["info", "--classes", "1"], "sef info",  # it described a one-class classifier
         "sef info: error: argument --classes: must be an integer >= 2, got 1"),
        (["data", "cache", "demo", "--image-size", "0"], "sef data cache",
         "sef data cache: error: argument --image-size: must be an integer >= 16, got 0"),
        (["viz", "corr", "--checkpoint", "x.pt", "--images", "0"], "sef viz corr",
         "sef viz corr: error: argument --images: must be an integer >= 1, got 0"),
        (["eval", "--checkpoint", "x.pt", "--batch-size", "none"], "sef eval",
         "sef eval: error: argument --batch-size: expected an integer, got 'none'"),
        (["eval", "--checkpoint", "x.pt", "--predictions", "preds/"], "sef eval",  # a file preds
         "sef eval: error: argument --predictions: preds/ ends with /, so it names a folder; "
         "give a file name, e.g. preds/predictions.csv"),
        (["viz", "curves", "runs/demo", "--out", "figs/"], "sef viz curves",
         "sef viz curves: error: argument --out: figs/ ends with /, so it names a folder; give "
         "a file name, e.g. figs/curves.png"),
    ],
)  # fmt: skip
def test_a_usage_error_shows_the_usage_of_the_command_given(words, usage, answer, capsys):
    """argparse would print `sef`'s own usage for an option unknown to a sub-command."""
    with pytest.raises(SystemExit) as stop:
        main(words)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err.startswith(f"usage: {usage} ") and err.splitlines()[-1] == answer
