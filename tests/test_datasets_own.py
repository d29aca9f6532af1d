"""Users' own data: class folders and CSV lists, with declared or seeded splits."""

import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from conftest import OWN_CLASSES

import sef
from sef.errors import ConfigError, DataError


def _load(name, root, split, **options):
    return sef.datasets.load(name, root, split, **options)


def _class_of(path: str) -> str:
    return Path(path).parent.name


def test_folder_with_split_folders(folder_root):
    trainval, test = _load("folder", folder_root, "trainval"), _load("folder", folder_root, "test")
    assert trainval.classes == test.classes == OWN_CLASSES
    assert len(trainval) == 12 and len(test) == 6
    assert all(_class_of(p) == trainval.classes[y] for p, y in trainval.samples + test.samples)
    train, val = _load("folder", folder_root, "train"), _load("folder", folder_root, "val")
    assert sorted(train.samples + val.samples) == sorted(trainval.samples)
    assert sorted({y for _, y in val.samples}) == [0, 1, 2]


def test_split_folders_are_found_in_any_case_and_two_spellings_are_refused(folder_root):
    expected = _load("folder", folder_root, "test").samples
    for split in ("train", "test"):
        (folder_root / split).rename(folder_root / split.title())
    test = _load("folder", folder_root, "test")
    assert test.classes == OWN_CLASSES  # not ['Test', 'Train']
    assert [y for _, y in test.samples] == [y for _, y in expected]
    (folder_root / "test" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="has two test folders, Test and test; keep one"):
        _load("folder", folder_root, "test")


def test_a_link_to_a_folder_above_is_followed_once_not_round_and_round(folder_root):
    expected = _load("folder", folder_root, "test").samples
    (folder_root / "test" / "cat" / "loop").symlink_to(folder_root / "test" / "cat")
    (folder_root / "test" / "dog" / "more").symlink_to(folder_root / "train" / "dog")
    test = _load("folder", folder_root, "test").samples
    linked = [s for s in test if "/more/" in s[0]]
    assert [s for s in test if "/more/" not in s[0]] == expected and len(linked) == 4


def test_folder_labels_agree_when_a_split_lacks_a_class(folder_root):
    shutil.rmtree(folder_root / "test" / "cat")
    test = _load("folder", folder_root, "test")
    assert test.classes == OWN_CLASSES and {y for _, y in test.samples} == {1, 2}


@pytest.mark.parametrize("name", ["val", "valid", "Validation"])  # as Kaggle's sets name it
def test_folder_official_val_folder_is_used(folder_root, name):
    (folder_root / name / "dog").mkdir(parents=True)
    shutil.move(folder_root / "train" / "dog" / "dog0.png", folder_root / name / "dog")
    val = _load("folder", folder_root, "val")
    assert [Path(p).name for p, _ in val.samples] == ["dog0.png"]
    assert len(_load("folder", folder_root, "train")) == 11
    assert len(_load("folder", folder_root, "trainval")) == 12


def test_a_val_declared_beside_trainval_is_used_as_declared(csv_root):
    """Rows of trainval and val: val was carved from both anew, training on declared val rows."""
    labels = csv_root / "labels.csv"
    labels.write_text(labels.read_text().replace("_3.jpg,cat,trainval", "_3.jpg,cat,val"))
    val = _load("csv", csv_root, "val")
    assert [Path(p).name for p, _ in val.samples] == ["cat_3.jpg"]
    train = _load("csv", csv_root, "train")
    assert len(train) == 11 and str(csv_root / "img" / "cat_3.jpg") not in dict(train.samples)
    assert len(_load("csv", csv_root, "trainval")) == 12


def test_split_folders_inside_class_folders_are_said_to_be_one_level_low(folder_root, tmp_path):
    """ROOT/<class>/{train,test}/ was told its folders are not named as split folders are."""
    flipped = tmp_path / "flipped"
    for split in ("train", "test"):
        for name in OWN_CLASSES:
            shutil.copytree(folder_root / split / name, flipped / name / split)
    with pytest.warns(UserWarning) as warned:
        assert _load("folder", flipped, "trainval").classes == OWN_CLASSES
    assert [str(w.message) for w in warned] == [
        f"the classes cat, dog, fox of {flipped} each hold the split folders test, train, read "
        f"as one set, test and val held out of it anew: split folders hold class folders, "
        f"ROOT/<split>/<class>/<image>; move {flipped / 'cat' / 'test'} to "
        f"{flipped / 'test' / 'cat'}, and so on"
    ]


