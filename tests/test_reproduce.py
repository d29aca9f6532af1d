"""`sef reproduce` as a user runs it, at toy scale: tiny copies of the four datasets in their real
formats, no pretrained weights, 1 epoch at 32 px (and sef's small CNN where only the road is
tested, to keep the suite fast)."""

from __future__ import annotations

import argparse
import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import sef_process

import sef.engine.run
import sef.reproduce.runner
from sef.checkpoint import load_checkpoint
from sef.cli import main
from sef.config import Config, save_config
from sef.engine.lock import acquire
from sef.errors import ConfigError, said_to_command
from sef.metrics import paper_scores, round_half_up

TOY = ["--weights", "none", "--set", "optim.epochs=1", "--set", "data.image_size=32"]
FAST = ["--set", "model.backbone=small_cnn", "--set", "data.workers=0", "--no-progress"]
FAST += ["--set", "run.tensorboard=false"]


@pytest.fixture
def roots(cub_root, cars_root, dogs_root, aircraft_root) -> dict[str, Path]:
    return {"cub": cub_root, "cars": cars_root, "dogs": dogs_root, "aircraft": aircraft_root}


def _data(roots: dict[str, Path], *names: str) -> list[str]:
    return [arg for name in names for arg in ("--data", f"{name}={roots[name]}")]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _check_scores(rows: list[dict[str, str]]) -> None:
    """The Score column is `sef score`'s rule over every row's accuracies as printed."""
    table: dict[str, dict[str, float | None]] = {}
    for row in rows:
        table.setdefault(row["row"], {})[row["dataset"]] = (
            float(row["accuracy"]) if row["accuracy"] else None
        )
    table = {n: v for n, v in table.items() if any(x is not None for x in v.values())}
    expected = {name: round_half_up(score, 1) for name, score in paper_scores(table).items()}
    for row in rows:
        assert (float(row["score"]) if row["score"] else None) == expected.get(row["row"])


