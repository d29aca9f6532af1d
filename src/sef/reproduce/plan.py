"""Which runs a table needs: its rows x the datasets given, each a preset, a config and a folder.

A row of Table II or III that sef trains names its method; on dataset ``d`` with the table's
backbone ``b`` it is the preset ``d-b`` (SEF) or ``d-b-<method>``. Every run gets the user's
overrides, its dataset's root and the folder ``OUT/<preset>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sef.config import (
    Config,
    apply_values,
    config_changes,
    config_to_dict,
    load_preset,
    parse_overrides,
    preset_name,
    resolve_config,
)
from sef.errors import ConfigError, DataError, for_reader
from sef.reproduce.paper import PaperRow, PaperTable, datasets, tables

DEFAULT_OUT = "runs/reproduce"
# Keys each run gets from the plan, not from --set: what to give instead, to the command's user
# and to Python code (reproduce()'s arguments), and why.
PLACED = {
    "run.out": ("--out DIR", "out=DIR", " (each run trains in DIR/<preset>)"),
    "data.root": ("--data NAME=ROOT", "data={NAME: ROOT}", ""),
    "data.dataset": (
        "--data NAME=ROOT",
        "data={NAME: ROOT}",
        " (each row's column is its dataset)",
    ),
}


def option_said(option: str) -> str:
    """One of `sef reproduce`'s options (``--images-per-second``) as its reader gives it: the
    option to the command's user, reproduce()'s argument to Python code (images_per_second)."""
    return for_reader(option, option.removeprefix("--").replace("-", "_"))


def another_out() -> str:
    """Where the whole table may go instead: another --out, reproduce()'s out to Python code."""
    return for_reader("another --out", "another out folder")


@dataclass
class Run:
    """One training run of a table: a row on a dataset."""

    table: str
    row: PaperRow
    dataset: str
    preset: str
    config: Config
    train_images: int
    test_images: int

    @property
    def method(self) -> str:
        return str(self.row.ours)

    @property
    def out(self) -> Path:
        return Path(str(self.config.run.out))

    @property
    def epochs(self) -> int:
        return self.config.optim.epochs

    @property
    def images_per_epoch(self) -> int:
        """Images one epoch touches: the training set once, then the test set once."""
        return self.train_images + self.test_images

    @property
    def name(self) -> str:
        return f"sef: {self.row.label} on {datasets()[self.dataset].column}"


@dataclass
class Plan:
    """Every run of a table on the datasets given (dataset by dataset, rows in the paper's order),
    which of them this call trains (``--only``), and ``earlier``: the runs of the datasets not
    given whose folders an earlier call left under ``out``, shown in the tables, never trained."""

    table: PaperTable
    out: Path
    runs: list[Run]
    selected: tuple[str, ...]
    overrides: tuple[str, ...]
    paper_sizes: bool = False  # image counts from Table I (a dry run without --data)
    earlier: list[Run] = field(default_factory=list)

    @property
    def to_train(self) -> list[Run]:
        return [run for run in self.runs if run.method in self.selected]

    @property
    def missing(self) -> list[str]:
        """The table's datasets that no run covers (not given with --data)."""
        given = {run.dataset for run in self.runs}
        return [d for d in self.table.columns if d not in given]

    @property
    def recipe_changes(self) -> tuple[str, ...]:
        """The overrides that change what a run computes: not where it reads, writes or logs,
        nor a value its preset holds already (a run that may resume with them is the same run)."""
        from sef.engine import RESUMABLE_CHANGES  # torch: a plan's configs are checked without

        changed = {
            key
            for run in self.runs
            for key, _, _ in config_changes(
                config_to_dict(load_preset(run.preset)), run.config, RESUMABLE_CHANGES
            )
        }

        def changes(override: str) -> bool:
            key = override.partition("=")[0].strip()
            return any(key == c or key.startswith(f"{c}.") for c in changed)

        return tuple(override for override in self.overrides if changes(override))

    @property
    def device(self) -> str:
        return self.runs[0].config.run.device if self.runs else "auto"


