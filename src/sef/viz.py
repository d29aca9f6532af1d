"""Figures of what SEF learned: channel correlations (the paper's Fig. 2), group activation maps
(Fig. 4), training curves (Fig. 3) and where each group peaks on the demo data's known parts.

The maths is in :mod:`sef.analysis` (tensors in, tensors out); ``plot_*`` functions draw with
matplotlib's object API (no pyplot, no global backend state) and write a PNG; ``*_figure``
functions do both for a trained model.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from sef import filekinds, outputs
from sef.analysis import (
    backbone_features,
    group_maps,
    group_means,
    mean_channel_correlation,
    upsample_maps,
    warn_if_not_finite,
    warn_if_one_position,
)
from sef.errors import DataError, OutputError, for_reader
from sef.losses import LOSS_TERMS, SEPARATION_GAP
from sef.metrics import not_finite_images
from sef.modes import evaluation_mode
from sef.parts import measure_parts
from sef.text import bars_drawn, shown
from sef.trained import TrainedModel

_MAP_CMAP = "jet"
_CORR_CMAP = "viridis"
_DPI = 110
CAM_MOST = 32  # images (columns) of one group-map figure
_CAM_PANELS = 9 * CAM_MOST  # its pictures: 32 images of 8 groups draw in 16 s, 32 of 32 in 2 min
_CAM_CAPTION_CHARS = 30  # a caption line of a group-map column (2.3 inches at 8 points)
_TITLE_CHARS_PER_INCH = 10  # a 10-point title across a figure
_NAMED_GROUPS = 4  # groups named "group g" on the correlation figure's axes; more are numbered
_NUMBERED_GROUPS = 16  # group numbers that fit along one of its axes
_VALUED_GROUPS = 8  # groups whose G x G averages are written in D's cells
_LEGEND_GROUPS = 10  # group-head curves a legend names (matplotlib's 10 colours); more: a scale


# ------------------------------------------------------------------ inputs


def unnormalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Undo mean/std normalisation: model inputs [B, 3, H, W] -> displayable RGB in [0, 1]."""
    mean_t = torch.tensor(mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std).view(1, -1, 1, 1)
    return (images.cpu() * std_t + mean_t).clamp(0, 1)


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The per-epoch records of a training run (RUN_DIR/metrics.jsonl), in order."""
    path = Path(run_dir)
    path = path / "metrics.jsonl" if path.is_dir() else path
    try:
        text = filekinds.read_text(path)
    except ValueError as problem:
        raise DataError(f"{path} {problem}; pass the output folder of a `sef train` run") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        records.append(_epoch_record(path, number, line, first=not records))
    if not records:
        raise DataError(f"{path} holds no epochs yet; wait until the run finishes one epoch")
    return records


def _epoch_record(path: Path, number: int, line: str, first: bool) -> dict:
    """Line ``number`` of a metrics.jsonl as its epoch's record; DataError if it is none: the
    file is damaged, or when it is the ``first`` record another file (config.yaml, a JSON)."""
    try:
        record = json.loads(line)
        problem = "" if isinstance(record, dict) and "epoch" in record else "is no epoch's record"
    except json.JSONDecodeError:
        problem = "is not JSON"
    if not problem:
        return record
    if first:
        raise DataError(
            f"{path} is not a metrics.jsonl (line {number} {problem}); pass the output folder "
            "of a `sef train` run"
        )
    raise DataError(f"{path} line {number} {problem}; the file is damaged")


# ------------------------------------------------------------------ figures


def _wrapped(text: str, width: int) -> str:
    """``text`` with each of its lines :func:`~sef.text.shown` and broken (at spaces and
    hyphens, a longer word cut) into lines of at most ``width`` characters: long class names
    stay within their column, and the lines stay lines (not an escaped ``\\n``)."""
    return "\n".join(textwrap.fill(shown(line), width) for line in text.split("\n"))


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _save(figure, out: str | os.PathLike) -> Path:
    _check_format(out)
    return outputs.save_figure(figure, out, _DPI)


def _check_format(out: str | os.PathLike) -> None:
    """OutputError where matplotlib cannot draw the format ``out`` ends with (PNG without one)."""
    from matplotlib.backend_bases import FigureCanvasBase

    kind = Path(out).suffix[1:].lower() or "png"
    if kind not in FigureCanvasBase.get_supported_filetypes():
        problem = f"cannot write {out}: matplotlib draws no .{kind} figures"
        raise OutputError(f"{problem}; end the name with .png, .pdf or .svg", problem)


def _check_out(out: str | os.PathLike) -> None:
    """Whether the figure ``out`` can be written, asked before the work that draws it: a file
    it would replace, or a place it cannot be written, is said before a format matplotlib lacks."""
    outputs.check_writable(out)
    _check_format(out)


def _check_not_shown(out: str | os.PathLike, paths: Sequence[str | os.PathLike]) -> None:
    """OutputError where the figure ``out`` is one of the image files ``paths`` it shows (``sef
    viz cam photo.jpg --out photo.jpg``): drawing it would replace the user's image."""
    for path in paths:
        try:
            same = os.path.samefile(out, path)
        except OSError:  # one of them is not there: nothing to replace
            continue
        if same:
            problem = f"cannot write {out}: it is the image {path} that the figure shows"
            raise OutputError(f"{problem}, which this would replace; choose another file", problem)


