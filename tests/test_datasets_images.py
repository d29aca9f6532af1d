"""Image decoding (every PIL mode becomes RGB) and the bad-image check and policy."""

import io
import re
import warnings

import numpy as np
import pytest
from PIL import ExifTags, Image

from sef.datasets import ImageList, apply_bad_image_policy, find_bad_images
from sef.datasets.checking import resumed_fixes
from sef.datasets.images import decode, open_rgb, quiet_pil
from sef.errors import ConfigError, DataError, said_to_command


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
    image = open_rgb(path, upright=False)
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
    assert np.asarray(open_rgb(path, upright=False)).mean() == pytest.approx(128, abs=1)


@pytest.mark.parametrize(("values", "grey"), [((0, 200), (0, 200)), ((0, 32768), (0, 128))])
def test_32_bit_grey_of_8_bit_values_is_taken_as_is_and_wider_values_scaled(tmp_path, values, grey):
    """A TIFF of 8-bit grey saved as 32-bit integers (mode I) read black, scaled by 256."""
    path = tmp_path / "wide.tif"
    Image.fromarray(np.array([values], np.int32), mode="I").save(path)
    with Image.open(path) as raw:
        assert raw.mode == "I"
    assert np.asarray(open_rgb(path, upright=False))[0, :, 0].tolist() == list(grey)


@pytest.mark.parametrize(
    ("values", "grey"), [((0.0, 0.5, 1.0), (0, 127, 255)), ((0, 64, 300), (0, 64, 255))]
)
def test_float_grey_in_0_to_1_is_scaled_and_other_floats_taken_as_0_to_255(tmp_path, values, grey):
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([values], np.float32), mode="F").save(path)
    with Image.open(path) as raw:
        assert raw.mode == "F"
    assert np.asarray(open_rgb(path, upright=False))[0, :, 0].tolist() == list(grey)


def test_transparent_pixels_become_white(tmp_path):
    pixels = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    pixels[0, 0] = (10, 20, 30, 255)  # one opaque pixel
    Image.fromarray(pixels, "RGBA").save(tmp_path / "alpha.png")
    image = np.asarray(open_rgb(tmp_path / "alpha.png", upright=False))
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


def test_policy_stop_says_how_to_skip_them_as_its_reader_sets_it(tmp_path):
    """fit(config) and a script's own check were told to train with --set data.bad_images=skip."""
    dataset = ImageList([(str(tmp_path / "gone.jpg"), 0)], ["a"])
    code = "cannot be used; fix or remove them, or train without them with data.bad_images=skip:"
    with pytest.raises(DataError, match=code):
        apply_bad_image_policy(dataset, "stop", workers=0, progress=False)
    with said_to_command(), pytest.raises(DataError, match="with --set data.bad_images=skip:"):
        apply_bad_image_policy(dataset, "stop", workers=0, progress=False)
    resumed = "(a resume keeps data.bad_images; to skip them, train a new run with "
    with pytest.raises(DataError, match=re.escape(f"{resumed}data.bad_images=skip and another ")):
        apply_bad_image_policy(dataset, "stop", workers=0, progress=False, fixes=resumed_fixes())


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
        open_rgb(path, upright=False)
    assert str(error.value).endswith("or leave it out (sef train: --set data.bad_images=skip)")
    with pytest.raises(DataError) as error:
        _typed_image(path)  # sef viz cam PATH: a file it was given, too large
    assert str(error.value) == f"{path} is too large: 60,000 pixels > limit 50,000 (SEF_MAX_PIXELS)"


# EXIF 2.32, Orientation: where the stored image's 0th row and 0th column lie in the upright view.
EXIF_SIDES = {1: ("top", "left"), 2: ("top", "right"), 3: ("bottom", "right"),
              4: ("bottom", "left"), 5: ("left", "top"), 6: ("right", "top"),
              7: ("right", "bottom"), 8: ("left", "bottom")}  # fmt: skip
# 3 wide, 2 high, every pixel its own colour: any turn or flip shows
STORED = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
                   [[255, 255, 0], [0, 255, 255], [255, 0, 255]]], np.uint8)  # fmt: skip


def upright_by_the_table(stored: np.ndarray, orientation: int) -> np.ndarray:
    """``stored`` [h, w, 3] as seen upright, pixel by pixel from the EXIF table: stored row i
    lies i rows in from the side its 0th row is on, stored column j j columns in from its side."""
    row_side, column_side = EXIF_SIDES[orientation]
    h, w = stored.shape[:2]
    turned = row_side in ("left", "right")
    seen = np.zeros((w, h, 3) if turned else (h, w, 3), stored.dtype)
    for i in range(h):
        for j in range(w):
            if turned:  # rows of the stored image are columns of the upright one
                row = j if column_side == "top" else w - 1 - j
                column = i if row_side == "left" else h - 1 - i
            else:
                row = i if row_side == "top" else h - 1 - i
                column = j if column_side == "left" else w - 1 - j
            seen[row, column] = stored[i, j]
    return seen


