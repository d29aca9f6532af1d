"""The paper's numbers in sef/reproduce/paper.yaml: transcribed exactly; our rows are its rows."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import yaml
from test_cli_score import ACCURACIES  # the same Table II, transcribed for `sef score`'s test

from sef.config import load_preset, preset_name
from sef.reproduce import paper
from sef.reproduce.paper import datasets, notes, tables
from sef.reproduce.tables import scores

# The authors' README (spec/authors-readme.md): SEF-18 and SEF-50 by dataset.
README = {
    "resnet18": {"cub": 84.8, "cars": 91.8, "dogs": 83.1, "aircraft": 89.3},
    "resnet50": {"cub": 87.3, "cars": 94.0, "dogs": 88.8, "aircraft": 92.1},
}


def test_table_ii_score_column_is_recomputed_from_its_own_accuracies() -> None:
    table = tables()["table2"]
    accuracies = {row.name: row.accuracies for row in table.rows}
    assert scores(accuracies) == {row.name: row.score for row in table.rows}
    assert len(table.rows) == 13 and all(row.score is not None for row in table.rows)


def test_table_ii_agrees_with_the_transcription_in_the_score_test() -> None:
    rows = list(csv.reader(io.StringIO(ACCURACIES)))
    column = {d.column: key for key, d in datasets().items()}
    other = [
        [float(cell) if cell else None for cell in row[1:]] for row in rows[1:]
    ]  # the score test's rows, in the paper's order
    ours = [
        [row.accuracies[column[name]] for name in rows[0][1:]] for row in tables()["table2"].rows
    ]
    assert ours == other


def test_table_iii_keeps_the_paper_s_column_order_and_numbers() -> None:
    table = tables()["table3"]
    assert table.columns == ("cub", "dogs", "cars", "aircraft")  # Birds, Dogs, Cars, Aircraft
    printed = [[r.accuracies[d] for d in table.columns] for r in table.rows]
    assert printed == [
        [82.3, 81.5, 90.4, 88.5],
        [82.7, 82.1, 90.9, 88.9],
        [82.2, 81.8, 90.3, 88.8],
        [83.2, 81.8, 90.1, 89.0],
        [84.8, 83.1, 91.8, 89.3],
    ]
    assert all(row.score is None for row in table.rows)  # Table III prints no Score


@pytest.mark.parametrize("key", ["table2", "table3"])
def test_sef_rows_match_the_authors_readme(key: str) -> None:
    table = tables()[key]
    (sef,) = [row for row in table.rows if row.ours == "sef"]
    assert sef.accuracies == README[table.backbone]


def test_table_i_sizes() -> None:
    sizes = {k: (d.classes, d.train, d.test) for k, d in datasets().items()}
    assert sizes == {
        "cub": (200, 5994, 5794),
        "cars": (196, 8144, 8041),
        "dogs": (120, 12000, 8580),
        "aircraft": (100, 6667, 3333),
    }


@pytest.mark.parametrize("key", ["table2", "table3"])
def test_each_of_our_rows_trains_a_preset_with_the_row_s_weights(key: str) -> None:
    table = tables()[key]
    assert [row.ours for row in table.ours] == (
        ["plain", "maxent", "sef"]
        if key == "table2"
        else ["plain", "groups-only", "matching-only", "matching-groups", "sef"]
    )
    for row in table.ours:
        for dataset in table.columns:
            config = load_preset(preset_name(dataset, table.backbone, str(row.ours)))
            assert config.model.backbone == table.backbone
            assert (config.loss.lam, config.loss.gamma, config.loss.phi) == row.loss, row.name
            no_groups = row.ours in ("plain", "maxent")
            assert (config.model.groups == 1) == no_groups
    assert set(table.notes) | {n for row in table.rows for n in row.notes} <= set(notes())


def test_the_maxent_sign_note_marks_the_maxent_rows_only() -> None:
    """The authors' code flips the entropy's sign in its MaxEnt baseline only: its SEF branch
    adds lam * sum(p log p), as SEFLoss does, so an SEF or matching row carries no such note."""
    marked = {
        (key, row.ours)
        for key, table in tables().items()
        for row in table.rows
        if "maxent-sign" in row.notes
    }
    assert marked == {("table2", "maxent")}


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")
def test_the_paper_s_numbers_are_parsed_by_libyaml(monkeypatch) -> None:
    """Every `sef` command reads paper.yaml for `sef reproduce`'s help; PyYAML's pure-Python
    parser took 20 ms of each start. libyaml reads the same values."""

    class Refused(yaml.SafeLoader):
        def __init__(self, stream) -> None:
            raise AssertionError("paper.yaml parsed by PyYAML's pure-Python loader")

    text = (Path(paper.__file__).parent / "paper.yaml").read_text(encoding="utf-8")
    assert yaml.load(text, Loader=yaml.CSafeLoader) == yaml.safe_load(text)
    monkeypatch.setattr(yaml, "SafeLoader", Refused)
    paper._data.cache_clear()
    assert set(tables()) == {"table2", "table3"}