@pytest.mark.slow
def test_both_tables_at_toy_scale(roots, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    for table, rows in (("table2", 3), ("table3", 5)):
        every = _data(roots, "cub", "cars", "dogs", "aircraft")
        assert main(["reproduce", table, *every, *TOY, *FAST]) == 0
        out = capsys.readouterr().out
        runs = 4 * rows
        assert f"{table}: {runs} runs: 0 reused, 0 resumed, {runs} trained in" in out
        assert f"[{runs}/{runs}] done" in out and "blank" not in out
        assert f"tables: {Path('runs/reproduce') / f'{table}.md'}" in out
        lines = _rows(tmp_path / "runs" / "reproduce" / f"{table}.csv")
        ours = [line for line in lines if line["source"] == "sef"]
        assert len(ours) == runs
        assert all(line["accuracy"] and line["state"] == "1/1" for line in ours)
        assert all(line["score"] for line in lines)
        _check_scores(lines)
        page = (tmp_path / "runs" / "reproduce" / f"{table}.md").read_text()
        assert "**These runs change the paper's recipe**" in page and "`optim.epochs=1`" in page
    page = (tmp_path / "runs" / "reproduce" / "table3.md").read_text()
    assert "hard-codes ResNet-50's 2048 channels" in page
    assert "| method | Birds | Dogs | Cars | Aircraft | Score (with ours) |" in page
    page = (tmp_path / "runs" / "reproduce" / "table2.md").read_text()
    assert "(p * log p).sum().neg()" in page and "| Score (paper) | Score (with ours) |" in page

    # The same command again trains nothing: every run is reused from its folder.
    assert main(["reproduce", "table2", *_data(roots, "cub", "cars"), *TOY, *FAST]) == 0
    out = capsys.readouterr().out
    assert "table2: 6 runs: 6 reused, 0 resumed, 0 trained" in out and "training" not in out


def test_datasets_not_given_stay_blank(roots, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "repro"
    arguments = ["reproduce", "table2", *_data(roots, "cub"), "--out", str(out), "--only", "sef"]
    real, reads = sef.reproduce.runner.read_state, []
    monkeypatch.setattr(sef.reproduce.runner, "read_state",
                        lambda config: reads.append(config.run.out) or real(config))  # fmt: skip
    assert main([*arguments, *TOY, *FAST]) == 0
    # a run not in --only is read as the call starts and once for the tables as it ends
    assert reads.count(str(out / "cub-resnet50-plain")) == 2
    printed = capsys.readouterr().out
    assert "table2: 1 run: 0 reused, 0 resumed, 1 trained" in printed
    assert "blank: Cars, Dogs, Aircraft (no --data)" in printed
    assert "not in --only: ResNet-50; MaxEnt-CNN" in printed
    # the table printed last says, as the page does, that its row is not the paper's recipe
    assert "not the paper's recipe (model.weights=null, optim.epochs=1, " in printed
    lines = {(line["row"], line["dataset"]): line for line in _rows(out / "table2.csv")}
    assert lines["sef: SEF", "cub"]["accuracy"] and lines["sef: SEF", "cub"]["paper"] == "87.3"
    assert lines["sef: SEF", "cars"]["accuracy"] == "" and lines["sef: SEF", "cars"]["state"] == (
        "no --data cars"
    )
    assert lines["sef: ResNet-50", "cub"]["state"] == "not in --only"
    # A method that reports only Birds is ranked on Birds alone.
    _check_scores(list(lines.values()))
    assert lines["sef: ResNet-50", "cub"]["score"] == ""
    page = (out / "table2.md").read_text()
    assert "| **sef: SEF** | " in page and " | – | – | – | – | " in page


def test_datasets_trained_by_an_earlier_call_stay_in_the_tables(roots, tmp_path: Path, capsys):
    out = tmp_path / "repro"  # one GPU: one dataset per call, the same --out
    arguments = ["reproduce", "table2", "--out", str(out), "--only", "sef", *TOY, *FAST]
    assert main([*arguments, *_data(roots, "cub")]) == 0
    cub = _rows(out / "table2.csv")
    assert main([*arguments, *_data(roots, "cars")]) == 0
    printed = capsys.readouterr().out
    assert "table2: 1 run: 0 reused, 0 resumed, 1 trained" in printed  # cub is not retrained
    assert "blank: Dogs, Aircraft (no --data)" in printed
    assert f"shown as found in {out} (no --data): Birds" in printed
    lines = {(line["row"], line["dataset"]): line for line in _rows(out / "table2.csv")}
    was = next(line for line in cub if line["row"] == "sef: SEF" and line["dataset"] == "cub")
    assert lines["sef: SEF", "cub"] == {**was, "score": lines["sef: SEF", "cub"]["score"]}
    assert lines["sef: SEF", "cub"]["state"] == "1/1"  # was "no --data cub"
    assert lines["sef: SEF", "cars"]["accuracy"] and lines["sef: SEF", "dogs"]["accuracy"] == ""
    assert lines["sef: SEF", "dogs"]["state"] == "no --data dogs"
    assert lines["sef: ResNet-50", "cub"]["state"] == "no --data cub"  # never trained
    _check_scores(list(lines.values()))
    page = (out / "table2.md").read_text()
    assert f"`{out / 'cub-resnet50'}`" in page and " | – | – | " in page


def test_two_calls_at_once_into_one_folder_share_their_runs(
    cub_root: Path, tmp_path: Path, monkeypatch, capsys
):
    import sef.reproduce.runner as runner

    arguments = ["reproduce", "table2", "--data", f"cub={cub_root}", "--out", str(tmp_path)]
    arguments += [*TOY, *FAST]
    real, other = runner.fit, []

    def alongside(*args, **kwargs):  # the other call (another GPU) trains sef and maxent meanwhile
        monkeypatch.setattr(runner, "fit", real)
        other.append(main([*arguments, "--only", "sef", "maxent"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "fit", alongside)
    assert main([*arguments, "--only", "plain", "sef"]) == 0 and other == [0]
    # sef, finished by the other call, is reused: it was trained again into a folder that holds a
    # run and refused with "pass --resume", an option sef reproduce does not have
    assert "[2/2] reused sef: SEF on Birds" in capsys.readouterr().out
    lines = {(line["row"], line["dataset"]): line for line in _rows(tmp_path / "table2.csv")}
    # the call that ended last wrote maxent's row as "not in --only", read when it started
    assert {lines[f"sef: {row}", "cub"]["state"] for row in ("ResNet-50", "MaxEnt-CNN", "SEF")} == {
        "1/1"
    }


def _ctrl_c_in_epoch_two(monkeypatch) -> None:
    """Training stops as Ctrl-C stops it, at the start of the second epoch it trains."""
    real, calls = sef.engine.run.train_one_epoch, []

    def stopped_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sef.engine.run, "train_one_epoch", stopped_in_epoch_two)


def test_a_run_an_earlier_call_left_unfinished_is_shown_unfinished(
    roots, tmp_path: Path, monkeypatch, capsys
) -> None:
    _ctrl_c_in_epoch_two(monkeypatch)
    out = tmp_path / "repro"
    arguments = ["reproduce", "table2", "--out", str(out), "--only", "sef", *TOY, *FAST]
    arguments += ["--set", "optim.epochs=2"]
    assert main([*arguments, *_data(roots, "cub")]) == 130
    # the tables say how far the stopped run got (there were none: written after a run only)
    stopped = {(line["row"], line["dataset"]): line for line in _rows(out / "table2.csv")}
    assert stopped["sef: SEF", "cub"]["state"] == "unfinished, 1/2"
    assert main([*arguments, *_data(roots, "cars")]) == 0
    assert f"shown as found in {out} (no --data): Birds" in capsys.readouterr().out
    lines = {(line["row"], line["dataset"]): line for line in _rows(out / "table2.csv")}
    assert lines["sef: SEF", "cub"]["state"] == "unfinished, 1/2; no --data cub"
    assert lines["sef: SEF", "cub"]["accuracy"] == "" and lines["sef: SEF", "cars"]["accuracy"]


def test_the_csv_accuracy_is_the_number_in_the_main_table() -> None:
    from sef.reproduce.plan import create_plan
    from sef.reproduce.state import DONE, Result, RunState
    from sef.reproduce.tables import csv_text, main_table

    plan = create_plan("table2", {}, dry_run=True)
    best = 5061 / 5794  # 87.349 %: the table prints 87.3, the CSV said 87.35
    result = Result(best, 50, 0.86, 0.85, 50, 1.0)
    states = {("sef", "cub"): RunState(DONE, 50, result)}
    sef_row = next(line for line in main_table(plan, states).splitlines() if "sef: SEF" in line)
    assert sef_row.split(" | ")[1] == "87.3"
    lines = list(csv.DictReader(io.StringIO(csv_text(plan, states))))
    ours = next(line for line in lines if line["row"] == "sef: SEF" and line["dataset"] == "cub")
    assert ours["accuracy"] == "87.3" and ours["best_top1"] == "87.35"
    _check_scores(lines)


def _kill_when(path: Path, command: list[str], cwd: Path) -> None:
    process = subprocess.Popen(command, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL)
    try:
        while not path.exists():
            if process.poll() is not None:
                raise AssertionError(f"sef reproduce exited early with {process.returncode}")
            time.sleep(0.01)
        process.kill()  # SIGKILL: no cleanup
        assert process.wait(timeout=60) == -9
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_killed_during_the_second_run_resumes_it_and_reuses_the_first(
    cub_root: Path, tmp_path: Path
) -> None:
    arguments = ["reproduce", "table3", "--data", f"cub={cub_root}", "--only", "plain", "sef"]
    arguments += [*TOY, *FAST, "--set", "optim.epochs=3", "--set", "data.image_size=64"]
    runs = tmp_path / "runs" / "reproduce"
    first, second = runs / "cub-resnet18-plain", runs / "cub-resnet18"
    _kill_when(second / "last.pt", [sys.executable, "-m", "sef.cli", *arguments], tmp_path)
    assert load_checkpoint(first / "last.pt")["epoch"] == 3
    killed_at = load_checkpoint(second / "last.pt")["epoch"]
    assert 1 <= killed_at < 3
    finished = (first / "last.pt").stat().st_mtime_ns

    again = sef_process(*arguments, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "[1/2] reused sef: ResNet-18 on Birds" in again.stdout
    resumed = f"[2/2] resume sef: SEF (λ = 1, γ = 0.05, φ = 1) on Birds after epoch {killed_at}/3"
    assert resumed in again.stdout and f"resuming after epoch {killed_at}" in again.stdout
    assert "table3: 2 runs: 1 reused, 1 resumed, 0 trained" in again.stdout
    assert (first / "last.pt").stat().st_mtime_ns == finished  # not retrained
    assert load_checkpoint(second / "last.pt")["epoch"] == 3
    lines = _rows(runs / "table3.csv")
    assert sum(1 for line in lines if line["source"] == "sef" and line["state"] == "3/3") == 2


def test_a_run_killed_in_its_first_epoch_starts_afresh(cub_root: Path, tmp_path: Path, capsys):
    folder = tmp_path / "runs" / "cub-resnet18"  # what a kill before the first checkpoint leaves
    (folder / "tb").mkdir(parents=True)
    (folder / "tb" / "events.out.tfevents.killed").write_text("")
    save_config(Config(), folder / "config.yaml")  # the config that run wrote first
    (folder / "metrics.jsonl").write_text('{"epoch": 1, "killed": true}\n')
    arguments = ["reproduce", "table3", "--data", f"cub={cub_root}", "--only", "sef"]
    assert main([*arguments, "--out", str(tmp_path / "runs"), *TOY, *FAST]) == 0
    assert "[1/1] train  sef: SEF" in capsys.readouterr().out
    assert load_checkpoint(folder / "last.pt")["epoch"] == 1
    assert "killed" not in (folder / "metrics.jsonl").read_text()
    assert not (folder / "tb" / "events.out.tfevents.killed").exists()


def test_a_folder_with_best_pt_but_no_last_pt_is_refused_before_training(
    cub_root: Path, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "runs" / "cub-resnet18"  # last.pt deleted to save space, say
    folder.mkdir(parents=True)
    (folder / "best.pt").write_bytes(b"kept")
    arguments = ["reproduce", "table3", "--data", f"cub={cub_root}", "--only", "plain", "sef"]
    assert main([*arguments, "--out", str(tmp_path / "runs"), *TOY, *FAST]) == 2
    out, error = capsys.readouterr()
    # it trained the rows before it, then advised a --resume that sef reproduce does not have
    assert error == (
        f"sef reproduce: error: {folder} holds best.pt but no last.pt, which says how far its "
        f"run got; put the run's last.pt back, or move the folder away to train the run again\n"
    )
    assert out == "" and not (tmp_path / "runs" / "cub-resnet18-plain").exists()


def test_ctrl_c_says_to_run_the_same_command_again(
    cub_root: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    _ctrl_c_in_epoch_two(monkeypatch)
    arguments = ["reproduce", "table3", "--data", f"cub={cub_root}", "--only", "sef"]
    arguments += ["--out", str(tmp_path / "runs"), *TOY, *FAST, "--set", "optim.epochs=2"]
    assert main(arguments) == 130
    assert capsys.readouterr().err == (
        f"sef reproduce: interrupted; {tmp_path / 'runs' / 'cub-resnet18' / 'last.pt'} (epoch 1) "
        f"is kept; run the same command again to continue\n"
    )


def test_a_stop_met_from_python_says_to_call_reproduce_again() -> None:
    """A stopped run's advice to Python code is fit's call, which reproduce words as its own."""
    from sef.reproduce.runner import _rerun

    stop = KeyboardInterrupt(
        "runs/x/last.pt (epoch 1) is kept; call fit(config, resume=True) to continue"
    )
    assert _rerun(stop, SimpleNamespace(out=Path("runs/x"))) == (
        "runs/x/last.pt (epoch 1) is kept; call reproduce again with the same arguments to continue"
    )


def test_a_folder_a_live_run_holds_is_refused_and_left_untouched(
    cub_root: Path, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "runs" / "cub-resnet18"  # a live run in its first epoch holds it
    (folder / "tb").mkdir(parents=True)
    (folder / "config.yaml").write_text("model: {}\n")
    (folder / "metrics.jsonl").write_text('{"epoch": 1}\n')
    arguments = ["reproduce", "table3", "--data", f"cub={cub_root}", "--only", "sef"]
    with acquire(folder):
        assert main([*arguments, "--out", str(tmp_path / "runs"), *TOY, *FAST]) == 2
    error = capsys.readouterr().err
    assert f"{folder} is in use by another run (pid {os.getpid()}" in error, error
    assert error.count("\n") == 1
    assert (folder / "metrics.jsonl").read_text() == '{"epoch": 1}\n'
    assert (folder / "tb").is_dir() and not (folder / "last.pt").exists()


def test_reproduce_called_from_python_names_its_arguments(tmp_path: Path, capsys) -> None:
    """reproduce(table, data, ...) was told to give --data, --dry-run, --out, --only and
    --images-per-second, options of the command, not of the call."""
    from sef.reproduce import reproduce
    from sef.reproduce.estimate import assumed_speed
    from sef.reproduce.plan import create_plan

    with pytest.raises(ConfigError, match=r"e.g. data=\{'cub': .*, or dry_run=True for an"):
        create_plan("table2", {})
    with pytest.raises(ConfigError, match=r"^the override run.out does not apply here: give out="):
        create_plan("table2", {}, overrides=["run.out=x"], dry_run=True)
    with pytest.raises(ConfigError, match="^only 'groups-only' is not a row of table2"):
        create_plan("table2", {}, only=["groups-only"], dry_run=True)
    with pytest.raises(ConfigError, match="^images_per_second must be a positive number"):
        assumed_speed(Config(), 0)
    reproduce("table3", {}, out=tmp_path, dry_run=True)
    printed = capsys.readouterr().out
    assert "(no data given)" in printed and "; images_per_second=N sets your GPU's" in printed
    with said_to_command(), pytest.raises(ConfigError, match="^--set run.out does not apply here"):
        create_plan("table2", {}, overrides=["run.out=x"], dry_run=True)


def test_the_engines_advice_to_choose_another_out_is_worded_for_a_row(tmp_path: Path) -> None:
    """`sef train`'s advice ("choose another --out", "train a new run with another --out", "move
    the run folder and resume it there") meant the row's folder, but here --out holds the whole
    table's: it is said in one place each, and reproduce words each its own way."""
    from sef.engine.run import ADVICE, _check_resumed_classes
    from sef.errors import DataError, DiskFull
    from sef.reproduce.plan import create_plan
    from sef.reproduce.runner import _rerun, advice

    run = create_plan("table2", {}, out=tmp_path, dry_run=True).runs[0]
    assert set(advice(run)) == set(ADVICE)
    engine = Path(sef.engine.run.__file__).parent
    sources = "".join(path.read_text(encoding="utf-8") for path in engine.glob("*.py"))
    assert sources.count("another --out") == 2  # the two phrases themselves, nowhere else
    assert all(sources.count(phrase) == 1 for phrase in ADVICE)
    with pytest.raises(DataError) as error:
        _check_resumed_classes(["a", "b"], ["a"], run.out / "last.pt")
    assert _rerun(error.value, run).endswith(
        f"put the data back as it was, or move {run.out} away to train the run again"
    )
    full = DiskFull("free some space or move the run folder and resume it there")
    assert _rerun(full, run) == (
        f"free some space or move {tmp_path} to a disk with room and give it as out"
    )
    with said_to_command():
        assert _rerun(full, run).endswith(" to a disk with room and give it as --out")


def test_an_out_under_the_home_folder_is_where_the_runs_and_tables_are(tmp_path, monkeypatch):
    """--out=~/x (no shell expands it): the runs trained under the home folder, but each call
    looked for them, and wrote the tables, in a folder named ~: a second call refused them."""
    from sef.reproduce.plan import create_plan

    monkeypatch.setenv("HOME", str(tmp_path))
    plan = create_plan("table2", {}, out="~/tables", dry_run=True)
    assert plan.out == tmp_path / "tables"
    assert {Path(str(run.config.run.out)).parent for run in plan.runs} == {tmp_path / "tables"}


def test_dry_run_lists_the_runs_and_the_gpu_hours(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "table3", "--dry-run", "--set", "run.amp=bf16"]) == 0
    result = capsys.readouterr().out
    lines = result.splitlines()
    assert lines[0] == "sef reproduce table3: 20 runs into runs/reproduce (dry run: nothing trains)"
    assert lines[2].split()[:7] == [
        "[1/20]",
        "sef:",
        "ResNet-18",
        "on",
        "Birds",
        "cub-resnet18-plain",
        "50",
    ]
    assert lines[2].split()[-5:] == ["(5,994", "+", "5,794)", "new", "0.20"]
    assert "50 x (12,000 + 8,580)" in lines[7]
    assert "image counts: Table I's (no --data given)" in result
    # 5 rows x 50 epochs x Table I's (train + test) images at 814 images/s
    assert "estimate: 5.0 GPU hours left of 5.0, at 814 images/s per GPU" in result
    assert "measured with bf16 and channels_last" in result
    assert (
        "  resnet18 counted at SEF-ResNet-50's rate, not its own, so this estimate is high\n"
        in (result)
    )
    assert not (tmp_path / "runs").exists()
    assert main(["reproduce", "table3", "--dry-run", "--images-per-second", "1628"]) == 0
    mine = capsys.readouterr().out  # said the rate given was counted as SEF-ResNet-50's
    assert "estimate: 2.5 GPU hours left of 2.5, at 1628 images/s per GPU" in mine
    assert "given with --images-per-second" in mine and not (tmp_path / "runs").exists()
    assert "SEF-ResNet-50's rate" not in mine
    assert main(["reproduce", "table2", "--dry-run", "--set", "model.backbone=resnet101"]) == 0
    said = capsys.readouterr().out  # said nothing: the table's backbone is resnet50
    assert "  resnet101 counted at SEF-ResNet-50's rate, not its own\n" in said


def test_the_rows_left_out_are_told_apart(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "table3", "--dry-run", "--only", "plain", "sef"]) == 0
    out = capsys.readouterr().out  # was 3 rows as 9 items: "λ = 0, γ = 0, φ = 1, λ = 0.05, ..."
    assert (
        "not in --only: λ = 0, γ = 0, φ = 1; λ = 0.05, γ = 0.05, φ = 0; λ = 0.05, γ = 0.05, φ = 1\n"
        in out
    )


def test_a_dry_run_says_when_the_overrides_change_the_recipe(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    same = ["--set", "data.workers=2"]  # where and how fast, not what: still the recipe
    assert main(["reproduce", "table2", "--dry-run", "--only", "sef", *same]) == 0
    assert "recipe" not in capsys.readouterr().out
    assert main(["reproduce", "table2", "--dry-run", *same, "--set", "optim.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "\nnot the paper's recipe (optim.epochs=2): its accuracies are not the paper's\n" in out


def test_the_page_names_only_the_overrides_that_change_the_recipe() -> None:
    from sef.reproduce.plan import create_plan
    from sef.reproduce.tables import markdown

    same = ["data.cache=auto", "data.workers=2", "run.tensorboard=false"]
    same += ["run.device=cpu", "model.weights=IMAGENET1K_V1"]  # the presets' own weights
    plan = create_plan("table2", {}, overrides=same, dry_run=True)
    page = markdown(plan, {}, written="today")  # said they "change the paper's recipe"
    assert "The runs follow the paper's recipe as sef's presets hold it." in page
    plan = create_plan("table2", {}, overrides=[*same, "optim.epochs=1"], dry_run=True)
    page = markdown(plan, {}, written="today")
    assert "**These runs change the paper's recipe** (`optim.epochs=1`)" in page


def test_the_page_says_when_the_runs_take_each_batch_in_micro_batches() -> None:
    from sef.reproduce.plan import create_plan
    from sef.reproduce.tables import markdown

    plan = create_plan("table2", {}, overrides=["optim.accumulate=4"], dry_run=True)
    page = markdown(plan, {}, written="today")
    assert (
        "The runs follow the paper's recipe as sef's presets hold it. This call trains each "
        in page
    )
    assert (
        "batch of 32 in 4 micro-batches (`optim.accumulate=4`): the recipe's batches, steps and "
        "learning rate, but BatchNorm's statistics are those of 8 images, not 32." in page
    )
    plan = create_plan("table2", {}, dry_run=True)
    assert "micro-batches" not in markdown(plan, {}, written="today")


def test_the_cache_flag_is_the_override_it_stands_for() -> None:
    from sef.cli.reproduce import _overrides

    args = argparse.Namespace(weights="none", cache="auto", overrides=["data.cache=off"])
    assert _overrides(args) == ["model.weights=null", "data.cache=auto", "data.cache=off"]


def test_weights_are_the_file_or_name_given_never_yaml(tmp_path: Path, monkeypatch, capsys):
    from sef.cli.reproduce import _overrides
    from sef.config import parse_overrides

    for weights in ("~", "123", "yes", "IMAGENET1K_V1"):  # ~ was null: every run from scratch
        args = argparse.Namespace(weights=weights, cache=None, overrides=[])
        assert parse_overrides(_overrides(args)) == {"model.weights": weights}
    monkeypatch.chdir(tmp_path)  # --weights "$UNSET" trained every run from scratch
    with pytest.raises(SystemExit) as stop:
        main(["reproduce", "table2", "--dry-run", "--weights", ""])
    error = capsys.readouterr().err.splitlines()[-1]
    assert stop.value.code == 2 and error == (
        "sef reproduce: error: argument --weights: empty; give IMAGENET1K_V1, a weights file "
        "or none"
    )


def test_dry_run_counts_what_a_folder_already_holds(roots, tmp_path: Path, capsys) -> None:
    arguments = ["reproduce", "table2", *_data(roots, "dogs"), "--out", str(tmp_path), *TOY, *FAST]
    assert main([*arguments, "--only", "maxent"]) == 0
    capsys.readouterr()
    assert main([*arguments, "--dry-run", "--images-per-second", "0.01"]) == 0
    out = capsys.readouterr().out
    runs = {line.split("  ")[1].strip(): line.split() for line in out.splitlines()[2:5]}
    assert runs["sef: MaxEnt-CNN on Dogs"][-3:] == ["done", "1/1", "0.00"]
    assert runs["sef: SEF on Dogs"][-2:] == ["new", "0.42"]  # (9 + 6) images at 0.01 images/s
    assert "estimate: 0.8 GPU hours left of 1.2" in out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--data", "birds=."], "--data names unknown dataset 'birds'; the paper's datasets are"),
        (["--data", "cub"], "--data 'cub' must look like NAME=ROOT"),
        (["--data", "cub=nowhere"], "--data cub=nowhere: nowhere does not exist"),
        ([], "give at least one dataset, e.g. --data cub="),
        (
            ["--data", "cub=.", "--only", "groups-only"],
            "--only 'groups-only' is not a row of table2",
        ),
        # the root of another dataset (Cars' given as CUB's): which --data is wrong
        (["--data", "cub=."], "--data cub=.: images.txt not found in ."),
        (
            ["--dry-run", "--images-per-second", "0"],
            "--images-per-second must be a positive number",
        ),
        # made every estimate and ETA 0 hours
        (
            ["--dry-run", "--images-per-second", "inf"],
            "--images-per-second must be a positive number, not inf",
        ),
        (["--dry-run", "--set", "optim.epochz=3"], "unknown config key 'epochz'"),
        # both were replaced by the plan's without a word
        (
            ["--dry-run", "--set", "run.out=elsewhere"],
            "--set run.out does not apply here: give --out DIR",
        ),
        (
            ["--dry-run", "--set", "data.root=/data"],
            "--set data.root does not apply here: give --data NAME=ROOT",
        ),
        # trained another dataset under the column's name (the demo as Birds)
        (
            ["--dry-run", "--set", "data.dataset=demo"],
            "--set data.dataset does not apply here: give --data NAME=ROOT",
        ),
    ],
)
def test_bad_input_stops_in_one_line(arguments, message, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "table2", *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith("sef reproduce: error: ") and message in error, error
    assert error.count("\n") == 1 and not (tmp_path / "runs").exists()


def test_a_folder_trained_with_other_settings_is_refused(
    cub_root: Path, tmp_path: Path, capsys
) -> None:
    arguments = ["reproduce", "table3", "--data", f"cub={cub_root}", "--only", "plain"]
    assert main([*arguments, *TOY, *FAST, "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main([*arguments, *TOY, *FAST, "--set", "optim.lr=0.1", "--out", str(tmp_path)]) == 2
    result = capsys.readouterr()
    assert result.out == "" and result.err.startswith("sef reproduce: error: ")
    assert "was trained with optim.lr=0.01, but this reproduction asks for 0.1" in result.err
    assert result.err.count("\n") == 1


@pytest.mark.slow
def test_a_folder_of_another_sef_version_is_refused_naming_it(tmp_path: Path, monkeypatch):
    import sef.checkpoint
    from sef.checkpoint import save_checkpoint
    from sef.config import apply_values, config_to_dict, resolve_config
    from sef.errors import ConfigError
    from sef.reproduce.state import read_state

    config = apply_values(resolve_config("cub-resnet50"), {"run.out": str(tmp_path)})
    saved = config_to_dict(config)
    saved["optim"]["new_knob"] = 3  # a key this sef does not know
    monkeypatch.setattr(sef.checkpoint, "__version__", "9.0.0")
    state = {"model": {}, "config": saved, "classes": ["a"], "epoch": 1, "metrics": {}}
    save_checkpoint(tmp_path / "last.pt", state)
    # said only "unknown config key 'new_knob' in section 'optim'": not which folder, nor why
    with pytest.raises(
        ConfigError, match=f"{tmp_path / 'last.pt'} was written by sef 9.0.0 with a config this sef"
    ) as error:
        read_state(config)
    assert "(unknown config key 'new_knob'" in str(error.value)
    assert str(error.value).endswith("; reproduce with that sef, or give another out folder")


def test_a_folder_of_another_sef_version_trained_otherwise_names_that_version(
    tmp_path: Path, monkeypatch
) -> None:
    """The same --set as before, and a value another sef's preset gave: told to give the same
    options, which the user had."""
    import sef.checkpoint
    from sef.checkpoint import save_checkpoint
    from sef.config import apply_values, config_to_dict, resolve_config
    from sef.errors import ConfigError
    from sef.reproduce.state import read_state
    from sef.version import __version__

    config = apply_values(resolve_config("cub-resnet50"), {"run.out": str(tmp_path)})
    saved = config_to_dict(config)
    saved["optim"]["momentum"] = 0.8  # that sef's recipe
    monkeypatch.setattr(sef.checkpoint, "__version__", "0.0.9")
    state = {"model": {}, "config": saved, "classes": ["a"], "epoch": 1, "metrics": {}}
    save_checkpoint(tmp_path / "last.pt", state)
    with pytest.raises(ConfigError) as error:
        read_state(config)
    assert "asks for 0.9 (its run was written by sef 0.0.9 with torch " in str(error.value)
    assert f"; this is sef {__version__}); give the same overrides as before, or another out " in (
        str(error.value)
    )
    with said_to_command(), pytest.raises(ConfigError) as error:  # `sef reproduce`'s user
        read_state(config)
    assert str(error.value).endswith(
        "; give the same --weights and --set as before, or another --out"
    )


@pytest.mark.parametrize("epoch", [1, 50])
def test_a_folder_whose_last_pt_holds_weights_only_is_refused(tmp_path: Path, epoch: int):
    """best.pt copied as last.pt: at the last epoch it stopped in KeyError 'history', and before
    it the dry run counted a resume that the run then refused."""
    from sef.checkpoint import save_checkpoint
    from sef.config import apply_values, config_to_dict, resolve_config
    from sef.errors import CheckpointError
    from sef.reproduce.state import read_state

    config = apply_values(resolve_config("cub-resnet50"), {"run.out": str(tmp_path)})
    state = {"model": {}, "config": config_to_dict(config), "classes": ["a"], "epoch": epoch}
    save_checkpoint(tmp_path / "last.pt", state | {"metrics": {}})
    with pytest.raises(CheckpointError) as error:
        read_state(config)
    assert str(error.value) == (
        f"{tmp_path / 'last.pt'} holds weights only (like best.pt), not how its run went; put "
        f"the run's own last.pt back, or move {tmp_path} away to train the run again"
    )


def test_a_folder_holding_others_records_is_refused_before_any_run_trains(tmp_path: Path):
    """The dry run counted it new, and a call trained every row before it, then stopped there;
    so with a lock no run can take."""
    from sef.config import apply_values, resolve_config
    from sef.errors import OutputError
    from sef.reproduce.state import NEW, read_state

    config = apply_values(resolve_config("cub-resnet50"), {"run.out": str(tmp_path)})
    assert read_state(config).kind == NEW
    (tmp_path / "metrics.jsonl").write_text('{"mine": 1}\n')
    with pytest.raises(OutputError) as error:
        read_state(config)
    assert str(error.value) == (
        f"cannot write {tmp_path / 'metrics.jsonl'}: no sef run wrote it, and this one would "
        f"replace it; move it away, or give another out folder"
    )
    (tmp_path / ".sef-lock").symlink_to(tmp_path / "metrics.jsonl")  # no run can take it
    with pytest.raises(OutputError) as error:
        read_state(config)
    assert str(error.value) == (
        f"{tmp_path / '.sef-lock'} is a link to {tmp_path / 'metrics.jsonl'}, not a run's lock "
        f"file; remove it (no run holds it)"
    )


def test_a_folder_whose_last_pt_is_cut_short_says_how_to_train_the_run_again(tmp_path: Path):
    """It said only 'use a whole copy': a reproduction's user may have none."""
    from sef.checkpoint import save_checkpoint
    from sef.config import apply_values, config_to_dict, resolve_config
    from sef.errors import IncompleteCheckpoint
    from sef.reproduce.state import read_state

    config = apply_values(resolve_config("cub-resnet50"), {"run.out": str(tmp_path)})
    state = {"model": {}, "config": config_to_dict(config), "classes": ["a"], "epoch": 1}
    save_checkpoint(tmp_path / "last.pt", state | {"metrics": {}})
    whole = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(whole[: len(whole) // 2])  # a copy that did not finish
    with pytest.raises(IncompleteCheckpoint) as error:
        read_state(config)
    assert str(error.value).endswith(
        f"; use a whole copy, or move {tmp_path} away to train the run again"
    )


def test_a_folder_whose_last_pt_is_no_checkpoint_says_how_to_train_the_run_again(tmp_path):
    """It said "pass a last.pt or best.pt written by `sef train`": the user passed none."""
    from sef.config import apply_values, resolve_config
    from sef.errors import CheckpointError
    from sef.reproduce.state import read_state

    config = apply_values(resolve_config("cub-resnet50"), {"run.out": str(tmp_path)})
    (tmp_path / "last.pt").write_text("notes\n")
    with pytest.raises(CheckpointError) as error:
        read_state(config)
    assert str(error.value) == (
        f"{tmp_path / 'last.pt'} is not a checkpoint: it is a text file, not the zip archive "
        f"torch.save writes; move {tmp_path} away to train the run again, or give another out "
        f"folder"
    )


def test_a_row_folder_that_is_a_file_is_refused_by_the_dry_run(tmp_path: Path, capsys) -> None:
    """The dry run counted it new, and the call stopped only when the row's turn came; so a
    last.pt that is a folder, where no run can write its checkpoint."""
    (tmp_path / "cub-resnet50").write_text("")
    arguments = ["reproduce", "table2", "--dry-run", "--out", str(tmp_path)]
    assert main(arguments) == 2
    assert capsys.readouterr().err == (
        f"sef reproduce: error: {tmp_path / 'cub-resnet50'} is a file, not a run's folder; move "
        f"it away, or give another --out\n"
    )
    (tmp_path / "cub-resnet50").unlink()
    (tmp_path / "cub-resnet50" / "last.pt").mkdir(parents=True)
    assert main(arguments) == 2
    assert capsys.readouterr().err == (
        f"sef reproduce: error: {tmp_path / 'cub-resnet50' / 'last.pt'} is a folder, not a "
        f"checkpoint; move {tmp_path / 'cub-resnet50'} away to train the run again, or give "
        f"another --out\n"
    )


def test_a_folder_whose_checkpoint_config_lacks_a_section_is_refused(tmp_path: Path) -> None:
    """It was compared against defaults in the section's place, as a resume no longer is."""
    from sef.checkpoint import save_checkpoint
    from sef.config import apply_values, config_to_dict, resolve_config
    from sef.errors import CheckpointError
    from sef.reproduce.state import read_state

    config = apply_values(resolve_config("cub-resnet50"), {"run.out": str(tmp_path)})
    saved = config_to_dict(config)
    del saved["data"]
    state = {"model": {}, "config": saved, "classes": ["a"], "epoch": 1, "metrics": {}}
    save_checkpoint(tmp_path / "last.pt", state)
    with pytest.raises(CheckpointError) as error:
        read_state(config)
    assert str(error.value) == (
        f"checkpoint {tmp_path / 'last.pt'} was edited: its config lacks the data section that "
        f"every checkpoint sef writes holds; use the checkpoint as `sef train` wrote it, or give "
        f"another out folder"
    )


def test_torchrun_trains_each_run_on_all_processes(cub_root: Path, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "sef.cli", "reproduce", "table3", "--data", f"cub={cub_root}", "--only", "plain",
        "sef", "--set", "optim.batch_size=4", "--set", "run.device=cpu", *TOY, *FAST,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("table3: 2 runs: 0 reused, 0 resumed, 2 trained") == 1
    assert result.stdout.count("[2/2] done") == 1 and result.stdout.count("on 2 x cpu") == 2
    lines = _rows(tmp_path / "runs/reproduce/table3.csv")
    assert sum(1 for line in lines if line["source"] == "sef" and line["state"] == "1/1") == 2


@pytest.mark.slow
def test_torchrun_says_a_run_all_processes_refuse_once(cub_root: Path, tmp_path: Path) -> None:
    # the message was reworded for `sef reproduce` and each process printed it
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "sef.cli", "reproduce", "table2", "--data", f"cub={cub_root}", "--only", "plain",
        "--set", "optim.batch_size=5", "--set", "run.device=cpu", *TOY, *FAST,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert result.returncode != 0
    refusal = "cub-resnet50-plain): optim.batch_size=5 must divide evenly over 2 processes"
    assert result.stderr.count(refusal) == 1, result.stderr[-3000:]


# `sef reproduce` that, where a run would start, has torchrun send it SIGTERM
STOPPED_OUTSIDE_A_RUN = """
import os, signal, sys, time
from sef.cli import main
from sef.reproduce import runner
def stopped(*args, **kwargs):
    if os.environ["RANK"] == "0":
        os.kill(os.getppid(), signal.SIGTERM)  # torchrun, which passes it to both processes
    time.sleep(60)
runner.fit = stopped
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_torchrun_says_a_stop_between_runs_once(cub_root: Path, tmp_path: Path) -> None:
    # outside a run no process was marked as not the one to say it: each said "interrupted"
    script = tmp_path / "stopping.py"
    script.write_text(STOPPED_OUTSIDE_A_RUN)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        str(script), "reproduce", "table3", "--data", f"cub={cub_root}", "--only", "plain", "sef",
        "--set", "optim.batch_size=4", "--set", "run.device=cpu", *TOY, *FAST,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert result.returncode != 0 and "[1/2] train " in result.stdout
    assert result.stderr.count("sef reproduce: interrupted by SIGTERM") == 1, result.stderr[-3000:]


def test_the_pace_of_a_slow_cpu_is_not_shown_as_0_img_s() -> None:
    """A CPU's 0.43 images/s at 448 px: the ETA line said 'at 0 img/s measured'."""
    from sef.reproduce.estimate import Speed
    from sef.reproduce.runner import _Pace

    pace = _Pace(Speed(0.43, "--images-per-second"), processes=1)
    assert str(pace) == "0.43 img/s assumed"
    pace.observe(images=30, seconds=70)
    assert str(pace) == "0.43 img/s measured"
