"""The four benchmark readers on tiny copies of their official formats (see conftest.py)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from conftest import (
    AIRCRAFT,
    AIRCRAFT_SPLITS,
    BANNER,
    CARS_CLASSES,
    CARS_TEST,
    CARS_TRAIN,
    CUB_CLASSES,
    CUB_TEST,
    CUB_TRAIN,
    DOGS_CLASSES,
    DOGS_TEST,
    DOGS_TRAIN,
)
from numpy.lib.recfunctions import repack_fields
from PIL import Image

import sef
from sef.errors import ConfigError, DataError


def _labels_follow_folders(ds, folder_of):
    """Every sample's class name is the one its path says it belongs to."""
    for path, label in ds.samples:
        assert Path(path).is_file()
        assert folder_of(path) == ds.classes[label], path


def _check_val_carve(name, root, per_class_trainval, num_classes, **options):
    trainval = sef.datasets.load(name, root, "trainval", **options)
    train = sef.datasets.load(name, root, "train", **options)
    val = sef.datasets.load(name, root, "val", **options)
    assert sorted(train.samples + val.samples) == sorted(trainval.samples)
    assert sorted({label for _, label in val.samples}) == list(range(num_classes))
    assert len(val) == num_classes * max(1, round(0.1 * per_class_trainval))


# --- CUB ---
def test_cub_reads_the_archive_layout(cub_root):
    trainval = sef.datasets.load("cub", cub_root, "trainval")
    test = sef.datasets.load("cub", cub_root, "test")
    assert trainval.classes == test.classes == CUB_CLASSES
    assert len(trainval) == 3 * CUB_TRAIN and len(test) == 3 * CUB_TEST
    _labels_follow_folders(trainval, lambda p: Path(p).parent.name)
    _labels_follow_folders(test, lambda p: Path(p).parent.name)
    assert not set(trainval.samples) & set(test.samples)
    parent = sef.datasets.load("cub", cub_root.parent, "test")  # the folder holding CUB_200_2011
    assert parent.samples == test.samples
    _check_val_carve("cub", cub_root, CUB_TRAIN, 3)


def test_cub_bounding_box_crop(cub_root):
    plain = sef.datasets.load("cub", cub_root, "test")
    cropped = sef.datasets.load("cub", cub_root, "test", bbox_crop=True)
    image, _ = cropped[0]
    assert image.size == (20, 12)  # box 4 6 20 12 = x y width height
    full, _ = plain[0]
    assert np.array_equal(np.asarray(image), np.asarray(full.crop((4, 6, 24, 18))))


def test_cub_box_without_pixels_is_refused(cub_root):
    boxes = cub_root / "bounding_boxes.txt"
    others = boxes.read_text().split("\n", 1)[1]
    boxes.write_text("1 4.0 6.0 0.0 12.0\n" + others)
    sef.datasets.load("cub", cub_root, "trainval")  # boxes are read only to crop
    with pytest.raises(
        DataError,
        match=r"bounding_boxes.txt \(image id 1\): the box from \(4, 6\) to \(4, 18\) encloses "
        r"no pixels; fix the box or train without bbox_crop",
    ):
        sef.datasets.load("cub", cub_root, "trainval", bbox_crop=True)


def test_cub_errors_name_the_file_and_layout(cub_root, tmp_path):
    archive = tmp_path / "CUB_200_2011.tgz"  # downloaded, not unpacked yet
    archive.write_bytes(b"\x1f\x8b")
    unpack = "dataset cub reads a folder; unpack the archive and pass the folder it unpacks to$"
    with pytest.raises(DataError, match=rf"\.tgz is a file, not a folder; {unpack}"):
        sef.datasets.load("cub", archive, "test")
    with pytest.raises(DataError, match="does not exist.*CUB_200_2011/"):
        sef.datasets.load("cub", tmp_path / "nowhere", "test")
    (cub_root / "classes.txt").unlink()
    with pytest.raises(DataError, match=r"classes.txt is missing.*laid out as CUB_200_2011/"):
        sef.datasets.load("cub", cub_root, "test")


