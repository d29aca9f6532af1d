"""Per-class error analysis of an evaluation: which classes fail, which get confused with which,
and how each group head does per class.

:func:`error_report` turns predictions (an :class:`~sef.engine.EvalResult`) into an
:class:`ErrorReport`; :meth:`ErrorReport.write` saves it to a folder:

* ``per_class.csv``: every class, worst first: support, accuracy, each group head's accuracy
  (and the TTA accuracy when there is one), and the class it is most often mistaken for;
* ``confused_pairs.csv``: (true class, predicted class) pairs with their counts, most first;
* ``confusion.png``: the row-normalised confusion matrix, classes ordered by a hierarchical
  clustering of the confusions so that confused classes sit together (readable at 200 classes);
* ``report.json``: all of it, plus the overall numbers and the order of the figure.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sef import outputs
from sef.errors import OutputError
from sef.metrics import per_class_accuracy
from sef.text import json_text, shown

FILE_NAMES = {
    "per_class": "per_class.csv",
    "pairs": "confused_pairs.csv",
    "figure": "confusion.png",
    "json": "report.json",
}
_DPI = 110
# confused_pairs.csv's header, written even when no image is wrong (the keys of ErrorReport.pairs)
PAIR_FIELDS = ("true", "true_name", "predicted", "predicted_name", "count", "share_of_true")


def confusion_matrix(labels: Tensor, predictions: Tensor, num_classes: int) -> Tensor:
    """Counts [K, K]: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


def cluster_order(confusion: Tensor) -> list[int]:
    """A class order that puts classes that are confused with each other side by side:
    average-linkage clustering on 1 - the symmetrised row-normalised confusion rate, leaves in
    optimal order."""
    count = confusion.shape[0]
    if count < 3:
        return list(range(count))
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    rates = confusion.double() / confusion.sum(1, keepdim=True).clamp_min(1)
    similarity = (rates + rates.T) / 2
    similarity.fill_diagonal_(0)
    distance = 1 - similarity / similarity.max().clamp_min(1e-12)
    distance.fill_diagonal_(0)
    tree = linkage(squareform(distance.numpy(), checks=False), "average", optimal_ordering=True)
    return [int(i) for i in leaves_list(tree)]


def _rate(value: Any) -> float | None:
    value = float(value)
    return None if value != value else round(value, 6)  # NaN -> None (JSON null, CSV blank)


@dataclass
class ErrorReport:
    """Per-class accuracy (worst first), confused pairs (most first) and the confusion matrix."""

    classes: list[str]
    confusion: Tensor  # [K, K] counts, rows true
    per_class: list[dict[str, Any]]
    pairs: list[dict[str, Any]]
    order: list[int]
    summary: dict[str, Any]

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write the four files of the module docstring into ``out_dir``, all or none: a failure
        (a full disk) removes them and the folders it created; returns their paths."""
        check_replaceable(out_dir)
        created = outputs.missing_folders(Path(out_dir))
        out = outputs.make_folder(out_dir)
        paths = {key: out / name for key, name in FILE_NAMES.items()}
        try:
            self._write_files(paths)
        except BaseException:
            for path in paths.values():  # no report mixing this one's files with an earlier one's
                outputs.remove_file(path)
            outputs.remove_empty(created)
            raise
        return paths

    def _write_files(self, paths: dict[str, Path]) -> None:
        _write_csv(paths["per_class"], self.per_class)
        _write_csv(paths["pairs"], self.pairs, PAIR_FIELDS)
        plot_confusion(self.confusion, self.classes, self.order, paths["figure"])
        payload = {
            "summary": self.summary,
            "per_class": self.per_class,
            "confused_pairs": self.pairs,
            "figure_order": [self.classes[i] for i in self.order],
        }
        outputs.write_text(paths["json"], json_text(payload) + "\n")


def check_replaceable(out_dir: str | os.PathLike) -> None:
    """OutputError where ``out_dir`` holds a file of a report's name that no earlier report
    wrote (your own ``report.json`` or ``confusion.png``): writing a report there would replace
    it. An earlier report's files are replaced whole."""
    folder = Path(out_dir)
    if _holds_a_report(folder):
        return
    for name in FILE_NAMES.values():
        if os.path.lexists(folder / name):
            problem = f"cannot write {folder / name}: no earlier sef report in {folder} wrote it"
            raise OutputError(
                f"{problem}, and this would replace it; move it away or choose another folder",
                problem,
            )


