"""Metrics against slow, obviously-right versions; the Score against the paper's Table II."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
import torch

from sef.errors import DataError
from sef.metrics import (
    class_mean_accuracy,
    dense_ranks,
    group_accuracies,
    paper_scores,
    read_accuracy_table,
    round_half_up,
    top1_accuracy,
)

# Table II of the paper: accuracies (blank = not reported) and, last, the printed Scores.
TABLE_II = """\
method,Birds,Cars,Dogs,Aircraft,Scores
Kernel-Pooling,84.7,92.4,_,86.9,10.3
MAMC-CNN,86.2,93.0,84.8,_,7.7
DFB-CNN,87.4,93.8,_,92.0,6.3
NTS-Net,87.5,93.9,_,91.4,6.0
S3N,88.5,94.7,_,92.8,1.7
API-Net,87.7,94.8,88.3,93.0,2.3
DCL,87.8,94.5,_,93.0,2.7
TASN,87.9,93.8,_,_,5.0
Cross-X,87.7,94.6,88.9,92.6,2.8
ResNet-50,84.5,92.9,88.1,90.3,8.3
MaxEnt-CNN,83.4,92.8,88.0,90.7,8.8
DBT-Net,87.5,94.1,_,91.2,5.7
SEF (ours),87.3,94.0,88.8,92.1,4.8
"""


def _split_table(tmp_path: Path) -> tuple[Path, dict[str, float]]:
    """The accuracies as their own CSV, and the printed Scores to compare with."""
    lines = TABLE_II.splitlines()
    printed = {
        line.rsplit(",", 1)[0].split(",")[0]: float(line.rsplit(",", 1)[1]) for line in lines[1:]
    }
    path = tmp_path / "table2.csv"
    path.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    return path, printed


def test_scores_reproduce_every_entry_of_table_ii(tmp_path: Path) -> None:
    path, printed = _split_table(tmp_path)
    scores = paper_scores(read_accuracy_table(path))
    assert {m: round_half_up(s, 1) for m, s in scores.items()} == printed


def test_scores_match_a_slow_count_of_better_accuracies(tmp_path: Path) -> None:
    """Rank = 1 + number of distinct better accuracies among the methods reporting a dataset."""
    table = read_accuracy_table(_split_table(tmp_path)[0])
    for method, row in table.items():
        ranks = []
        for dataset, value in row.items():
            if value is None:
                continue
            others = {r[dataset] for r in table.values() if r[dataset] is not None}
            ranks.append(1 + sum(1 for other in others if other > value))
        assert paper_scores(table)[method] == Fraction(sum(ranks), len(ranks))


def test_ties_share_the_better_rank_and_rounding_is_half_up() -> None:
    assert dense_ranks({"a": 93.0, "b": 93.0, "c": 92.8, "d": 90.0}) == {
        "a": 1,
        "b": 1,
        "c": 2,
        "d": 3,
    }
    assert round_half_up(Fraction(9, 4)) == 2.3 and round_half_up(Fraction(11, 4)) == 2.8
    assert round_half_up(Fraction(31, 3)) == 10.3 and round_half_up(2.24999) == 2.2


def test_class_mean_and_group_accuracy_against_loops() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 7, (200,), generator=generator)
    labels[labels == 5] = 4  # class 5 absent: it must not count
    predictions = torch.where(torch.rand(200, generator=generator) < 0.6, labels, 0)
    per_class = []
    for k in range(7):
        members = [i for i in range(200) if labels[i] == k]
        if members:
            per_class.append(sum(int(predictions[i] == k) for i in members) / len(members))
    assert class_mean_accuracy(predictions, labels, 7) == pytest.approx(
        sum(per_class) / len(per_class)
    )
    assert top1_accuracy(predictions, labels) == pytest.approx(
        sum(int(p == t) for p, t in zip(predictions, labels, strict=True)) / 200
    )
    groups = torch.stack([predictions, labels, torch.zeros_like(labels)])
    expected = [top1_accuracy(predictions, labels), 1.0, (labels == 0).double().mean().item()]
    assert group_accuracies(groups, labels) == pytest.approx(expected)


def test_bad_tables_name_the_cell(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("method,CUB,Cars\nA,80.1,abc\n")
    with pytest.raises(DataError, match=r"line 2, column 'Cars' holds 'abc'"):
        read_accuracy_table(path)
    path.write_text("\n\nmethod,CUB,Cars\n\nA,80.1,81\n\nB,abc,80\n")
    with pytest.raises(DataError, match=r"line 7, column 'CUB' holds 'abc'"):  # blank lines count
        read_accuracy_table(path)
    path.write_text("method,CUB\nA,\n")
    with pytest.raises(DataError, match="'A' reports no accuracy"):
        paper_scores(read_accuracy_table(path))