def test_split_folders_named_otherwise_are_warned_of(folder_root):
    shutil.copytree(folder_root / "test", folder_root / "holdout")
    with pytest.warns(UserWarning) as warned:
        assert len(_load("folder", folder_root, "trainval")) == 12
    assert [str(w.message) for w in warned] == [
        f"{folder_root / 'holdout'} holds class folders (cat, dog, fox) but is no split folder, "
        f"so its images are left out; split folders are named trainval, train, val or test"
    ]
    shutil.rmtree(folder_root / "holdout")
    (folder_root / "train").rename(folder_root / "training")
    (folder_root / "test").rename(folder_root / "testing")
    with pytest.warns(UserWarning) as warned:
        assert _load("folder", folder_root, "trainval").classes == ["testing", "training"]
    assert [str(w.message) for w in warned] == [
        f"the classes testing, training of {folder_root} hold the same folders (cat, dog, fox) "
        f"and no image of their own, as split folders do; split folders are named trainval, "
        f"train, val or test"
    ]


def test_an_unlabelled_test_folder_beside_train_class_folders_is_warned_of(folder_root):
    """Kaggle's layout, train/<class>/ and test/ of unlabelled images: test/ was left out, and
    the test split said that no test images were declared, beside a folder full of them."""
    shutil.rmtree(folder_root / "test")
    (folder_root / "test").mkdir()
    shutil.copy(folder_root / "train" / "cat" / "cat0.png", folder_root / "test" / "0.png")
    with pytest.warns(UserWarning) as warned:
        assert len(_load("folder", folder_root, "trainval")) == 12
    assert [str(w.message) for w in warned] == [
        f"{folder_root / 'test'} holds 1 image but no class folders, so the folder is left out: "
        f"an image of a split is in its class's folder, {folder_root / 'test'}/<class>/<image> "
        f"(sef predict reads images without classes)"
    ]


@pytest.mark.parametrize("holdout", ["stable", "ranked"])
def test_single_folder_gets_seeded_test_and_val(folder_root, tmp_path, holdout):
    flat = shutil.copytree(folder_root / "train", tmp_path / "flat")  # ROOT/<class>/, 4 each
    splits = {s: _load("folder", flat, s, holdout=holdout) for s in sef.datasets.SPLITS}
    tested, trained = (sorted(path for path, _ in splits[s].samples) for s in ("test", "trainval"))
    assert sorted(tested + trained) == sorted(map(str, flat.rglob("*.png")))  # each image once
    assert sorted(splits["train"].samples + splits["val"].samples) == splits["trainval"].samples
    for split in sef.datasets.SPLITS:  # every class in both parts of each hold-out
        assert {label for _, label in splits[split].samples} == {0, 1, 2}
    if holdout == "ranked":
        assert len(splits["test"]) == 3  # round(0.2 * 4) = 1 per class
        assert len(splits["trainval"]) == 9 and len(splits["val"]) == 3
        assert len(_load("folder", flat, "test", test_fraction=0.5, holdout=holdout)) == 6


def test_a_class_named_like_a_split_is_a_class(folder_root, tmp_path):
    vehicles = tmp_path / "vehicles"  # ROOT/<class>/ with the classes bus, car and train
    for name, source in zip(("bus", "car", "Train"), OWN_CLASSES, strict=True):
        shutil.copytree(folder_root / "train" / source, vehicles / name)
    trainval = _load("folder", vehicles, "trainval")
    assert trainval.classes == ["Train", "bus", "car"] and len(trainval) == 9
    assert {trainval.classes[y] for _, y in trainval.samples} == {"Train", "bus", "car"}


def test_folder_errors(tmp_path, write_image):
    with pytest.raises(DataError, match="does not exist; lay it out as ROOT/<split>/<class>"):
        _load("folder", tmp_path / "missing", "train")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        _load("folder", tmp_path / "empty", "train")
    for name in ("a.jpg", "b.JPG"):  # photos straight from a camera's card, not yet sorted
        write_image(tmp_path / "loose" / name)
    with pytest.raises(DataError, match=r"loose holds 2 images but no class folders; lay it out"):
        _load("folder", tmp_path / "loose", "train")


