"""Train every run of a table in order, resumably, and lay the results beside the paper's.

A finished run (its ``last.pt`` at the last epoch) is reused, a half-finished one resumed, the
others trained with :func:`sef.engine.fit`; the tables are rewritten after every run and when a
run stops (an error, Ctrl-C), so a killed reproduction loses at most the epoch in progress. Under
torchrun every process walks the same list (rank 0 reads the folders and shares what it found)
and each run trains on all of them; only rank 0 prints and writes the tables.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sef import distributed
from sef.distributed import Context
from sef.engine import fit
from sef.engine.folders import (
    COPY_AND_RESUME,
    ELSEWHERE,
    MOVE_AND_RESUME,
    START_OVER,
    for_code,
)
from sef.engine.run import FIT_RESUME, RESUME_ADVICE
from sef.errors import SEFError, for_reader
from sef.reproduce.estimate import Speed, assumed_speed, hours
from sef.reproduce.paper import datasets
from sef.reproduce.plan import DEFAULT_OUT, Plan, Run, another_out, create_plan, option_said
from sef.reproduce.state import DONE, NEW, PARTIAL, RunState, read_state, train_again
from sef.reproduce.tables import States, changed_recipe, main_table, write_tables
from sef.text import counted, rate, table


@dataclass
class Outcome:
    """What a call did: its plan, each run's final state, the tables it wrote (None: dry run)."""

    plan: Plan
    states: States
    tables: tuple[Path, Path] | None = None
    counts: dict[str, int] = field(
        default_factory=lambda: {"reused": 0, "resumed": 0, "trained": 0}
    )
    seconds: float = 0.0


class _Pace:
    """Images/s for the ETAs: the assumed rate (x processes) until this call has trained a run."""

    def __init__(self, speed: Speed, processes: int) -> None:
        self.assumed = speed.images_per_second * processes
        self.images = self.seconds_spent = 0.0

    def observe(self, images: float, seconds: float) -> None:
        self.images += images
        self.seconds_spent += seconds

    @property
    def rate(self) -> float:
        return self.images / self.seconds_spent if self.seconds_spent > 0 else self.assumed

    def seconds(self, images: float) -> float:
        return images / self.rate

    def __str__(self) -> str:
        return f"{rate(self.rate)} img/s " + ("measured" if self.seconds_spent > 0 else "assumed")


def _key(run: Run) -> tuple[str, str]:
    return run.method, run.dataset


def _left(run: Run, state: RunState) -> int:
    """Images still to process (training and evaluation) before ``run`` is finished."""
    return 0 if state.kind == DONE else (run.epochs - state.epoch) * run.images_per_epoch


def _best(state: RunState) -> str:
    result = state.result
    return (
        f"best top-1 {100 * result.best_top1:.2f} % (epoch {result.best_epoch}), "
        f"last {100 * result.last_top1:.2f} %"
    )


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _dry_run(plan: Plan, states: States, speed: Speed, say: Callable[[str], None]) -> None:
    todo = plan.to_train
    say(
        f"sef reproduce {plan.table.key}: {counted(len(todo), 'run')} into {plan.out} "
        "(dry run: nothing trains)"
    )
    rows = [["", "run", "preset", "epochs x (train + test images)", "state", "GPU hours"]]
    total = left = 0.0
    for number, run in enumerate(todo, start=1):
        state = states[_key(run)]
        gpu_hours = speed.seconds(_left(run, state)) / 3600
        total += speed.seconds(run.epochs * run.images_per_epoch) / 3600
        left += gpu_hours
        rows.append(
            [
                f"[{number}/{len(todo)}]", run.name, run.preset,
                f"{run.epochs} x ({run.train_images:,} + {run.test_images:,})",
                state.kind if state.kind == NEW else f"{state.kind} {state.epoch}/{run.epochs}",
                f"{gpu_hours:.2f}",
            ]
        )  # fmt: skip
    for line in table(rows).splitlines():
        say(line)
    _say_blanks(plan, states, say)
    if plan.paper_sizes:
        say(f"image counts: Table I's (no {option_said('--data')} given)")
    say(
        f"estimate: {left:.1f} GPU hours left of {total:.1f}, at {speed.images_per_second:g} "
        "images/s per GPU"
    )
    say(f"  ({speed.source})")
    backbone = plan.runs[0].config.model.backbone  # the table's, or the one --set gives
    if speed.measured and backbone != "resnet50":
        high = ", so this estimate is high" if backbone == "resnet18" else ""  # Table III's
        say(f"  {backbone} counted at SEF-ResNet-50's rate, not its own{high}")
    rate = for_reader("--images-per-second N", "images_per_second=N")
    say(f"  evaluation counted at the training rate; {rate} sets your GPU's rate")


