"""Our rows beside the paper's: ``DIR/<table>.md`` and ``DIR/<table>.csv``, with the Score.

The main table is the paper's, as printed, with our rows added below it: the best epoch's test
top-1 (what the authors report), rounded to one decimal as the paper prints. The Score is
recomputed over the paper's methods and ours with the `sef score` rules
(:func:`sef.metrics.paper_scores`) on the accuracies as shown. A second table sets each of our
runs beside the paper's number for its row: best epoch, last epoch, class-mean accuracy.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from sef.metrics import paper_scores, round_half_up
from sef.outputs import write_text
from sef.reproduce.paper import PaperRow, datasets, notes
from sef.reproduce.plan import Plan, Run
from sef.reproduce.state import DONE, NEW, PARTIAL, RunState

BLANK = "–"
CSV_FIELDS = (
    "table", "row", "source", "dataset", "accuracy", "paper", "best_top1", "best_epoch",
    "last_top1", "class_mean_last", "state", "run", "score", "paper_score",
)  # fmt: skip

States = dict[tuple[str, str], RunState]  # (method, dataset) -> state


@dataclass(frozen=True)
class Cell:
    """One of our rows on one dataset: its run (None: dataset not given and no folder for it),
    how far it got, and whether this call was given the dataset."""

    row: PaperRow
    dataset: str
    run: Run | None
    state: RunState | None
    selected: bool
    given: bool

    @property
    def done(self) -> bool:
        return self.state is not None and self.state.kind == DONE

    @property
    def accuracy(self) -> float | None:
        """Best-epoch test top-1 in %, rounded as the paper prints (None: not finished)."""
        if not self.done:
            return None
        return round_half_up(100 * self.state.result.best_top1, 1)

    @property
    def progress(self) -> str:
        blank = f"no --data {self.dataset}"
        if self.run is None or (not self.given and self.state.kind == NEW):
            return blank
        if self.done:
            return f"{self.state.epoch}/{self.run.epochs}"
        if self.state is not None and self.state.kind == PARTIAL:
            unfinished = f"unfinished, {self.state.epoch}/{self.run.epochs}"
            return unfinished if self.given else f"{unfinished}; {blank}"
        return "not trained yet" if self.selected else "not in --only"


def our_name(row: PaperRow) -> str:
    return f"sef: {row.label}"


def cells(plan: Plan, states: States) -> list[Cell]:
    """Our rows x the table's datasets, in the paper's order: the runs of this call and those an
    earlier call left for the datasets not given."""
    runs = {(run.method, run.dataset): run for run in [*plan.runs, *plan.earlier]}
    found = []
    for row in plan.table.ours:
        for dataset in plan.table.columns:
            key = (str(row.ours), dataset)
            selected, given = row.ours in plan.selected, dataset not in plan.missing
            found.append(Cell(row, dataset, runs.get(key), states.get(key), selected, given))
    return found


def accuracies(plan: Plan, ours: list[Cell]) -> dict[str, dict[str, float | None]]:
    """The paper's rows as printed plus each of our rows that has a finished run."""
    table = {row.name: dict(row.accuracies) for row in plan.table.rows}
    for row in plan.table.ours:
        values = {c.dataset: c.accuracy for c in ours if c.row is row}
        if any(value is not None for value in values.values()):
            table[our_name(row)] = values
    return table


def scores(table: dict[str, dict[str, float | None]]) -> dict[str, float]:
    """The paper's Score of every method in ``table``, rounded half up to one decimal."""
    return {method: round_half_up(score, 1) for method, score in paper_scores(table).items()}


def _number(value: float | None, decimals: int = 1) -> str:
    return BLANK if value is None else f"{value:.{decimals}f}"


def _note_numbers(plan: Plan) -> dict[str, int]:
    order = list(plan.table.notes)
    for row in plan.table.ours:
        order += [key for key in row.notes if key not in order]
    return {key: number for number, key in enumerate(order, start=1)}


def _marked(row: PaperRow, numbers: dict[str, int]) -> str:
    marks = ", ".join(str(numbers[key]) for key in row.notes)
    return our_name(row) + (f" ({marks})" if marks else "")