def test_a_class_folder_of_files_that_are_not_images_says_so(folder_root, tmp_path):
    """A phone's .HEIC photos: the class read as one without images, its files unmentioned."""
    flat = shutil.copytree(folder_root / "train", tmp_path / "photos")
    shutil.rmtree(flat / "dog")
    (flat / "dog").mkdir()
    for name in ("IMG_0002.HEIC", "IMG_0001.HEIC"):
        shutil.copy(flat / "cat" / "cat0.png", flat / "dog" / name)
    (flat / "cat" / "notes.txt").write_text("beside images: left out, as before")
    with pytest.raises(DataError) as refused:
        _load("folder", flat, "trainval")
    assert str(refused.value) == (
        f"{flat / 'dog'} holds 2 files but no image sef reads (.jpg, .jpeg, .png, .webp, ...), "
        f"e.g. {flat / 'dog' / 'IMG_0001.HEIC'}; convert them to JPEG or PNG, or move the folder "
        f"out of {flat} if dog is no class"
    )
    shutil.move(flat / "dog" / "IMG_0001.HEIC", flat / "cat")  # a phone's photos beside JPEGs
    shutil.copy(flat / "cat" / "cat0.png", flat / "dog" / "IMG_0002.jfif")  # as Windows saves
    with pytest.warns(UserWarning) as warned:
        trainval = _load("folder", flat, "trainval")
    with pytest.warns(UserWarning):
        test = _load("folder", flat, "test")
    assert len(trainval) + len(test) == 9  # cat, dog's .jfif and the third class; not notes.txt
    assert [str(w.message) for w in warned] == [
        f"left out 2 photos under {flat} in a format sef cannot read (.heic), e.g. "
        f"{flat / 'cat' / 'IMG_0001.HEIC'}; convert them to JPEG or PNG to train on them"
    ]


def test_class_folders_one_folder_deeper_are_pointed_to(folder_root, tmp_path):
    """An archive unpacked into its own folder: ROOT/photos/<class>/ read as the one class
    'photos', which training refused as "1 class ('photos')" without saying why."""
    shutil.copytree(folder_root / "train", tmp_path / "unpacked" / "photos")
    with pytest.raises(DataError) as refused:
        _load("folder", tmp_path / "unpacked", "trainval")
    assert str(refused.value) == (
        f"{tmp_path / 'unpacked'} holds one folder, photos, which holds the folders cat, dog, "
        f"fox: the classes are one folder deeper; pass {tmp_path / 'unpacked' / 'photos'} as "
        f"the data root"
    )
    assert _load("folder", tmp_path / "unpacked" / "photos", "trainval").classes == OWN_CLASSES


def test_a_split_folder_given_as_root_beside_others_is_warned_of(folder_root):
    """--data-root data/train beside data/test held test out of train's images, silently."""
    with pytest.warns(UserWarning) as warned:
        _load("folder", folder_root / "train", "test")
    assert [str(w.message) for w in warned] == [
        f"{folder_root / 'train'} is the train folder of {folder_root}, which holds test too: it "
        f"is not read, and test and val are held out of train's images; pass {folder_root} as "
        f"the data root to read its split folders"
    ]


def test_images_beside_class_folders_are_warned_of(folder_root):
    """An image straight in a split folder, beside its class folders, was left out silently."""
    shutil.copy(folder_root / "train" / "cat" / "cat0.png", folder_root / "train" / "stray.png")
    with pytest.warns(UserWarning) as warned:
        assert len(_load("folder", folder_root, "trainval")) == 12
    train = folder_root / "train"
    assert [str(w.message) for w in warned] == [
        f"left out 1 image straight in {train}, beside its class folders, e.g. "
        f"{train / 'stray.png'}: an image is in its class's folder, {train}/<class>/<image>"
    ]


def test_a_class_folder_given_as_root_points_at_the_data(folder_root):
    with pytest.raises(DataError) as error:
        _load("folder", folder_root / "train" / "cat", "trainval")
    assert str(error.value).endswith(
        f"; {folder_root / 'train' / 'cat'} looks like one class folder of "
        f"{folder_root / 'train'}: pass {folder_root} as the data root"
    )


def test_a_benchmark_read_as_folder_or_as_another_benchmark_is_named(cub_root, dogs_root):
    """CUB's images/ read as folder data held its test out at random, without a word; a
    benchmark's folder read as another said only that the other's files were missing."""
    with pytest.warns(UserWarning) as warned:
        _load("folder", cub_root / "images", "test")
    assert [str(w.message) for w in warned] == [
        f"{cub_root / 'images'} is the images folder of cub ({cub_root / 'train_test_split.txt'} "
        f"is there): "
        f"read as folder data, its test images are held out anew, not the test split of cub; "
        f"read {cub_root} as dataset cub to use it"
    ]
    with pytest.raises(DataError) as error:
        _load("cub", dogs_root, "test")
    assert str(error.value).endswith(
        f"; {dogs_root / 'lists' / 'train_list.mat'} exists: is ROOT dataset dogs? then read it "
        f"as dogs"
    )


