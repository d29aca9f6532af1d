"""`sef viz` as a user runs it: figures written, numbers printed, errors in one line."""

import json
import os
import sys
import tempfile

import pytest
import torch
from conftest import sef_process
from PIL import Image

from sef.cli import main


def _is_png(path):
    with Image.open(path) as image:
        return image.format == "PNG" and image.width > 300 and image.height > 200


@pytest.mark.slow
def test_corr_as_a_user_runs_it(demo_checkpoint):
    result = sef_process(
        "viz", "corr", "--checkpoint", demo_checkpoint, "--images", 5, "--no-progress"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("mean channel correlation between groups over 5 test images (")
    assert lines[1].split() == ["group", "1", "group", "2"]  # the G x G table's header
    assert lines[2].startswith("group 1") and len(lines[2].split()) == 4
    assert _is_png(demo_checkpoint.with_name("corr.png"))  # default: beside the checkpoint


# The other figures run through main(), the function the `sef` script calls, in-process: the
# start-up path is covered above and each extra interpreter costs seconds of torch imports.


def test_cam_on_own_images(demo_checkpoint, tmp_path, write_image, capsys):
    own = write_image(tmp_path / "own bird.jpg", (50, 40))
    out = tmp_path / "figs" / "cam.png"
    assert (
        main(["viz", "cam", "--checkpoint", str(demo_checkpoint), str(own), "--out", str(out)]) == 0
    )
    assert _is_png(out) and str(out) in capsys.readouterr().out


def test_parts_json_report(demo_checkpoint, tmp_path, capsys):
    out = tmp_path / "parts.png"
    argv = ["viz", "parts", "--checkpoint", str(demo_checkpoint), "--out", str(out)]
    assert main([*argv, "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["part_names"] == ["head", "wing", "tail"] and report["images"] == 16
    assert len(report["fractions"]) == len(report["static_fractions"]) == 2
    assert all(sum(r) == pytest.approx(1) for r in report["fractions"])
    assert report["chance_distinctness"] == pytest.approx(2 / 3)
    assert 0 <= report["distinctness"] <= 1 and 0 <= report["static_distinctness"] <= 1
    assert _is_png(out) and report["figure"] == str(out)

    assert main([*argv, "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "static peak" in table and "distinctness" in table and "group 2" in table


def test_corr_says_how_many_images_its_table_is_of(demo_checkpoint, tmp_path, capsys):
    """`--images 5000` of a test split of 800 printed its table as if of 5,000 images."""
    arguments = ["viz", "corr", "--checkpoint", str(demo_checkpoint), "--no-progress"]
    assert main([*arguments, "--images", "5000", "--out", str(tmp_path / "corr.png")]) == 0
    heading = capsys.readouterr().out.splitlines()[0]
    assert heading == (
        "mean channel correlation between groups over all 16 test images, of 5,000 asked "
        "(diagonal: within a group)"
    )


@pytest.mark.parametrize("figure", ["corr", "parts"])
def test_no_progress_reaches_the_demo_set_generation(
    trained_demo_checkpoint, tmp_path, figure, capsys
):
    arguments = ["viz", figure, "--checkpoint", str(trained_demo_checkpoint), "--no-progress"]
    assert main([*arguments, "--data-root", str(tmp_path / "new"), "--images", "4"]) == 0
    said = capsys.readouterr().err.splitlines()  # no "generating demo set" bar, no "written to"
    assert [line for line in said if "feature map is 1 x 1" not in line] == []  # 32 px: 1 x 1


def test_curves_from_a_run_folder(tmp_path, capsys, monkeypatch):
    records = [
        {"epoch": e, "lr": 0.01, "loss_ce": 2 / e, "loss_entropy": -0.1, "loss_distill": 0.1,
         "loss_group": 0.2 / e, "loss_total": 2.2 / e, "train_top1": 0.1 * e, "eval_top1": 0.1 * e,
         "eval_class_mean": 0.1 * e, "eval_group_top1": [0.05 * e, 0.07 * e], "seconds": 1.0}
        for e in range(1, 5)
    ]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for name in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("HOME", str(tmp_path / "file" / "home"))  # no folder can be made there
    assert main(["viz", "curves", str(tmp_path)]) == 0  # in-process: the others cover startup
    said = capsys.readouterr()
    assert _is_png(tmp_path / "curves.png") and "curves.png" in said.out and said.err == ""
    # matplotlib told to keep its settings and fonts in a temporary folder, not to say so itself
    assert sys.platform == "win32" or os.environ["MPLCONFIGDIR"].startswith(
        os.path.join(tempfile.gettempdir(), "sef-")
    )


@pytest.mark.skipif(sys.platform == "win32", reason="matplotlib's own choice of folder there")
def test_matplotlib_is_quieted_before_a_figure_command_imports_it(tmp_path, monkeypatch, capsys):
    # viz corr, cam, parts and eval --report imported matplotlib and only then pointed it at a
    # temporary folder: under a read-only HOME its two warnings were printed all the same
    import importlib

    real, told = importlib.import_module, []

    def imported(name, *args, **options):
        if name == "matplotlib":  # where it was already imported, the folder it would have had
            told.append(os.environ.get("MPLCONFIGDIR"))
        return real(name, *args, **options)

    monkeypatch.setattr(importlib, "import_module", imported)
    for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("HOME", str(tmp_path / "file" / "home"))  # no folder can be made there
    missing = str(tmp_path / "missing.pt")
    for argv in (["viz", "corr"], ["eval", "--report", str(tmp_path / "report")]):
        monkeypatch.delenv("MPLCONFIGDIR", raising=False)
        told.clear()
        assert main([*argv, "--checkpoint", missing]) == 2
        assert "missing.pt" in capsys.readouterr().err
        assert told and None not in told, argv


def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, demo_checkpoint):
    cases = [
        (["viz", "curves", str(tmp_path)], "metrics.jsonl does not exist"),
        (["viz", "corr", "--checkpoint", str(tmp_path / "nope.pt")], "does not exist"),
        (["viz", "cam", "--checkpoint", str(demo_checkpoint), str(tmp_path / "x.jpg")], "x.jpg"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"sef viz {argv[1]}: error:") and message in err, err
        assert "Traceback" not in err and err.count("\n") == 1


@pytest.mark.slow
def test_cam_help_gives_images_one_meaning(demo_checkpoint, tmp_path, capsys):
    """Positional PATHs are image files; --images N is only the number of random test images."""
    result = sef_process("viz", "cam", "--help")
    assert result.returncode == 0 and result.stderr == ""
    assert "IMAGES" not in result.stdout
    assert "[--images N]" in result.stdout and "[PATH ...]" in result.stdout
    assert "random test images to show when no PATH is given" in " ".join(result.stdout.split())
    out = tmp_path / "cam.png"
    shown = ["viz", "cam", "--checkpoint", str(demo_checkpoint), "--images", "2", "--out", str(out)]
    assert main(shown) == 0 and _is_png(out), capsys.readouterr().err


def test_cam_refuses_image_paths_together_with_images_n(
    demo_checkpoint, tmp_path, write_image, capsys
):
    own = write_image(tmp_path / "own.jpg", (50, 40))
    out = tmp_path / "cam.png"
    both = ["viz", "cam", "--checkpoint", str(demo_checkpoint), str(own), "--images", "2"]
    assert main([*both, "--out", str(out)]) == 2 and not out.exists()
    result = capsys.readouterr()
    assert result.out == "" and "--images N shows N random test images" in result.err
    assert len(result.err.strip().splitlines()) == 1


@pytest.mark.parametrize("figure", ["corr", "cam", "parts"])
def test_no_progress_keeps_a_figure_from_a_checkpoint_quiet(
    demo_checkpoint, tmp_path, capsys, figure
):
    from sef.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(demo_checkpoint)
    state["config"]["data"]["root"] = str(tmp_path / "demo")  # its test set drawn afresh
    state["config"]["data"]["image_size"] = 64  # a 2 x 2 map: no 1 x 1 map to warn of
    save_checkpoint(tmp_path / "best.pt", state)
    argv = ["viz", figure, "--checkpoint", str(tmp_path / "best.pt"), "--no-progress"]
    assert main([*argv, "--images", "2", "--out", str(tmp_path / "figure.png")]) == 0
    assert capsys.readouterr().err == ""


def test_cam_draws_an_image_whose_name_is_not_utf8(demo_checkpoint, tmp_path):
    import os

    image = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")  # a Latin-1 name, e.g. from a zip
    Image.new("RGB", (40, 30), (10, 200, 30)).save(image, "PNG")
    out = tmp_path / "cam.png"
    argv = ["viz", "cam", "--checkpoint", str(demo_checkpoint), os.fsdecode(image)]
    assert main([*argv, "--out", str(out)]) == 0 and _is_png(out)


@pytest.mark.parametrize("seed", ["99999999999999999999999", "-1"])
@pytest.mark.parametrize("command", [["viz", "cam"], ["viz", "corr"], ["data", "check", "demo"]])
def test_a_seed_out_of_range_is_a_usage_error_naming_the_option(command, seed, capsys):
    """`sef viz cam --seed 99999999999999999999999` drew images and then said "sef viz: error:
    Overflow when unpacking long long"; `sef data check --seed -1` said "expected non-negative
    integer": neither named the option."""
    checkpoint = [] if command[0] == "data" else ["--checkpoint", "unread.pt"]
    with pytest.raises(SystemExit) as stop:
        main([*command, *checkpoint, "--seed", seed])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert f"argument --seed: must be an integer from 0 to 9223372036854775807, got {seed}" in err


def test_parts_of_one_group_says_why_it_has_no_distinctness(
    demo_checkpoint, tmp_path, monkeypatch, capsys
):
    """A plain network's parts table ended without its distinctness line, and said not why."""
    from sef.parts import part_report

    nearest = torch.zeros(4, 1, dtype=torch.long)
    report = part_report(nearest, ["head", "wing", "tail"], static_nearest=nearest)
    monkeypatch.setattr(
        "sef.viz.parts_figure", lambda *args, **kwargs: (tmp_path / "p.png", report)
    )
    assert main(["viz", "parts", "--checkpoint", str(demo_checkpoint)]) == 0
    said = capsys.readouterr().out
    assert "distinctness needs two groups or more; this model has one (a plain network)" in said


def test_cam_without_images_n_draws_as_many_as_a_figure_of_its_groups_holds(
    demo_checkpoint, tmp_path, monkeypatch, capsys
):
    """A model of 64 groups had its default of 6 random images refused (at most 4 fit beside
    64 groups), asking for an --images N the user never gave; here 2 groups, 3 pictures a
    figure."""
    monkeypatch.setattr("sef.viz._CAM_PANELS", 3)
    out = tmp_path / "cam.png"
    assert main(["viz", "cam", "--checkpoint", str(demo_checkpoint), "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.width < image.height  # one column


@pytest.mark.parametrize(
    "words, said",
    [
        (["viz"], "lands on (demo, birds32, birds32b)"),
        (["viz", "parts"], "(the generated sets: demo, birds32, birds32b)"),
        (["data", "check"], "(demo, birds32, birds32b: optional)"),
    ],
)
def test_help_names_the_generated_sets_each_command_reads(words, said, capsys):
    """`sef viz parts` measures birds32 and birds32b as well as the demo, and `sef data check`
    finds each of them without a ROOT; the help once named the demo alone."""
    with pytest.raises(SystemExit):
        main([*words, "--help"])
    assert said in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("figure", ["corr", "cam", "curves", "parts"])
def test_out_help_names_formats_beyond_png(figure, capsys):
    """--out writes any format matplotlib does (.pdf, .svg), which the help once called a PNG."""
    with pytest.raises(SystemExit):
        main(["viz", figure, "--help"])
    assert ".png, .pdf, .svg" in " ".join(capsys.readouterr().out.split())


def test_cam_refuses_to_draw_over_an_image_it_shows(demo_checkpoint, tmp_path, write_image, capsys):
    own = write_image(tmp_path / "own.png", (50, 40))
    before = own.read_bytes()
    argv = ["viz", "cam", "--checkpoint", str(demo_checkpoint), str(own), "--out"]
    assert main([*argv, str(tmp_path / "." / "own.png")]) == 2
    assert own.read_bytes() == before
    err = capsys.readouterr().err
    assert "it is the image" in err and "choose another file" in err and err.count("\n") == 1


def test_a_split_without_images_is_refused_not_drawn(folder_root, tmp_path, capsys):
    """Before: cam stacked no images (a RuntimeError traceback); corr asked to pass one."""
    from conftest import OWN_CLASSES

    from sef.checkpoint import save_checkpoint
    from sef.config import Config, config_to_dict
    from sef.trained import create_model

    for extra in (folder_root / "train").rglob("*[1-9].png"):  # one image a class: no val
        extra.unlink()
    config = Config(name="own")
    config.model.backbone, config.model.weights = "small_cnn", None
    config.data.dataset, config.data.root, config.data.image_size = "folder", str(folder_root), 32
    state = {"model": create_model(config, 3).state_dict(), "config": config_to_dict(config)}
    checkpoint = tmp_path / "own.pt"
    save_checkpoint(checkpoint, {**state, "classes": OWN_CLASSES, "epoch": 1, "metrics": {}})
    argv = ["viz", "cam", "--checkpoint", str(checkpoint), "--split", "val", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "cam.png")]) == 2  # corr and parts: likewise
    assert capsys.readouterr().err == (
        f"sef viz cam: error: the val split of {folder_root} holds no images, so there is nothing "
        "to draw; choose another --split\n"
    )


def test_a_default_figure_that_cannot_be_written_points_to_out(tmp_path, capsys):
    """A figure beside a read-only checkpoint or run said "choose another place" to a user who
    had chosen none: the option to pass is named, as `sef eval` names --predictions."""
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "loss_total": 1.0}\n')
    (tmp_path / "curves.png").mkdir()  # as a place the command cannot write
    assert main(["viz", "curves", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"sef viz curves: error: cannot write {tmp_path / 'curves.png'}: it is a folder; pass "
        f"--out FILE\n"
    )