def _holds_a_report(folder: Path) -> bool:
    """Whether ``folder``'s report.json is one that :meth:`ErrorReport.write` wrote."""
    try:
        saved = json.loads((folder / FILE_NAMES["json"]).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none, unreadable, or not JSON: not a report of ours
        return False
    return isinstance(saved, dict) and {"summary", "figure_order"} <= saved.keys()


def _write_csv(path: Path, rows: list[dict[str, Any]], fields: Sequence[str] = ()) -> None:
    """``rows`` under the header ``fields`` (default: the first row's keys)."""
    with (
        outputs.atomic_path(path) as temporary,
        open(temporary, "w", newline="", **outputs.FILE_NAME_TEXT) as handle,
    ):
        if not (fields or rows):
            return
        writer = csv.DictWriter(handle, fieldnames=list(fields or rows[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)


def error_report(result: Any, classes: list[str]) -> ErrorReport:
    """The error analysis of ``result`` (an EvalResult: labels, predictions, group predictions,
    optional TTA predictions) for the class names ``classes``; classes without test images are
    left out of the per-class table."""
    count = len(classes)
    labels, predictions = result.labels.long(), result.predictions.long()
    confusion = confusion_matrix(labels, predictions, count)
    support = confusion.sum(1)
    accuracy = per_class_accuracy(predictions, labels, count)
    groups = [per_class_accuracy(g.long(), labels, count) for g in result.group_predictions]
    tta = getattr(result, "tta_predictions", None)
    tta_accuracy = None if tta is None else per_class_accuracy(tta.long(), labels, count)
    errors = confusion.clone()
    errors.fill_diagonal_(0)
    rows = []
    present = [k for k in range(count) if support[k] > 0]
    for k in sorted(present, key=lambda k: (accuracy[k].item(), -support[k].item(), k)):
        row = {
            "class": k,
            "name": classes[k],
            "support": int(support[k]),
            "correct": int(confusion[k, k]),
            "accuracy": _rate(accuracy[k]),
        }
        if tta_accuracy is not None:
            row["tta_accuracy"] = _rate(tta_accuracy[k])
        for g, values in enumerate(groups, start=1):
            row[f"group{g}_accuracy"] = _rate(values[k])
        worst = int(errors[k].argmax())
        mistaken = int(errors[k, worst])
        row["most_confused_with"] = classes[worst] if mistaken else None
        row["confused_count"] = mistaken
        rows.append(row)
    pairs = [
        {
            "true": t,
            "true_name": classes[t],
            "predicted": p,
            "predicted_name": classes[p],
            "count": int(errors[t, p]),
            "share_of_true": _rate(errors[t, p] / support[t]),
        }
        for t, p in sorted(
            errors.nonzero().tolist(), key=lambda tp: (-errors[tp[0], tp[1]].item(), tp)
        )
    ]
    summary = result.summary() if hasattr(result, "summary") else {}
    return ErrorReport(classes, confusion, rows, pairs, cluster_order(confusion), summary)


def plot_confusion(
    confusion: Tensor, classes: list[str], order: list[int], out: str | os.PathLike
) -> Path:
    """The row-normalised confusion matrix in ``order``; its size and fonts grow with the number
    of classes so that 200 names stay legible, and a square-root scale shows rare confusions."""
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure

    count = len(classes)
    rates = confusion.double() / confusion.sum(1, keepdim=True).clamp_min(1)
    ordered = rates[order][:, order].numpy()
    side = min(26.0, max(6.0, 0.105 * count + 3.5))
    font = max(4.0, min(9.0, 520 / max(count, 1)))
    dpi = _DPI if count <= 100 else 160  # 4-point names need ~9 pixels
    figure = Figure(figsize=(side, side * 0.92), dpi=dpi, layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(ordered, cmap="viridis", norm=PowerNorm(0.5, vmin=0, vmax=1))
    names = [_short(shown(classes[i])) for i in order]
    ticks = list(range(count))
    axis.set_xticks(ticks, names, rotation=90, fontsize=font)
    axis.set_yticks(ticks, names, fontsize=font)
    axis.tick_params(length=0)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(  # two short lines: one long line was cut off at the figure's 6 inches
        f"Confusion matrix ({count} classes)\nrows normalised; confused classes ordered together",
        fontsize=10,
    )
    figure.colorbar(image, ax=axis, shrink=0.6, label="share of the true class (square-root scale)")
    return outputs.save_figure(figure, out, dpi)


def _short(name: str, limit: int = 32) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"