def test_an_archive_in_a_root_without_class_folders_is_named(tmp_path):
    (tmp_path / "photos.ZIP").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"photos.ZIP is not unpacked: unpack it into "):
        _load("folder", tmp_path, "trainval")


def test_folder_leaves_out_hidden_names(folder_root):
    cat = folder_root / "train" / "cat"
    before = _load("folder", folder_root, "trainval")
    (cat / "._cat0.png").write_bytes(b"\x00\x05\x16\x07")  # macOS AppleDouble
    (cat / ".thumbs").mkdir()
    shutil.copy(cat / "cat0.png", cat / ".thumbs")
    for hidden in (".ipynb_checkpoints", "__MACOSX"):
        shutil.copytree(cat, folder_root / "train" / hidden)
    (folder_root / "train" / "owl").mkdir()  # an empty class folder Windows has shown
    for system in ("Thumbs.db", "desktop.ini"):  # was "holds 2 files but no image sef reads"
        (folder_root / "train" / "owl" / system).write_bytes(b"\xd0\xcf\x11\xe0")
    after = _load("folder", folder_root, "trainval")
    assert after.classes == [*OWN_CLASSES, "owl"] and after.samples == before.samples


MAC, LINUX = unicodedata.normalize("NFD", "Mésange"), unicodedata.normalize("NFC", "Mésange")


def test_a_class_folder_copied_from_a_mac_and_one_made_on_linux_are_one_class(folder_root):
    """macOS writes names in NFD (e, then the accent): train/ copied from a Mac and test/ made
    on Linux were two classes that print alike, and training refused one of them as empty."""
    (folder_root / "train" / "cat").rename(folder_root / "train" / MAC)
    (folder_root / "test" / "cat").rename(folder_root / "test" / LINUX)
    trainval, test = _load("folder", folder_root, "trainval"), _load("folder", folder_root, "test")
    assert trainval.classes == test.classes == [LINUX, "dog", "fox"]
    assert [y for _, y in test.samples] == [0, 0, 1, 1, 2, 2]
    (folder_root / "test" / LINUX).rename(folder_root / "test" / MAC)
    assert _load("folder", folder_root, "test").classes == [MAC, "dog", "fox"]  # as stored


def test_csv_labels_typed_on_a_mac_and_on_linux_are_one_class(csv_root):
    labels = csv_root / "labels.csv"
    lines = labels.read_text(encoding="utf-8").replace(",cat,", f",{LINUX},").splitlines()
    lines[1] = lines[1].replace(LINUX, MAC)
    labels.write_text("\n".join(lines) + "\n", encoding="utf-8")
    trainval = _load("csv", csv_root, "trainval")
    assert trainval.classes == [LINUX, "dog", "fox"] and trainval.samples[0][1] == 0
    assert len(_load("csv", csv_root, "test", classes=[MAC, "dog", "fox"])) == 6


def test_csv_with_split_column(csv_root):
    trainval, test = _load("csv", csv_root, "trainval"), _load("csv", csv_root, "test")
    assert trainval.classes == OWN_CLASSES and len(trainval) == 12 and len(test) == 6
    assert all(Path(p).name.startswith(trainval.classes[y]) for p, y in trainval.samples)
    by_file = _load("csv", csv_root / "labels.csv", "test")
    assert by_file.samples == test.samples
    (csv_root / "labels.csv").rename(csv_root / "LABELS.CSV")
    (csv_root / "._LABELS.CSV").write_bytes(b"\x00\x05\x16\x07")  # macOS AppleDouble
    assert _load("csv", csv_root, "test").samples == test.samples
    assert len(_load("csv", csv_root, "val")) == 3


def test_csv_without_split_column_and_numeric_labels(csv_root):
    lines = (csv_root / "labels.csv").read_text().splitlines()[1:]
    numeric = {"cat": "2", "dog": "10", "fox": "9"}
    rows = [f"{path},{numeric[label]}" for path, label, _ in (x.split(",") for x in lines)]
    (csv_root / "labels.csv").write_text("\n".join(rows) + "\n")
    test = _load("csv", csv_root, "test")
    assert test.classes == ["2", "9", "10"]  # numeric order, no header needed
    assert len(test) == 3 and len(_load("csv", csv_root, "trainval")) == 15
    (csv_root / "labels.csv").write_text("\n".join([*rows[:-1], rows[-1][:-1] + "09"]) + "\n")
    with pytest.raises(DataError) as error:  # else "9" and "09" in the order of a set's hashes
        _load("csv", csv_root, "test")
    assert str(error.value) == (
        f"{csv_root / 'labels.csv'}: labels '09' and '9' are the number 9 written two ways; "
        f"write the label of a class one way"
    )


