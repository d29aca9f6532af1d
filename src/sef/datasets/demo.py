"""Built-in fine-grained bird sets, drawn procedurally so anyone can train without downloads.

Every image shows one bird-like object -- body, head, wing, tail -- at a random pose, scale,
position and colour on a cluttered random background. Each part of a set comes in two variants
that differ only locally: the head is ``round`` or ``crested`` (a spike on top), the wing
``plain`` or ``barred`` (two stripes across it), the tail a ``fan`` or ``forked`` (a deep notch);
``birds32`` adds the breast, ``clear`` or ``spotted`` (three dots), and the feet, ``perching``
(toes) or ``webbed``. The 2^P combinations are the classes, so a classifier must find and compare
small parts: the global shape, colours and pose carry no class information. Each image's part
centres (pixel x, y) are saved with it and exposed as ``ds.parts`` so localisation can be measured.

- ``demo`` (this module's ``read``): 3 parts, 8 classes, 300 + 100 images per class at 64 px;
- ``birds32`` (:mod:`sef.datasets.birds32`): 5 parts, 32 classes, 30 + 25 per class at 128 px,
  CUB's proportions (about 30 training images per class) for fine-tuning pretrained backbones;
- ``birds32b`` (:mod:`sef.datasets.birds32b`): birds32 with other variants of the same five parts
  and another generation seed, to confirm on unseen data what a study found on birds32.

A set names its parts' variants; ``PART_DRAWINGS`` says how each named variant is drawn.
A set is a pure function of its options: it is generated on first use into a cache folder
(``$SEF_CACHE/<name>`` or ``~/.cache/sef/<name>``), into a temporary folder that is renamed into
place only when complete, so an interrupted generation never leaves a half set behind.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import secrets
import shutil
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from sef.datasets.caches import default_cache
from sef.datasets.imagelist import ImageList
from sef.datasets.splits import carve_val, check_split
from sef.errors import ConfigError, DataError, DiskFull, OutputError, for_reader
from sef.outputs import abandoned, output_error
from sef.text import bars_drawn

VERSION = 1  # bump when the drawing changes, so old caches are not reused
PART_VARIANTS = {
    "head": ("round", "crested"),
    "wing": ("plain", "barred"),
    "tail": ("fan", "forked"),
}
EXTRA_PARTS = {"breast": ("clear", "spotted"), "feet": ("perching", "webbed")}
# birds32b: the same five parts, each with two other variants (see PART_DRAWINGS).
BIRDS32B_VARIANTS = {
    "head": ("plain", "striped"),
    "wing": ("plain", "tipped"),
    "tail": ("short", "long"),
    "breast": ("clear", "banded"),
    "feet": ("short", "long"),
}


@dataclass(frozen=True)
class BirdSet:
    """One procedurally drawn set: its name (cache folder), parts, drawing version, and the range
    of the bird's size (half its body length, as a fraction of the image side). Each variant is
    drawn as ``PART_DRAWINGS[part][variant]`` says."""

    name: str
    parts: tuple[tuple[str, tuple[str, str]], ...]
    version: int
    unit: tuple[float, float] = (0.16, 0.24)

    def __post_init__(self) -> None:
        for part, variants in self.parts:
            unknown = [v for v in variants if v not in PART_DRAWINGS.get(part, {})]
            if unknown:
                raise ValueError(f"{self.name}: no drawing of the {part} {unknown[0]!r}")

    @property
    def classes(self) -> list[str]:
        """Every combination of part variants, the first part varying slowest."""
        return ["-".join(combo) for combo in itertools.product(*(v for _, v in self.parts))]

    def variants_of(self, label: int) -> dict[str, str]:
        names = [name for name, _ in self.parts]
        return dict(zip(names, self.classes[label].split("-"), strict=True))


ANNOTATIONS = "annotations.json"
_SET = re.compile(r"v\d+-seed\d+-\d+x\d+-\d+px$")  # a folder_name() of any version
_SPLIT_IDS = {"trainval": 0, "test": 1}
_SUPERSAMPLE = 2  # draw at twice the size, then downsample: smooth edges
Shape = list[tuple[float, float]]  # a polygon's corners in object units


def _arc(centre: tuple[float, float], axes: tuple[float, float], angles) -> Shape:
    """Points of an ellipse at the given angles (radians)."""
    cx, cy = centre
    return [(cx + axes[0] * math.cos(t), cy + axes[1] * math.sin(t)) for t in angles]


def _ellipse(centre: tuple[float, float], axes: tuple[float, float], n: int = 28) -> Shape:
    """An ellipse as a polygon of ``n`` points."""
    return _arc(centre, axes, (2 * math.pi * k / n for k in range(n)))


def _cap(centre: tuple[float, float], axes: tuple[float, float], cut: float, n: int = 8) -> Shape:
    """The end of an ellipse behind x = cut (cut < its centre's x), as a polygon."""
    start = math.acos((cut - centre[0]) / axes[0])  # where the ellipse crosses x = cut
    return _arc(centre, axes, (start + 2 * (math.pi - start) * k / n for k in range(n + 1)))


# Part geometry in object units u (half the body length); +x points to the head, +y down.
_HEAD, _HEAD_RADIUS = (1.0, -0.35), 0.36
_EYE = (_HEAD[0] + 0.12, _HEAD[1] - 0.05)
_WING, _WING_AXES = (-0.15, -0.05), (0.62, 0.3)
_TAIL_CENTRE = (-1.35, 0.0)
_BREAST = (0.59, 0.14)
_FEET = (0.05, 0.86)
_CENTRES = {"head": _HEAD, "wing": _WING, "tail": _TAIL_CENTRE, "breast": _BREAST, "feet": _FEET}
_CREST = [(0.78, -0.55), (1.0, -1.35), (1.22, -0.55)]
_EYE_STRIPE = [(0.68, -0.47), (1.32, -0.47), (1.33, -0.33), (0.67, -0.33)]  # through the eye
_BEAK = [(1.3, -0.48), (1.8, -0.3), (1.3, -0.16)]
_FAN_TAIL = [(-0.85, 0.0), (-1.7, -0.55), (-1.7, 0.55)]
_FORKED_TAIL = [(-0.85, 0.0), (-1.8, -0.65), (-1.3, 0.0), (-1.8, 0.65)]
_SHORT_TAIL = [(-0.85, -0.12), (-1.5, -0.32), (-1.5, 0.32), (-0.85, 0.12)]
_LONG_TAIL = [(-0.85, -0.1), (-1.85, -0.18), (-1.85, 0.18), (-0.85, 0.1)]  # longer, narrower
_WING_BARS = [  # two stripes across the wing, each at x with its width w
    [(x - w / 2, -0.28), (x + w / 2, -0.28), (x + w / 2, 0.2), (x - w / 2, 0.2)]
    for x, w in ((-0.45, 0.16), (0.05, 0.16))
]
_WING_TIP = _cap(_WING, (0.52, 0.26), -0.34)  # the wing's rear end, inside its outline
_SPOTS, _SPOT_RADIUS = [(0.48, 0.12), (0.68, 0.06), (0.6, 0.24)], 0.09
_BREAST_SPOTS = [_ellipse(xy, (_SPOT_RADIUS, _SPOT_RADIUS), n=12) for xy in _SPOTS]
_BREAST_BAND = [(0.5, -0.02), (0.68, -0.02), (0.68, 0.31), (0.5, 0.37)]  # to the belly's edge
_LEGS = [(-0.15, 0.3), (0.25, 0.34)]  # where each leg leaves the body
_LEG_END, _SHORT_LEGS, _LONG_LEGS = 0.8, 0.7, 0.92  # the y where a leg ends
_TOES = [(0.2, 0.84), (0.16, 0.97), (-0.09, 0.92)]  # each toe tip: (x from its leg, y at _LEG_END)
_WEB = [(0.0, -0.02), (0.24, 0.02), (0.19, 0.18), (-0.09, 0.13)]  # around the leg's end


class _Pose:
    """Maps object coordinates (units of u, facing +x) to canvas pixels."""

    def __init__(self, centre: tuple[float, float], unit: float, angle: float, facing: int):
        self.centre, self.unit, self.facing = centre, unit, facing
        self.cos, self.sin = math.cos(angle), math.sin(angle)

    def __call__(self, x: float, y: float) -> tuple[float, float]:
        x, y = self.facing * x * self.unit, y * self.unit
        return (
            self.centre[0] + x * self.cos - y * self.sin,
            self.centre[1] + x * self.sin + y * self.cos,
        )

    def polygon(self, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [self(x, y) for x, y in points]


@dataclass(frozen=True)
class _Canvas:
    """One bird being drawn: the image, the bird's pose and its body, accent and outline colours."""

    draw: ImageDraw.ImageDraw
    pose: _Pose
    body: tuple[int, int, int]
    accent: tuple[int, int, int]
    outline: tuple[int, int, int]

    def shape(self, points: Shape, fill, outline=None) -> None:
        """A filled polygon given in object units."""
        self.draw.polygon(self.pose.polygon(points), fill=fill, outline=outline)

    def line(self, start: tuple[float, float], end: tuple[float, float], width: int) -> None:
        """A line in the outline colour, its ends given in object units."""
        self.draw.line([self.pose(*start), self.pose(*end)], fill=self.outline, width=width)


def _colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(low, high, size=3))


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, c * factor)) for c in colour)


