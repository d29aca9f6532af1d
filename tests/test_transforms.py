"""The paper's pipelines against a slow, obviously-right PIL + numpy version."""

import numpy as np
import pytest
import torch
from PIL import Image

from sef import transforms
from sef.errors import ConfigError

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _photo(width=53, height=41, seed=0) -> Image.Image:
    """A noisy RGB image, so every crop offset and flip gives a different result."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _slow_reference(image: Image.Image, side: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """PIL resize to side x side, crop box, scale to [0, 1], ImageNet-normalise; [3, H, W]."""
    resized = image.resize((side, side), Image.Resampling.BILINEAR).crop(box)
    array = np.asarray(resized, dtype=np.float64) / 255.0
    return ((array - MEAN) / STD).transpose(2, 0, 1)


# PIL's and torchvision's antialiased bilinear resizes agree to about one grey level.
TOLERANCE = 2.5 / 255 / STD.min()


def test_imagenet_statistics():
    assert transforms.IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert transforms.IMAGENET_STD == (0.229, 0.224, 0.225)


@pytest.mark.parametrize(("image_size", "side"), [(448, 600), (224, 300), (32, 43)])
def test_resize_crop_keeps_the_paper_ratio(image_size, side):
    assert transforms.resize_size("resize_crop", image_size) == side
    assert transforms.resize_size("resize", image_size) == image_size


def test_test_pipelines_match_the_slow_reference():
    image = _photo()
    out = transforms.test_transform("resize_crop", 24)(image)
    side = transforms.resize_size("resize_crop", 24)  # 32
    offset = (side - 24) // 2
    expected = _slow_reference(image, side, (offset, offset, offset + 24, offset + 24))
    assert out.dtype == torch.float32 and out.shape == (3, 24, 24)
    np.testing.assert_allclose(out.numpy(), expected, atol=TOLERANCE)

    out = transforms.test_transform("resize", 20)(image)
    np.testing.assert_allclose(
        out.numpy(), _slow_reference(image, 20, (0, 0, 20, 20)), atol=TOLERANCE
    )


def _matching_window(out: np.ndarray, image: Image.Image, side: int, size: int):
    """The (left, top, flipped) of the reference crop equal to ``out``, or None."""
    for flipped in (False, True):
        for top in range(side - size + 1):
            for left in range(side - size + 1):
                ref = _slow_reference(image, side, (left, top, left + size, top + size))
                if flipped:
                    ref = ref[:, :, ::-1]
                if np.abs(out - ref).max() < TOLERANCE:
                    return left, top, flipped
    return None


def test_train_pipeline_is_a_random_crop_and_flip_of_the_resized_image():
    image, size = _photo(), 12
    side = transforms.resize_size("resize_crop", size)  # 16: 5 x 5 offsets, 2 flips
    pipeline = transforms.train_transform("resize_crop", size)
    torch.manual_seed(0)
    windows = set()
    for _ in range(12):
        out = pipeline(image)
        assert out.shape == (3, size, size)
        window = _matching_window(out.numpy(), image, side, size)
        assert window is not None, "output is not a crop (+flip) of the resized image"
        windows.add(window)
    assert len({w[:2] for w in windows}) > 1 and {w[2] for w in windows} == {False, True}


def test_train_resize_recipe_only_flips():
    image = _photo()
    pipeline = transforms.train_transform("resize", 16)
    torch.manual_seed(1)
    flips = {_matching_window(pipeline(image).numpy(), image, 16, 16) for _ in range(8)}
    assert flips == {(0, 0, False), (0, 0, True)}


def test_seeded_augmentation_is_reproducible():
    pipeline = transforms.train_transform("resize_crop", 16)
    torch.manual_seed(3)
    first = [pipeline(_photo()) for _ in range(3)]
    torch.manual_seed(3)
    second = [pipeline(_photo()) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("make", [transforms.train_transform, transforms.test_transform])
def test_uint8_pipelines_normalised_as_a_batch_give_the_float_pipelines_exactly(make):
    """What sef train does (uint8 out of the workers, one normalisation per batch on the
    device) is bit for bit what the per-image float pipeline gives."""
    images = [_photo(seed=seed) for seed in range(3)]
    torch.manual_seed(5)
    expected = torch.stack([make("resize_crop", 16)(image) for image in images])
    torch.manual_seed(5)
    uint8 = torch.stack([make("resize_crop", 16, normalise=False)(image) for image in images])
    assert uint8.dtype == torch.uint8 and uint8.shape == (3, 3, 16, 16)
    batch = transforms.normalise_batch(uint8.contiguous(memory_format=torch.channels_last))
    assert batch.dtype == torch.float32 and torch.equal(batch, expected)


def test_normalise_batch_is_the_imagenet_formula():
    pixels = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    values = torch.tensor([0, 128, 255], dtype=torch.float64) / 255
    mean, std = torch.tensor(MEAN), torch.tensor(STD)
    expected = ((values - mean) / std).view(1, 3, 1, 1).expand(2, 3, 2, 2).float()
    torch.testing.assert_close(transforms.normalise_batch(pixels), expected)


@pytest.mark.parametrize(
    ("recipe", "size"), [("random_resized_crop", 224), ("resize", 0), ("resize", 22.5)]
)
def test_bad_recipe_or_size_is_a_config_error(recipe, size):
    with pytest.raises(ConfigError, match="recipe|image_size"):
        transforms.train_transform(recipe, size)
    with pytest.raises(ConfigError, match="recipe|image_size"):
        transforms.test_transform(recipe, size)


def test_normalise_batch_copies_nothing_from_the_host_after_its_first_batch(monkeypatch):
    """Each tensor built from Python numbers on a GPU is a copy the host waits for; the
    ImageNet statistics are built once per device, not per batch."""
    transforms.normalise_batch(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    built = []
    for name in ("tensor", "as_tensor"):
        original = getattr(torch, name)

        def counted(*args, _original=original, **kwargs):
            built.append(args)
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch, name, counted)
    for _ in range(3):
        transforms.normalise_batch(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
    assert built == []


@pytest.mark.parametrize(("recipe", "size"), [("resize_crop", 12), ("resize", 10)])
def test_resize_then_drawn_crop_and_flip_are_the_training_pipeline_bit_for_bit(recipe, size):
    """What a decoded-image cache does in pieces (resize once; draw the crop and flip per item;
    crop the batch on the device) gives the pipeline's own pixels under the same seed."""
    images = [_photo(seed=seed) for seed in range(6)]
    pipeline = transforms.train_transform(recipe, size, normalise=False)
    resized = torch.stack([transforms.resize_transform(recipe, size)(image) for image in images])
    assert resized.shape[-1] == transforms.resize_size(recipe, size)
    expected, crops = [], []
    for seed, image in enumerate(images):
        torch.manual_seed(seed)
        expected.append(pipeline(image))
        torch.manual_seed(seed)
        crops.append(transforms.draw_crop_flip(recipe, size))
    batch = transforms.crop_flip_batch(resized, torch.tensor(crops), size)
    assert torch.equal(batch, torch.stack(expected))
    assert {flipped for _, _, flipped in crops} == {0, 1}
    assert torch.equal(
        transforms.test_transform(recipe, size, resized=True)(resized[0]),
        transforms.test_transform(recipe, size)(images[0]),
    )