def test_csv_image_root_and_class_list_may_start_with_a_tilde(csv_root, monkeypatch):
    monkeypatch.setenv("HOME", str(csv_root.parent))  # ~/own-csv is csv_root
    (csv_root.parent / "classes.txt").write_text("cat\ndog\nfox\n")
    csv = csv_root / "labels.csv"
    expected = _load("csv", csv, "test").samples
    moved = csv.rename(csv_root.parent / "elsewhere.csv")
    options = {"image_root": "~/own-csv", "classes": "~/classes.txt"}  # as data.options in YAML
    assert _load("csv", moved, "test", **options).samples == expected


@pytest.mark.parametrize("separator", [";", "\t"])
@pytest.mark.parametrize("header", [True, False])
def test_a_csv_separated_otherwise_than_by_commas_says_so(csv_root, separator, header):
    csv = csv_root / "labels.csv"
    lines = csv.read_text().splitlines()[0 if header else 1 :]
    csv.write_text("\n".join(line.replace(",", separator) for line in lines) + "\n")
    first = lines[0].replace(",", separator)
    with pytest.raises(DataError) as error:
        _load("csv", csv_root, "test")
    assert str(error.value) == (
        f"{csv} line 1 is one column ({first!r}); separate path, label and split with commas, "
        f"not semicolons or tabs"
    )


def test_csv_paths_relative_to_the_current_folder_are_pointed_out(csv_root, monkeypatch):
    moved = (csv_root / "labels.csv").rename(csv_root / "img" / "labels.csv")
    monkeypatch.chdir(csv_root)
    with pytest.raises(DataError) as error:  # else every image missing under img/img/
        _load("csv", "img/labels.csv", "test")
    assert str(error.value) == (
        "img/labels.csv lists img/cat_0.jpg, which is in the current folder, not in img: paths "
        f"are relative to the CSV's folder; write them so, or set the csv option image_root to "
        f"{csv_root}"
    )
    assert len(_load("csv", moved, "test", image_root=".")) == 6


def test_class_folders_that_differ_only_in_case_are_warned_of(folder_root):
    # two sources merged on Linux: train/Cat beside train/cat, both with images
    shutil.copytree(folder_root / "train" / "cat", folder_root / "train" / "Cat")
    with pytest.warns(UserWarning) as warned:
        assert _load("folder", folder_root, "trainval").classes == ["Cat", *OWN_CLASSES]
    assert [str(w.message) for w in warned] == [
        f"{folder_root / 'train'}: the classes 'Cat' and 'cat' differ only in case, so they are "
        f"two classes; spell them alike if they are one"
    ]


def test_csv_labels_that_differ_only_in_case_or_spacing_are_warned_of(csv_root):
    labels = csv_root / "labels.csv"
    labels.write_text(labels.read_text().replace("img/cat_0.jpg,cat", "img/cat_0.jpg,Cat"))
    with pytest.warns(UserWarning) as warned:
        assert _load("csv", csv_root, "trainval").classes == ["Cat", *OWN_CLASSES]
    assert [str(w.message) for w in warned] == [
        f"{labels}: the classes 'Cat' and 'cat' differ only in case, so they are two classes; "
        f"spell them alike if they are one"
    ]
    rows = labels.read_text().replace(",Cat,", ",cat,").replace(",dog,", ",hot\xa0dog,")
    labels.write_text(rows.replace("dog_0.jpg,hot\xa0dog,", "dog_0.jpg,hot dog,"))
    with pytest.warns(UserWarning) as warned:  # a space pasted from the web: no-break
        _load("csv", csv_root, "trainval")
    assert [str(w.message) for w in warned] == [
        f"{labels}: the classes 'hot dog' and 'hot\\xa0dog' differ only in spacing, so they are "
        f"two classes; spell them alike if they are one"
    ]


def test_csv_fixed_class_list_and_label_outside_it(csv_root):
    classes_file = csv_root.parent / "classes.txt"
    classes_file.write_text("fox\ncat\ndog\nwolf\n")
    ds = _load("csv", csv_root, "test", classes=str(classes_file))
    assert ds.classes == ["fox", "cat", "dog", "wolf"]
    assert all(Path(p).name.startswith(ds.classes[y]) for p, y in ds.samples)
    with pytest.raises(DataError, match=r"labels.csv line 2: label 'cat' is not a class \(fox\)"):
        _load("csv", csv_root, "test", classes=["fox"])
    # a name twice: two classes, the first without images
    with pytest.raises(ConfigError, match="option classes names 'cat' twice; list each class once"):
        _load("csv", csv_root, "test", classes=["cat", "dog", "fox", "cat"])
    classes_file.write_text("fox\ncat\ndog\n\ncat\n")
    with pytest.raises(DataError, match="classes.txt line 5 repeats the class 'cat' of line 2; l"):
        _load("csv", csv_root, "test", classes=str(classes_file))


