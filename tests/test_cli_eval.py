"""`sef eval`: metrics and the per-image CSV from a checkpoint alone; unsafe files refused."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sef.datasets
from sef.checkpoint import load_checkpoint, save_checkpoint
from sef.cli import main
from sef.config import apply_overrides, resolve_config
from sef.engine import fit
from sef.engine.data import training_change
from sef.errors import DataError
from sef.trained import load_trained_model


@pytest.fixture
def trained(folder_root: Path, tmp_path: Path) -> Path:
    """A 1-epoch model trained on the tiny class-folder set; returns its best.pt."""
    overrides = [
        "data.dataset=folder", f"data.root={folder_root}", "data.image_size=32",
        "data.workers=0", "optim.epochs=1", "optim.batch_size=4", f"run.out={tmp_path / 'run'}",
    ]  # fmt: skip
    fit(apply_overrides(resolve_config("demo"), overrides), progress=False)
    return tmp_path / "run" / "best.pt"


@pytest.mark.slow
def test_eval_prints_metrics_and_writes_per_image_csv(trained: Path, folder_root: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "sef.cli", "eval", "--checkpoint", str(trained), "--no-progress"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    csv_path = trained.with_name("best-test-predictions.csv")
    rows = list(csv.DictReader(csv_path.open()))
    assert list(rows[0]) == [
        "path", "label", "prediction", "correct", "label_name", "prediction_name"
    ]  # fmt: skip
    assert len(rows) == 6 and {Path(r["path"]).parent.parent for r in rows} == {
        folder_root / "test"
    }
    for row in rows:
        assert row["label_name"] == Path(row["path"]).parent.name
        assert row["correct"] == str(int(row["label"] == row["prediction"]))
    top1 = sum(int(r["correct"]) for r in rows) / len(rows)
    assert f"top-1              {top1:.4f}" in result.stdout
    assert f"predictions        {csv_path}" in result.stdout
    assert "(6 images)" in result.stdout and "group heads top-1" in result.stdout
    record = json.loads((trained.parent / "metrics.jsonl").read_text().splitlines()[-1])
    assert (  # the same images through the same model as training's evaluation of epoch 1
        f"  group correlation  within {record['eval_corr_within']:.3f}, between "
        f"{record['eval_corr_between']:.3f} (mean channel cosine)"
    ) in result.stdout


def test_eval_json_other_split_and_moved_data(
    trained: Path, folder_root: Path, tmp_path: Path, capsys
) -> None:
    moved = shutil.copytree(folder_root, tmp_path / "moved")
    shutil.rmtree(folder_root)
    output = tmp_path / "train-preds.csv"
    arguments = ["eval", "--checkpoint", str(trained), "--data-root", str(moved)]
    arguments += ["--split", "trainval", "--json", "--predictions", str(output), "--no-progress"]
    assert main(arguments) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 12 and summary["split"] == "trainval"
    assert len(summary["group_top1"]) == load_trained_model(trained).model.groups
    assert len(output.read_text().splitlines()) == 13


def test_eval_refuses_pickled_code_and_missing_files(tmp_path: Path, capsys) -> None:
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"model": Payload(), "config": {}, "classes": [], "epoch": 1, "metrics": {}}, evil)
    assert main(["eval", "--checkpoint", str(evil)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"sef eval: error: refused to load checkpoint {evil}")
    assert "Traceback" not in error and not marker.exists()
    assert main(["eval", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "none.pt does not exist" in capsys.readouterr().err


def test_no_progress_reaches_the_demo_set_generation(
    trained_demo_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    arguments = ["eval", "--checkpoint", str(trained_demo_checkpoint), "--no-progress", "--json"]
    assert main([*arguments, "--data-root", str(tmp_path / "new")]) == 0
    assert capsys.readouterr().err == ""  # no "generating demo set" bar, no "written to" line


def test_a_plain_runs_group_heads_are_said_untrained_not_scored(
    demo_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    """Their chance-level top-1 (a plain run, loss.gamma = 0, trains none) read as a result."""
    state = load_checkpoint(demo_checkpoint)
    state["config"]["loss"] = {**state["config"].get("loss", {}), "gamma": 0.0}
    save_checkpoint(tmp_path / "plain.pt", state)
    assert main(["eval", "--checkpoint", str(tmp_path / "plain.pt"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert (
        "  group heads top-1  untrained: a plain run (loss.gamma = 0) trains no group head\n" in out
    )
    assert main(["eval", "--checkpoint", str(demo_checkpoint), "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["group_heads_trained"] is True and len(summary["group_top1"]) == 2


def test_eval_with_tta_and_a_per_class_report(
    demo_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    """In this process: test_eval_prints_metrics_and_writes_per_image_csv runs `sef eval` as a
    user does, a fresh process that costs seconds."""
    csv_path, report = tmp_path / "preds.csv", tmp_path / "report"
    code = main(["eval", "--checkpoint", str(demo_checkpoint), "--tta", "flip+crops", "--report",
                 str(report), "--predictions", str(csv_path), "--no-progress"])  # fmt: skip
    result = capsys.readouterr()
    assert code == 0, result.err
    rows = list(csv.DictReader(csv_path.open()))
    assert list(rows[0])[-3:] == ["tta_prediction", "tta_correct", "tta_prediction_name"]
    plain = sum(int(r["correct"]) for r in rows) / len(rows)
    tta = sum(int(r["tta_correct"]) for r in rows) / len(rows)
    assert f"top-1              {plain:.4f}   with TTA flip+crops: {tta:.4f}" in result.out
    per_class = list(csv.DictReader((report / "per_class.csv").open()))
    assert len(per_class) == 8 and sum(int(r["support"]) for r in per_class) == len(rows)
    accuracies = [float(r["accuracy"]) for r in per_class]
    assert accuracies == sorted(accuracies) and "group2_accuracy" in per_class[0]
    assert f"worst classes (of 8):\n  {accuracies[0]:.3f}  {per_class[0]['name']}" in result.out
    pairs = list(csv.DictReader((report / "confused_pairs.csv").open()))
    wrong = sum(r["label"] != r["prediction"] for r in rows)
    assert sum(int(p["count"]) for p in pairs) == wrong
    assert (report / "confusion.png").stat().st_size > 0
    assert json.loads((report / "report.json").read_text())["summary"]["tta"] == "flip+crops"


def test_eval_refuses_unknown_tta_and_unwritable_report(
    demo_checkpoint: Path, tmp_path: Path, capsys
):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    arguments = ["eval", "--checkpoint", str(demo_checkpoint), "--no-progress"]
    assert main([*arguments, "--report", str(blocked / "report")]) == 2
    assert capsys.readouterr().err.startswith(
        f"sef eval: error: cannot write {blocked / 'report'}: "
    )
    (tmp_path / "confusion.png").write_text("my own figure")  # before the evaluation: none
    assert main([*arguments, "--report", str(tmp_path)]) == 2
    assert (tmp_path / "confusion.png").read_text() == "my own figure"
    assert "no earlier sef report in" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_code:
        main([*arguments, "--tta", "rotate"])
    assert exit_code.value.code == 2


@pytest.mark.parametrize("option", ["--predictions", "--report"])
def test_a_dash_is_no_file_name(demo_checkpoint: Path, tmp_path: Path, monkeypatch, capsys, option):
    """Not stdout, as in Unix tools: before, a file (or folder) named - appeared."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_code:
        main(["eval", "--checkpoint", str(demo_checkpoint), option, "-"])
    assert exit_code.value.code == 2 and os.listdir(tmp_path) == []
    said = capsys.readouterr().err.splitlines()[-1]
    assert said.endswith(f"argument {option}: - (stdin or stdout) is not read or written here; "
                         "give a file or folder name (one named - is ./-)")  # fmt: skip