def tagged(path, orientation: int, pixels: np.ndarray = STORED, **save):
    """``pixels`` saved to ``path`` with EXIF Orientation ``orientation``."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    Image.fromarray(pixels).save(path, exif=exif, **save)
    return path


def stored_pixels(path) -> np.ndarray:
    """The pixels as the file stores them, its EXIF ignored."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_an_image_is_turned_upright_by_its_exif_orientation_where_asked(tmp_path, orientation):
    path = tagged(tmp_path / "photo.png", orientation)
    expected = upright_by_the_table(STORED, orientation)
    assert np.array_equal(np.asarray(open_rgb(path, upright=True)), expected)
    assert decode(path, upright=True).size == (expected.shape[1], expected.shape[0])
    assert np.array_equal(np.asarray(open_rgb(path, upright=False)), STORED)  # as the benchmarks


@pytest.mark.parametrize(("suffix", "save"), [(".jpg", {"quality": 95}), (".webp", {})])
def test_a_phone_photo_is_turned_as_stored_pixels_say(tmp_path, suffix, save):
    """JPEG (a phone's) and WebP: the decoded pixels turned exactly, whatever the compression."""
    pixels = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    path = tagged(tmp_path / f"photo{suffix}", 6, pixels, **save)
    turned = open_rgb(path, upright=True)
    assert np.array_equal(np.asarray(turned), upright_by_the_table(stored_pixels(path), 6))


@pytest.mark.parametrize("upright", [True, False])
def test_a_tiff_that_pil_turns_as_it_loads_is_turned_once(tmp_path, upright):
    """Pillow turns a TIFF as it loads it, whichever road reads it (docs/datasets.md says so)."""
    path = tmp_path / "scan.tif"
    Image.fromarray(STORED).save(path, tiffinfo={ExifTags.Base.Orientation: 6})
    image = open_rgb(path, upright=upright)
    assert np.array_equal(np.asarray(image), upright_by_the_table(STORED, 6))


def test_an_untagged_image_is_used_as_stored(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    for path in (tmp_path / "plain.jpg", tmp_path / "plain.png"):
        Image.fromarray(pixels).save(path)
        assert np.array_equal(np.asarray(open_rgb(path, upright=True)), stored_pixels(path))


def _exif_segment(jpeg: bytes, block: bytes) -> bytes:
    """``jpeg`` with an APP1 EXIF segment holding ``block`` after its start marker."""
    return jpeg[:2] + b"\xff\xe1" + (len(block) + 2).to_bytes(2, "big") + block + jpeg[2:]


# Tags of EXIF blocks (what follows their "Exif\0\0"): TIFF's header, then one IFD of one entry.
_ORIENTATION_IFD = b"MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12"


@pytest.mark.parametrize(
    ("suffix", "block"),
    [
        pytest.param(".png", b"garbage, not TIFF", id="not-tiff"),  # PIL raises SyntaxError
        pytest.param(".png", b"MM\x00*\x00\x00\x00", id="cut-short"),  # struct.error
        pytest.param(".jpg", b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00",
                     id="entries-missing"),  # PIL warns "Corrupt EXIF data"
        pytest.param(".png", _ORIENTATION_IFD + b"\x00\x03\x00\x00\x00\x01\x00\x09" + bytes(6),
                     id="orientation-9"),
        pytest.param(".png", _ORIENTATION_IFD + b"\x00\x02\x00\x00\x00\x02A\x00" + bytes(6),
                     id="orientation-text"),
    ],
)  # fmt: skip
def test_a_damaged_exif_block_leaves_the_image_as_stored_without_a_warning(tmp_path, suffix, block):
    path = tmp_path / f"photo{suffix}"
    if suffix == ".png":
        Image.fromarray(STORED).save(path, exif=block)
    else:
        buffer = io.BytesIO()
        Image.fromarray(STORED).save(buffer, "JPEG")
        path.write_bytes(_exif_segment(buffer.getvalue(), block))
    with warnings.catch_warnings(record=True) as caught:
        quiet_pil()  # as on import: pytest restored the filters around this test
        image, stored = np.asarray(open_rgb(path, upright=True)), stored_pixels(path)
    assert np.array_equal(image, stored) and caught == []


def test_an_image_list_turns_its_images_upright_unless_told_not_to(tmp_path):
    """One's own photos, as a viewer shows them; the benchmarks' readers pass upright=False."""
    path = tagged(tmp_path / "photo.png", 8)
    image, label = ImageList([(str(path), 0)], ["bird"])[0]
    assert np.array_equal(np.asarray(image), upright_by_the_table(STORED, 8)) and label == 0
    stored = ImageList([(str(path), 0), (str(path), 0)], ["bird"], upright=False).select([1])
    assert not stored.upright and np.array_equal(np.asarray(stored[0][0]), STORED)


def test_a_photo_given_to_sef_viz_is_upright(tmp_path):
    """sef viz cam PATH shows a user's photo as sef predict reads it, the right way up."""
    from sef.viz import _typed_image

    path = tagged(tmp_path / "photo.png", 6)
    assert np.array_equal(np.asarray(_typed_image(path)), upright_by_the_table(STORED, 6))