def parse_data(items: Iterable[str]) -> dict[str, str]:
    """``["cub=ROOT", ...]`` as {dataset: root}; every name a paper dataset, every root existing."""
    known = list(datasets())
    roots: dict[str, str] = {}
    for item in items:
        name, sep, root = item.partition("=")
        name = name.strip()
        if not sep or not name or not root:
            raise ConfigError(
                f"--data {item!r} must look like NAME=ROOT, e.g. cub=~/data/CUB_200_2011"
            )
        if name not in known:
            raise ConfigError(
                f"--data names unknown dataset {name!r}; the paper's datasets are "
                f"{', '.join(known)}"
            )
        if name in roots:
            raise ConfigError(f"--data gives {name} twice; give each dataset once")
        path = Path(root).expanduser()
        if not path.exists():
            raise DataError(
                f"--data {name}={root}: {path} does not exist; pass the folder its archive "
                f"unpacked to"
            )
        roots[name] = str(path)
    return roots


def table(key: str) -> PaperTable:
    """Table ``table2`` or ``table3``."""
    found = tables()
    if key not in found:
        raise ConfigError(f"unknown table {key!r}; choose one of {', '.join(found)}")
    return found[key]


def _selected(chosen: PaperTable, only: Iterable[str] | None) -> tuple[str, ...]:
    rows = [str(row.ours) for row in chosen.ours]
    if not only:
        return tuple(rows)
    listed = ", ".join(f"{row.ours} ({row.label})" for row in chosen.ours)
    for name in only:
        if name not in rows:
            raise ConfigError(
                f"{option_said('--only')} {name!r} is not a row of {chosen.key}; its rows: {listed}"
            )
    return tuple(row for row in rows if row in set(only))


def _image_counts(dataset: str, config: Config) -> tuple[int, int]:
    """How many images the config's train and eval splits hold (reads the lists, not images);
    a root that is not ``dataset``'s is named with the --data that gave it."""
    from sef.datasets import read_split

    d, seed = config.data, config.run.seed
    try:
        train, test = (read_split(d, split, seed=seed) for split in (d.train_split, d.eval_split))
    except DataError as error:
        given = for_reader(f"--data {dataset}={d.root}", f"data[{dataset!r}]={d.root}")
        raise DataError(f"{given}: {error}") from None
    return len(train), len(test)


def create_plan(
    key: str,
    data: Mapping[str, str],
    *,
    out: str | Path = DEFAULT_OUT,
    overrides: Iterable[str] = (),
    only: Iterable[str] | None = None,
    dry_run: bool = False,
) -> Plan:
    """The runs of table ``key`` on the datasets in ``data`` ({name: root}, see parse_data).

    Without data only a dry run is possible: it then plans every dataset at Table I's sizes.
    Every config is resolved and every root read here, so a bad value stops before any training.
    """
    out = Path(out).expanduser()  # --out=~/x, which no shell expands
    chosen = table(key)
    selected = _selected(chosen, only)
    overrides = tuple(overrides)
    _check_overrides(overrides)
    paper_sizes = not data
    if paper_sizes and not dry_run:
        raise _no_dataset(chosen)
    runs, earlier = [], []
    for dataset in chosen.columns:
        given = paper_sizes or dataset in data
        size = datasets()[dataset]
        counts = None if given else (size.train, size.test)
        for row in chosen.ours:
            preset = preset_name(dataset, chosen.backbone, str(row.ours))
            folder = out / preset
            if not given and not folder.is_dir():
                continue
            config = apply_values(
                resolve_config(preset, overrides=overrides),
                {"data.root": data.get(dataset), "run.out": str(folder)},
            )
            if counts is None:
                counts = (size.train, size.test) if paper_sizes else _image_counts(dataset, config)
            (runs if given else earlier).append(
                Run(chosen.key, row, dataset, preset, config, *counts)
            )
    return Plan(chosen, out, runs, selected, overrides, paper_sizes, earlier)


def _check_overrides(overrides: tuple[str, ...]) -> None:
    """ConfigError for an override of a setting the study places itself (:data:`PLACED`),
    saying what to give instead."""
    for name in parse_overrides(overrides):
        if name in PLACED:
            command, code, why = PLACED[name]
            raise ConfigError(
                f"{for_reader(f'--set {name}', f'the override {name}')} does not apply here: "
                f"give {for_reader(command, code)}{why}"
            )


def _no_dataset(chosen: PaperTable) -> ConfigError:
    """The error for a study of table ``chosen`` given no dataset and no dry run."""
    example = for_reader("--data cub=~/data/CUB_200_2011", "data={'cub': '~/data/CUB_200_2011'}")
    return ConfigError(
        f"give at least one dataset, e.g. {example} (the {chosen.key} datasets: "
        f"{', '.join(chosen.columns)}), or {for_reader('--dry-run', 'dry_run=True')} for an "
        f"estimate"
    )