def _columns(names: Iterable[str]) -> str:
    return ", ".join(datasets()[d].column for d in names)


def _say_blanks(plan: Plan, states: States, say: Callable[[str], None]) -> None:
    found = {run.dataset for run in plan.earlier if states[_key(run)].kind != NEW}
    blank = [d for d in plan.missing if d not in found]
    if blank:
        say(f"blank: {_columns(blank)} (no {option_said('--data')})")
    if found:
        shown = [d for d in plan.missing if d in found]
        say(f"shown as found in {plan.out} (no {option_said('--data')}): {_columns(shown)}")
    skipped = [row.label for row in plan.table.ours if row.ours not in plan.selected]
    if skipped:
        say(
            f"not in {option_said('--only')}: {'; '.join(map(str, skipped))}"
        )  # Table III's labels hold commas
    if plan.recipe_changes:
        say(f"not the paper's recipe ({changed_recipe(plan)}): its accuracies are not the paper's")


def advice(run: Run) -> dict[str, str]:
    """The engine's advice that names `sef train`'s options (sef.engine.run.ADVICE), as `sef
    reproduce` says it for ``run``: it goes on when run again, and its --out holds every row's
    folder, so the run starts over where its folder is moved away, and goes on elsewhere where
    the whole table's folder does."""
    table, out = run.out.parent, option_said("--out")
    return {
        RESUME_ADVICE: "again to continue",
        FIT_RESUME: "call reproduce again with the same arguments to continue",
        START_OVER: train_again(run.out),
        ELSEWHERE: f"give {another_out()} for the whole table",
        COPY_AND_RESUME: (
            f"copy {table} to a writable place with file locks and give that copy as {out}"
        ),
        MOVE_AND_RESUME: f"move {table} to a disk with room and give it as {out}",
    }


def _rerun(error: BaseException, run: Run) -> str:
    """The engine's message, its advice as `sef reproduce` says it for ``run`` (as the engine
    says it to the command's user, or to Python code: for_code)."""
    said = str(error)
    for engine, ours in advice(run).items():
        said = said.replace(engine, ours).replace(for_code(engine), ours)
    return said


