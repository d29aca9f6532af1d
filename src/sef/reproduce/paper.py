"""The paper's published numbers as data: ``paper.yaml`` beside this module (Tables I-III).

Each row of Tables II and III keeps its printed name, accuracies and Score; the rows sef trains
name their method (``ours``) and the notes that say where our row is not the authors'.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import yaml

# libyaml's parser where PyYAML has one: every `sef` command reads this file (`sef reproduce`'s
# choices and help), and PyYAML's own took 20 ms of each start
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class PaperDataset:
    """A dataset of Table I: the column name the tables use and its size."""

    key: str
    column: str
    title: str
    classes: int
    train: int
    test: int


@dataclass(frozen=True)
class PaperRow:
    """A printed row: accuracies in % per dataset key (None: not reported) and its Score."""

    name: str
    accuracies: dict[str, float | None]
    score: float | None = None
    ref: int | None = None
    ours: str | None = None  # the sef method that trains this row (None: not trained by sef)
    label: str | None = None  # our row's name
    loss: tuple[float, float, float] | None = None  # (lambda, gamma, phi) as the paper states
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PaperTable:
    """Table II or III: its rows in the paper's order and its datasets in the paper's order."""

    key: str
    number: str
    title: str
    backbone: str
    columns: tuple[str, ...]
    rows: tuple[PaperRow, ...]
    notes: tuple[str, ...]
    legend: str | None = None

    @property
    def ours(self) -> tuple[PaperRow, ...]:
        """The rows sef trains, in the paper's order."""
        return tuple(row for row in self.rows if row.ours)


@functools.cache
def _data() -> dict:
    text = resources.files("sef.reproduce").joinpath("paper.yaml").read_text(encoding="utf-8")
    return yaml.load(text, Loader=_LOADER)


def datasets() -> dict[str, PaperDataset]:
    """Table I, keyed by sef's dataset name (cub, cars, dogs, aircraft)."""
    return {key: PaperDataset(key, **values) for key, values in _data()["datasets"].items()}


def notes() -> dict[str, str]:
    """The notes' texts by key."""
    return dict(_data()["notes"])


def _row(values: dict, columns: tuple[str, ...]) -> PaperRow:
    loss = values.get("loss")
    return PaperRow(
        name=values["name"],
        accuracies={key: values[key] for key in columns},
        score=values.get("score"),
        ref=values.get("ref"),
        ours=values.get("ours"),
        label=values.get("label"),
        loss=tuple(float(v) for v in loss) if loss else None,
        notes=tuple(values.get("notes", ())),
    )


def tables() -> dict[str, PaperTable]:
    """Tables II and III by key (``table2``, ``table3``)."""
    found = {}
    for key, values in _data()["tables"].items():
        columns = tuple(values["columns"])
        found[key] = PaperTable(
            key=key,
            number=values["number"],
            title=values["title"],
            backbone=values["backbone"],
            columns=columns,
            rows=tuple(_row(row, columns) for row in values["rows"]),
            notes=tuple(values.get("notes", ())),
            legend=values.get("legend"),
        )
    return found