def test_csv_class_ids_with_a_class_list_of_names_are_said_to_be_no_names(csv_root):
    labels = csv_root / "labels.csv"
    for index, name in enumerate(OWN_CLASSES):
        labels.write_text(labels.read_text().replace(f",{name},", f",{index},"))
    with pytest.raises(DataError) as refused:
        _load("csv", csv_root, "test", classes=OWN_CLASSES)
    assert str(refused.value) == (
        f"{labels} line 2: label '0' is not a class (cat, dog, fox); a label names its class, "
        f"not its number in the class list: write the class names, or leave out the classes "
        f"option to name the classes by their numbers"
    )


def test_csv_class_names_yaml_read_as_true_or_false_are_refused(csv_root):
    with pytest.raises(ConfigError, match=r"holds False, which YAML reads from yes, no, on, off"):
        _load("csv", csv_root, "test", classes=[False, True])


def test_csv_columns_left_empty_after_the_last_are_dropped(csv_root):
    """A spreadsheet's trailing commas (path,label,) read as an empty split on every row."""
    labels = csv_root / "labels.csv"
    rows = [line.rsplit(",", 1)[0] for line in labels.read_text().splitlines()[1:]]
    labels.write_text("path,label\n" + "".join(f"{row},,\n" for row in rows))
    assert _load("csv", csv_root, "trainval").classes == OWN_CLASSES
    labels.write_text("".join(f"{row},\n" for row in rows))
    assert _load("csv", csv_root, "trainval").classes == OWN_CLASSES


def test_csv_repeated_rows_count_once_and_conflicting_rows_are_refused(csv_root):
    labels = csv_root / "labels.csv"
    lines = labels.read_text().splitlines()[1:]  # path,label,split; no header needed
    labels.write_text("\n".join([*lines, lines[0], "./" + lines[-1]]) + "\n")
    trainval, test = _load("csv", csv_root, "trainval"), _load("csv", csv_root, "test")
    assert len(trainval) == 12 and len(test) == 6
    plain = "\n".join(line.rsplit(",", 1)[0] for line in lines)  # path,label: a seeded split
    labels.write_text(plain + "\n" + plain + "\n")
    trainval, test = _load("csv", csv_root, "trainval"), _load("csv", csv_root, "test")
    assert len(trainval) + len(test) == 18 and not set(trainval.samples) & set(test.samples)
    labels.write_text("img/cat_0.jpg,cat\nimg/dog_0.jpg,dog\nimg/cat_0.jpg,dog\n")
    with pytest.raises(
        DataError,
        match=r"labels.csv line 3 lists img/cat_0.jpg as dog but line 1 as cat; an image has one "
        r"label and one split",
    ):
        _load("csv", csv_root, "test")
    labels.write_text("img/cat_0.jpg,cat,test\nimg/cat_0.jpg,cat,trainval\n")
    with pytest.raises(DataError, match="line 2 lists img/cat_0.jpg as cat,trainval but line 1"):
        _load("csv", csv_root, "test")


def test_csv_lines_are_counted_in_the_file_after_a_label_over_two_lines(csv_root):
    (csv_root / "labels.csv").write_text('img/cat_0.jpg,"two\nlines"\nimg/dog_0.jpg,wolf\n')
    with pytest.raises(DataError, match=r"labels.csv line 3: label 'wolf' is not a class"):
        _load("csv", csv_root, "test", classes=["two\nlines"])


def test_csv_columns_named_in_a_header_may_come_in_any_order(csv_root):
    labels = csv_root / "labels.csv"
    expected = _load("csv", csv_root, "trainval").samples
    rows = [line.split(",") for line in labels.read_text().splitlines()]
    labels.write_text("".join(f"{split},{label},{path}\n" for path, label, split in rows))
    assert _load("csv", csv_root, "trainval").samples == expected  # Split,Label,Path too
    labels.write_text("".join(f"{label},{path}\n" for path, label, _ in rows[1:]))
    with pytest.raises(DataError) as error:  # else "img/cat_1.jpg conflicts with line 1"
        _load("csv", csv_root, "trainval")
    assert str(error.value) == (
        f"{labels} line 1 gives the label before the path (cat,img/cat_0.jpg); put the path "
        f"first, or name the columns in a header line: label,path"
    )
    labels.write_text("img/cat_0,St. Bernard\nimg/cat_1,St. Bernard\n")  # no extension
    assert _load("csv", csv_root, "trainval").classes == ["St. Bernard"]