def test_a_default_predictions_file_that_cannot_be_written_points_to_predictions(
    demo_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(demo_checkpoint.read_bytes())
    (tmp_path / "best-test-predictions.csv").mkdir()  # as a folder the run cannot write
    assert main(["eval", "--checkpoint", str(checkpoint), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"sef eval: error: cannot write {tmp_path / 'best-test-predictions.csv'}: it is a "
        f"folder; pass --predictions FILE\n"
    )
    given = ["--predictions", str(tmp_path / "best-test-predictions.csv")]
    assert main(["eval", "--checkpoint", str(checkpoint), "--no-progress", *given]) == 2
    assert capsys.readouterr().err.endswith("it is a folder; choose a file name\n")


def test_a_csvs_relative_image_root_is_recorded_absolute_too(
    csv_root: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(csv_root.parent)
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    train = ["train", "--set", "data.dataset=csv", "--data-root", f"{csv_root.name}/labels.csv",
             "--set", f"data.options.image_root={csv_root.name}", "--out", str(out),
             "--image-size", "32", "--batch-size", "4", "--workers", "0",
             "--no-progress"]  # fmt: skip
    assert main([*train, "--epochs", "1"]) == 0
    assert main([*train, "--epochs", "2", "--resume"]) == 0  # the same places, spelled as before
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["eval", "--checkpoint", str(out / "best.pt"), "--no-progress"]) == 0
    options = load_checkpoint(out / "best.pt")["config"]["data"]["options"]
    assert Path(options["image_root"]) == csv_root.resolve()


def test_a_relative_data_root_is_recorded_absolute_so_eval_and_resume_work_from_elsewhere(
    folder_root: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(folder_root.parent)
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    train = ["train", "--set", "data.dataset=folder", "--data-root", folder_root.name, "--out",
             str(out), "--image-size", "32", "--batch-size", "4", "--workers", "0",
             "--no-progress"]  # fmt: skip
    assert main([*train, "--epochs", "1"]) == 0
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["eval", "--checkpoint", str(out / "best.pt"), "--no-progress"]) == 0
    resume = ["train", "--resume", "--out", str(out), "--no-progress"]
    assert main([*resume, "--epochs", "2"]) == 0
    state = load_checkpoint(out / "last.pt")
    assert Path(state["config"]["data"]["root"]) == folder_root.resolve()

    state["config"]["data"]["root"] = folder_root.name  # as an older run recorded it
    for name in ("last.pt", "best.pt"):
        save_checkpoint(out / name, state)
    config = out / "config.yaml"  # in its config.yaml too
    config.write_text(config.read_text().replace(str(folder_root.resolve()), folder_root.name))
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "best.pt"), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"sef eval: error: the data root {folder_root.name} that the checkpoint names does not "
        f"exist; pass --data-root with the folder of its data\n"
    )
    assert main([*resume, "--epochs", "3"]) == 2  # a resume says the same, not how to lay it out
    assert capsys.readouterr().err == (
        f"sef train: error: the data root {folder_root.name} that {out / 'last.pt'} names does "
        f"not exist; pass --data-root with the folder of its data\n"
    )
    assert main([*resume, "--epochs", "3", "--data-root", str(folder_root)]) == 0