def test_a_benchmark_a_folder_or_two_below_the_root_is_pointed_at(
    cub_root, aircraft_root, tmp_path
):
    # unpacked into a folder of its own (CUB_200_2011/CUB_200_2011), or ROOT one folder too high
    holder = tmp_path / "Downloads"
    shutil.move(cub_root, holder / "CUB_200_2011" / "CUB_200_2011")
    found = holder / "CUB_200_2011" / "CUB_200_2011"
    with pytest.raises(DataError) as error:
        sef.datasets.load("cub", holder, "test")
    assert str(error.value).endswith(
        f"; {found / 'images.txt'} exists: pass {found} as the data root"
    )
    aircraft = holder / "aircraft" / "fgvc-aircraft-2013b"
    shutil.move(aircraft_root, aircraft)
    with pytest.raises(DataError) as error:
        sef.datasets.load("aircraft", holder, "test")
    assert str(error.value).endswith(
        f"; {aircraft / 'data'} exists: pass {aircraft} as the data root"
    )


@pytest.mark.parametrize(
    ("name", "child"),
    [
        ("cub", "images/001.Black_footed_Albatross"),
        ("cars", "cars_train"),
        ("dogs", "Images"),
        ("aircraft", "data/images"),
    ],
)
def test_a_folder_inside_a_benchmark_given_as_root_points_at_the_benchmark(name, child, request):
    dataset = request.getfixturevalue(f"{name}_root")
    with pytest.raises(DataError) as error:
        sef.datasets.load(name, dataset / child, "test")
    assert str(error.value).endswith(f"exists: pass {dataset} as the data root")


def test_an_archive_not_yet_unpacked_in_the_root_is_named(tmp_path):
    (tmp_path / "CUB_200_2011.tgz").write_bytes(b"archive")
    with pytest.raises(DataError) as error:
        sef.datasets.load("cub", tmp_path, "test")
    assert str(error.value).endswith(
        f"; {tmp_path / 'CUB_200_2011.tgz'} is not unpacked: unpack it into {tmp_path} and pass "
        f"{tmp_path} again"
    )


def test_cub_lists_are_utf8_with_or_without_a_byte_order_mark(cub_root):
    images = cub_root / "images.txt"
    expected = sef.datasets.load("cub", cub_root, "test").samples
    images.write_text("\ufeff" + images.read_text(), encoding="utf-8")
    assert sef.datasets.load("cub", cub_root, "test").samples == expected
    classes = cub_root / "classes.txt"
    classes.write_bytes(classes.read_bytes() + "4 Caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"classes.txt is not UTF-8 text \(line 4, byte \d+\)"):
        sef.datasets.load("cub", cub_root, "test")


def test_cub_label_outside_the_class_list(cub_root):
    labels = cub_root / "image_class_labels.txt"
    labels.write_text(labels.read_text().replace("6 2\n", "6 4\n"))
    with pytest.raises(DataError, match=r"image_class_labels.txt \(image id 6\).*outside"):
        sef.datasets.load("cub", cub_root, "trainval")
    labels.write_text(labels.read_text().replace("6 4\n", "6 0\n"))  # numbered from 0
    with pytest.raises(DataError, match=r"id 6\): label 0 names no class: this list numbers the"):
        sef.datasets.load("cub", cub_root, "trainval")


def test_cub_missing_split_line(cub_root):
    split = cub_root / "train_test_split.txt"
    split.write_text("\n".join(split.read_text().splitlines()[1:]))
    with pytest.raises(DataError, match="train_test_split.txt has no line for image id 1"):
        sef.datasets.load("cub", cub_root, "trainval")


@pytest.mark.parametrize("kept", [14, 0])  # cut short, or emptied: fewer images, silently
def test_cub_an_images_txt_that_lists_fewer_ids_than_the_labels_is_refused(cub_root, kept):
    images = cub_root / "images.txt"
    images.write_text("".join(images.read_text().splitlines(keepends=True)[:kept]))
    with pytest.raises(
        DataError,
        match=rf"image_class_labels.txt lists {15 - kept} image ids? that images.txt does not, "
        rf"e.g. {kept + 1}; the lists do not belong together: unpack CUB_200_2011.tgz again",
    ):
        sef.datasets.load("cub", cub_root, "trainval")


@pytest.mark.parametrize("listing", ["images.txt", "image_class_labels.txt"])
def test_cub_an_image_id_listed_twice_is_refused(cub_root, listing):
    # appended by hand: image 1 again, as another image or with another label
    extra = {"images.txt": "1 002.Laysan_Albatross/x.jpg", "image_class_labels.txt": "1 2"}
    path = cub_root / listing
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, extra[listing]]) + "\n")
    with pytest.raises(
        DataError, match=rf"{listing} line {len(lines) + 1} repeats id 1 of line 1; list each id"
    ):
        sef.datasets.load("cub", cub_root, "test")