def _group_names(count: int) -> list[str]:
    return [f"group {g + 1}" for g in range(count)]


def _group_ticks(axis, centres: Sequence[float]) -> None:
    """Mark the groups centred at ``centres`` on both axes: "group g" while those fit, else
    their numbers (every few, so that they stay apart) under an axis label "group"."""
    count = len(centres)
    if count <= _NAMED_GROUPS:
        axis.set_xticks(centres, _group_names(count))
        axis.set_yticks(centres, _group_names(count), rotation=90, va="center")
        return
    marked = range(0, count, math.ceil(count / _NUMBERED_GROUPS))
    ticks, labels = [centres[g] for g in marked], [str(g + 1) for g in marked]
    axis.set_xticks(ticks, labels)
    axis.set_yticks(ticks, labels)
    axis.set(xlabel="group", ylabel="group")


def plot_correlation(
    correlation: Tensor, group_sizes: Sequence[int], out: str | os.PathLike, *, images: int
) -> Path:
    """Fig. 2: the C x C channel correlation with group boundaries, and the G x G group means."""
    figure = _figure(11.5, 5.2)
    left, right = figure.subplots(1, 2, width_ratios=[1.35, 1])
    low = min(0.0, float(correlation.min()))
    shown = left.imshow(correlation.numpy(), cmap=_CORR_CMAP, vmin=low, vmax=1)
    edges = torch.tensor(list(group_sizes)).cumsum(0)[:-1].tolist()
    for edge in edges:
        left.axhline(edge - 0.5, color="white", linewidth=1.2)
        left.axvline(edge - 0.5, color="white", linewidth=1.2)
    centres = [start + size / 2 - 0.5 for start, size in zip([0, *edges], group_sizes, strict=True)]
    _group_ticks(left, centres)
    left.tick_params(length=0)
    left.set_title(f"Channel correlation ({correlation.shape[0]} channels)")
    figure.colorbar(shown, ax=left, shrink=0.85, label="mean cosine between channels")

    blocks = group_means(correlation, group_sizes)
    shown = right.imshow(blocks.numpy(), cmap=_CORR_CMAP, vmin=low, vmax=1)
    groups = len(group_sizes)
    if groups <= _VALUED_GROUPS:  # more values would overlap: the command prints them
        for (row, col), value in zip(
            [(r, c) for r in range(groups) for c in range(groups)],
            blocks.flatten().tolist(),
            strict=True,
        ):
            colour = "black" if value > low + 0.6 * (1 - low) else "white"
            right.text(col, row, f"{value:.2f}", ha="center", va="center", color=colour,
                       fontsize=11 if groups <= _NAMED_GROUPS else 8)  # fmt: skip
    _group_ticks(right, range(groups))
    right.set_title("Group averages D (diagonal: within a group)")
    figure.colorbar(shown, ax=right, shrink=0.85, label="mean cosine")
    figure.suptitle(f"Last conv layer, averaged over {images} images", fontsize=13)
    return _save(figure, out)


