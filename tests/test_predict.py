"""Prediction: probabilities equal the model's softmax, folders expand, bad files are skipped."""

import io
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sef.datasets.images import open_rgb
from sef.predict import find_images, format_rows, predict_images, skipped_said, table_widths
from sef.text import bars_drawn
from sef.trained import load_trained_model


@pytest.fixture
def images(tmp_path, write_image):
    folder = tmp_path / "photos"
    write_image(folder / "b.png", (40, 30), (10, 200, 30))
    write_image(folder / "nested" / "a.jpg", (30, 50), (200, 10, 90))
    write_image(folder / "grey.png", (33, 33), mode="L")
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return folder


def test_find_images_expands_folders_and_names_missing_paths(images, tmp_path):
    found, problems = find_images([images, images / "b.png", tmp_path / "missing.png"])
    names = [p.split("photos/")[-1] for p in found]
    assert names == ["b.png", "broken.jpg", "grey.png", "nested/a.jpg"]  # b.png once
    assert problems == [
        (str(images / "notes.txt"), "has no extension of an image format sef reads (.txt)"),
        (str(tmp_path / "missing.png"), "does not exist"),
    ]  # a file left out of a folder by its name is said, once
    again, others = find_images([images / "nested", images, images / "nested" / ".." / "b.png"])
    assert [p.split("photos/")[-1] for p in again] == [
        "nested/a.jpg",
        "b.png",
        "broken.jpg",
        "grey.png",
    ]  # each file once, where it is first named; its other names say so
    assert others[-1] == (
        str(images / "nested" / ".." / "b.png"),
        f"is the same file as {images / 'b.png'}, predicted under that name",
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert find_images([empty]) == ([], [(str(empty), "is a folder that holds no image sef reads")])


def test_folders_are_searched_for_every_format_pillow_reads(tmp_path):
    for name in ("p.gif", "p.tga", "p.PCX"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "notes.pdf").write_bytes(b"%PDF-1.4")  # a format Pillow only writes
    for name in ("model.h5", "clip.mpg", "figure.eps"):  # ones it names but does not decode
        (tmp_path / name).write_bytes(b"\0" * 16)
    found, problems = find_images([tmp_path])
    assert [Path(p).name for p in found] == ["p.PCX", "p.gif", "p.tga"]
    assert [(Path(p).name, why[-6:]) for p, why in problems] == [
        ("clip.mpg", "(.mpg)"),
        ("figure.eps", "(.eps)"),
        ("model.h5", " (.h5)"),
        ("notes.pdf", "(.pdf)"),
    ]


def test_predictions_are_the_models_top_k_softmax(demo_checkpoint, images):
    trained = load_trained_model(demo_checkpoint)
    predictions, skipped = predict_images(trained, [images], top_k=3, batch_size=2, progress=False)
    assert [p.path.split("photos/")[-1] for p in predictions] == [
        "b.png",
        "grey.png",
        "nested/a.jpg",
    ]
    assert [Path(path).name for path, _ in skipped] == ["notes.txt", "broken.jpg"]
    assert "cannot be decoded" in skipped[1][1]
    for prediction in predictions:
        image = trained.test_transform(open_rgb(prediction.path, upright=True)).unsqueeze(0)
        with torch.no_grad():
            expected = trained.model(image).softmax(1)[0]
        values, indices = expected.topk(3)
        assert [name for name, _ in prediction.top] == [trained.classes[i] for i in indices]
        assert [p for _, p in prediction.top] == pytest.approx(values.tolist(), abs=1e-6)
    everything, _ = predict_images(trained, [images / "b.png"], top_k=100, progress=False)
    assert len(everything[0].top) == len(trained.classes)  # top-k capped at the class count
    assert sum(p for _, p in everything[0].top) == pytest.approx(1, abs=1e-5)
    with pytest.raises(ValueError, match="top_k"):
        predict_images(trained, [images], top_k=0)


def test_table_lists_every_rank(demo_checkpoint, images):
    trained = load_trained_model(demo_checkpoint)
    predictions, _ = predict_images(trained, [images / "b.png"], top_k=2, progress=False)
    widths = table_widths([str(images / "b.png")], trained.classes, 2)
    lines = format_rows(predictions, widths, header=True).splitlines()
    assert lines[0].split() == ["image", "rank", "class", "probability"]
    assert lines[1].startswith(str(images / "b.png")) and lines[1].split()[1] == "1"
    assert lines[2].split()[0] == "2"  # the path is not repeated
    assert predictions[0].to_dict()["predictions"][0]["class"] == predictions[0].top[0][0]


def test_a_path_that_is_neither_file_nor_folder_is_named_as_such(tmp_path):
    pipe = tmp_path / "c.png"
    os.mkfifo(pipe)  # exists, but no file to read
    assert find_images([pipe, tmp_path / "gone.png"]) == (
        [],
        [(str(pipe), "is not a file"), (str(tmp_path / "gone.png"), "does not exist")],
    )


def _fine_tuning(trained):
    """``trained``'s model as a fine-tuning loop leaves it: training, one BatchNorm frozen."""
    frozen = next(m for m in trained.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    trained.model.train()
    frozen.eval()
    return frozen


def test_a_model_in_training_mode_predicts_as_in_eval_mode_and_keeps_its_modes(
    demo_checkpoint, images
):
    trained = load_trained_model(demo_checkpoint)
    expected, _ = predict_images(trained, [images], top_k=3, progress=False)
    frozen = _fine_tuning(trained)
    others = [m for m in trained.model.modules() if isinstance(m, torch.nn.BatchNorm2d)][1:]
    statistics = [m.running_mean.clone() for m in others]
    predictions, _ = predict_images(trained, [images], top_k=3, progress=False)
    assert [p.top for p in predictions] == [p.top for p in expected]
    assert trained.model.training and not frozen.training  # each mode as the caller left it
    assert all(torch.equal(m.running_mean, s) for m, s in zip(others, statistics, strict=True))


def test_folders_are_searched_as_the_folder_dataset_reads_them(tmp_path, write_image):
    photos, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    write_image(photos / "a.png", (8, 8))
    write_image(elsewhere / "linked.png", (8, 8))
    (photos / "birds").symlink_to(elsewhere)  # a linked folder is searched
    (photos / "loop").symlink_to(photos)  # a link to a folder above is read once
    write_image(photos / ".ipynb_checkpoints" / "a-checkpoint.png", (8, 8))  # hidden: left out
    write_image(photos / "__MACOSX" / "a.png", (8, 8))
    (photos / "._a.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    found, problems = find_images([photos])
    assert [os.path.relpath(p, photos) for p in found] == ["a.png", "birds/linked.png"]
    assert problems == []


def test_a_name_that_is_not_utf8_is_predicted_and_printed(demo_checkpoint, tmp_path, capsys):
    from sef.cli import main

    Image.new("RGB", (8, 8)).save(os.path.join(os.fsencode(tmp_path), b"caf\xe9.png"), "PNG")
    argv = ["predict", "--checkpoint", str(demo_checkpoint), str(tmp_path), "--no-progress"]
    assert main([*argv, "--top-k", "1"]) == 0  # capsys, like many terminals, refuses surrogates
    assert "caf\ufffd.png  " in capsys.readouterr().out


def test_json_names_a_file_that_is_not_utf8_in_valid_unicode(demo_checkpoint, tmp_path, capsys):
    """--json wrote "caf\\udce9.png", a lone surrogate that strict JSON parsers refuse."""
    from sef.cli import main

    name = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")
    Image.new("RGB", (8, 8)).save(name, "PNG")
    argv = ["predict", "--checkpoint", str(demo_checkpoint), str(tmp_path), "--no-progress"]
    assert main([*argv, "--json", "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert "\\ud" not in out  # no surrogate, escaped or not
    path = json.loads(out)["images"][0]["path"]
    assert path == f"{tmp_path}/caf\\xe9.png"
    byte = lambda m: bytes.fromhex(m[1].decode())  # noqa: E731
    assert re.sub(rb"\\x([0-9a-f]{2})", byte, path.encode()) == name  # deployment.md's way back


def test_paths_are_named_as_they_were_given(tmp_path, monkeypatch, write_image):
    """`sef predict http://example.com/a.jpg` said "skipped http:/example.com/a.jpg", and
    `./bird.png` came back as "bird.png": a script could not match its own paths."""
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "bird.png")
    found, problems = find_images(["./bird.png", "http://example.com/a.jpg"])
    assert found == ["./bird.png"]
    assert problems == [("http://example.com/a.jpg", "does not exist")]


def test_a_photo_stored_sideways_is_predicted_upright(demo_checkpoint, tmp_path):
    """EXIF Orientation 6 (a phone held upright): the same prediction as its upright copy."""
    from test_datasets_images import tagged, upright_by_the_table

    stored = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    sideways = tagged(tmp_path / "sideways.png", 6, stored)
    Image.fromarray(upright_by_the_table(stored, 6)).save(tmp_path / "upright.png")
    trained = load_trained_model(demo_checkpoint)
    paths = [sideways, tmp_path / "upright.png"]
    predictions, _ = predict_images(trained, paths, top_k=3, progress=False)
    assert predictions[0].top == predictions[1].top


def test_a_model_whose_outputs_are_not_finite_is_warned_of(demo_checkpoint, images):
    trained = load_trained_model(demo_checkpoint)
    with torch.no_grad():
        trained.model.head.bias[0] = float("nan")  # an overflowed checkpoint: NaN probabilities
    with pytest.warns(UserWarning) as said:
        predict_images(trained, [images], top_k=2, batch_size=2, progress=False)
    assert [str(warning.message) for warning in said] == [
        "the model's outputs are not finite (NaN or infinite) on 3 of 3 images, so their "
        "predictions mean nothing: its weights or BatchNorm statistics overflowed in training; "
        "predict with an earlier checkpoint of its run"
    ]
    # at the caller's line, shown once there as Python shows warnings, and again at another line
    # (a notebook cell run again), where it named torch's generator wrapper once per session
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(2):
            predict_images(trained, [images / "b.png"], progress=False)
        predict_images(trained, [images / "b.png"], progress=False)
    assert [w.filename for w in caught] == [__file__] * 2


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# the class of a Jupyter notebook's sys.stderr, which redraws a bar in place as a terminal does
_KernelStream = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})


def test_progress_bars_by_default_only_where_they_redraw_in_place(demo_checkpoint, images, capsys):
    """From Python as from the command: a script's log file or pipe (capsys's stderr) gets no
    bar redraws unless asked for, a terminal and a notebook's cell get bars."""
    trained = load_trained_model(demo_checkpoint)
    predict_images(trained, [images / "b.png"])
    assert "predicting" not in capsys.readouterr().err
    predict_images(trained, [images / "b.png"], progress=True)
    assert "predicting" in capsys.readouterr().err
    assert bars_drawn(None, _Terminal()) and bars_drawn(None, _KernelStream())
    closed = io.StringIO()
    closed.close()
    assert not bars_drawn(None, io.StringIO()) and not bars_drawn(None, closed)
    assert bars_drawn(True, io.StringIO()) and not bars_drawn(False, _Terminal())


def test_files_left_out_for_one_extension_are_said_in_one_line():
    """A photo folder's sidecars (Google Takeout's .json beside each photo) were a line each."""
    skipped = [(f"p/{k}.json", "has no extension of an image format sef reads (.json)")
               for k in range(5)]  # fmt: skip
    skipped[1:1] = [("p/a.heic", "has no extension of an image format sef reads (.heic)")]
    skipped.append(("p/gone.png", "does not exist"))
    assert skipped_said(skipped) == [
        "skipped 5 files, each of which has no extension of an image format sef reads (.json): "
        "p/0.json, p/1.json, p/2.json, ... (--json lists them all)",
        "skipped p/a.heic, which has no extension of an image format sef reads (.heic)",
        "skipped p/gone.png, which does not exist",
    ]


def test_a_shell_pattern_that_matched_nothing_is_said_to_be_one(tmp_path):
    """`sef predict photos/*.jpg` of a camera's .JPG files: bash passes the pattern as typed,
    and sef said only that "photos/*.jpg" does not exist."""
    typed = str(tmp_path / "*.jpg")
    assert find_images([typed]) == (
        [],
        [(typed, "does not exist (a shell pattern that matched no file, passed as typed: "
                 "patterns are case-sensitive, *.jpg misses .JPG); pass the folder to predict its "
                 "images")],
    )  # fmt: skip