def test_a_benchmark_list_naming_one_image_twice_is_refused(cub_root, cars_root):
    """Two ids of one image (its lines copied and renumbered by hand) put both copies in
    trainval, where a carved val could hold one while training on the other."""
    images = cub_root / "images.txt"
    first = images.read_text().splitlines()[0].split()[1]
    lines = images.read_text().splitlines()
    images.write_text("\n".join([lines[0], f"2 {first}", *lines[2:]]) + "\n")
    with pytest.raises(DataError, match=f"images.txt lists {first} twice; list each image once"):
        sef.datasets.load("cub", cub_root, "test")
    annotations = cars_root / "devkit" / "cars_train_annos.mat"
    table = scipy.io.loadmat(annotations)["annotations"]
    table[0, 1]["fname"] = table[0, 0]["fname"]
    scipy.io.savemat(annotations, {"annotations": table})
    with pytest.raises(DataError, match="cars_train_annos.mat lists 00001.jpg twice; list each"):
        sef.datasets.load("cars", cars_root, "trainval")


def test_cub_split_other_than_1_or_0_is_refused(cub_root):
    split = cub_root / "train_test_split.txt"
    split.write_text(split.read_text().replace("6 1\n", "6 train\n"))
    with pytest.raises(
        DataError,
        match=r"train_test_split.txt \(image id 6\): split 'train' is neither 1 \(train\)",
    ):
        sef.datasets.load("cub", cub_root, "test")


def test_cub_classes_are_named_by_their_ids(cub_root):
    classes = cub_root / "classes.txt"
    lines = classes.read_text().splitlines()
    classes.write_text("\n".join(reversed(lines)) + "\n")  # as `sort` leaves 1, 10, 100, ..., 2
    assert sef.datasets.load("cub", cub_root, "test").classes == CUB_CLASSES
    classes.write_text("\n".join([*lines[:-1], "7 " + lines[-1].split()[1]]) + "\n")
    with pytest.raises(DataError, match=rf"classes.txt: class id 7 is not one of 1..{len(lines)}"):
        sef.datasets.load("cub", cub_root, "test")


# --- Stanford Cars ---
def test_cars_reads_the_archive_layout(cars_root):
    trainval = sef.datasets.load("cars", cars_root, "trainval")
    test = sef.datasets.load("cars", cars_root, "test")
    assert trainval.classes == test.classes == CARS_CLASSES  # names with '/' survive
    assert len(trainval) == 3 * CARS_TRAIN and len(test) == 3 * CARS_TEST
    assert all(Path(p).parent.name == "cars_train" for p, _ in trainval.samples)
    assert all(Path(p).parent.name == "cars_test" for p, _ in test.samples)
    # fixture: annotation i (1-based file i+1) has class i % 3 + 1
    assert [label for _, label in test.samples] == [i % 3 for i in range(len(test))]
    assert Path(test.samples[4][0]).name == "00005.jpg"
    _check_val_carve("cars", cars_root, CARS_TRAIN, 3)