def plot_group_maps(
    images: Tensor,
    maps: Tensor,
    out: str | os.PathLike,
    *,
    titles: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Fig. 4: one column per image; first row the image, then one overlay row per group.

    ``images`` is [N, 3, H, W] in [0, 1]; ``maps`` is [N, G, H, W] in [0, 1].
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    count, groups = maps.shape[0], maps.shape[1]
    row_labels = list(row_labels or _group_names(groups))
    figure = _figure(2.3 * count + 1.2, 2.1 * (groups + 1) + 0.5)
    axes = figure.subplots(groups + 1, count, squeeze=False)
    for column in range(count):
        picture = images[column].permute(1, 2, 0).numpy()
        axes[0, column].imshow(picture)
        if titles is not None:
            caption = _wrapped(titles[column], _CAM_CAPTION_CHARS)
            axes[0, column].set_title(caption, fontsize=8)
        for group in range(groups):
            axis = axes[group + 1, column]
            axis.imshow(picture)
            axis.imshow(maps[column, group].numpy(), cmap=_MAP_CMAP, alpha=0.5, vmin=0, vmax=1)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    for row, label in enumerate(["image", *row_labels]):
        axes[row, 0].set_ylabel(label, fontsize=11)
    scale = ScalarMappable(Normalize(0, 1), cmap=_MAP_CMAP)
    figure.colorbar(scale, ax=axes, shrink=0.6, label="group activation (each map scaled)")
    figure.suptitle("Where each channel group activates", fontsize=13)
    return _save(figure, out)


def _series(records: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in points], [float(p[1]) for p in points]


def plot_curves(records: Sequence[dict], out: str | os.PathLike, *, title: str = "") -> Path:
    """Fig. 3: loss terms, accuracy and each group head's accuracy per epoch of a run, and
    where recorded the channel correlation within and between the groups.

    ``records`` are metrics.jsonl lines as ``sef train`` writes them: epoch, loss_<term>,
    train_top1, eval_top1, eval_class_mean, eval_group_top1 (one value per group),
    train_corr_within/between, eval_corr_within/between; keys a record lacks, and null values,
    are left out.
    """
    from matplotlib.ticker import MaxNLocator

    correlated = any("train_corr_within" in r for r in records)
    figure = _figure(18.5 if correlated else 14, 4.2)
    losses, accuracy, heads, *correlation = figure.subplots(1, 3 + correlated)
    for term in LOSS_TERMS:
        epochs, values = _series(records, f"loss_{term}")
        if values:
            style = {"linewidth": 2.4, "color": "black"} if term == "total" else {}
            losses.plot(epochs, values, marker="o", markersize=3, label=term, **style)
    losses.set_title("Training loss terms (weighted)")
    losses.set_ylabel("loss")
    losses.axhline(0, color="grey", linewidth=0.6)

    for key, label, style in (
        ("train_top1", "train top-1", "-"),
        ("eval_top1", "eval top-1", "-"),
        ("eval_class_mean", "eval class-mean", "--"),  # equals top-1 on balanced test sets
    ):
        epochs, values = _series(records, key)
        if values:
            percent = [100 * v for v in values]
            accuracy.plot(epochs, percent, style, marker="o", markersize=3, label=label)
    accuracy.set_title("Accuracy of the global head")
    accuracy.set_ylabel("accuracy (%)")

    with_groups = [r for r in records if r.get("eval_group_top1")]
    groups = max((len(r["eval_group_top1"]) for r in with_groups), default=0)
    colours = _head_colours(figure, heads, groups)
    for group in range(groups):
        points = [
            (r["epoch"], value)
            for r in with_groups
            if (value := r["eval_group_top1"][group]) is not None
        ]
        epochs, values = [p[0] for p in points], [100 * p[1] for p in points]
        label = f"group {group + 1}" if colours is None else None
        style = {} if colours is None else {"color": colours[group], "linewidth": 1}
        heads.plot(epochs, values, marker="o", markersize=3, label=label, **style)
    epochs, values = _series(records, "eval_top1")
    if values and groups:
        heads.plot(epochs, [100 * v for v in values], "k--", linewidth=1, label="global head")
    heads.set_title("Discriminability of each group's features")
    heads.set_ylabel("eval accuracy of the group head (%)")
    if not groups:
        heads.text(
            0.5, 0.5, "no group-head accuracy recorded", ha="center", transform=heads.transAxes
        )

    if correlated:
        _plot_correlation(correlation[0], records)
    for axis in (losses, accuracy, heads, *correlation):
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # 1 epoch too
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=9)
    if title:
        figure.suptitle(shown(title), fontsize=13)
    return _save(figure, out)


