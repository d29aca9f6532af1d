"""Test-time augmentation (TTA): predict several views of each test image and average their class
probabilities. An evaluation choice only: the trained and exported networks stay the same.

Modes (``TTA_MODES``):

* ``flip``: the test image and its mirror image;
* ``crops``: the four corners and the centre, each ``image_size`` square, of the image resized
  to ``round(image_size * 600 / 448)`` (CAL's multi-crop; for the ``resize_crop`` recipe that is
  its own test resize, whose centre crop is the plain test image);
* ``flip+crops``: those five crops and their mirror images.

:class:`TTAViews` turns one image into a stack ``[V, 3, S, S]`` whose view 0 is exactly the
plain test image of a model's :class:`~sef.transforms.Preprocessing` (so one pass gives the plain
accuracy too); :func:`forward_views` runs a model on such a batch ``[B, V, 3, S, S]`` one view at
a time (memory as in plain evaluation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchvision.transforms import v2

from sef import transforms
from sef.choices import TTA_MODES

_CROPS = 5  # four corners and the centre


def check_mode(mode: str) -> str:
    """``mode`` if it is a TTA mode; ValueError naming the choices otherwise."""
    if mode not in TTA_MODES:
        raise ValueError(f"unknown TTA mode {mode!r}; choose one of {', '.join(TTA_MODES)}")
    return mode


def view_count(mode: str) -> int:
    """Views per image in a :class:`TTAViews` stack: the plain view and what ``mode`` adds."""
    return {"flip": 2, "crops": 1 + _CROPS, "flip+crops": 1 + 2 * _CROPS}[check_mode(mode)]


def averaged_views(mode: str) -> range:
    """Indices of the views whose probabilities TTA averages (flip: the plain view and its
    mirror; crops: the five crops, without the separately resized plain view)."""
    return range(0, 2) if check_mode(mode) == "flip" else range(1, view_count(mode))


class TTAViews:
    """One image -> ``[V, 3, S, S]``: view 0 is ``preprocessing``'s test transform of it, then
    the views ``mode`` adds (see the module docstring), normalised like it."""

    def __init__(
        self, preprocessing: transforms.Preprocessing, mode: str, normalise: bool = True
    ) -> None:
        self.mode = check_mode(mode)
        self.image_size = preprocessing.image_size
        self.mean, self.std = preprocessing.mean, preprocessing.std
        self.normalise = normalise
        self.plain = preprocessing.test_transform(normalise=False)
        # the corners and centre come from the paper's larger test resize, whatever the recipe
        self.resize = transforms.resize_transform("resize_crop", self.image_size)

    def __call__(self, image) -> Tensor:
        plain = self.plain(image).as_subclass(Tensor)
        views = [plain]
        if self.mode == "flip":
            views.append(plain.flip(-1))
        else:
            crops = [
                c.as_subclass(Tensor)
                for c in v2.functional.five_crop(self.resize(image), self.image_size)
            ]
            views += crops
            if self.mode == "flip+crops":
                views += [crop.flip(-1) for crop in crops]
        stack = torch.stack(views)
        return transforms.normalise_batch(stack, self.mean, self.std) if self.normalise else stack


def forward_views(
    model: torch.nn.Module, views: Tensor, mode: str, prepare: Callable[[Tensor], Tensor]
) -> tuple[object, Tensor]:
    """Run an SEF on a batch of view stacks ``[B, V, 3, S, S]``: the plain view's
    :class:`~sef.model.SEFOutput`, and the TTA class probabilities ``[B, K]``.

    ``prepare`` moves (and normalises) one view's batch for the model.
    """
    if views.dim() != 5 or views.shape[1] != view_count(mode):
        raise ValueError(
            f"TTA {mode!r} needs each image as a stack of {view_count(mode)} views "
            f"(sef.tta.TTAViews); got a batch of shape {tuple(views.shape)}"
        )
    plain = model.forward_sef(prepare(views[:, 0]))
    total = None
    for index in averaged_views(mode):
        logits = plain.logits if index == 0 else model.forward_sef(prepare(views[:, index])).logits
        probabilities = logits.float().softmax(-1)
        total = probabilities if total is None else total + probabilities
    return plain, total / len(averaged_views(mode))
