"""Per-class error analysis: counts and accuracies against by-hand loops, the confusion-ordering
at 200 classes, the figure, and the files."""

import csv
import errno
import json
import os
import random
from pathlib import Path

import pytest
import torch

import sef.outputs
from sef.engine import EvalResult
from sef.errors import DiskFull, SEFError
from sef.report import (
    FILE_NAMES,
    check_replaceable,
    cluster_order,
    confusion_matrix,
    error_report,
    plot_confusion,
)


def result(labels, predictions, groups, tta=None, classes=4):
    return EvalResult(
        labels=torch.tensor(labels),
        predictions=torch.tensor(predictions),
        group_predictions=torch.tensor(groups),
        num_classes=classes,
        tta="flip" if tta is not None else None,
        tta_predictions=None if tta is None else torch.tensor(tta),
    )


NAMES = ["albatross", "bunting", "cardinal", "dove"]
# class 3 ("dove") has no test image; "cardinal" is mistaken for "bunting" twice
LABELS = [0, 0, 0, 1, 1, 2, 2, 2, 2]
PREDICTED = [0, 0, 1, 1, 1, 1, 1, 2, 0]
GROUPS = [[0, 1, 1, 1, 0, 2, 2, 2, 2], [3, 3, 3, 1, 1, 2, 0, 0, 0]]
TTA = [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_per_class_rows_pairs_and_groups_match_a_by_hand_count():
    report = error_report(result(LABELS, PREDICTED, GROUPS, TTA), NAMES)
    counts = [[0] * 4 for _ in range(4)]
    for label, guess in zip(LABELS, PREDICTED, strict=True):
        counts[label][guess] += 1
    assert report.confusion.tolist() == counts
    assert [row["name"] for row in report.per_class] == ["cardinal", "albatross", "bunting"]
    cardinal = report.per_class[0]
    assert (cardinal["support"], cardinal["correct"], cardinal["accuracy"]) == (4, 1, 0.25)
    assert cardinal["group1_accuracy"] == 1.0 and cardinal["group2_accuracy"] == 0.25
    assert cardinal["tta_accuracy"] == 0.75
    assert (cardinal["most_confused_with"], cardinal["confused_count"]) == ("bunting", 2)
    assert report.per_class[2]["most_confused_with"] is None  # bunting: never wrong
    assert [(p["true_name"], p["predicted_name"], p["count"]) for p in report.pairs] == [
        ("cardinal", "bunting", 2),
        ("albatross", "bunting", 1),
        ("cardinal", "albatross", 1),
    ]
    assert report.pairs[0]["share_of_true"] == 0.5
    assert report.summary["top1"] == pytest.approx(5 / 9)


def test_confused_classes_sit_together_at_two_hundred_classes():
    rng = random.Random(0)
    partner = list(range(200))
    rng.shuffle(partner)  # pairs (partner[2i], partner[2i+1]) confuse each other
    labels, predicted = [], []
    for i in range(0, 200, 2):
        a, b = partner[i], partner[i + 1]
        labels += [a] * 5 + [b] * 5
        predicted += [a, a, a, b, b, b, b, b, a, a]
    order = cluster_order(confusion_matrix(torch.tensor(labels), torch.tensor(predicted), 200))
    assert sorted(order) == list(range(200))
    position = {k: i for i, k in enumerate(order)}
    assert all(abs(position[partner[i]] - position[partner[i + 1]]) == 1 for i in range(0, 200, 2))


def test_the_figure_stays_legible_at_two_hundred_classes(tmp_path):
    from PIL import Image

    names = [f"{k:03d}.Some_Long_Bird_Name_{k}" for k in range(200)]
    labels = torch.arange(200).repeat(3)
    predictions = torch.where(torch.arange(600) % 3 == 0, (labels + 1) % 200, labels)
    confusion = confusion_matrix(labels, predictions, 200)
    out = plot_confusion(confusion, names, cluster_order(confusion), tmp_path / "c.png")
    with Image.open(out) as image:
        width, height = image.size
    assert width >= 3600 and height >= 3300  # about 15 pixels per class row


def test_characters_the_font_lacks_are_one_warning_that_says_what_to_do(tmp_path, recwarn):
    """Chinese class names were a "Glyph ... missing from font(s)" warning per character."""
    import matplotlib

    names = ["八哥", "画眉", "喜鹊", "麻雀"]
    confusion = confusion_matrix(torch.tensor(LABELS), torch.tensor(PREDICTED), 4)
    with matplotlib.rc_context({"font.family": "DejaVu Sans"}):  # matplotlib's own, no CJK
        plot_confusion(confusion, names, [0, 1, 2, 3], tmp_path / "c.png")
    assert [str(warning.message) for warning in recwarn] == [
        "the figure's font (DejaVu Sans) lacks 8 characters of its text, drawn as boxes (e.g. "
        "八哥画眉喜); install a font that has them and put it in matplotlib's font.family "
        "(matplotlibrc), e.g. font.family: DejaVu Sans, Noto Sans CJK JP"
    ]


def test_report_files_and_unwritable_folders(tmp_path):
    report = error_report(result(LABELS, PREDICTED, GROUPS), NAMES)
    paths = report.write(tmp_path / "report")
    assert sorted(p.name for p in paths.values()) == sorted(FILE_NAMES.values())
    rows = list(csv.DictReader(paths["per_class"].open()))
    assert rows[0]["name"] == "cardinal" and "tta_accuracy" not in rows[0]
    assert rows[2]["most_confused_with"] == ""
    saved = json.loads(paths["json"].read_text())
    assert saved["confused_pairs"][0]["count"] == 2 and len(saved["figure_order"]) == 4
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(SEFError, match=f"cannot write {blocked / 'sub'}: {blocked} is a file"):
        report.write(blocked / "sub")


def test_confused_pairs_csv_has_its_header_when_every_image_is_right(tmp_path):
    wrong = error_report(result(LABELS, PREDICTED, GROUPS), NAMES).write(tmp_path / "wrong")
    with wrong["pairs"].open() as handle:
        header = next(csv.reader(handle))
    right = error_report(result(LABELS, LABELS, GROUPS), NAMES).write(tmp_path / "right")
    assert right["pairs"].read_text().splitlines() == [",".join(header)]
    assert list(csv.DictReader(right["pairs"].open())) == []


def test_a_class_name_that_is_not_utf8_is_written_as_its_bytes_and_drawn(tmp_path):
    names = [*NAMES[:3], "caf\udce9"]  # a Latin-1 class folder name, as Python holds it
    paths = error_report(result(LABELS, [3] * len(LABELS), GROUPS), names).write(tmp_path / "r")
    assert b"caf\xe9" in paths["per_class"].read_bytes()
    report = paths["json"].read_text(encoding="utf-8")  # no lone surrogate: strict parsers read it
    assert "\\udc" not in report and "caf\\xe9" in json.loads(report)["figure_order"]
    assert paths["figure"].stat().st_size > 0


def test_the_confusion_figures_title_fits_inside_it(tmp_path, monkeypatch):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    import sef.outputs

    drawn = {}

    def keep(figure, path, dpi):
        drawn["figure"] = figure

    monkeypatch.setattr(sef.outputs, "save_figure", keep)
    plot_confusion(torch.eye(3, dtype=torch.long) * 4, ["a", "b", "c"], [0, 1, 2], tmp_path / "c")
    canvas = FigureCanvasAgg(drawn["figure"])
    canvas.draw()
    title = drawn["figure"].axes[0].title.get_window_extent(canvas.get_renderer())
    page = drawn["figure"].bbox
    assert page.x0 <= title.x0 and title.x1 <= page.x1 and title.y1 <= page.y1


def test_a_report_that_fails_midway_leaves_no_part_of_it(tmp_path, monkeypatch):
    report = error_report(result(LABELS, PREDICTED, GROUPS), NAMES)
    real = os.replace

    def replace(source, target):  # the disk fills as the figure is written
        if Path(target).name == FILE_NAMES["figure"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(source, target)

    monkeypatch.setattr(sef.outputs.os, "replace", replace)
    with pytest.raises(DiskFull, match="confusion.png: no space left on device"):
        report.write(tmp_path / "runs" / "report")
    assert os.listdir(tmp_path) == []


def test_a_report_replaces_an_earlier_report_but_no_file_of_yours(tmp_path):
    earlier, mine = tmp_path / "earlier", tmp_path / "mine"
    for folder, record in ((earlier, '{"summary": {}, "figure_order": []}'), (mine, "{}")):
        folder.mkdir()
        (folder / "report.json").write_text(record)
        (folder / "per_class.csv").write_text("a,b\n")
    check_replaceable(earlier)  # what ErrorReport.write wrote: replaced whole
    report = error_report(result(LABELS, PREDICTED, GROUPS), NAMES)
    with pytest.raises(SEFError, match=f"cannot write {mine / 'per_class.csv'}: no earlier sef"):
        report.write(mine)
    assert (mine / "report.json").read_text() == "{}"
    assert sorted(os.listdir(mine)) == ["per_class.csv", "report.json"]