def _head_colours(figure, axis, groups: int) -> list | None:
    """Colours of the group heads' curves beyond the legend's ``_LEGEND_GROUPS`` groups (shades
    of one colour map, told apart by a colour bar "group"); None while a legend names them."""
    if groups <= _LEGEND_GROUPS:
        return None
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    scale = ScalarMappable(Normalize(1, groups), cmap=colormaps["viridis"])
    figure.colorbar(scale, ax=axis, label="group", pad=0.02)
    return [scale.to_rgba(group + 1) for group in range(groups)]


def _plot_correlation(axis, records: Sequence[dict]) -> None:
    """Mean channel correlation within and between groups per epoch (train batches, eval)."""
    for split, style in (("train", "-"), ("eval", "--")):
        for kind, colour in (("within", "C0"), ("between", "C3")):
            epochs, values = _series(records, f"{split}_corr_{kind}")
            if values:
                axis.plot(epochs, values, style, color=colour, marker="o", markersize=3,
                          label=f"{kind} groups ({split})")  # fmt: skip
    axis.set_title(f"Do the groups separate? (gap >= {SEPARATION_GAP})")
    axis.set_ylabel("mean channel correlation")


_GROUP_MARKERS = "o^sDvP*X"
_LEGEND_ROWS = 7  # legend rows that fit beside the examples of the parts figure


def _outlined(axis, x: float, y: float, text: str) -> None:
    """A bold letter readable on any background (white text, black outline)."""
    from matplotlib import patheffects

    label = axis.text(
        x, y, text, ha="center", va="center", color="white", fontsize=10, fontweight="bold"
    )
    label.set_path_effects([patheffects.withStroke(linewidth=2.5, foreground="black")])


def plot_parts(
    fractions: Sequence[Sequence[float]],
    part_names: Sequence[str],
    images: Tensor,
    peaks: Tensor,
    parts: Sequence[dict[str, tuple[float, float]]],
    out: str | os.PathLike,
    *,
    summary: str,
) -> Path:
    """Which part each group's activation peak lands nearest: a G x P table of fractions, and
    example images with every group's peak (markers) and the true part centres (letters).

    ``images`` [E, 3, H, W] in [0, 1] are examples; ``peaks`` and ``parts`` cover at least them.
    """
    from matplotlib import colormaps

    groups, examples = len(fractions), images.shape[0]
    columns = max(examples, 4)
    table_height, example_height = 1.3 + 0.45 * groups, 2.1
    legend_columns = math.ceil(groups / _LEGEND_ROWS)  # the rows beside one row of examples
    width = max(8.0, 1.75 * columns + 1.4 * legend_columns)
    figure = _figure(width, table_height + example_height)
    top, bottom = figure.subfigures(2, 1, height_ratios=[table_height, example_height])
    table = top.subplots(1, 1)
    values = 100 * torch.tensor(fractions, dtype=torch.float32)
    shown = table.imshow(values.numpy(), cmap="Blues", vmin=0, vmax=100, aspect="auto")
    for row in range(groups):
        for col in range(len(part_names)):
            value = float(values[row, col])
            colour = "white" if value > 60 else "black"
            table.text(col, row, f"{value:.0f}%", ha="center", va="center", color=colour)
    table.set_xticks(range(len(part_names)), part_names)
    table.set_yticks(range(groups), _group_names(groups))
    table.set_xlabel("part nearest to the group's activation peak")
    table.set_title(_wrapped(summary, int(_TITLE_CHARS_PER_INCH * width)), fontsize=10)
    top.colorbar(shown, ax=table, label="% of images")

    colours = colormaps["tab10"]
    axes = bottom.subplots(1, columns, squeeze=False)[0]
    for index, axis in enumerate(axes):
        axis.set_axis_off()
        if index >= examples:
            continue
        axis.imshow(images[index].permute(1, 2, 0).numpy())
        for name, (x, y) in parts[index].items():
            _outlined(axis, x, y, name[0].upper())
        for group in range(groups):
            x, y = peaks[index, group].tolist()
            axis.plot(
                x,
                y,
                _GROUP_MARKERS[group % len(_GROUP_MARKERS)],
                color=colours(group),
                markersize=max(5, 15 - 3 * group),  # shrinking, so peaks on one cell stay visible
                markeredgecolor="white",
                label=f"group {group + 1} peak",
            )
    if examples:
        handles, labels = axes[0].get_legend_handles_labels()
        bottom.legend(handles, labels, loc="outside right center", fontsize=9, ncols=legend_columns)
    letters = ", ".join(f"{name[0].upper()} = {name}" for name in part_names)
    bottom.suptitle(f"Examples: group peaks (markers) and part centres ({letters})", fontsize=10)
    return _save(figure, out)