def _distinct_colour(rng: np.random.Generator, avoid: list[tuple[int, int, int]]):
    """A random colour at least a clear distance from every colour in ``avoid``."""
    while True:
        colour = _colour(rng)
        if all(np.linalg.norm(np.subtract(colour, a)) > 110 for a in avoid):
            return colour


def _draw_background(draw: ImageDraw.ImageDraw, rng: np.random.Generator, side: int) -> None:
    for _ in range(int(rng.integers(10, 18))):
        x0, y0 = rng.uniform(-0.1 * side, side, size=2)
        w, h = rng.uniform(0.05 * side, 0.35 * side, size=2)
        box = [x0, y0, x0 + w, y0 + h]
        kind = rng.integers(3)
        fill = _colour(rng, 30, 230)
        if kind == 0:
            draw.ellipse(box, fill=fill)
        elif kind == 1:
            draw.rectangle(box, fill=fill)
        else:
            draw.line(box, fill=fill, width=int(rng.integers(1, 4)) * _SUPERSAMPLE)


# ------------------------------------------------------------ how each part's variants are drawn


def _marks(canvas: _Canvas, shapes: Sequence[Shape], outlined: bool = True) -> None:
    """Accent-coloured shapes (object units) on a part."""
    for points in shapes:
        canvas.shape(points, canvas.accent, canvas.outline if outlined else None)


