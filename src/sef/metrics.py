"""Accuracy metrics and the paper's cross-dataset Score (Section III-A).

Score: S_m = (1/L) sum_l s_l^m, where s_l^m is method m's rank by accuracy on dataset l and L
counts only the datasets m reports. Equal accuracies share a rank and the next accuracy takes the
next rank (dense ranking: 93.0, 93.0, 92.8 rank 1, 1, 2); with this rule and half-up rounding to
one decimal, every Score of the paper's Table II is reproduced from its accuracies.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from sef import filekinds
from sef.errors import DataError

if TYPE_CHECKING:  # the accuracies take tensors; the Score and its table need no torch (sef score)
    from torch import Tensor

BLANK_CELLS = ("", "-", "_", "\u2013", "\u2014", "n/a", "na")


def not_finite_images(*outputs: Tensor) -> int:
    """How many images hold a value that is not finite in any of ``outputs`` ([B, ...] each, on
    one device): a model that overflowed in training."""
    finite = outputs[0].flatten(1).isfinite().all(1)
    for output in outputs[1:]:
        finite = finite & output.flatten(1).isfinite().all(1)
    return int((~finite).sum())


def not_finite_said(non_finite: int, images: str, so: str, outputs: str = "outputs") -> str:
    """The one wording of a model whose ``outputs`` were not finite on ``non_finite`` of
    ``images`` (counted, e.g. "16 test images"), ``so`` saying what that makes meaningless; each
    command adds what to do, and warns or refuses as it does."""
    return (
        f"the model's {outputs} are not finite (NaN or infinite) on {non_finite:,} of {images}, "
        f"so {so}: its weights or BatchNorm statistics overflowed in training"
    )


def top1_accuracy(predictions: Tensor, labels: Tensor) -> float:
    """Fraction of predictions equal to their label."""
    if labels.numel() == 0:
        return float("nan")
    return (predictions == labels).double().mean().item()


def per_class_accuracy(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Accuracy of each class [K], float64 (NaN for a class without images in ``labels``)."""
    support = labels.bincount(minlength=num_classes).double()
    correct = labels[predictions == labels].bincount(minlength=num_classes).double()
    return correct / support  # 0 / 0 = NaN: no images of that class


def class_mean_accuracy(predictions: Tensor, labels: Tensor, num_classes: int) -> float:
    """Mean over the classes present in ``labels`` of each class's accuracy."""
    accuracy = per_class_accuracy(predictions, labels, num_classes)
    present = ~accuracy.isnan()
    if not present.any():
        return float("nan")
    return accuracy[present].mean().item()


def group_accuracies(group_predictions: Tensor, labels: Tensor) -> list[float]:
    """Top-1 accuracy of each group head: ``group_predictions`` is [G, N]."""
    return [top1_accuracy(row, labels) for row in group_predictions]


def dense_ranks(accuracies: Mapping[str, float]) -> dict[str, int]:
    """Rank 1 for the highest accuracy; ties share a rank; the next value takes the next rank."""
    distinct = sorted(set(accuracies.values()), reverse=True)
    position = {value: index + 1 for index, value in enumerate(distinct)}
    return {method: position[value] for method, value in accuracies.items()}


def round_half_up(value: Fraction | float, decimals: int = 1) -> float:
    """Round as the paper does (2.25 -> 2.3), without binary floating-point surprises."""
    scale = 10**decimals
    return math.floor(Fraction(value) * scale + Fraction(1, 2)) / scale


def paper_scores(table: Mapping[str, Mapping[str, float | None]]) -> dict[str, Fraction]:
    """Each method's mean dense rank over the datasets it reports (None = not reported).

    Returns exact fractions; ``round_half_up(score, 1)`` gives the paper's printed value.
    """
    datasets = sorted({d for row in table.values() for d in row})
    ranks: dict[str, list[int]] = {method: [] for method in table}
    for dataset in datasets:
        reported = {m: row[dataset] for m, row in table.items() if row.get(dataset) is not None}
        for method, rank in dense_ranks(reported).items():
            ranks[method].append(rank)
    empty = [method for method, values in ranks.items() if not values]
    if empty:
        raise DataError(f"method {empty[0]!r} reports no accuracy; give it at least one number")
    return {method: Fraction(sum(values), len(values)) for method, values in ranks.items()}


def _parse_cell(text: str, where: str) -> float | None:
    cell = text.strip().rstrip("%").strip()
    if cell.lower() in BLANK_CELLS:
        return None
    if cell.count(",") == 1 and "." not in cell:  # a decimal comma: 87,3
        cell = cell.replace(",", ".")
    try:
        value = float(cell)
    except ValueError:
        raise DataError(
            f"{where} holds {text!r}, which is not an accuracy; write a number or leave it blank"
        ) from None
    if not math.isfinite(value):
        raise DataError(f"{where} holds {text!r}; write a finite number or leave it blank")
    if not 0 <= value <= 100:
        raise DataError(
            f"{where} holds {text!r}, which is not an accuracy; write a percentage (0 to 100) or "
            f"a fraction (0 to 1)"
        )
    return value