def test_an_image_name_that_is_not_utf8_is_written_as_its_bytes(
    folder_root: Path, tmp_path: Path, capsys
) -> None:
    first = sorted((folder_root / "test").iterdir())[0]
    image = next(first.iterdir())
    odd = os.path.join(os.fsencode(first), b"caf\xe9.png")  # a Latin-1 name, e.g. from a zip
    os.rename(image, odd)
    overrides = [
        "data.dataset=folder", f"data.root={folder_root}", "data.image_size=32",
        "data.workers=0", "optim.epochs=1", "optim.batch_size=4", f"run.out={tmp_path / 'run'}",
    ]  # fmt: skip
    fit(apply_overrides(resolve_config("demo"), overrides), progress=False)  # writes its CSV
    out = tmp_path / "p.csv"
    argv = ["eval", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--no-progress"]
    assert main([*argv, "--predictions", str(out)]) == 0
    with open(out, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        paths = [os.fsencode(row["path"]) for row in csv.DictReader(handle)]
    assert odd in paths  # the file's own bytes: the path opens again
    assert out.read_bytes() == (tmp_path / "run" / "best-test-predictions.csv").read_bytes()


def test_data_without_a_test_split_points_to_the_split_the_run_evaluated_on(
    tmp_path: Path, write_image, capsys
) -> None:
    root = tmp_path / "birds"
    for split, count in (("train", 4), ("val", 2)):
        for colour, name in (((200, 30, 30), "red"), ((30, 30, 200), "blue")):
            for i in range(count):
                write_image(root / split / name / f"{i}.png", (40, 40), colour)
    overrides = [
        "data.dataset=folder", f"data.root={root}", "data.image_size=32", "data.workers=0",
        "data.train_split=train", "data.eval_split=val", "optim.epochs=1", "optim.batch_size=4",
        f"run.out={tmp_path / 'run'}",
    ]  # fmt: skip
    fit(apply_overrides(resolve_config("demo"), overrides), progress=False)
    checkpoint = tmp_path / "run" / "best.pt"
    assert main(["eval", "--checkpoint", str(checkpoint), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"sef eval: error: {root} declares no test images; add them or leave out every split; "
        f"this run evaluated on its val split (--split val)\n"
    )
    assert main(["eval", "--checkpoint", str(checkpoint), "--split", "val", "--no-progress"]) == 0


@pytest.mark.parametrize("record", ["config.yaml", "metrics.jsonl"])
def test_predictions_never_replace_a_record_the_run_resumes_from(
    demo_checkpoint: Path, tmp_path: Path, record: str, capsys
) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(demo_checkpoint, folder / "last.pt")
    (folder / record).write_text("the run's\n")
    target = folder / record
    argv = ["eval", "--checkpoint", str(folder / "last.pt"), "--predictions", str(target)]
    assert main([*argv, "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"sef eval: error: cannot write {target}: it is the {record} of the run in {folder}; "
        f"choose another file\n"
    )
    assert target.read_text() == "the run's\n"


def test_running_out_of_memory_says_to_lower_the_batch_size_in_one_line(
    demo_checkpoint: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.53 GiB.")

    monkeypatch.setattr("sef.engine.evaluation.to_device", out_of_memory)
    arguments = ["eval", "--checkpoint", str(demo_checkpoint), "--batch-size", "600"]
    arguments += ["--predictions", str(tmp_path / "p.csv"), "--workers", "0", "--no-progress"]
    assert main(arguments) == 2
    assert capsys.readouterr().err == (
        "sef eval: error: out of cpu memory with batches of 600 images; evaluate with a lower "
        "--batch-size\n"
    )


def test_a_checkpoint_whose_outputs_are_not_finite_is_said_to_be_broken(
    demo_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    """A model saved with overflowed weights predicted chance accuracy without a word."""
    state = load_checkpoint(demo_checkpoint)
    state["model"]["head.weight"].fill_(float("nan"))
    broken = tmp_path / "run" / "last.pt"
    save_checkpoint(broken, state)
    arguments = ["eval", "--checkpoint", str(broken), "--workers", "0", "--no-progress"]
    assert main(arguments) == 0  # the numbers are this checkpoint's: others' scripts go on
    assert capsys.readouterr().err == (
        "sef eval: warning: the model's outputs are not finite (NaN or infinite) on 16 of 16 test "
        f"images, so the predictions of {broken} mean nothing: its weights or BatchNorm "
        "statistics overflowed in training; evaluate an earlier checkpoint of its run, or train "
        "again with a lower optim.lr or --amp none\n"
    )


def test_a_split_without_images_is_refused_not_scored_nan(
    trained: Path, folder_root: Path, tmp_path: Path, capsys
) -> None:
    for extra in (folder_root / "train").rglob("*[1-9].png"):  # cat0, dog0, fox0 are left
        extra.unlink()
    arguments = ["eval", "--checkpoint", str(trained), "--split", "val", "--workers", "0"]
    arguments += ["--predictions", str(tmp_path / "p.csv"), "--no-progress"]
    assert main(arguments) == 2  # val: held out from the classes with two training images
    assert capsys.readouterr().err == (
        f"sef eval: error: the val split of {folder_root} holds no images: there is nothing to "
        f"evaluate on; a held-out split takes images only from classes with two or more\n"
    )
    assert not (tmp_path / "p.csv").exists()


def test_a_split_the_model_trained_on_is_warned_of(
    demo_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    arguments = ["eval", "--checkpoint", str(demo_checkpoint), "--split", "val", "--workers", "0"]
    arguments += ["--predictions", str(tmp_path / "p.csv"), "--no-progress", "--json"]
    assert main(arguments) == 0  # val is carved out of trainval, the run's training split
    assert capsys.readouterr().err == (
        "sef eval: warning: the val split shares images with trainval, which this model trained "
        "on: its accuracy is not on held-out images; the run evaluated on --split test\n"
    )


def test_an_unfinished_runs_last_checkpoint_is_warned_of(
    unfinished_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    """A last.pt of a run stopped at epoch 1 of 50 was scored as if it were the trained model."""
    last = unfinished_checkpoint
    arguments = ["eval", "--checkpoint", str(last), "--workers", "0", "--no-progress", "--json"]
    assert main([*arguments, "--predictions", str(tmp_path / "p.csv")]) == 0
    assert capsys.readouterr().err == (
        f"sef eval: warning: {last} is the last.pt of an unfinished run (epoch 1 of 50): the "
        "accuracy is of its model as it was then\n"
    )


@pytest.mark.parametrize(
    ("classes", "difference"),
    [
        (lambda names: names[::-1], "the same classes in another order"),
        (lambda names: [*names, "zebra"], "1 of them missing, e.g. zebra"),
        (lambda names: ["zebra", *names[1:]], "1 not among them, e.g. {0}"),
    ],
)
def test_data_of_other_classes_is_refused_saying_how_they_differ(
    demo_checkpoint: Path, classes, difference: str
) -> None:
    trained = load_trained_model(demo_checkpoint)
    found, trained.classes = list(trained.classes), classes(list(trained.classes))
    with pytest.raises(DataError, match=r"trained on \(([^)]*)\); pass its own data$") as refused:
        trained.dataset("test", progress=False)
    assert f"({difference.format(found[0])})" in str(refused.value)


def test_predictions_never_replace_a_file_of_something_else(
    demo_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    labels = tmp_path / "labels.csv"  # the data's own labels, given by mistake
    labels.write_text("path,label\nimg/0.jpg,cat\n")
    argv = ["eval", "--checkpoint", str(demo_checkpoint), "--predictions", str(labels)]
    assert main([*argv, "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"sef eval: error: cannot write {labels}: it holds something other than predictions sef "
        f"wrote, which this would replace; choose another file\n"
    )
    assert labels.read_text() == "path,label\nimg/0.jpg,cat\n"


def test_predictions_never_take_the_name_of_another_checkpoints(
    demo_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    (tmp_path / "best.pt").touch()  # beside it, the run's best.pt and its predictions
    target = tmp_path / "best-test-predictions.csv"
    argv = ["eval", "--checkpoint", str(demo_checkpoint), "--predictions", str(target)]
    assert main([*argv, "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"sef eval: error: cannot write {target}: it names the predictions of best.pt on test; "
        f"choose another file\n"
    )


def _flat_run(root: Path, out: Path, write_image) -> list[str]:
    """Own data without splits (3 classes of 10 images, ROOT/<class>/) and a 1-epoch run of it in
    ``out``; the `sef train` words that resume it."""
    for c, name in enumerate(("ant", "bee", "fly")):
        for i in range(10):
            write_image(root / name / f"{i}.png", (32, 32), (80 * c, 20 * i, 9))
    train = ["train", "--set", "data.dataset=folder", "--data-root", str(root), "--out", str(out),
             "--image-size", "32", "--batch-size", "4", "--workers", "0",
             "--no-progress"]  # fmt: skip
    assert main([*train, "--epochs", "1"]) == 0
    return ["train", "--resume", "--out", str(out), "--no-progress"]


def _tested(checkpoint: Path, tmp_path: Path) -> list[str]:
    """The images `sef eval` scores as the checkpoint's test split."""
    predictions = tmp_path / "p.csv"
    argv = ["eval", "--checkpoint", str(checkpoint), "--workers", "0", "--no-progress", "--json"]
    assert main([*argv, "--predictions", str(predictions)]) == 0
    return sorted(row["path"] for row in csv.DictReader(predictions.open()))


def test_images_added_under_a_run_are_told_of_and_move_no_other_image(
    tmp_path: Path, write_image, capsys
) -> None:
    root, out = tmp_path / "bugs", tmp_path / "run"
    resume = _flat_run(root, out, write_image)
    trained = len(sef.datasets.load("folder", root, "trainval"))
    state = load_checkpoint(out / "best.pt")
    assert state["config"]["data"]["holdout"] == "stable" and state["train_images"] == trained
    tested = _tested(out / "best.pt", tmp_path)
    capsys.readouterr()
    for i in range(10, 14):  # photos added to a class after training
        write_image(root / "bee" / f"{i}.png", (32, 32), (80, 20, 9 * i))
    assert set(tested) <= set(_tested(out / "best.pt", tmp_path))  # each still tested
    now = len(sef.datasets.load("folder", root, "trainval"))
    changed = (
        f"the training images changed since {{}} was saved: {trained} then, {now} now; the stable "
        f"hold-out (data.holdout=stable) moved no image between training and val or test, save "
        f"perhaps in classes so small that a fallback picks their held-out image"
    )
    assert capsys.readouterr().err == f"sef eval: warning: {changed.format(out / 'best.pt')}\n"
    assert main([*resume, "--epochs", "2"]) == 0
    assert f"note: {changed.format(out / 'last.pt')}\n" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--no-progress"]) == 0
    assert "warning" not in capsys.readouterr().err  # the resumed run recorded what it trained on


def test_a_run_saved_before_the_stable_holdout_keeps_its_ranked_split(
    tmp_path: Path, write_image
) -> None:
    root, out = tmp_path / "bugs", tmp_path / "run"
    resume = _flat_run(root, out, write_image)
    for name in ("last.pt", "best.pt"):  # as sef wrote them before data.holdout
        state = load_checkpoint(out / name)
        del state["config"]["data"]["holdout"], state["train_images"], state["train_fingerprint"]
        save_checkpoint(out / name, state)
    config = out / "config.yaml"
    config.write_text(config.read_text().replace("  holdout: stable\n", ""))
    ranked = sef.datasets.load("folder", root, "test", holdout="ranked")
    assert ranked.samples != sef.datasets.load("folder", root, "test").samples  # unlike stable's
    assert _tested(out / "best.pt", tmp_path) == sorted(path for path, _ in ranked.samples)
    assert main([*resume, "--epochs", "2"]) == 0  # not refused as a change of data.holdout
    assert load_checkpoint(out / "last.pt")["config"]["data"]["holdout"] == "ranked"


def test_a_ranked_run_on_changed_images_is_told_its_split_was_drawn_anew() -> None:
    then, now = {"train_images": 24, "train_fingerprint": "a"}, {"train_images": 26}
    assert training_change(then, {**now, "train_fingerprint": "a"}, "ranked", "x.pt") is None
    assert training_change({}, {**now, "train_fingerprint": "b"}, "ranked", "x.pt") is None
    assert training_change(then, {**now, "train_fingerprint": "b"}, "ranked", "x.pt") == (
        "the training images changed since x.pt was saved: 24 then, 26 now; the ranked hold-out "
        "(data.holdout=ranked) drew val and test anew where they are held out, not declared, so "
        "they may hold images the run trained on: declare a test split (DIR/test/, a split "
        "column) or train a new run, which holds out stably"
    )
