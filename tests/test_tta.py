"""Test-time augmentation: the views against by-hand crops and flips, the averaged probabilities
against a by-hand mean, and evaluation with TTA against plain evaluation."""

import pytest
import torch
from PIL import Image

from sef import SEF, transforms
from sef.engine import evaluate, evaluate_checkpoint
from sef.trained import load_trained_model
from sef.transforms import Preprocessing
from sef.tta import TTA_MODES, TTAViews, averaged_views, forward_views, view_count


@pytest.fixture
def photo():
    """A 50 x 40 image with a different value at every pixel, so any misplaced crop shows."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (40, 50, 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


@pytest.mark.parametrize("recipe", transforms.RECIPES)
def test_views_are_the_plain_image_its_mirror_and_five_crops(photo, recipe):
    size = 24
    views = TTAViews(Preprocessing(size, recipe), "flip+crops", normalise=False)(photo)
    assert views.shape == (view_count("flip+crops"), 3, size, size) == (11, 3, 24, 24)
    plain = transforms.test_transform(recipe, size, normalise=False)(photo)
    torch.testing.assert_close(views[0], plain.as_subclass(torch.Tensor), rtol=0, atol=0)
    torch.testing.assert_close(
        TTAViews(Preprocessing(size, recipe), "flip", False)(photo)[1], plain.flip(-1)
    )
    side = round(size * 600 / 448)  # 32: the resize_crop recipe's test resize
    resized = transforms.test_transform("resize", side, normalise=False)(photo)
    corners = [resized[:, :size, :size], resized[:, :size, -size:], resized[:, -size:, :size],
               resized[:, -size:, -size:], resized[:, 4:28, 4:28]]  # fmt: skip
    for got, expected in zip(views[1:6], corners, strict=True):
        torch.testing.assert_close(got, expected.as_subclass(torch.Tensor), rtol=0, atol=0)
    for crop, mirrored in zip(views[1:6], views[6:], strict=True):
        torch.testing.assert_close(mirrored, crop.flip(-1), rtol=0, atol=0)
    if recipe == "resize_crop":  # its plain test image is the centre crop
        torch.testing.assert_close(views[5], views[0], rtol=0, atol=0)


def test_views_are_normalised_like_the_test_transform(photo):
    views = TTAViews(Preprocessing(24, "resize"), "crops")(photo)
    torch.testing.assert_close(views[0], transforms.test_transform("resize", 24)(photo))
    assert views.dtype == torch.float32


def test_forward_views_averages_the_probabilities_of_the_modes_views():
    torch.manual_seed(0)
    model = SEF("small_cnn", 5, groups=2).eval()
    for mode in TTA_MODES:
        batch = torch.randn(3, view_count(mode), 3, 16, 16)
        with torch.no_grad():
            plain, probabilities = forward_views(model, batch, mode, lambda x: x)
            by_hand = torch.stack([model(batch[:, v]).softmax(-1) for v in averaged_views(mode)])
        torch.testing.assert_close(probabilities, by_hand.mean(0))
        torch.testing.assert_close(plain.logits, model(batch[:, 0]))
    assert list(averaged_views("flip")) == [0, 1] and list(averaged_views("crops")) == [
        1,
        2,
        3,
        4,
        5,
    ]
    with pytest.raises(ValueError, match="needs each image as a stack of 6 views"):
        forward_views(model, torch.randn(2, 3, 16, 16), "crops", lambda x: x)
    with pytest.raises(ValueError, match="unknown TTA mode 'rotate'"):
        TTAViews(Preprocessing(16, "resize"), "rotate")


def test_evaluation_with_tta_keeps_the_plain_predictions(demo_checkpoint):
    plain, dataset = evaluate_checkpoint(demo_checkpoint, progress=False, workers=0)
    result, _ = evaluate_checkpoint(demo_checkpoint, progress=False, workers=0, tta="flip")
    assert torch.equal(result.predictions, plain.predictions)
    assert torch.equal(result.group_predictions, plain.group_predictions)
    trained = load_trained_model(demo_checkpoint)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad():
        mean = (trained.model(images).softmax(-1) + trained.model(images.flip(-1)).softmax(-1)) / 2
    assert torch.equal(result.tta_predictions, mean.argmax(1))
    summary = result.summary()
    assert summary["tta"] == "flip" and 0 <= summary["tta_top1"] <= 1
    assert "tta" not in plain.summary()
    dataset.transform = transforms.test_transform("resize", 32)  # plain items, yet TTA asked
    with pytest.raises(ValueError, match="TTA 'flip' needs each image as a stack of 2 views"):
        evaluate(trained.model, dataset, tta="flip", progress=False)