def _nothing(canvas: _Canvas) -> None:
    """A variant that adds nothing to its part (a clear breast)."""


def _body(canvas: _Canvas) -> None:
    canvas.shape(_ellipse((0.0, 0.0), (1.0, 0.45)), canvas.body, canvas.outline)


def _tail(canvas: _Canvas, shape: Shape) -> None:
    canvas.shape(shape, _shade(canvas.body, 0.8), canvas.outline)


def _wing(canvas: _Canvas, marks: Sequence[Shape] = ()) -> None:
    canvas.shape(_ellipse(_WING, _WING_AXES), _shade(canvas.body, 0.65), canvas.outline)
    _marks(canvas, marks, outlined=False)


def _head(canvas: _Canvas, under: Sequence[Shape] = (), over: Sequence[Shape] = ()) -> None:
    """The head with its beak and eye; ``under`` marks lie behind it (a crest), ``over`` on it."""
    _marks(canvas, [*under, _BEAK])
    canvas.shape(_ellipse(_HEAD, (_HEAD_RADIUS, _HEAD_RADIUS)), canvas.body, canvas.outline)
    _marks(canvas, over, outlined=False)
    (x, y), radius = canvas.pose(*_EYE), 0.07 * canvas.pose.unit
    canvas.draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=0)