def test_csv_columns_beside_path_label_and_split_are_left_out(csv_root):
    """pandas' to_csv writes its index as a first, unnamed column (',path,label,split'): the
    rows were refused as 4 columns, or as an empty path, or their labels taken for splits."""
    labels = csv_root / "labels.csv"
    before = _load("csv", csv_root, "test")
    rows = labels.read_text().splitlines()
    labels.write_text(
        f",{rows[0]},notes\n" + "".join(f"{i},{r},x\n" for i, r in enumerate(rows[1:]))
    )
    with pytest.warns(UserWarning) as warned:  # the index goes unsaid, notes not
        assert _load("csv", csv_root, "test").samples == before.samples
    assert [str(w.message) for w in warned] == [
        f"{labels}: left out the column notes; sef reads path, label and split (name a column "
        f"of trainval, train, val or test split)"
    ]
    labels.write_text("label,path\n,img/cat_0.jpg\n")  # an empty label is named as such
    with pytest.raises(DataError, match="labels.csv line 2 has an empty label"):
        _load("csv", csv_root, "test")


def test_csv_split_values_are_read_in_any_case_and_valid_is_val(csv_root):
    labels = csv_root / "labels.csv"
    rows = labels.read_text().replace(",trainval", ",TRAIN").replace(",test", ",Test").splitlines()
    rows[1] = rows[1].replace(",TRAIN", ",validation")
    labels.write_text("\n".join(rows) + "\n")
    assert len(_load("csv", csv_root, "train")) == 11 and len(_load("csv", csv_root, "test")) == 6
    assert [Path(p).name for p, _ in _load("csv", csv_root, "val").samples] == ["cat_0.jpg"]


def test_a_csv_one_folder_below_or_above_the_root_is_pointed_at(csv_root):
    with pytest.raises(DataError) as error:
        _load("csv", csv_root.parent, "test")
    assert str(error.value).endswith(
        f"; {csv_root / 'labels.csv'} exists: pass it as the data root"
    )
    with pytest.raises(DataError) as error:  # ROOT the images' folder beside the CSV
        _load("csv", csv_root / "img", "test")
    assert str(error.value).endswith(
        f"; {csv_root.resolve() / 'labels.csv'} exists: pass it as the data root"
    )