def test_cars_accepts_torchvision_folder_and_devkit_test_labels(cars_root, tmp_path):
    expected = sef.datasets.load("cars", cars_root, "test").samples
    moved = shutil.move(cars_root / "cars_test_annos_withlabels.mat", cars_root / "devkit")
    assert sef.datasets.load("cars", cars_root, "test").samples == expected
    nested = tmp_path / "holder" / "stanford_cars"
    shutil.move(cars_root, nested)
    ds = sef.datasets.load("cars", nested.parent, "test")
    assert [Path(p).name for p, _ in ds.samples] == [Path(p).name for p, _ in expected]
    assert Path(moved).name == "cars_test_annos_withlabels.mat"


def test_cars_devkit_and_test_labels_kept_elsewhere_are_said_to_be_moved(cars_root):
    """A devkit one folder deeper than the images (car_devkit/devkit) was pointed at as the data
    root, which holds no images; a labels file saved as '... (1).mat' was said to be missing."""
    (cars_root / "car_devkit").mkdir()
    shutil.move(cars_root / "devkit", cars_root / "car_devkit")
    with pytest.raises(DataError) as error:
        sef.datasets.load("cars", cars_root, "trainval")
    assert str(error.value) == (
        f"devkit not found in {cars_root} beside cars_train; {cars_root / 'car_devkit' / 'devkit'} "
        f"exists: move it to {cars_root / 'devkit'}"
    )
    shutil.move(cars_root / "car_devkit" / "devkit", cars_root)
    copy = cars_root / "cars_test_annos_withlabels (1).mat"
    (cars_root / "cars_test_annos_withlabels.mat").rename(copy)
    with pytest.raises(
        DataError, match=r"\(1\).mat exists: rename it cars_test_annos_withlabels.mat$"
    ):
        sef.datasets.load("cars", cars_root, "test")


def test_cars_bounding_box_crop(cars_root):
    image, _ = sef.datasets.load("cars", cars_root, "trainval", bbox_crop=True)[0]
    assert image.size == (27, 20)  # bbox 3 5 30 25 = x1 y1 x2 y2


