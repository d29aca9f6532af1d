"""Each decision has one home that every place using it reads: the saved-vs-new config comparison,
preset names, the dataset records, the device, per-class accuracy, text tables, shared CLI options.
(The loss's own homes are tested in test_losses.py, the layers in test_layers.py.)"""

from __future__ import annotations

import argparse

import pytest
import torch

from sef import datasets
from sef.cli import create_parser, main
from sef.config import (
    CHOICES,
    DEFAULT_PRESET,
    config_changes,
    config_to_dict,
    preset_name,
    preset_names,
    resolve_config,
)
from sef.datasets import download
from sef.errors import ConfigError, DataError


def test_config_changes_reads_an_old_saved_config_through_todays_schema():
    config = resolve_config("demo")
    saved = config_to_dict(config)
    del saved["loss"]["lam_warmup"]  # saved before the key existed: it takes its default
    assert config_changes(saved, config) == []
    config.optim.lr, config.data.root = 0.5, "elsewhere"
    assert config_changes(saved, config) == [
        ("data.root", None, "elsewhere"), ("optim.lr", 0.02, 0.5)
    ]  # fmt: skip
    assert config_changes(saved, config, ("data.root",)) == [("optim.lr", 0.02, 0.5)]


def test_resume_and_reproduce_compare_configs_with_config_changes():
    from sef.engine import run
    from sef.reproduce import state

    for module in (run, state):
        assert module.config_changes is config_changes


def test_preset_names_are_composed_by_preset_name_which_reproduce_uses():
    from sef.reproduce import plan

    assert plan.preset_name is preset_name
    assert preset_name("cub", "resnet50", "sef") == "cub-resnet50"
    assert preset_name("dogs", "resnet18", "plain") == "dogs-resnet18-plain"
    assert preset_name(DEFAULT_PRESET, None, "maxent") == "demo-maxent"
    names = preset_names()
    for dataset, record in datasets.RECORDS.items():
        for backbone in record.backbones:
            assert preset_name(dataset, backbone) in names


def test_the_dataset_records_are_what_config_readers_and_download_read():
    assert datasets.NAMES == tuple(datasets.RECORDS) == CHOICES["data.dataset"]
    assert all(record.kind in datasets.KINDS for record in datasets.RECORDS.values())
    assert datasets.GENERATED == datasets.names_of("generated")
    assert set(datasets.DOWNLOADABLE) == set(download.ARCHIVES)
    for name in datasets.NAMES:
        assert callable(datasets.reader(name))
        if name not in datasets.DOWNLOADABLE:
            with pytest.raises(DataError, match=f"cannot download '{name}': "):
                download.download(name, "unused")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("command", [["predict", "x.jpg"], ["viz", "corr"], ["eval"]])
def test_every_device_option_resolves_through_one_resolver(command, tmp_path, capsys):
    argv = [*command, "--checkpoint", str(tmp_path / "none.pt"), "--device", "cuda"]
    assert main(argv) == 2
    assert "device 'cuda' needs a CUDA GPU and none is visible; use cpu or auto" in (
        capsys.readouterr().err
    )


def test_the_device_words_are_checked_in_one_place(monkeypatch):
    """run.device and every --device accept exactly auto, cpu, cuda and cuda:N."""
    from sef.choices import is_device
    from sef.distributed import resolve_device

    assert all(map(is_device, ["auto", "cpu", "cuda", "cuda:0", "cuda:12"]))
    assert not any(map(is_device, ["gpu", "mps", "meta", "cuda:", "cuda:x", "cuda:-1", "CPU"]))
    with pytest.raises(ConfigError, match="device 'cuda:x' is invalid"):
        resolve_device("cuda:x")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # one GPU, as far as sef knows
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="'cuda:1' is not there: 1 GPU visible, cuda:0$"):
        resolve_device("cuda:1")


def test_per_class_accuracy_has_one_home():
    from sef import metrics, report

    assert report.per_class_accuracy is metrics.per_class_accuracy
    labels, predictions = torch.tensor([0, 0, 1, 1, 1, 3]), torch.tensor([0, 1, 1, 1, 0, 3])
    per_class = metrics.per_class_accuracy(predictions, labels, 4)
    assert per_class[:2].tolist() == [0.5, 2 / 3] and per_class[2].isnan() and per_class[3] == 1
    assert metrics.class_mean_accuracy(predictions, labels, 4) == pytest.approx(
        (0.5 + 2 / 3 + 1) / 3
    )


def test_text_tables_align_columns_and_drop_trailing_spaces():
    from sef.text import table

    assert table([["a", "bb", "c"], ["ccc", "d", ""]], "<>").splitlines() == [
        "a    bb  c", "ccc   d"
    ]  # fmt: skip