# ------------------------------------------------------------------ from a checkpoint


def _split_images(trained: TrainedModel, split: str, root: str | None, progress: bool | None):
    """``split`` of the model's data (:meth:`TrainedModel.dataset`); DataError where it holds
    no images (a val split of classes with one image each), of which no figure can be drawn."""
    dataset = trained.dataset(split, root, progress=progress)
    if len(dataset) == 0:
        source = root or trained.config.data.root or trained.config.data.dataset
        raise DataError(
            f"the {split} split of {source} holds no images, so there is nothing to draw; "
            f"choose another {for_reader('--split', 'split')}"
        )
    return dataset


def pick_indices(length: int, count: int, seed: int = 0) -> list[int]:
    """``count`` distinct indices below ``length``, drawn at random with ``seed`` (all if fewer)."""
    if count < 1:
        raise ValueError(f"the number of images must be at least 1, got {count}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(length, generator=generator)[:count].tolist()


def image_batches(
    dataset, indices: Sequence[int], batch_size: int = 32, progress: bool | None = None
) -> Iterator[Tensor]:
    """The transformed images ``dataset[indices]`` in batches (labels dropped)."""
    subset = torch.utils.data.Subset(dataset, list(indices))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size)
    for images, _ in tqdm(loader, desc="images", unit="batch", disable=not bars_drawn(progress)):
        yield images


def correlation_figure(
    trained: TrainedModel,
    out: str | os.PathLike,
    *,
    root: str | None = None,
    split: str = "test",
    images: int = 64,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool | None = None,
) -> tuple[Path, Tensor, int]:
    """Fig. 2 for a trained model on ``images`` random images of ``split`` (all of them where
    it holds fewer); returns the path, the G x G group averages and the images averaged over."""
    _check_out(out)  # before the work
    dataset = _split_images(trained, split, root, progress)
    indices = pick_indices(len(dataset), images, seed)
    batches = image_batches(dataset, indices, batch_size, progress)
    correlation, count = mean_channel_correlation(trained.model, batches)
    sizes = trained.model.group_sizes
    path = plot_correlation(correlation, sizes, out, images=count)
    return path, group_means(correlation, sizes), count


def _typed_image(path: str | os.PathLike):
    """The image at a path the user typed, as RGB; a DataError about that path if it is none."""
    from sef.datasets.images import (
        MISSING,
        NOT_AN_IMAGE,
        UnreadableImage,
        missing,
        open_rgb,
        reason,
    )

    try:
        return open_rgb(path, upright=True)  # as sef predict reads it
    except UnreadableImage as bad:
        hint = "; give image files as PATH" if bad.kind in (MISSING, NOT_AN_IMAGE) else ""
        why = missing(path) if bad.kind == MISSING else reason(bad)
        raise DataError(f"{path} {why}{hint}") from None


def _images_and_titles(trained, paths, root, split, count, seed, progress):
    """Model inputs and a caption for each: given files, else random images of ``split``
    (``progress``: show a generated set being drawn)."""
    if paths:
        inputs = torch.stack([trained.test_transform(_typed_image(p)) for p in paths])
        return inputs, [shown(Path(p).name) for p in paths]  # a name's newline: escaped
    dataset = _split_images(trained, split, root, progress)
    items = [dataset[i] for i in pick_indices(len(dataset), count, seed)]
    return torch.stack([x for x, _ in items]), [
        f"true: {shown(trained.classes[y])}" for _, y in items
    ]