def _feet(canvas: _Canvas, end: float = _LEG_END, webbed: bool = False) -> None:
    """Two legs below the body, ending at y = ``end`` in three toes or a filled web."""
    width = max(1, round(0.06 * canvas.pose.unit))
    for x, top in _LEGS:
        canvas.line((x, top), (x, end), width)
        if webbed:
            canvas.shape([(x + dx, end + dy) for dx, dy in _WEB], canvas.outline)
        else:
            for dx, y in _TOES:
                canvas.line((x, end), (x + dx, y + (end - _LEG_END)), width)


Drawing = Callable[[_Canvas], None]
# Every named variant of every part, as it is drawn (a set's variant names pick from these).
PART_DRAWINGS: dict[str, dict[str, Drawing]] = {
    "head": {
        "round": _head,
        "crested": partial(_head, under=[_CREST]),  # a spike on top
        "plain": _head,  # birds32b's name for the round head
        "striped": partial(_head, over=[_EYE_STRIPE]),  # a stripe through the eye
    },
    "wing": {
        "plain": _wing,
        "barred": partial(_wing, marks=_WING_BARS),
        "tipped": partial(_wing, marks=[_WING_TIP]),  # an accent-coloured tip
    },
    "tail": {
        "fan": partial(_tail, shape=_FAN_TAIL),
        "forked": partial(_tail, shape=_FORKED_TAIL),
        "short": partial(_tail, shape=_SHORT_TAIL),
        "long": partial(_tail, shape=_LONG_TAIL),
    },
    "breast": {
        "clear": _nothing,
        "spotted": partial(_marks, shapes=_BREAST_SPOTS),
        "banded": partial(_marks, shapes=[_BREAST_BAND]),  # one band across it
    },
    "feet": {
        "perching": _feet,
        "webbed": partial(_feet, webbed=True),
        "short": partial(_feet, end=_SHORT_LEGS),  # toes on shorter legs than perching's
        "long": partial(_feet, end=_LONG_LEGS),
    },
}
_LAYERS = ("tail", "feet", "body", "wing", "breast", "head")  # back to front

DEMO = BirdSet("demo", tuple(PART_VARIANTS.items()), VERSION)
# birds32's birds are smaller and vary more in size (about 35-65 % of the image across, the
# demo's 58-86 %), so its parts are small, as in CUB.
BIRDS32 = BirdSet("birds32", tuple({**PART_VARIANTS, **EXTRA_PARTS}.items()), 1, (0.1, 0.18))
BIRDS32B = BirdSet("birds32b", tuple(BIRDS32B_VARIANTS.items()), 1, BIRDS32.unit)
CLASSES = DEMO.classes


def variants_of(label: int, birds: BirdSet = DEMO) -> dict[str, str]:
    """The part variants that define class ``label``, e.g. {'head': 'crested', ...}."""
    return birds.variants_of(label)


def _place_bird(draw: ImageDraw.ImageDraw, rng, side: int, birds: BirdSet, background) -> _Canvas:
    """A random pose, size and position, and colours that stand out from the background."""
    unit = rng.uniform(*birds.unit) * side  # half the body length: the object spans ~3.6 u
    reach = 1.9 * unit
    centre = tuple(rng.uniform(reach, side - reach, size=2))
    pose = _Pose(centre, unit, math.radians(rng.uniform(-30, 30)), int(rng.choice([-1, 1])))
    body = _distinct_colour(rng, [background])
    accent = _distinct_colour(rng, [body])
    return _Canvas(draw, pose, body, accent, _shade(body, 0.35))


