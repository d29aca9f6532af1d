"""`sef score` reproduces the Scores column of the paper's Table II from its accuracies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sef.cli import main

ACCURACIES = """\
method,Birds,Cars,Dogs,Aircraft
Kernel-Pooling,84.7,92.4,,86.9
MAMC-CNN,86.2,93.0,84.8,
DFB-CNN,87.4,93.8,,92.0
NTS-Net,87.5,93.9,,91.4
S3N,88.5,94.7,,92.8
API-Net,87.7,94.8,88.3,93.0
DCL,87.8,94.5,,93.0
TASN,87.9,93.8,,
Cross-X,87.7,94.6,88.9,92.6
ResNet-50,84.5,92.9,88.1,90.3
MaxEnt-CNN,83.4,92.8,88.0,90.7
DBT-Net,87.5,94.1,,91.2
SEF (ours),87.3,94.0,88.8,92.1
"""
PRINTED_SCORES = {  # the Scores column of Table II
    "Kernel-Pooling": 10.3, "MAMC-CNN": 7.7, "DFB-CNN": 6.3, "NTS-Net": 6.0, "S3N": 1.7,
    "API-Net": 2.3, "DCL": 2.7, "TASN": 5.0, "Cross-X": 2.8, "ResNet-50": 8.3,
    "MaxEnt-CNN": 8.8, "DBT-Net": 5.7, "SEF (ours)": 4.8,
}  # fmt: skip


@pytest.mark.slow
def test_score_json_reproduces_table_ii(tmp_path: Path) -> None:
    table = tmp_path / "table2.csv"
    table.write_text(ACCURACIES)
    result = subprocess.run(
        [sys.executable, "-m", "sef.cli", "score", str(table), "--json"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == PRINTED_SCORES


def test_score_table_is_sorted_best_first(tmp_path: Path, capsys) -> None:
    table = tmp_path / "table2.csv"
    table.write_text(ACCURACIES)
    assert main(["score", str(table), "--decimals", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["method", "score", "datasets"]
    assert lines[1].split() == ["S3N", "1.67", "3"] and lines[-1].split() == [
        "Kernel-Pooling", "10.33", "3"
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:4]] == ["S3N", "API-Net", "DCL"]


def test_score_errors_name_the_file(tmp_path: Path, capsys) -> None:
    assert main(["score", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("method,CUB\nA,eighty\n")
    assert main(["score", str(bad)]) == 2
    assert capsys.readouterr().err.startswith("sef score: error: ")


@pytest.mark.parametrize(
    "text, message",
    [
        ("method,cub,cub\nA,90,50\n", "header repeats dataset 'cub'; give each one column"),
        ("method,cub, \nA,90,50\n", "header column 3 is blank; name its dataset"),
        ("method,cub\n,90\nB,80\n", "line 2 has no method name; write it in the first cell"),
    ],
)
def test_a_blank_or_repeated_name_is_refused(tmp_path: Path, capsys, text: str, message: str):
    table = tmp_path / "d.csv"
    table.write_text(text)
    assert main(["score", str(table)]) == 2
    assert capsys.readouterr().err == f"sef score: error: {table} {message}\n"


def test_a_spreadsheets_csv_scores_as_a_plain_one(tmp_path: Path, capsys) -> None:
    """Before: Excel where ',' is the decimal mark writes ';' between cells (with a byte-order
    mark, and blank cells up to the last column once used), and sef score said the file lacked
    a header row 'method,<dataset>,...'; a trailing ',,' said a header column was blank."""
    plain = tmp_path / "plain.csv"
    plain.write_text("method,CUB,Cars\nA,87.3,94.0\nB,88.1,93.2\nC,85.0,\n")
    assert main(["score", str(plain), "--json"]) == 0
    expected = capsys.readouterr().out
    spreadsheets = {
        "semicolons": "\ufeffmethod;CUB;Cars\r\nA;87,3;94,0\r\nB;88,1;93,2\r\nC;85;\r\n",
        "tabs": "method\tCUB\tCars\nA\t87.3\t94.0\nB\t88.1\t93.2\nC\t85.0\t\n",
        "blank columns": "method,CUB,Cars,,\nA,87.3,94.0,,\nB,88.1,93.2,,\nC,85.0,,,\n",
        # pandas' df.to_csv() (its row index): 'method' holds 'A', which is not an accuracy
        "pandas": ",method,CUB,Cars\n0,A,87.3,94.0\n1,B,88.1,93.2\n2,C,85.0,\n",
    }
    for name, text in spreadsheets.items():
        table = tmp_path / f"{name}.csv"
        table.write_bytes(text.encode("utf-8"))
        assert main(["score", str(table), "--json"]) == 0, name
        assert capsys.readouterr().out == expected, name


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "method,CUB,Cars\nA,87.3%,0.94\nB,0.881,0.932\n",
            "column 'CUB' mixes fractions (0.881 on line 3) and percentages (87.3% on line 2); "
            "write a dataset's accuracies all as fractions or all as percentages (one below 1 "
            "with its % sign)",
        ),
        (
            "method,CUB\nA,87.3\nB,873\n",
            "line 3, column 'CUB' holds '873', which is not an accuracy; write a percentage "
            "(0 to 100) or a fraction (0 to 1)",
        ),
    ],
)
def test_accuracies_on_two_scales_are_refused(tmp_path: Path, capsys, text: str, message: str):
    """Before: B's 0.881 ranked below A's 87.3 % on CUB, and a slip of 873 ranked first."""
    table = tmp_path / "d.csv"
    table.write_text(text)
    assert main(["score", str(table)]) == 2
    assert capsys.readouterr().err == f"sef score: error: {table} {message}\n"