def _check_one_scale(path: Path, dataset: str, cells: list[tuple[int, str, float]]) -> None:
    """DataError where a dataset's accuracies, (line, cell, value), mix fractions (0.873) and
    percentages (87.3 or 0.5%): ranked together, every fraction would come last."""
    fraction = next((c for c in cells if c[2] <= 1 and "%" not in c[1]), None)
    percentage = next((c for c in cells if c[2] > 1 or "%" in c[1]), None)
    if fraction and percentage:
        raise DataError(
            f"{path} column {dataset!r} mixes fractions ({fraction[1]} on line {fraction[0]}) "
            f"and percentages ({percentage[1]} on line {percentage[0]}); write a dataset's "
            f"accuracies all as fractions or all as percentages (one below 1 with its % sign)"
        )


def _dataset_names(path: Path, header: list[str]) -> list[str]:
    """The header's dataset names (after 'method'); DataError for a blank or repeated one."""
    names = [name.strip() for name in header[1:]]
    for column, name in enumerate(names, start=2):
        if not name:
            raise DataError(f"{path} header column {column} is blank; name its dataset")
        if names.index(name) < column - 2:
            raise DataError(f"{path} header repeats dataset {name!r}; give each one column")
    return names


def _delimiter(text: str) -> str:
    """',' or what a spreadsheet writes instead (';' where ',' is the decimal mark, or a tab):
    the one the first line holds most of, ',' on a tie."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    return max(",;\t", key=first.count)


def _without_trailing_blanks(row: list[str]) -> list[str]:
    """``row`` less the blank cells at its end (a spreadsheet writes them up to the last column
    it ever used): a method row's missing cells are blank anyway."""
    while row and not row[-1].strip():
        row = row[:-1]
    return row


def _without_row_index(numbered: list[tuple[int, list[str]]]) -> list[tuple[int, list[str]]]:
    """The rows less a first column with no header over 0, 1, 2, ...: the row index pandas'
    ``DataFrame.to_csv`` writes unless told ``index=False`` (sef score read its numbers as the
    methods, and the methods as accuracies of a dataset named 'method')."""
    if len(numbered) < 2 or numbered[0][1][:1] != [""]:
        return numbered
    rows = [row for _, row in numbered[1:]]
    if not all(row[:1] == [str(number)] for number, row in enumerate(rows)):
        return numbered
    return [(line, row[1:]) for line, row in numbered]


def read_accuracy_table(path: str | Path) -> dict[str, dict[str, float | None]]:
    """A CSV with a header row (method, dataset names...) and one row of accuracies per method;
    cells split by ',', or by ';' or tabs and with decimal commas, as spreadsheets write them,
    and pandas' row index left out."""
    path = Path(path)
    try:
        text = filekinds.read_text(path)
    except ValueError as problem:
        raise DataError(f"accuracy table {path} {problem}; pass a CSV file") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    numbered = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    numbered = _without_row_index(numbered)
    rows = [_without_trailing_blanks(row) for _, row in numbered]  # errors name the file's lines
    header = numbered[0][1][: max(map(len, rows))] if rows else []  # blank as far as rows go
    if len(rows) < 2 or len(header) < 2:
        raise DataError(
            f"{path} needs a header row 'method,<dataset>,...' and at least one method row"
        )
    datasets = _dataset_names(path, header)
    table: dict[str, dict[str, float | None]] = {}
    written: dict[str, list[tuple[int, str, float]]] = {name: [] for name in datasets}
    for (line, _), row in zip(numbered[1:], rows[1:], strict=True):
        method = row[0].strip()
        if len(row) - 1 > len(datasets):
            raise DataError(f"{path} line {line} has more cells than the header has datasets")
        if not method:
            raise DataError(f"{path} line {line} has no method name; write it in the first cell")
        if method in table:
            raise DataError(f"{path} line {line} repeats method {method!r}; give each one row")
        cells = row[1:] + [""] * (len(datasets) - len(row) + 1)
        table[method] = {}
        for dataset, cell in zip(datasets, cells, strict=True):
            value = _parse_cell(cell, f"{path} line {line}, column {dataset!r}")
            table[method][dataset] = value
            if value is not None:
                written[dataset].append((line, cell.strip(), value))
    for dataset, cells in written.items():
        _check_one_scale(path, dataset, cells)
    return table