def render(
    label: int, rng: np.random.Generator, size: int = 64, birds: BirdSet = DEMO
) -> tuple[Image.Image, dict[str, tuple[float, float]]]:
    """Draw one image of class ``label``; return it with its part centres in pixels (x, y)."""
    variant = birds.variants_of(label)
    side = size * _SUPERSAMPLE
    background = _colour(rng, 40, 216)
    image = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(image)
    _draw_background(draw, rng, side)
    canvas = _place_bird(draw, rng, side, birds, background)
    layers = {"body": _body} | {part: PART_DRAWINGS[part][v] for part, v in variant.items()}
    for layer in _LAYERS:
        if layer in layers:
            layers[layer](canvas)
    centres = {name: canvas.pose(*_CENTRES[name]) for name in variant}  # in the set's order
    parts = {name: (x / _SUPERSAMPLE, y / _SUPERSAMPLE) for name, (x, y) in centres.items()}
    return image.reduce(_SUPERSAMPLE), parts


def folder_name(
    per_class: int,
    test_per_class: int,
    resolution: int,
    generation_seed: int,
    birds: BirdSet = DEMO,
) -> str:
    """The cache sub-folder of one configuration of a set (every option is in the name)."""
    return f"v{birds.version}-seed{generation_seed}-{per_class}x{test_per_class}-{resolution}px"


def _check_cache(base: Path) -> None:
    """Refuse to generate into a folder holding anything but demo sets (e.g. a user's images)."""
    if not base.is_dir():
        return
    foreign = sorted(
        p.name for p in base.iterdir() if not p.name.startswith(".") and not _SET.match(p.name)
    )
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise DataError(
            f"{base} is not a demo cache (it holds {shown}) and the demo will not write its "
            f"images there; for your own images use dataset folder or csv (the presets "
            f"folder-<backbone> and csv-<backbone>, e.g. "
            f"{for_reader('--preset folder-resnet50', 'the preset folder-resnet50')})"
        )


def _write_set(
    folder: Path,
    counts: dict[str, int],
    resolution: int,
    generation_seed: int,
    progress: bool | None,
    birds: BirdSet = DEMO,
) -> None:
    records = []
    classes = birds.classes
    jobs = [
        (s, label, i) for s, n in counts.items() for label in range(len(classes)) for i in range(n)
    ]
    for split, label, index in tqdm(
        jobs, desc=f"generating {birds.name} set", disable=not bars_drawn(progress)
    ):
        rng = np.random.default_rng([generation_seed, _SPLIT_IDS[split], label, index])
        image, parts = render(label, rng, resolution, birds)
        relative = f"{split}/{classes[label]}/{index:05d}.png"
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        image.save(folder / relative)
        records.append({"path": relative, "label": label, "split": split, "parts": parts})
    meta = {
        "version": birds.version,
        "classes": classes,
        "generation_seed": generation_seed,
        "resolution": resolution,
        "images": records,
    }
    (folder / ANNOTATIONS).write_text(json.dumps(meta))