def cam_most(groups: int) -> int:
    """The images one group-map figure of ``groups`` groups holds: ``CAM_MOST`` columns, and
    ``_CAM_PANELS`` pictures in all."""
    return min(CAM_MOST, max(1, _CAM_PANELS // (groups + 1)))


def _check_columns(count: int, groups: int) -> None:
    """ValueError where ``count`` images of ``groups`` groups are more than a figure holds."""
    most = cam_most(groups)
    if count > most:
        beside = "" if most == CAM_MOST else f" beside {groups} groups"
        raise ValueError(
            f"a group-map figure has a column per image and at most {most} fit{beside}; asked "
            f"for {count}: draw several figures (another {for_reader('--seed', 'seed')}, or other "
            f"images)"
        )


def activation_figure(
    trained: TrainedModel,
    out: str | os.PathLike,
    paths: Sequence[str | os.PathLike] = (),
    *,
    root: str | None = None,
    split: str = "test",
    images: int = 6,
    seed: int = 0,
    progress: bool | None = None,
) -> Path:
    """Fig. 4 for image files ``paths`` (or ``images`` random images of ``split``), each
    captioned with the model's prediction; ``progress`` shows a generated set being drawn."""
    _check_out(out)  # before the work
    _check_not_shown(out, paths)
    _check_columns(len(paths) or images, len(trained.model.group_sizes))
    inputs, captions = _images_and_titles(trained, paths, root, split, images, seed, progress)
    model = trained.model
    with torch.no_grad(), evaluation_mode(model):
        logits = model(inputs.to(next(model.parameters()).device))
    confidence, predicted = logits.float().softmax(1).cpu().max(1)
    titles = [
        f"{caption}\npred: {shown(trained.classes[c])} ({100 * p:.0f}%)"
        for caption, c, p in zip(captions, predicted.tolist(), confidence.tolist(), strict=True)
    ]
    sizes = model.group_sizes
    features = backbone_features(model, inputs)
    warn_if_not_finite(not_finite_images(logits, features), len(inputs), "outputs")
    warn_if_one_position(
        features,
        inputs.shape[-2:],
        "each group's map is a single value and is drawn blank",
        "where each group activates",
    )
    maps = upsample_maps(group_maps(features, sizes), inputs.shape[-2:])
    labels = [f"group {g + 1} ({size} ch)" for g, size in enumerate(sizes)]
    preprocessing = trained.preprocessing
    pictures = unnormalise(inputs, preprocessing.mean, preprocessing.std)
    return plot_group_maps(pictures, maps, out, titles=titles, row_labels=labels)


def curves_figure(run_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Fig. 3 for a training run folder (its metrics.jsonl)."""
    _check_out(out)
    return plot_curves(read_metrics(run_dir), out, title=f"Training run {Path(run_dir).name}")


def _check_parts_known(dataset: str) -> None:
    """DataError, before any data is looked for, where the model's data has no part centres:
    finding a moved CUB folder for `sef viz parts` only to learn that parts need the demo."""
    from sef.datasets import GENERATED

    if dataset not in GENERATED:
        raise DataError(
            f"the {dataset} dataset this model was trained on has no part annotations; part "
            f"localisation needs a generated set with known parts ({', '.join(GENERATED)})"
        )


def parts_figure(
    trained: TrainedModel,
    out: str | os.PathLike,
    *,
    root: str | None = None,
    split: str = "test",
    images: int = 256,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool | None = None,
):
    """Measure where each group peaks on ``images`` random demo images and draw it; returns
    (path, PartReport)."""
    _check_out(out)  # before the work
    _check_parts_known(trained.config.data.dataset)
    dataset = _split_images(trained, split, root, progress)
    indices = pick_indices(len(dataset), images, seed)
    measured = measure_parts(
        trained.model, dataset, trained.test_transform, indices, batch_size, progress=progress
    )
    report = measured.report
    path = plot_parts(
        report.fractions,
        report.part_names,
        unnormalise(measured.examples, trained.preprocessing.mean, trained.preprocessing.std),
        measured.peaks,
        measured.parts,
        out,
        summary=report.summary(),
    )
    return path, report