def test_csv_errors(csv_root):
    (csv_root / "other.csv").write_text("a.jpg,cat\n")
    with pytest.raises(DataError, match="holds 2 CSV files"):
        _load("csv", csv_root, "test")
    bad = csv_root / "other.csv"
    bad.write_text("path,label,split\nimg/cat_0.jpg,cat,holdout\n")
    with pytest.raises(DataError, match="other.csv line 2 has the unknown split 'holdout'; give"):
        _load("csv", bad, "test")
    bad.write_text("path,label,split\nimg/cat_0.jpg,cat,test\nimg/cat_1.jpg,cat,\n")
    with pytest.raises(DataError) as error:  # only the test rows marked
        _load("csv", bad, "test")
    assert str(error.value) == (
        f"{bad} line 3 has an empty split; give every row one of trainval, train, val, test "
        f"(valid and validation are val), or leave out the split column"
    )
    bad.write_text("img/cat_0.jpg,cat\nimg/caf\u00e9.jpg,cat\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"other.csv is not UTF-8 text \(line 2, byte 25\); save"):
        _load("csv", bad, "test")
    bad.write_text("path,label\nimg/cat_0.jpg,cat\n", encoding="utf-16")
    with pytest.raises(DataError, match=r"other.csv is not UTF-8 text \(line 1, byte 0\); save"):
        _load("csv", bad, "test")
    bad.write_text("filename,class\nimg/cat_0.jpg,cat\n")
    with pytest.raises(
        DataError,
        match=r"other.csv line 1 looks like a header \(filename,class\); name its columns "
        r"path,label or path,label,split, or remove it",
    ):
        _load("csv", bad, "test")
    bad.write_text("img/cat_0.jpg,cat\nhttps://example.com/cat_1.jpg,cat\n")
    with pytest.raises(
        DataError,
        match=r"other.csv line 2: https://example.com/cat_1.jpg is a URL; download the images "
        r"and list their files \(relative to the CSV's folder\)$",
    ):
        _load("csv", bad, "test")
    bad.write_text("img/cat_0.jpg,cat\nimg/cat_1.jpg\n")
    with pytest.raises(DataError, match="line 2 has 1 column; expected"):
        _load("csv", bad, "test")
    bad.write_text("img/cat_0.jpg,cat,train\nimg/cat_1.jpg,cat,train\n")
    with pytest.raises(DataError, match="declares no test images"):
        _load("csv", bad, "test")


def test_load_rejects_unknown_names_options_and_splits(csv_root):
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'; choose one of cub"):
        _load("imagenet", csv_root, "test")
    with pytest.raises(ConfigError, match="has no option 'bbox_crop'; its options: test_fraction"):
        _load("csv", csv_root, "test", bbox_crop=True)
    with pytest.raises(ConfigError, match="unknown split 'validation'"):
        _load("csv", csv_root, "validation")
    with pytest.raises(ConfigError, match="needs a root folder"):
        _load("cub", None, "test")
    with pytest.raises(ConfigError, match="val_fraction must be between 0 and 1"):
        _load("csv", csv_root, "val", val_fraction=1.5)
    assert sef.datasets.options("aircraft") == {"level": "variant", "crop_banner": False}


@pytest.mark.parametrize(
    "option, takes",
    [
        ({"test_fraction": "abc"}, "test_fraction takes a number, got 'abc'"),
        ({"test_fraction": True}, "test_fraction takes a number, got True"),
        ({"classes": 5}, "classes takes a list of class names or a class-list file, got 5"),
        ({"image_root": 5}, "image_root takes a folder, got 5"),
    ],
)
def test_reader_options_of_the_wrong_kind_are_refused(csv_root, option, takes):
    with pytest.raises(ConfigError, match=f"^dataset 'csv' option {takes}$"):
        _load("csv", csv_root, "test", **option)


def test_reader_options_take_their_default_s_kind(cub_root, demo_root):
    with pytest.raises(ConfigError, match="^dataset 'cub' option bbox_crop takes true or false"):
        _load("cub", cub_root, "test", bbox_crop="maybe")
    with pytest.raises(ConfigError, match="^dataset 'demo' option per_class takes a whole number"):
        _load("demo", demo_root, "test", per_class=2.5)
    with pytest.raises(ConfigError, match="^dataset 'demo' option progress takes true or false"):
        _load("demo", demo_root, "test", progress="abc")  # data.options.progress: saved too
    assert len(_load("cub", cub_root, "test", bbox_crop=True)) == 6


@pytest.mark.parametrize("name", ["folder", "csv"])
def test_own_photos_are_turned_upright_by_their_exif_orientation(name, request):
    """A phone photo stored sideways is trained and evaluated on the right way up, as a viewer
    shows it (the benchmarks read theirs as stored: tests/test_datasets_benchmarks.py)."""
    from test_datasets_images import stored_pixels, tagged, upright_by_the_table

    root = request.getfixturevalue(f"{name}_root")
    pixels = np.random.default_rng(0).integers(0, 256, (10, 14, 3), dtype=np.uint8)
    for split in ("train", "val", "test"):
        dataset = _load(name, root, split)
        path = tagged(dataset.samples[0][0], 6, pixels)  # .png (folder) and .jpg (csv)
        image = np.asarray(dataset[0][0])
        assert np.array_equal(image, upright_by_the_table(stored_pixels(path), 6)), split


@pytest.mark.parametrize("name", ["folder", "csv"])
def test_own_data_moved_elsewhere_keeps_its_hold_out(name, folder_root, csv_root, tmp_path):
    """The stable hold-out names each image relative to the data's root (a CSV's folder)."""
    root = (
        shutil.copytree(folder_root / "train", tmp_path / "flat") if name == "folder" else csv_root
    )
    if name == "csv":  # without its split column: held out
        rows = (root / "labels.csv").read_text().splitlines()[1:]
        (root / "labels.csv").write_text("\n".join(row.rsplit(",", 1)[0] for row in rows) + "\n")
    before = _load(name, root, "test")
    moved = _load(name, shutil.move(root, tmp_path / "elsewhere" / "data"), "test")
    assert moved.names() == before.names() and len(before) > 0
    assert [path for path, _ in moved.samples] != [path for path, _ in before.samples]


def test_the_benchmarks_hold_out_by_rank_whatever_data_holdout_says(cub_root):
    ranked = _load("cub", cub_root, "val", holdout="ranked").samples
    assert _load("cub", cub_root, "val", holdout="stable").samples == ranked
    with pytest.raises(
        ConfigError, match="unknown hold-out 'random'; choose one of stable, ranked"
    ):
        _load("cub", cub_root, "val", holdout="random")