def _train_all(
    plan: Plan,
    states: States,
    pace: _Pace,
    context: Context,
    say: Callable[[str], None],
    progress: bool | None,
) -> Outcome:
    outcome = Outcome(plan, states)
    todo = plan.to_train
    started = time.perf_counter()
    for number, run in enumerate(todo, start=1):
        tag = f"[{number}/{len(todo)}]"
        if states[_key(run)].kind != DONE:  # another call into --out may have trained it since
            states[_key(run)] = distributed.on_main(lambda run=run: read_state(run.config), context)
        state = states[_key(run)]
        if state.kind == DONE:
            outcome.counts["reused"] += 1
            say(f"{tag} reused {run.name}: {run.out} is finished, {_best(state)}")
            continue
        left = sum(_left(r, states[_key(r)]) for r in todo)
        start = f"after epoch {state.epoch}" if state.kind == PARTIAL else "at epoch 0"
        say(
            f"{tag} {'resume' if state.kind == PARTIAL else 'train '} {run.name} {start}/"
            f"{run.epochs} -> {run.out}: this run ~{hours(pace.seconds(_left(run, state)))}, "
            f"all ~{hours(pace.seconds(left))} at {pace}"
        )
        began = time.perf_counter()
        try:
            fit(run.config, resume=state.kind == PARTIAL, progress=progress)
        except SEFError as error:
            _tables_after_a_stop(plan, states, context)
            said = f"{run.name} ({run.out}): {_rerun(error, run)}"
            raise distributed.reworded(error, said) from None
        except KeyboardInterrupt as stop:
            _tables_after_a_stop(plan, states, context)
            if not stop.args:
                raise
            raise distributed.reworded(stop, _rerun(stop, run)) from None
        took = time.perf_counter() - began
        pace.observe(_left(run, state), took)
        outcome.counts["resumed" if state.kind == PARTIAL else "trained"] += 1
        states[_key(run)] = distributed.on_main(lambda run=run: read_state(run.config), context)
        if context.is_main and number < len(todo):  # after the last run, the call's end writes
            write_tables(plan, _current(plan, states), written=_now())
        left = sum(_left(r, states[_key(r)]) for r in todo)
        say(
            f"{tag} done   {run.name}: {_best(states[_key(run)])}, {hours(took)}; "
            f"left ~{hours(pace.seconds(left))} at {pace}"
        )
    outcome.seconds = time.perf_counter() - started
    if context.is_main:
        states = outcome.states = _current(plan, states)
        outcome.tables = write_tables(plan, states, written=_now())
    counts = ", ".join(f"{n} {what}" for what, n in outcome.counts.items())
    say(f"{plan.table.key}: {counted(len(todo), 'run')}: {counts} in {hours(outcome.seconds)}")
    _say_blanks(plan, states, say)
    if outcome.tables:
        say(f"tables: {outcome.tables[0]}, {outcome.tables[1]}")
        say(main_table(plan, states))
    return outcome


def _tables_after_a_stop(plan: Plan, states: States, context: Context) -> None:
    """Write the tables as the folders are after a run stopped (its last.pt says how far it got),
    where they can be written: the error that stopped the run is the one to say."""
    if context.is_main:
        with contextlib.suppress(SEFError, OSError):
            write_tables(plan, _current(plan, states), written=_now())


def _current(plan: Plan, states: States) -> States:
    """``states`` with the runs not finished read again from their folders, for the tables:
    another call into the same --out (another --only, on another GPU) may have trained them."""
    runs = {_key(run): run for run in [*plan.runs, *plan.earlier]}
    return {
        key: state if state.kind == DONE else read_state(runs[key].config)
        for key, state in states.items()
    }


def reproduce(
    table: str,
    data: Mapping[str, str],
    *,
    out: str | Path = DEFAULT_OUT,
    overrides: Iterable[str] = (),
    only: Iterable[str] | None = None,
    dry_run: bool = False,
    images_per_second: float | None = None,
    progress: bool | None = None,
) -> Outcome:
    """Train (or resume, or reuse) every run of ``table`` on ``data`` ({dataset: root}) and write
    ``OUT/<table>.md`` and ``.csv``; ``dry_run`` lists the runs and the GPU hours instead."""
    plan = create_plan(table, data, out=out, overrides=overrides, only=only, dry_run=dry_run)
    return carry_out(plan, dry_run=dry_run, images_per_second=images_per_second, progress=progress)


def carry_out(
    plan: Plan,
    *,
    dry_run: bool = False,
    images_per_second: float | None = None,
    progress: bool | None = None,
) -> Outcome:
    """What :func:`reproduce` does once ``plan`` is made (its configs checked)."""
    context = distributed.setup(plan.device)

    def say(line: str) -> None:
        if context.is_main:
            print(line, flush=True)

    try:
        states = distributed.on_main(
            lambda: {_key(run): read_state(run.config) for run in [*plan.runs, *plan.earlier]},
            context,
        )
        speed = assumed_speed(plan.runs[0].config, images_per_second)
        if dry_run:
            _dry_run(plan, states, speed, say)
            return Outcome(plan, states)
        return _train_all(plan, states, _Pace(speed, context.world_size), context, say, progress)
    finally:
        distributed.teardown(context)