def test_text_tables_align_wide_characters_and_accents_as_a_terminal_shows_them():
    """A Chinese or emoji class name takes two columns a character, an accent stored apart (as
    macOS names files) none: sef predict's probabilities stood out of line after such names."""
    from sef.text import table

    lines = table([["八哥", "0.98"], ["🐦 bird", "0.01"], ["Me\u0301sange", "0.01"]]).splitlines()
    assert lines == ["八哥     0.98", "🐦 bird  0.01", "Me\u0301sange  0.01"]


def test_text_tables_escape_control_characters_of_a_file_name():
    """`sef predict` of an image named with a newline broke its row in two."""
    from sef.text import table

    assert table([["a\nb.png", "1"], ["c.png", "2"]]).splitlines() == [
        "a\\nb.png  1",
        "c.png     2",
    ]


def test_counts_and_durations_read_as_a_person_writes_them():
    from sef.text import counted, duration

    assert [counted(n, "epoch") for n in (0, 1, 2, 1200)] == [
        "0 epochs", "1 epoch", "2 epochs", "1,200 epochs"
    ]  # fmt: skip
    assert [counted(n, "class", "classes") for n in (1, 2)] == ["1 class", "2 classes"]
    assert [duration(s) for s in (3.2, 59.4, 60, 210)] == ["3 s", "59 s", "1.0 min (60 s)",
                                                         "3.5 min (210 s)"]  # fmt: skip


def _options(parser: argparse.ArgumentParser, path: str = "") -> dict[str, list]:
    """{option: [(command, help, default)]} over every (sub)command of ``parser``."""
    found: dict[str, list] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for key, seen in _options(sub, f"{path} {name}".strip()).items():
                    found.setdefault(key, []).extend(seen)
        for option in action.option_strings:
            found.setdefault(option, []).append((path, action.help, action.default))
    return found


def test_shared_cli_options_are_spelled_once():
    options = _options(create_parser())
    checkpoint = {(h, d) for _, h, d in options["--checkpoint"]}
    progress = {(h, d) for _, h, d in options["--no-progress"]}
    devices = {(h, d) for c, h, d in options["--device"] if c != "train"}
    roots = {(h, d) for c, h, d in options["--data-root"] if c != "train"}
    assert len(options["--checkpoint"]) >= 6 and len(checkpoint) == 1
    assert len(options["--no-progress"]) >= 8 and len(progress) == 1
    assert devices == {("auto, cpu, cuda or cuda:N", "auto")} and len(roots) == 1


def test_the_package_lists_its_lazy_names_and_the_loss_shows_its_weights():
    import sef

    assert {"SEF", "SEFLoss", "fit", "evaluate", "resolve_config"} <= set(dir(sef))
    assert repr(sef.SEFLoss(4, lam=0.5, phi=0.1)) == (
        "SEFLoss(groups=4, lam=0.5, gamma=0.05, phi=0.1, group_variant='reference')"
    )
    assert "norm_floor=0.01" in repr(sef.SEFLoss(2, norm_floor=0.01))


def test_one_text_where_a_list_belongs_is_a_list_of_one():
    """Iterated as characters it gave "override 'm' must look like section.key=value"."""
    from sef.config import resolve_config
    from sef.export import check_formats

    assert resolve_config("demo", overrides="model.groups=3").model.groups == 3
    assert check_formats("onnx") == ["onnx"]


def _options_taking_several_values(parser=None):
    """(sub-command parser, action) for every option of every `sef` command that takes several
    values (nargs + or *), sub-commands of sub-commands included."""
    parser = parser or create_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in dict.fromkeys(action.choices.values()):  # aliases once, in order
                yield from _options_taking_several_values(command)
        elif action.option_strings and action.nargs in ("+", "*"):
            yield parser, action


SEVERAL_VALUES = list(_options_taking_several_values())


@pytest.mark.parametrize(
    ("parser", "action"),
    SEVERAL_VALUES,
    ids=[f"{parser.prog} {action.option_strings[0]}" for parser, action in SEVERAL_VALUES],
)
def test_repeated_options_add_to_the_list(parser, action):
    """`sef train --log wandb --log mlflow` trained with mlflow alone, `sef reproduce --only a
    --only b` ran b alone: a repeat replaced what the first occurrence gave."""
    first, second = list(action.choices or ["a", "b"])[:2]
    given = argparse.Namespace(**{action.dest: None})
    for values in ([first], [second]):
        action(parser, given, values, action.option_strings[0])
    assert getattr(given, action.dest) == [first, second]