def _generate(
    folder: Path,
    counts: dict[str, int],
    resolution: int,
    generation_seed: int,
    progress: bool | None,
    birds: BirdSet,
) -> None:
    """Write the set into a temporary folder beside ``folder``, then rename it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    # the host in the name: only this machine can tell whether the pid in it is gone
    host = re.sub(r"[^\w.-]", "_", socket.gethostname())
    for leftover in abandoned(folder.parent, rf"\..+\.partial-{re.escape(host)}-(?P<pid>\d+)-\w+"):
        shutil.rmtree(leftover, ignore_errors=True)  # of a killed generation
    # mkdir, not mkdtemp (mode 0700): a set in a shared SEF_CACHE is readable as umask allows
    partial = folder.parent / f".{folder.name}.partial-{host}-{os.getpid()}-{secrets.token_hex(4)}"
    partial.mkdir()
    try:
        _write_set(partial, counts, resolution, generation_seed, progress, birds)
        try:
            partial.rename(folder)
        except OSError:  # another process finished the same set first: keep theirs
            if not (folder / ANNOTATIONS).is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _unwritable(folder: Path, error: OSError) -> OutputError:
    """The one-line error for a set that cannot be written to ``folder``, saying where else."""
    found = output_error(folder, error, folder=True)
    advice = "free some space or " if isinstance(found, DiskFull) else ""
    where = f"set SEF_CACHE or {for_reader('--data-root', 'data.root')} to another folder"
    return type(found)(f"{found.problem}; {advice}{where}", found.problem)


def ensure_generated(
    root: str | os.PathLike | None = None,
    *,
    per_class: int = 300,
    test_per_class: int = 100,
    resolution: int = 64,
    generation_seed: int = 0,
    progress: bool | None = None,
    birds: BirdSet = DEMO,
) -> Path:
    """The folder of this configuration of a set under ``root``, generated first if absent."""
    for name, value in (("per_class", per_class), ("test_per_class", test_per_class)):
        if not isinstance(value, int) or value < 2:
            raise DataError(f"{birds.name} option {name} must be an integer >= 2, got {value!r}")
    if not isinstance(resolution, int) or resolution < 32:
        raise DataError(
            f"{birds.name} option resolution must be an integer >= 32, got {resolution!r}"
        )
    base = Path(root) if root is not None else default_cache(birds.name)
    folder = base / folder_name(per_class, test_per_class, resolution, generation_seed, birds)
    if (folder / ANNOTATIONS).is_file():
        return folder
    _check_cache(base)
    counts = {"trainval": per_class, "test": test_per_class}
    try:
        _generate(folder, counts, resolution, generation_seed, progress, birds)
    except OSError as error:
        raise _unwritable(folder, error) from None
    # where it went, unless told to be quiet: a mistyped --data-root shows here, not in a full
    # disk later
    if progress is not False:
        tqdm.write(f"{birds.name} set written to {folder}", file=sys.stderr)
    return folder


def reader_of(
    birds: BirdSet, *, per_class: int, test_per_class: int, resolution: int, generation_seed: int
) -> Callable[..., ImageList]:
    """The ``read(root, split, *, seed, val_fraction, **options)`` of a bird set, whose options
    (listed by ``sef.datasets.options``) default to the given values."""

    def read(
        root: str | os.PathLike | None,
        split: str,
        *,
        seed: int = 0,
        val_fraction: float = 0.1,
        per_class: int = per_class,
        test_per_class: int = test_per_class,
        resolution: int = resolution,
        generation_seed: int = generation_seed,
        progress: bool | None = None,
    ) -> ImageList:
        return read_set(birds, root, split, seed, val_fraction, progress, **{
            "per_class": per_class, "test_per_class": test_per_class,
            "resolution": resolution, "generation_seed": generation_seed,
        })  # fmt: skip

    read.__doc__ = f"``split`` of {birds.name}; trainval/test are generated, train/val carved."
    return read


def read_set(
    birds: BirdSet,
    root: str | os.PathLike | None,
    split: str,
    seed: int,
    val_fraction: float,
    progress: bool | None,
    **options: int,
) -> ImageList:
    """``split`` of a bird set; trainval/test are generated, train/val carved from trainval."""
    check_split(split)
    if not (progress is None or isinstance(progress, bool)):  # None: on a terminal only
        raise ConfigError(
            f"dataset {birds.name!r} option progress takes true or false, got {progress!r}"
        )
    folder = ensure_generated(root, progress=progress, birds=birds, **options)
    meta = json.loads((folder / ANNOTATIONS).read_text())
    wanted = "test" if split == "test" else "trainval"
    records = [r for r in meta["images"] if r["split"] == wanted]
    dataset = ImageList(
        [(str(folder / r["path"]), r["label"]) for r in records],
        meta["classes"],
        parts=[{name: tuple(xy) for name, xy in r["parts"].items()} for r in records],
        upright=False,  # drawn untagged; read as the benchmarks are
    )
    return dataset if split == "test" else carve_val(dataset, split, seed, val_fraction)


# The demo set's reader: 300 training and 100 test images per class at 64 px.
read = reader_of(DEMO, per_class=300, test_per_class=100, resolution=64, generation_seed=0)