def _main_table(plan: Plan, ours: list[Cell], numbers: dict[str, int]) -> list[str]:
    t = plan.table
    table = accuracies(plan, ours)
    score = scores(table)
    printed = any(row.score is not None for row in t.rows)
    header = ["method", *(datasets()[d].column for d in t.columns)]
    header += ["Score (paper)", "Score (with ours)"] if printed else ["Score (with ours)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in t.rows:
        cited = f"{row.name} [{row.ref}]" if row.ref else row.name
        values = [_number(table[row.name][d]) for d in t.columns]
        values += [_number(row.score)] if printed else []
        lines.append(f"| {cited} | " + " | ".join(values) + f" | {_number(score[row.name])} |")
    for row in t.ours:
        name = our_name(row)
        values = [_number(table.get(name, {}).get(d)) for d in t.columns]
        values += [BLANK] if printed else []
        mine = _number(score.get(name))
        lines.append(f"| **{_marked(row, numbers)}** | " + " | ".join(values) + f" | {mine} |")
    return lines


def _detail_table(ours: list[Cell]) -> list[str]:
    lines = [
        "| our row | dataset | paper | best top-1 (epoch) | last top-1 | class-mean, last | "
        "best − paper | epochs | run folder |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in ours:
        paper = c.row.accuracies[c.dataset]
        best = last = mean = gap = BLANK
        if c.done:
            result = c.state.result
            best = f"{100 * result.best_top1:.2f} ({result.best_epoch})"
            last, mean = f"{100 * result.last_top1:.2f}", f"{100 * result.last_class_mean:.2f}"
            if paper is not None:
                gap = f"{100 * result.best_top1 - paper:+.2f}"
        folder = f"`{c.run.out}`" if c.run is not None else BLANK
        lines.append(
            f"| {c.row.label} | {datasets()[c.dataset].column} | {_number(paper)} | {best} | "
            f"{last} | {mean} | {gap} | {c.progress} | {folder} |"
        )
    return lines


def main_table(plan: Plan, states: States) -> str:
    """The paper's table with our rows and the Score, as Markdown (printed at the end)."""
    return "\n".join(_main_table(plan, cells(plan, states), _note_numbers(plan)))


def markdown(plan: Plan, states: States, *, written: str) -> str:
    """The Markdown page: main table, our runs beside the paper's, the notes."""
    t = plan.table
    ours = cells(plan, states)
    numbers = _note_numbers(plan)
    if plan.recipe_changes:
        recipe = (
            f"**These runs change the paper's recipe** ({changed_recipe(plan, '`')}): they test "
            "the road, and their accuracies say nothing about the paper's."
        )
    else:
        recipe = "The runs follow the paper's recipe as sef's presets hold it."
    text = [
        f"# Table {t.number} reproduced: {t.title} ({t.backbone.replace('resnet', 'ResNet-')})",
        "",
        f"Written by `sef reproduce {t.key}` on {written} from the runs in `{plan.out}`. The "
        "paper's rows are as printed. Rows **sef: ...** are ours: the best epoch's test top-1 "
        "(%), which is what the authors report. Score: each method's mean rank over the datasets "
        "it reports (`sef score` rules), over the paper's methods and ours, on the accuracies as "
        f"shown. {recipe}{_micro_batches(plan)}",
        "",
        *_main_table(plan, ours, numbers),
        "",
    ]
    if t.legend:
        text += [f"Paper: {t.legend}", ""]
    text += ["## Our runs beside the paper's rows", "", *_detail_table(ours), "", "## Notes", ""]
    texts = notes()
    text += [f"{number}. {texts[key]}" for key, number in numbers.items()]
    return "\n".join(text) + "\n"


def changed_recipe(plan: Plan, quote: str = "") -> str:
    """The overrides that change the paper's recipe, each in ``quote``, joined by commas."""
    return ", ".join(f"{quote}{override}{quote}" for override in plan.recipe_changes)


def _micro_batches(plan: Plan) -> str:
    """The sentence for runs that take each batch in micro-batches (``optim.accumulate``), or
    "": the recipe's steps, but not its BatchNorm statistics."""
    split = next((run.config.optim for run in plan.runs if run.config.optim.accumulate > 1), None)
    if split is None:
        return ""
    return (
        f" This call trains each batch of {split.batch_size} in {split.accumulate} micro-batches "
        f"(`optim.accumulate={split.accumulate}`): the recipe's batches, steps and learning rate, "
        f"but BatchNorm's statistics are those of {split.micro_batch()} images, "
        f"not {split.batch_size}."
    )


def csv_text(plan: Plan, states: States) -> str:
    """One line per row and dataset: the paper's rows and ours, with the Score of each row."""
    t = plan.table
    ours = cells(plan, states)
    score = scores(accuracies(plan, ours))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in t.rows:
        for dataset in t.columns:
            writer.writerow(
                {
                    "table": t.key, "row": row.name, "source": "paper", "dataset": dataset,
                    "accuracy": row.accuracies[dataset], "score": score[row.name],
                    "paper_score": row.score,
                }
            )  # fmt: skip
    for c in ours:
        line = {
            "table": t.key, "row": our_name(c.row), "source": "sef", "dataset": c.dataset,
            "paper": c.row.accuracies[c.dataset], "state": c.progress,
            "run": c.run.out if c.run is not None else None,
            "score": score.get(our_name(c.row)),
        }  # fmt: skip
        if c.done:
            result = c.state.result
            line |= {
                "accuracy": c.accuracy,  # as the main table shows it and the Score ranks it
                "best_top1": round(100 * result.best_top1, 2),
                "best_epoch": result.best_epoch,
                "last_top1": round(100 * result.last_top1, 2),
                "class_mean_last": round(100 * result.last_class_mean, 2),
            }
        writer.writerow(line)
    return buffer.getvalue()


def write_tables(plan: Plan, states: States, *, written: str) -> tuple[Path, Path]:
    """Write ``OUT/<table>.md`` and ``OUT/<table>.csv`` atomically (a kill while writing leaves
    the previous tables); return their paths."""
    md, table_csv = plan.out / f"{plan.table.key}.md", plan.out / f"{plan.table.key}.csv"
    write_text(md, markdown(plan, states, written=written))
    write_text(table_csv, csv_text(plan, states))
    return md, table_csv
