"""Image decoding (every PIL mode becomes RGB) and the bad-image check and policy."""

import numpy as np
import pytest
from PIL import Image

from sef.datasets import ImageList, apply_bad_image_policy, find_bad_images
from sef.datasets.images import open_rgb
from sef.errors import ConfigError, DataError


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [("L", ".png"), ("CMYK", ".jpg"), ("P", ".png"), ("RGBA", ".png"), ("LA", ".png"),
     ("RGB", ".jpg")],
)  # fmt: skip
def test_every_mode_opens_as_rgb(tmp_path, write_image, mode, suffix):
    colour = (200, 200, 200)  # grey survives every conversion
    path = write_image(tmp_path / f"image{suffix}", (16, 12), colour, mode)
    with Image.open(path) as raw:
        assert raw.mode == mode
    image = open_rgb(path)
    assert image.mode == "RGB" and image.size == (16, 12)
    assert np.abs(np.asarray(image, int) - colour).max() <= 3


@pytest.mark.parametrize(
    ("suffix", "order", "mode"), [(".png", "<", "I;16"), (".tif", ">", "I;16B")]
)
def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path, suffix, order, mode):
    path = tmp_path / f"deep{suffix}"
    half = np.full((4, 4), 32768, np.dtype(f"{order}u2"))  # half of 16-bit white
    Image.fromarray(half).save(path)  # big-endian: a TIFF from a Mac or a camera
    with Image.open(path) as raw:
        assert raw.mode == mode
    assert np.asarray(open_rgb(path)).mean() == pytest.approx(128, abs=1)


@pytest.mark.parametrize(
    ("values", "grey"), [((0.0, 0.5, 1.0), (0, 127, 255)), ((0, 64, 300), (0, 64, 255))]
)
def test_float_grey_in_0_to_1_is_scaled_and_other_floats_taken_as_0_to_255(tmp_path, values, grey):
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([values], np.float32), mode="F").save(path)
    with Image.open(path) as raw:
        assert raw.mode == "F"
    assert np.asarray(open_rgb(path))[0, :, 0].tolist() == list(grey)


def test_transparent_pixels_become_white(tmp_path):
    pixels = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    pixels[0, 0] = (10, 20, 30, 255)  # one opaque pixel
    Image.fromarray(pixels, "RGBA").save(tmp_path / "alpha.png")
    image = np.asarray(open_rgb(tmp_path / "alpha.png"))
    assert tuple(image[0, 0]) == (10, 20, 30) and tuple(image[3, 3]) == (255, 255, 255)


@pytest.fixture
def mixed_samples(tmp_path, write_image):
    good = [write_image(tmp_path / f"good{i}.jpg", (64, 48)) for i in range(3)]
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good[0].read_bytes()[:300])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    missing = tmp_path / "missing.jpg"
    paths = [good[0], truncated, good[1], text, missing, good[2]]
    return [(str(p), i % 2) for i, p in enumerate(paths)], [str(truncated), str(text), str(missing)]


def test_find_bad_images_names_every_bad_file_in_order(mixed_samples):
    samples, bad_paths = mixed_samples
    bad = find_bad_images(samples, workers=2, progress=False)
    assert [path for path, _ in bad] == bad_paths
    reasons = dict(bad)
    assert "cannot decode" in reasons[bad_paths[0]]
    assert reasons[bad_paths[1]] == "not an image: it is a text file"
    assert reasons[bad_paths[2]] == "missing"


def test_policy_stop_lists_every_bad_file(mixed_samples):
    samples, bad_paths = mixed_samples
    dataset = ImageList(samples, ["a", "b"])
    with pytest.raises(DataError, match="3 of 6 images cannot be used") as error:
        apply_bad_image_policy(dataset, "stop", progress=False)
    assert all(path in str(error.value) for path in bad_paths)
    assert len(dataset) == 6


def test_policy_stop_counts_with_thousands_separators(tmp_path):
    """A large set's bad images are counted as every count sef prints is ("1,000 of 1,000"),
    as the lines under that one already were."""
    samples = [(str(tmp_path / f"{i}.jpg"), 0) for i in range(1000)]
    with pytest.raises(DataError, match="^1,000 of 1,000 images cannot be used"):
        apply_bad_image_policy(ImageList(samples, ["a"]), "stop", workers=0, progress=False)


def test_policy_skip_drops_and_reports(mixed_samples):
    samples, bad_paths = mixed_samples
    parts = [{"head": (float(i), 0.0)} for i in range(6)]
    dataset = ImageList(samples, ["a", "b"], parts=parts)
    bad = apply_bad_image_policy(dataset, "skip", progress=False)
    assert [path for path, _ in bad] == bad_paths
    assert dataset.samples == [s for s in samples if s[0] not in bad_paths]
    assert [p["head"][0] for p in dataset.parts] == [0.0, 2.0, 5.0]  # kept aligned
    assert all(dataset[i][0].mode == "RGB" for i in range(len(dataset)))


def test_policy_off_and_unknown(mixed_samples):
    samples, _ = mixed_samples
    dataset = ImageList(samples, ["a", "b"])
    assert apply_bad_image_policy(dataset, "off") == [] and len(dataset) == 6
    with pytest.raises(ConfigError, match="unknown bad-image policy 'ignore'"):
        apply_bad_image_policy(dataset, "ignore")


def test_reading_a_bad_image_names_it(mixed_samples):
    samples, bad_paths = mixed_samples
    dataset = ImageList(samples, ["a", "b"])
    with pytest.raises(DataError, match=f"image {bad_paths[0]} cannot be decoded"):
        dataset[1]
    with pytest.raises(
        DataError, match=f"image {bad_paths[2]} is listed by the dataset but missing"
    ):
        dataset[4]


def test_labels_outside_the_class_list_are_refused(tmp_path):
    with pytest.raises(DataError, match="label 2 of x.jpg is outside the 2 classes"):
        ImageList([("x.jpg", 2)], ["a", "b"])


def test_a_bad_image_says_how_a_run_leaves_it_out_and_a_typed_one_gets_no_path_hint(
    tmp_path, monkeypatch
):
    from sef.viz import _typed_image

    path = tmp_path / "wide.png"
    Image.new("RGB", (300, 200)).save(path)
    monkeypatch.setenv("SEF_MAX_PIXELS", "50000")
    with pytest.raises(DataError) as error:
        open_rgb(path)
    assert str(error.value).endswith("or leave it out (sef train: --set data.bad_images=skip)")
    with pytest.raises(DataError) as error:
        _typed_image(path)  # sef viz cam PATH: a file it was given, too large
    assert str(error.value) == f"{path} is too large: 60,000 pixels > limit 50,000 (SEF_MAX_PIXELS)"