def test_cars_errors(cars_root):
    (cars_root / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(DataError) as error:  # the devkit's cars_test_annos.mat has no labels
        sef.datasets.load("cars", cars_root, "test")
    assert str(error.value) == (
        f"cars_test_annos_withlabels.mat is in neither {cars_root} nor its devkit/ (the devkit's "
        f"cars_test_annos.mat holds no test labels); get cars_test_annos_withlabels.mat, "
        f"published apart from car_devkit.tgz, and put it in {cars_root}"
    )
    annotations = cars_root / "devkit" / "cars_train_annos.mat"
    table = scipy.io.loadmat(annotations)["annotations"]
    table[0, 2]["class"] = np.array([[7]], np.uint8)
    scipy.io.savemat(annotations, {"annotations": table})
    with pytest.raises(DataError, match=r"00003.jpg\): label 7 is outside the class list"):
        sef.datasets.load("cars", cars_root, "trainval")
    table[0, 2]["class"] = np.array([[1]], np.uint8)
    table[0, 0]["bbox_x2"] = np.array([[2]], np.uint8)  # left of bbox_x1 = 3
    scipy.io.savemat(annotations, {"annotations": table})
    with pytest.raises(
        DataError, match=r"cars_train_annos.mat \(00001.jpg\): the box from \(3, 5\) to \(2, 25\)"
    ):
        sef.datasets.load("cars", cars_root, "trainval", bbox_crop=True)
    # the train annotations of another kind: a field named, not numpy's 'no field of name'
    table = repack_fields(table[["class", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"]])
    scipy.io.savemat(annotations, {"annotations": table})
    with pytest.raises(DataError, match=r"annos.mat has no 'fname' field; is it the official file"):
        sef.datasets.load("cars", cars_root, "trainval")
    scipy.io.savemat(annotations, {"annotations": np.arange(3)})
    with pytest.raises(DataError, match=r"annos.mat has no 'class' field; is it the official file"):
        sef.datasets.load("cars", cars_root, "trainval")
    (cars_root / "devkit" / "cars_meta.mat").write_text("not a MATLAB file")
    with pytest.raises(DataError, match="cars_meta.mat is not a readable MATLAB file"):
        sef.datasets.load("cars", cars_root, "trainval")
    (cars_root / "devkit" / "cars_meta.mat").write_bytes(_matlab_v73_header())
    with pytest.raises(DataError, match=r"cars_meta.mat is a MATLAB v7.3 file; use the official"):
        sef.datasets.load("cars", cars_root, "trainval")


def _matlab_v73_header() -> bytes:
    """The 128-byte header of a MATLAB v7.3 (HDF5) file, which scipy does not read."""
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 ."
    return text.ljust(116) + bytes(8) + b"\x00\x02IM" + bytes(384) + b"\x89HDF\r\n\x1a\n"


# --- Stanford Dogs ---
def test_dogs_reads_the_archive_layout(dogs_root):
    trainval = sef.datasets.load("dogs", dogs_root, "trainval")
    test = sef.datasets.load("dogs", dogs_root, "test")
    assert trainval.classes == test.classes == DOGS_CLASSES  # by label, not by listing order
    assert len(trainval) == 3 * DOGS_TRAIN and len(test) == 3 * DOGS_TEST
    _labels_follow_folders(trainval, lambda p: Path(p).parent.name)
    _labels_follow_folders(test, lambda p: Path(p).parent.name)
    _check_val_carve("dogs", dogs_root, DOGS_TRAIN, 3)
    for name in ("train_list.mat", "test_list.mat"):  # lists at the top level work too
        shutil.move(dogs_root / "lists" / name, dogs_root / name)
    assert sef.datasets.load("dogs", dogs_root, "test").samples == test.samples


def test_dogs_errors(dogs_root):
    def relabel(name, old, new):
        path = dogs_root / "lists" / name
        content = scipy.io.loadmat(path)
        content["labels"][content["labels"] == old] = new
        scipy.io.savemat(path, {k: v for k, v in content.items() if not k.startswith("__")})

    lists = dogs_root / "lists"
    shutil.copy(lists / "test_list.mat", lists / "kept.mat")
    shutil.copy(lists / "train_list.mat", lists / "test_list.mat")  # the test images trained on
    with pytest.raises(
        DataError,
        match=r"9 images of .*lists are in both train_list.mat and test_list.mat, e.g. "
        r"n02085620-Chihuahua/n02085620_0.jpg; the lists are not the official ones",
    ):
        sef.datasets.load("dogs", dogs_root, "test")
    shutil.move(lists / "kept.mat", lists / "test_list.mat")
    relabel("train_list.mat", 2, 4)  # train says 4, test says 2: one folder, two labels
    with pytest.raises(DataError, match="one Images/ folder two labels"):
        sef.datasets.load("dogs", dogs_root, "trainval")
    relabel("test_list.mat", 2, 4)  # labels 1, 3, 4: nothing is class 2
    gap = r"labels in .*lists run from 1 to 4 but no image has label 2; number the classes 1..K "
    with pytest.raises(DataError, match=gap):
        sef.datasets.load("dogs", dogs_root, "trainval")
    for name in ("train_list.mat", "test_list.mat"):  # labels 1, 4, 6: three gaps, all named
        relabel(name, 3, 6)
    with pytest.raises(DataError, match="run from 1 to 6 but no image has labels 2, 3, 5; numb"):
        sef.datasets.load("dogs", dogs_root, "trainval")
    shutil.copy(lists / "train_list.mat", lists / "kept.mat")
    content = scipy.io.loadmat(lists / "train_list.mat")  # one image twice: in train and val
    content["file_list"][1] = content["file_list"][0]
    scipy.io.savemat(lists / "train_list.mat", {k: v for k, v in content.items() if k[0] != "_"})
    with pytest.raises(DataError, match=r"train_list.mat lists n0208[0-9]*-\w+/\w+.jpg twice; l"):
        sef.datasets.load("dogs", dogs_root, "trainval")
    shutil.move(lists / "kept.mat", lists / "train_list.mat")
    for name in ("train_list.mat", "test_list.mat"):  # 0-based: said so, not as a gap
        relabel(name, 1, 0)
    with pytest.raises(DataError, match="labels in .*lists start at 0; Stanford Dogs' lists numb"):
        sef.datasets.load("dogs", dogs_root, "trainval")
    (dogs_root / "lists" / "test_list.mat").unlink()
    with pytest.raises(DataError, match="test_list.mat is missing.*Images/<synset-name>"):
        sef.datasets.load("dogs", dogs_root, "test")
    shutil.rmtree(dogs_root / "Images")
    with pytest.raises(DataError, match="Images not found"):
        sef.datasets.load("dogs", dogs_root, "test")


def test_dogs_one_image_in_both_lists_is_named_in_the_singular(dogs_root):
    """One shared image was reported as "1 image of ... are in both"."""
    lists = dogs_root / "lists"
    train = scipy.io.loadmat(lists / "train_list.mat")
    test = scipy.io.loadmat(lists / "test_list.mat")
    test["file_list"][0, 0] = train["file_list"][0, 0]  # same class: both lists start with it
    scipy.io.savemat(lists / "test_list.mat", {k: v for k, v in test.items() if k[0] != "_"})
    with pytest.raises(DataError, match=r"1 image of .*lists is in both train_list.mat and "):
        sef.datasets.load("dogs", dogs_root, "test")


# --- FGVC-Aircraft ---
def test_aircraft_official_splits_and_root_forms(aircraft_root):
    counts = {s: len(sef.datasets.load("aircraft", aircraft_root, s)) for s in sef.datasets.SPLITS}
    per_split = {s: n * len(AIRCRAFT) for s, n in AIRCRAFT_SPLITS.items()}
    assert counts == {**per_split, "trainval": per_split["train"] + per_split["val"]}
    test = sef.datasets.load("aircraft", aircraft_root, "test")
    assert test.classes == sorted(v for v, _, _ in AIRCRAFT)  # variants.txt order
    assert "F/A-18" in test.classes
    for root in (aircraft_root / "data", aircraft_root.parent):
        assert sef.datasets.load("aircraft", root, "test").samples == test.samples


def test_aircraft_root_through_a_link_named_otherwise(aircraft_root, tmp_path):
    def files(root):
        return [(Path(path).resolve(), label) for path, label in load(root).samples]

    def load(root):
        return sef.datasets.load("aircraft", root, "test")

    for target, link in ((aircraft_root, "aircraft"), (aircraft_root / "data", "aircraft-data")):
        (tmp_path / link).symlink_to(target, target_is_directory=True)
        assert files(tmp_path / link) == files(aircraft_root)


@pytest.mark.parametrize("level", ["family", "manufacturer"])
def test_aircraft_levels(aircraft_root, level):
    column = {"family": 1, "manufacturer": 2}[level]
    by_variant = sef.datasets.load("aircraft", aircraft_root, "trainval")
    coarse = sef.datasets.load("aircraft", aircraft_root, "trainval", level=level)
    assert coarse.classes == sorted({names[column] for names in AIRCRAFT})
    to_coarse = {names[0]: names[column] for names in AIRCRAFT}
    for (path, fine), (same_path, label) in zip(by_variant.samples, coarse.samples, strict=True):
        assert path == same_path
        assert coarse.classes[label] == to_coarse[by_variant.classes[fine]]


def test_aircraft_banner_crop(aircraft_root):
    full, _ = sef.datasets.load("aircraft", aircraft_root, "test")[0]
    cropped, _ = sef.datasets.load("aircraft", aircraft_root, "test", crop_banner=True)[0]
    assert full.size == (60, 40 + BANNER) and cropped.size == (60, 40)
    assert np.asarray(full)[-BANNER:].min() > 200  # the white banner
    assert np.asarray(cropped)[..., 0].max() < 100  # blue image, no white rows left


def test_aircraft_errors(aircraft_root, tmp_path):
    with pytest.raises(ConfigError, match="unknown Aircraft level 'model'"):
        sef.datasets.load("aircraft", aircraft_root, "test", level="model")
    renamed = tmp_path / "aircraft"
    shutil.copytree(aircraft_root, renamed)
    for root in (renamed, renamed / "data"):
        with pytest.raises(DataError) as error:
            sef.datasets.load("aircraft", root, "test")
        assert "no fgvc-aircraft-2013b/data folder" in str(error.value)
        assert str(error.value).endswith(
            f"folder name kept); {renamed} holds the dataset's data/: rename aircraft to "
            f"fgvc-aircraft-2013b"
        )
    variants = aircraft_root / "data" / "variants.txt"
    variants.write_text(variants.read_text() + "F/A-18\n")  # two classes by one name
    with pytest.raises(DataError, match="variants.txt line 5 repeats the class 'F/A-18' of line 4"):
        sef.datasets.load("aircraft", aircraft_root, "test")
    variants.write_text(variants.read_text().replace("F/A-18\n", ""))
    with pytest.raises(DataError, match="names class 'F/A-18' that is not in variants.txt"):
        sef.datasets.load("aircraft", aircraft_root, "test")
    listing = aircraft_root / "data" / "images_variant_test.txt"
    listing.write_text("\n" + listing.read_text() + "1034399\n")  # a blank line is skipped
    with pytest.raises(DataError, match=r"images_variant_test.txt line 10 is '1034399', expected"):
        sef.datasets.load("aircraft", aircraft_root, "test")
    variants.write_bytes("Boeing 737\nCaf\u00e9 200\n".encode("latin-1"))
    with pytest.raises(
        DataError, match=r"variants.txt is not UTF-8 text \(line 2, byte 14\); save it as UTF-8"
    ):
        sef.datasets.load("aircraft", aircraft_root, "test")
    (aircraft_root / "data" / "images_family_test.txt").unlink()
    with pytest.raises(DataError, match="images_family_test.txt is missing"):
        sef.datasets.load("aircraft", aircraft_root, "test", level="family")


@pytest.mark.parametrize(("mixed", "split"), [("trainval", "test"), ("val", "val")])
def test_aircraft_lists_that_put_an_image_in_training_and_test_are_refused(
    aircraft_root, mixed, split
):
    """A test image listed for training too passed `sef data check`; training refused it."""
    data = aircraft_root / "data"
    test_line = (data / "images_variant_test.txt").read_text().splitlines()[0]
    listing = data / f"images_variant_{mixed}.txt"
    listing.write_text(listing.read_text() + test_line + "\n")
    with pytest.raises(
        DataError,
        match=rf"1 image of .*data is in both images_variant_{mixed}.txt and "
        rf"images_variant_test.txt, e.g. {test_line.split()[0]}; the lists are not the official",
    ):
        sef.datasets.load("aircraft", aircraft_root, split)


def test_benchmark_images_are_rgb_after_loading(cub_root):
    path = sef.datasets.load("cub", cub_root, "test").samples[0][0]
    Image.open(path).convert("L").save(path)  # CUB has a few greyscale images
    image, _ = sef.datasets.load("cub", cub_root, "test")[0]
    assert image.mode == "RGB"


@pytest.mark.parametrize("name", ["cub", "cars", "dogs", "aircraft"])
def test_a_benchmark_reads_a_tagged_image_as_stored(name, request):
    """Its boxes are in the stored pixels' coordinates and the paper read those pixels: an EXIF
    Orientation tag is not applied (own data turns it: tests/test_datasets_own.py)."""
    from test_datasets_images import stored_pixels, tagged

    root = request.getfixturevalue(f"{name}_root")
    pixels = np.random.default_rng(0).integers(0, 256, (10, 14, 3), dtype=np.uint8)
    for split in ("trainval", "test"):
        dataset = sef.datasets.load(name, root, split)
        path = tagged(dataset.samples[0][0], 6, pixels)  # a phone held upright: rotate 90°
        assert np.array_equal(np.asarray(dataset[0][0]), stored_pixels(path))
