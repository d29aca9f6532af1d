"""Advice met from Python names what Python code does, the function's argument or the config key
(``split='val'``, ``run.amp=none``); the same advice to the `sef` command's user names its option
(``--split val``, ``--amp none``), as tests/test_cli_*.py see it said. Each on tiny inputs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sef.backbones import ProbeFailed
from sef.checkpoint import load_checkpoint, save_checkpoint
from sef.config import apply_overrides, resolve_config
from sef.config.presets import load_preset
from sef.datasets import check_root
from sef.datasets.download import _download_error
from sef.datasets.splits import NoSuchSplit
from sef.distributed import Context
from sef.engine.evaluation import _broken, _model_and_data, evaluate_checkpoint
from sef.errors import ConfigError, DataError, OutOfMemory, said_to_command
from sef.trained import TrainedModel, create_model
from sef.viz import _check_columns, _split_images


def _said(call, error: type[Exception] = Exception) -> tuple[str, str]:
    """What ``call()`` raises, as Python code meets it and as the command's user does."""
    with pytest.raises(error) as code:
        call()
    with said_to_command(), pytest.raises(error) as command:
        call()
    return str(code.value), str(command.value)


def test_a_backbone_too_large_for_the_image_size_names_data_image_size(monkeypatch) -> None:
    def too_small(*args, **kwargs):
        raise ProbeFailed(16, {3: "Output size is too small"})

    monkeypatch.setattr("sef.trained.SEF", too_small)
    code, command = _said(lambda: create_model(resolve_config("demo"), 3), ConfigError)
    assert code.endswith("; choose another data.image_size")
    assert command.endswith("; choose another --image-size (data.image_size)")


def _trained(config) -> TrainedModel:
    """A TrainedModel of ``config`` without a network: enough to read its data."""
    preprocessing = SimpleNamespace(test_transform=lambda: None)
    return TrainedModel(None, ["a", "b"], config, preprocessing)  # type: ignore[arg-type]


def test_a_split_the_data_lacks_names_the_runs_as_split(no_test_split: Path) -> None:
    overrides = [f"data.root={no_test_split}", "data.train_split=train", "data.eval_split=val"]
    trained = _trained(apply_overrides(resolve_config("folder-resnet18"), overrides))
    code, command = _said(lambda: trained.dataset("test"), NoSuchSplit)
    assert code.endswith("; this run evaluated on its val split (split='val')")
    assert command.endswith("; this run evaluated on its val split (--split val)")


def test_moved_data_is_given_as_the_argument_of_the_call_that_reads_it(
    demo_checkpoint: Path, tmp_path: Path
) -> None:
    gone = tmp_path / "gone"
    config = apply_overrides(resolve_config("folder-resnet18"), [f"data.root={gone}"])
    code, command = _said(lambda: _trained(config).dataset("test"), DataError)
    assert code.endswith(" names does not exist; pass the folder of its data as root")
    assert command.endswith(" names does not exist; pass --data-root with the folder of its data")
    state = load_checkpoint(demo_checkpoint)
    state["config"]["data"].update(dataset="folder", root=str(gone), options={})
    save_checkpoint(tmp_path / "moved.pt", state)
    with pytest.raises(DataError, match="pass the folder of its data as data_root$"):
        evaluate_checkpoint(tmp_path / "moved.pt", progress=False)


def test_evaluation_advice_names_evaluate_checkpoints_arguments(
    demo_checkpoint: Path, monkeypatch
) -> None:
    with pytest.warns(UserWarning, match="the run evaluated on split='test'$"):
        _model_and_data(demo_checkpoint, Context(), "val", None, False)
    broken = SimpleNamespace(non_finite_said=lambda *words: "the outputs are not finite")
    assert _broken(broken, demo_checkpoint, "test").endswith(
        "train again with a lower optim.lr or run.amp=none"
    )
    with said_to_command():
        assert _broken(broken, demo_checkpoint, "test").endswith(" optim.lr or --amp none")

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.53 GiB.")

    monkeypatch.setattr("sef.engine.evaluation.evaluate", out_of_memory)
    with pytest.raises(
        OutOfMemory, match="batches of 600 images; evaluate with a lower batch_size$"
    ):
        evaluate_checkpoint(demo_checkpoint, batch_size=600, workers=0, progress=False)


def test_figures_name_their_functions_arguments() -> None:
    config = resolve_config("demo")
    empty = SimpleNamespace(config=config, dataset=lambda *args, **kwargs: [])
    code, command = _said(lambda: _split_images(empty, "val", None, False), DataError)
    assert (code[-22:], command[-24:]) == ("; choose another split", "; choose another --split")
    code, command = _said(lambda: _check_columns(99, 2), ValueError)
    assert code.endswith("(another seed, or other images)")
    assert command.endswith("(another --seed, or other images)")


def test_an_unknown_preset_names_what_lists_the_presets() -> None:
    code, command = _said(lambda: load_preset("no-such-preset"), ConfigError)
    assert code.endswith("; call sef.config.preset_names() to list them all")
    assert command.endswith("; run `sef presets` to list them all")


def test_a_download_cut_short_is_tried_again_by_the_same_call(tmp_path: Path) -> None:
    partial = tmp_path / "a.tgz.part"
    partial.write_bytes(b"x" * 10)

    def cut_short():
        raise _download_error("http://host/a.tgz", partial, ConnectionResetError("reset"))

    code, command = _said(cut_short, DataError)
    assert "; make the same download call again to continue after its first 10 bytes, or" in code
    assert code.endswith(f"fetch it by hand to {tmp_path / 'a.tgz'} and make the same download "
                         "call again to check and unpack it")  # fmt: skip
    assert "; run the same command again to continue after its first 10 bytes, or" in command


def test_a_dataset_without_its_root_names_data_root() -> None:
    code, command = _said(lambda: check_root("cub", None), ConfigError)
    assert code == "dataset 'cub' needs a root folder: set data.root (load's root)"
    assert command.endswith(": pass --data-root DIR (data.root in a config)")
