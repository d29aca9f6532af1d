"""A model as a config describes it, and a trained model as a bundle loaded from a checkpoint.

Above the core (:mod:`sef.model` knows no config, dataset or checkpoint): ``create_model`` builds
the SEF network a :class:`~sef.config.Config` describes; ``load_trained_model`` rebuilds it from a
checkpoint as a :class:`TrainedModel`: the network in eval mode, its class names, its typed
config and the one :class:`~sef.transforms.Preprocessing` record that evaluation, test-time
augmentation, prediction, the figures and the export read.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sef import datasets
from sef.backbones import ProbeFailed
from sef.checkpoint import load_checkpoint, writer_of, written_by
from sef.config import SECTIONS, Config, config_from_dict, stored_values
from sef.datasets import ImageList, checking, names
from sef.datasets.splits import NoSuchSplit, recorded_training
from sef.errors import CheckpointError, ConfigError, DataError, for_reader, warn
from sef.model import SEF
from sef.text import counted, shown
from sef.transforms import Preprocessing
from sef.version import __version__
from sef.weights import shape_mismatch


def create_model(config: Config, num_classes: int) -> SEF:
    """The SEF network a :class:`~sef.config.Config` describes, with its initial weights."""
    m = config.model
    try:
        return SEF(
            m.backbone,
            num_classes=num_classes,
            groups=m.groups,
            weights=m.weights,
            pool=m.pool,
            image_size=config.data.image_size,
            backbone_args=m.backbone_args,
            output_stride=m.output_stride,
        )
    except ProbeFailed as failed:  # built for data.image_size: the size to change is that
        size = config.data.image_size
        raise ConfigError(
            f"model.backbone={m.backbone!r} cannot run on images of {size} x {size} px "
            f"({failed.reason}); choose another "
            f"{for_reader('--image-size (data.image_size)', 'data.image_size')}"
        ) from None
    except ValueError as error:
        raise ConfigError(
            f"model.backbone={m.backbone!r} with model.groups={m.groups} cannot be built: {error}"
        ) from None


@dataclass
class TrainedModel:
    """A trained SEF in eval mode, with everything needed to feed it images, the versions of
    sef and torch that wrote its checkpoint (None in one written before they were recorded) and
    its record of the images it trained on (``training``: own data's, see
    :func:`sef.datasets.splits.training_record`; {} in one written before it was kept)."""

    model: SEF
    classes: list[str]
    config: Config
    preprocessing: Preprocessing
    sef_version: str | None = None
    torch_version: str | None = None
    training: dict = field(default_factory=dict)
    epoch: int | None = None  # the epochs trained when it was saved (None: unrecorded)
    holds_run_state: bool = False  # a run's last.pt (its history), not a best.pt

    @property
    def saved_at(self) -> str | None:
        """When in its run the checkpoint was saved: "epoch 12 of 50" (None: unrecorded)."""
        if self.epoch is None:
            return None
        return f"epoch {self.epoch} of {self.config.optim.epochs}"

    @property
    def unfinished(self) -> bool:
        """Whether it is the last.pt of a run stopped before its last epoch (a best.pt does not
        say whether its run went on)."""
        saved_before_the_end = self.epoch is not None and self.epoch < self.config.optim.epochs
        return self.holds_run_state and saved_before_the_end

    def warn_if_unfinished(self, path: str | os.PathLike, outcome: str) -> None:
        """Warn, in one line, where ``path`` is the last.pt of an unfinished run: ``outcome``
        ("the export is") is of its model as it was at that epoch, not of the trained one."""
        if self.unfinished:
            warn(
                f"{path} is the last.pt of an unfinished run ({self.saved_at}): {outcome} its "
                f"model as it was then"
            )

    def __repr__(self) -> str:
        """What the model is, in one line, not its every layer, class name and config key."""
        c = self.config
        return (
            f"TrainedModel(backbone={c.model.backbone!r}, groups={self.model.groups}, "
            f"classes={len(self.classes)}, image_size={self.preprocessing.image_size}, "
            f"recipe={self.preprocessing.recipe!r}, written_by={self.written_by!r})"
        )

    @property
    def written_by(self) -> str:
        """Who wrote the checkpoint, in words: "sef 0.1.0 with torch 2.5.1"."""
        return written_by(self.sef_version, self.torch_version)

    @functools.cached_property
    def test_transform(self) -> Callable:
        """The test pipeline of ``preprocessing`` (built once: datasets and callers share it)."""
        return self.preprocessing.test_transform()

    def dataset(
        self,
        split: str = "test",
        root: str | os.PathLike | None = None,
        *,
        progress: bool | None = None,
    ) -> ImageList:
        """``split`` of the data this model was trained on (or found under ``root``), with its
        test transform; DataError if that data's classes are not the model's (an accented name
        stored otherwise, a folder copied from a Mac, is the same class). A run that left
        unreadable images out (``data.bad_images=skip``) leaves them out here too, with a
        warning. ``progress`` shows a generated set being drawn on first use (and that check)."""
        config = self.config
        if root is None:
            check_saved_root(config)
        try:
            loaded = datasets.read_split(
                config.data, split, seed=config.run.seed, root=root, transform=self.test_transform,
                progress=progress,
            )  # fmt: skip
        except NoSuchSplit as missing:
            own = config.data.eval_split
            if split == own:
                raise
            raise NoSuchSplit(
                f"{missing}; this run evaluated on its {own} split "
                f"({for_reader(f'--split {own}', f'split={own!r}')})"
            ) from None
        found, trained = list(map(names.key, loaded.classes)), list(map(names.key, self.classes))
        if found != trained:
            where = config.data.root if root is None else root
            raise DataError(
                f"the classes of the {split} split under {where} differ from the "
                f"{len(self.classes)} classes the model was trained on "
                f"({_class_difference(found, trained)}); pass its own data"
            )
        if config.data.bad_images == "skip":
            _skip_bad_images(loaded, config.data.workers, progress)
        return loaded


def _class_difference(found: list[str], trained: list[str]) -> str:
    """How the classes ``found`` in some data differ from those a model ``trained`` on, in words:
    a class of one that the other lacks, or their order."""
    extra = [name for name in found if name not in trained]
    if extra:
        return f"{len(extra)} not among them, e.g. {shown(extra[0])}"
    missing = [name for name in trained if name not in found]
    if missing:
        return f"{len(missing)} of them missing, e.g. {shown(missing[0])}"
    return "the same classes in another order"


def _skip_bad_images(dataset: ImageList, workers: int, progress: bool | None) -> None:
    """Leave the unreadable images out of ``dataset`` as the run's training did, and say so;
    as training does, only the images the record of verified images has not verified as they
    are now are decoded (sef.datasets.verified), and those that decode are recorded."""
    bad = datasets.apply_bad_image_policy(
        dataset, "skip", max(1, workers), progress, record=checking.USE
    )
    if bad:
        warn(
            f"left out {counted(len(bad), 'unreadable image')} as the run did "
            f"(data.bad_images=skip), e.g. {bad[0][0]}"
        )


def check_saved_root(
    config: Config, source: str = "the checkpoint", argument: str = "root"
) -> None:
    """DataError naming --data-root (to Python code, the function's ``argument``) when the
    folder the run read its data from, as ``source`` names it, is not there (moved, or relative
    to where an older run started); a generated set is drawn again."""
    root = config.data.root
    if not root or datasets.RECORDS[config.data.dataset].kind == "generated":
        return
    if not os.path.exists(os.path.expanduser(root)):
        raise DataError(
            f"the data root {root} that {source} names does not exist; "
            + for_reader(
                "pass --data-root with the folder of its data",
                f"pass the folder of its data as {argument}",
            )
        )


def _another_sef(state: dict) -> str:
    """Who wrote a checkpoint whose config this sef cannot read, where that is another sef (one
    with config keys of its own): the likely cause, rather than damage."""
    if state.get("sef_version") == __version__:
        return ""
    return f" (written by {writer_of(state)}; this is sef {__version__}: read it with that sef)"


def check_sections(path: str | os.PathLike, values: dict) -> None:
    """CheckpointError when a checkpoint's config lacks a section every sef writes (SECTIONS):
    it was edited, and defaults in its place would feed the model other images than it trained
    on (another size, recipe, mean and std)."""
    missing = [name for name in SECTIONS if name not in values]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} was edited: its config lacks the {missing[0]} section that every "
            f"checkpoint sef writes holds; use the checkpoint as `sef train` wrote it"
        )


def load_trained_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> TrainedModel:
    """Rebuild the model a checkpoint describes and load its weights; nothing else needed."""
    state = load_checkpoint(path)
    check_sections(path, state["config"])
    try:
        config = config_from_dict(stored_values(state["config"]))
    except ConfigError as error:
        raise CheckpointError(
            f"checkpoint {path} holds an unusable config: {error}{_another_sef(state)}"
        ) from None
    classes = [str(name) for name in state["classes"]]
    config.model.weights = None  # the checkpoint's own weights replace any initial ones
    try:
        model = create_model(config, len(classes))
    except ConfigError as error:  # a backbone this installation lacks (another sef or timm)
        raise CheckpointError(
            f"checkpoint {path} holds a model this installation cannot build: {error}"
        ) from None
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise CheckpointError(
            f"checkpoint {path} weights do not fit its own config ({shape_mismatch(error)}); "
            f"it was changed by hand or by another program, or is damaged"
        ) from None
    return TrainedModel(
        model=model.to(device).eval(),
        classes=classes,
        config=config,
        preprocessing=Preprocessing(config.data.image_size, config.data.recipe),
        sef_version=state.get("sef_version"),
        torch_version=state.get("torch_version"),
        training=recorded_training(state),
        epoch=_saved_epoch(state),
        holds_run_state="history" in state,
    )


def _saved_epoch(state: dict) -> int | None:
    """The epochs a checkpoint had trained when saved; None where it holds no whole number."""
    epoch = state.get("epoch")
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
