"""Figure maths against slow, obviously-right loops; figures render; part localisation is exact
on images whose colour channels mark the parts."""

import itertools
import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image, ImageDraw

from sef import SEF, transforms
from sef.analysis import (
    channel_cosine,
    group_maps,
    group_means,
    mean_channel_correlation,
    normalise_maps,
    upsample_maps,
)
from sef.datasets.imagelist import ImageList
from sef.errors import DataError, OutputError, said_to_command
from sef.parts import (
    measure_parts,
    nearest_parts,
    part_report,
    peak_locations,
    static_peaks,
    transform_with_parts,
)
from sef.viz import (
    activation_figure,
    correlation_figure,
    curves_figure,
    parts_figure,
    plot_correlation,
    plot_curves,
    plot_group_maps,
    plot_parts,
    read_metrics,
    unnormalise,
)


def _slow_cosine(features):
    batch, channels = features.shape[:2]
    flat = features.flatten(2).double()
    out = torch.zeros(batch, channels, channels, dtype=torch.float64)
    for b in range(batch):
        for i in range(channels):
            for j in range(channels):
                x, y = flat[b, i], flat[b, j]
                out[b, i, j] = (x @ y) / (x.norm() * y.norm())
    return out


def test_channel_cosine_matches_a_loop():
    features = torch.rand(2, 7, 3, 4)
    assert torch.allclose(channel_cosine(features).double(), _slow_cosine(features), atol=1e-6)


def test_group_means_match_a_loop():
    matrix = torch.randn(7, 7)
    sizes = [2, 2, 3]
    starts = [0, 2, 4]
    slow = torch.zeros(3, 3)
    for m in range(3):
        for n in range(3):
            rows = range(starts[m], starts[m] + sizes[m])
            cols = range(starts[n], starts[n] + sizes[n])
            values = [matrix[i, j] for i in rows for j in cols]
            slow[m, n] = sum(values) / len(values)
    assert torch.allclose(group_means(matrix, sizes), slow, atol=1e-6)


class _Identity(torch.nn.Module):
    """A 'backbone' whose feature map is its input: C = 3 image channels."""

    def forward(self, x):
        return x


def test_mean_correlation_averages_every_image_whatever_the_batching():
    model = SEF(_Identity(), num_classes=2, groups=3)
    images = torch.rand(5, 3, 6, 6)
    expected = _slow_cosine(images).mean(0)
    for batches in ([images], [images[:2], images[2:]], [images[i : i + 1] for i in range(5)]):
        mean, count = mean_channel_correlation(model, batches)
        assert count == 5
        assert torch.allclose(mean.double(), expected, atol=1e-6)
    with pytest.raises(DataError, match="no images"):
        mean_channel_correlation(model, [])


@pytest.mark.parametrize(("side", "warned"), [(1, True), (2, False)])
def test_the_correlation_of_a_1x1_feature_map_says_it_compares_signs_only(recwarn, side, warned):
    """Over one position the cosine of two channels is 1, -1 or 0: `sef viz corr` of resnet18
    at 32 px drew that as a correlation without a word. Two batches, one warning."""
    model = SEF(_Identity(), num_classes=2, groups=3)
    mean_channel_correlation(model, [torch.rand(2, 3, side, side), torch.rand(2, 3, side, side)])
    said = [str(w.message) for w in recwarn if "feature map" in str(w.message)]
    assert said == (
        [
            "the backbone's last feature map is 1 x 1 for this model's 1 x 1 images (one "
            "position or patch), so each channel's map is a single value and the cosine of two "
            "channels is 1, -1 or 0 (the signs of their values), not how alike their maps are; a "
            "model trained at a larger image size (data.image_size), or on a backbone whose last "
            "map is larger, shows how alike the channels' maps are"
        ]
        if warned
        else []
    )
    if warned:  # `sef viz corr`'s user trains with --image-size
        with said_to_command(), pytest.warns(UserWarning, match=r"size \(--image-size\), or"):
            mean_channel_correlation(model, [torch.rand(2, 3, side, side)])


def test_the_correlation_of_a_model_whose_features_are_not_finite_says_it_means_nothing(recwarn):
    """An overflowed checkpoint (NaN weights) drew a figure of NaN without a word, where
    `sef eval` and `sef predict` warn. Two batches, one warning counting the images."""
    model = SEF(_Identity(), num_classes=2, groups=3)
    broken = torch.rand(2, 3, 2, 2)
    broken[1, 0, 0, 0] = float("nan")
    mean_channel_correlation(model, [torch.rand(2, 3, 2, 2), broken])
    said = [str(w.message) for w in recwarn if "not finite" in str(w.message)]
    assert said == [
        "the model's feature maps are not finite (NaN or infinite) on 1 of 4 images, so the "
        "figure means nothing: its weights or BatchNorm statistics overflowed in training; draw "
        "an earlier checkpoint of its run"
    ]


def test_mean_correlation_holds_one_channel_matrix_not_one_per_image():
    """`sef viz corr` of a ResNet-50 (2048 channels) held a 2048 x 2048 matrix per image of a
    batch: 0.5 GiB at the default 32 images a batch, 2 GiB at --batch-size 128."""
    from torch.profiler import ProfilerActivity, profile

    images, channels = 16, 128
    model = SEF(_Identity(), num_classes=2, groups=2)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiled:
        mean_channel_correlation(model, [torch.rand(images, channels, 2, 2)])
    largest = max(event.cpu_memory_usage for event in profiled.events())
    assert largest <= 4 * channels * channels  # one float32 C x C matrix


def test_group_maps_are_channel_means_and_normalise_to_unit_range():
    features = torch.randn(2, 5, 3, 3)
    maps = group_maps(features, [2, 3])
    for b in range(2):
        assert torch.allclose(maps[b, 0], (features[b, 0] + features[b, 1]) / 2)
        assert torch.allclose(maps[b, 1], features[b, 2:].sum(0) / 3)
    scaled = normalise_maps(maps)
    assert torch.allclose(scaled.flatten(2).amin(2), torch.zeros(2, 2))
    assert torch.allclose(scaled.flatten(2).amax(2), torch.ones(2, 2))
    assert torch.equal(normalise_maps(torch.full((1, 1, 2, 2), 3.0)), torch.zeros(1, 1, 2, 2))
    upsampled = upsample_maps(maps, (12, 12))
    assert upsampled.shape == (2, 2, 12, 12) and 0 <= upsampled.min() <= upsampled.max() <= 1
    assert torch.equal(
        upsample_maps(torch.full((1, 2, 1, 1), 5.0), (8, 8)), torch.zeros(1, 2, 8, 8)
    )


def test_peaks_nearest_parts_and_report_on_hand_computed_values():
    maps = torch.zeros(1, 2, 2, 4)
    maps[0, 0, 1, 3] = 1  # bottom-right cell of a 2 x 4 grid on a 40 x 80 (h x w) image
    maps[0, 1, 0, 0] = 1
    peaks = peak_locations(maps, (40, 80))
    assert peaks.tolist() == [[[70.0, 30.0], [10.0, 10.0]]]

    parts = [{"head": (60.0, 30.0), "tail": (0.0, 0.0)}]
    assert nearest_parts(peaks, parts, ["head", "tail"]).tolist() == [[0, 1]]

    nearest = torch.tensor([[0, 1], [0, 0], [2, 1]])
    report = part_report(nearest, ["head", "wing", "tail"])
    assert report.fractions[0] == pytest.approx([2 / 3, 0, 1 / 3])
    assert report.fractions[1] == pytest.approx([1 / 3, 2 / 3, 0])
    assert report.distinctness == pytest.approx(2 / 3)
    assert report.chance_distinctness == pytest.approx(2 / 3)
    assert report.dominant_parts == ["head", "wing"] and report.static_fractions is None
    assert "distinctness 0.67" in report.summary()
    static = torch.tensor([[1, 1], [1, 1], [1, 0]])
    report = part_report(nearest, ["head", "wing", "tail"], static)
    assert report.static_fractions[0] == pytest.approx([0, 1, 0])
    assert report.static_distinctness == pytest.approx(1 / 3)

    peaks = torch.tensor(
        [[[1.0, 2.0], [5.0, 5.0]], [[1.0, 2.0], [6.0, 6.0]], [[3.0, 3.0], [6.0, 6.0]]]
    )
    assert static_peaks(peaks).tolist() == [[[1.0, 2.0], [6.0, 6.0]]] * 3
    assert part_report(torch.tensor([[1], [1]]), ["a", "b"]).distinctness is None


def test_part_centres_follow_the_resize_crop_transform():
    transform = transforms.test_transform("resize_crop", 64)  # resize to 86 x 86, center crop 64
    image = Image.new("RGB", (100, 50))
    _, moved = transform_with_parts(transform, image, {"centre": (50.0, 25.0), "corner": (0, 0)})
    side, offset = 86, (86 - 64) / 2
    assert moved["centre"] == pytest.approx((32.0, 32.0), abs=1e-4)
    assert moved["corner"] == pytest.approx((-offset, -offset), abs=1e-4)
    _, moved = transform_with_parts(transform, image, {"p": (80.0, 10.0)})
    expected = (80 * side / 100 - offset, 10 * side / 50 - offset)
    assert moved["p"] == pytest.approx(expected, abs=1e-4)


PART_COLOURS = {"head": (255, 0, 0), "wing": (0, 255, 0), "tail": (0, 0, 255)}


@pytest.fixture
def marked_parts(tmp_path):
    """Non-square images where the red/green/blue channel each light up one part's disc."""
    samples, parts = [], []
    layouts = [
        {"head": (20, 15), "wing": (50, 30), "tail": (75, 48)},
        {"head": (70, 20), "wing": (25, 45), "tail": (45, 12)},
        {"head": (30, 50), "wing": (70, 45), "tail": (20, 14)},
    ]
    for index, layout in enumerate(layouts):
        image = Image.new("RGB", (96, 64))
        draw = ImageDraw.Draw(image)
        for name, (x, y) in layout.items():
            draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=PART_COLOURS[name])
        path = tmp_path / f"{index}.png"
        image.save(path)
        samples.append((str(path), 0))
        parts.append({name: (float(x), float(y)) for name, (x, y) in layout.items()})
    return ImageList(samples, ["bird"], parts=parts)


def test_measure_parts_finds_each_group_on_its_own_part(marked_parts):
    # Channels R, G, B pooled 8 x 8: group g (one channel each) peaks on the part painted in it.
    model = SEF(torch.nn.AvgPool2d(8), num_classes=1, groups=3).eval()
    transform = transforms.test_transform("resize_crop", 64)
    measured = measure_parts(model, marked_parts, transform, [0, 1, 2], batch_size=2, examples=2)
    report = measured.report
    assert report.part_names == ["head", "wing", "tail"]
    assert report.fractions == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert report.distinctness == 1.0 and report.images == 3
    # A group parked at one spot would find its dominant part on fewer images: tracking shows.
    assert all(max(row) < 1 for row in report.static_fractions)
    assert measured.examples.shape == (2, 3, 64, 64) and measured.peaks.shape == (3, 3, 2)
    assert marked_parts.transform is None  # restored
    # With the groups' channels swapped the same measure must say so.
    swapped = torch.nn.Sequential(torch.nn.AvgPool2d(8), _Permute([2, 0, 1]))
    model = SEF(swapped, num_classes=1, groups=3).eval()
    report = measure_parts(model, marked_parts, transform, [0, 1, 2]).report
    assert report.dominant_parts == ["tail", "head", "wing"]
    # A model without groups of its own (G = 1) is scored with the channel groups it is given.
    ungrouped = SEF(torch.nn.AvgPool2d(8), num_classes=1, groups=1).eval()
    split = measure_parts(ungrouped, marked_parts, transform, [0, 1, 2], group_sizes=[1, 1, 1])
    assert split.report.fractions == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize(("pool", "warned"), [(64, True), (8, False)])
def test_parts_of_a_1x1_feature_map_say_every_group_peaks_at_the_centre(
    marked_parts, recwarn, pool, warned
):
    """`sef viz parts` of resnet18 at 32 px (a 1 x 1 map) put every group's peak on the same
    spot and said nothing; an 8 x 8 map is measured without a word."""
    model = SEF(torch.nn.AvgPool2d(pool), num_classes=1, groups=3).eval()
    transform = transforms.test_transform("resize_crop", 64)
    measure_parts(model, marked_parts, transform, [0, 1, 2], batch_size=2, progress=False)
    said = [str(w.message) for w in recwarn if "feature map" in str(w.message)]
    assert said == (
        [
            "the backbone's last feature map is 1 x 1 for this model's 64 x 64 images (one "
            "position or patch), so each group's map is a single value and every group peaks at "
            "the image's centre, whatever the image shows; a model trained at a larger image "
            "size (data.image_size), or on a backbone whose last map is larger, shows where each "
            "group peaks"
        ]
        if warned
        else []
    )


class _Permute(torch.nn.Module):
    def __init__(self, order):
        super().__init__()
        self.order = order

    def forward(self, x):
        return x[:, self.order]


def test_measure_parts_needs_part_annotations(tmp_path):
    plain = ImageList([], ["x"])
    model = SEF(_Identity(), num_classes=1, groups=3)
    with pytest.raises(DataError, match="no part annotations"):
        measure_parts(model, plain, transforms.test_transform("resize", 32), [0])


def test_read_metrics_reads_jsonl_and_names_bad_files(tmp_path):
    lines = [{"epoch": 1, "train_ce": 2.0}, {"epoch": 2, "train_ce": 1.5}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert read_metrics(tmp_path) == lines
    with pytest.raises(DataError, match="does not exist"):
        read_metrics(tmp_path / "missing")
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{broken\n')
    with pytest.raises(DataError, match="line 2 is not JSON; the file is damaged"):
        read_metrics(tmp_path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("seed: 0\n", "is not JSON"), ('{"name": "x"}\n', "is no epoch's record"),
     ("[1, 2]\n", "is no epoch's record")],
)  # fmt: skip
def test_curves_of_another_file_say_it_is_no_metrics_jsonl(tmp_path, text, problem):
    """`sef viz curves RUN/config.yaml` said the file was damaged; a JSON file of another kind
    drew an empty figure, or failed with "'list' object has no attribute 'get'"."""
    (tmp_path / "other").write_text(text)
    with pytest.raises(DataError) as raised:
        read_metrics(tmp_path / "other")
    assert str(raised.value) == (
        f"{tmp_path / 'other'} is not a metrics.jsonl (line 1 {problem}); pass the output folder "
        "of a `sef train` run"
    )


def _png_size(path):
    with Image.open(path) as image:
        image.load()
        return image.size


def test_every_figure_renders(tmp_path, marked_parts):
    correlation = _slow_cosine(torch.rand(2, 10, 3, 3)).mean(0).float()
    width, height = _png_size(plot_correlation(correlation, [5, 5], tmp_path / "c.png", images=2))
    assert width > 600 and height > 300

    images = unnormalise(
        torch.zeros(3, 3, 16, 16), transforms.IMAGENET_MEAN, transforms.IMAGENET_STD
    )
    assert torch.allclose(images[:, 0], torch.full((3, 16, 16), transforms.IMAGENET_MEAN[0]))
    maps = upsample_maps(torch.rand(3, 2, 2, 2), (16, 16))
    assert _png_size(plot_group_maps(images, maps, tmp_path / "m.png", titles=["a", "b", "c"]))

    records = [
        {"epoch": e, "loss_ce": 1 / e, "loss_total": 1.2 / e, "eval_top1": 0.1 * e,
         "eval_group_top1": [0.05 * e, 0.04 * e]}
        for e in range(1, 4)
    ]  # fmt: skip
    assert _png_size(plot_curves(records, tmp_path / "sub" / "curves.png", title="run"))
    assert _png_size(plot_curves([{"epoch": 1, "loss_ce": 1.0}], tmp_path / "bare.png"))
    for record in records:  # with the groups' correlation readout: a fourth panel, wider
        epoch = record["epoch"]
        record |= {"train_corr_within": 0.3 * epoch, "train_corr_between": 0.3,
                   "eval_corr_within": 0.25 * epoch, "eval_corr_between": 0.3}  # fmt: skip
    wide = _png_size(plot_curves(records, tmp_path / "corr-curves.png"))
    assert wide[0] > 1.25 * _png_size(tmp_path / "sub" / "curves.png")[0]

    peaks = torch.tensor([[[10.0, 10.0], [40.0, 30.0]]] * 2)
    path = plot_parts([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]], ["head", "wing", "tail"],
                      images[:2], peaks, marked_parts.parts[:2], tmp_path / "p.png",
                      summary="test")  # fmt: skip
    assert _png_size(path)


def _trained_without_a_1x1_map(checkpoint: Path):
    """``checkpoint``'s model reading 64 px images: at its 32 px resnet18's last map is 1 x 1,
    which the group-map figure warns of (tested on its own above)."""
    import dataclasses

    from sef.trained import load_trained_model

    trained = load_trained_model(checkpoint)
    trained.preprocessing = dataclasses.replace(trained.preprocessing, image_size=64)
    return trained


@pytest.mark.filterwarnings("error")
def test_the_group_map_figure_leaves_each_submodule_in_its_own_mode(demo_checkpoint, tmp_path):
    from sef.viz import activation_figure

    trained = _trained_without_a_1x1_map(demo_checkpoint)
    frozen = next(m for m in trained.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    trained.model.train()
    frozen.eval()  # as a fine-tuning loop leaves it
    picture = tmp_path / "bird.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(picture)
    activation_figure(trained, tmp_path / "cam.png", [picture])
    assert trained.model.training and not frozen.training


@pytest.mark.filterwarnings("error")
def test_a_class_named_with_a_newline_keeps_the_caption_at_two_lines(
    demo_checkpoint, tmp_path, monkeypatch
):
    """A file name's newline was escaped in the caption, a class name's broke it into three."""
    import sef.viz

    trained = _trained_without_a_1x1_map(demo_checkpoint)
    trained.classes = [f"two\nlines {i}" for i in range(len(trained.classes))]
    picture = tmp_path / "bird.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(picture)
    drawn = {}
    monkeypatch.setattr(sef.viz, "plot_group_maps", lambda *a, titles, **k: drawn.update(t=titles))
    sef.viz.activation_figure(trained, tmp_path / "cam.png", [picture])
    assert drawn["t"][0].startswith("bird.png\npred: two\\nlines ")


@pytest.mark.parametrize(("side", "warned"), [(32, True), (64, False)])
def test_group_maps_of_a_1x1_feature_map_say_why_they_are_blank(
    demo_checkpoint, tmp_path, monkeypatch, recwarn, side, warned
):
    """resnet18 at 32 px (and a ViT at one patch) has a 1 x 1 last map: every group map came out
    blank without a word; at 64 px its 2 x 2 map shows places and nothing is said."""
    import dataclasses

    import sef.viz
    from sef.trained import load_trained_model

    trained = load_trained_model(demo_checkpoint)
    trained.preprocessing = dataclasses.replace(trained.preprocessing, image_size=side)
    picture = tmp_path / "bird.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(picture)
    monkeypatch.setattr(sef.viz, "plot_group_maps", lambda *a, **k: None)
    sef.viz.activation_figure(trained, tmp_path / "cam.png", [picture])
    said = [str(w.message) for w in recwarn if "feature map" in str(w.message)]
    assert said == (
        [
            "the backbone's last feature map is 1 x 1 for this model's 32 x 32 images (one "
            "position or patch), so each group's map is a single value and is drawn blank; a "
            "model trained at a larger image size (data.image_size), or on a backbone whose last "
            "map is larger, shows where each group activates"
        ]
        if warned
        else []
    )


@pytest.mark.filterwarnings("error")
def test_group_maps_of_a_model_whose_outputs_are_not_finite_say_they_mean_nothing(
    demo_checkpoint, tmp_path, monkeypatch
):
    """NaN logits were captioned "pred: ... (nan%)" without a word, where `sef predict` warns."""
    import sef.viz

    trained = _trained_without_a_1x1_map(demo_checkpoint)
    with torch.no_grad():
        trained.model.head.bias[0] = float("nan")  # an overflowed checkpoint: NaN logits
    picture = tmp_path / "bird.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(picture)
    monkeypatch.setattr(sef.viz, "plot_group_maps", lambda *a, **k: None)
    with pytest.warns(
        UserWarning,
        match=r"outputs are not finite \(NaN or infinite\) on 2 of 2 images, so the fig",
    ):
        sef.viz.activation_figure(trained, tmp_path / "cam.png", [picture, picture])


class _Untouched:
    """A trained model that must not be used: the figure's output is refused before the work."""

    def __getattr__(self, name):
        raise AssertionError(f"the work started (trained.{name}) before the output was checked")


@pytest.mark.parametrize("draw", [correlation_figure, activation_figure, parts_figure])
def test_a_figure_format_matplotlib_cannot_draw_is_refused_before_the_work(draw, tmp_path):
    """`sef viz corr --out corr.jpgg` ran the model over every image, then failed with
    matplotlib's "Format 'jpgg' is not supported", naming no file."""
    with pytest.raises(OutputError, match=r"cannot write .*corr\.jpgg: matplotlib draws no \.jpgg"):
        draw(_Untouched(), tmp_path / "corr.jpgg")
    assert not list(tmp_path.iterdir())


def test_curves_over_a_checkpoint_or_a_folder_say_so_as_the_other_figures_do(tmp_path):
    """`sef viz curves RUN --out RUN/last.pt` said that matplotlib draws no .pt figures, and
    `--out RUN` that RUN "is a folder; choose another place", where corr, cam and parts say
    that the file holds a checkpoint, or ask for a file name."""
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "loss_ce": 1.0}\n')
    torch.save({"model": {}}, tmp_path / "last.pt")
    with pytest.raises(OutputError, match="last.pt: it holds a checkpoint or a model"):
        curves_figure(tmp_path, tmp_path / "last.pt")
    with pytest.raises(OutputError, match="it is a folder; choose a file name"):
        curves_figure(tmp_path, tmp_path)


def test_curves_in_a_format_matplotlib_cannot_draw_are_refused_in_sef_s_words(tmp_path):
    with pytest.raises(OutputError, match=r"cannot write .*best\.pt: matplotlib draws no \.pt"):
        plot_curves([{"epoch": 1, "loss_ce": 1.0}], tmp_path / "best.pt")
    assert plot_curves([{"epoch": 1, "loss_ce": 1.0}], tmp_path / "c.PDF").read_bytes()[:4] == (
        b"%PDF"
    )


def test_the_readme_figures_script_without_its_run_says_so_in_one_line(tmp_path, capsys):
    script = runpy.run_path(str(Path(__file__).parents[1] / "scripts/make_readme_figures.py"))
    run, out = tmp_path / "no-run", tmp_path / "figures"
    with pytest.raises(SystemExit) as stop:  # was a CheckpointError traceback
        script["main"](["--run", str(run), "--draw-only", "--out", str(out)])
    assert stop.value.code == 2 and not out.exists()
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line.endswith(
        f": error: checkpoint {run / 'last.pt'} does not exist; pass a last.pt or best.pt "
        "written by `sef train`"
    )


def _drawn(monkeypatch, draw) -> tuple[object, object]:
    """The figure ``draw()`` saves, drawn as savefig draws it (the constrained layout placed),
    and its renderer."""
    saved = []
    monkeypatch.setattr("sef.outputs.save_figure", lambda figure, path, dpi: saved.append(figure))
    draw()
    (figure,) = saved
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw(renderer)
    return figure, renderer


def _drawn_titles(monkeypatch, draw) -> tuple[list, object]:
    """The extents, in pixels, of the axes titles of the figure ``draw()`` saves, and the
    figure's own extent."""
    figure, renderer = _drawn(monkeypatch, draw)
    titles = [axis.title for axis in figure.get_axes() if axis.get_title()]
    return [title.get_window_extent(renderer) for title in titles], figure.bbox


def test_a_group_map_caption_keeps_its_lines(monkeypatch, tmp_path):
    """Every `sef viz cam` caption read "true: wing\\npred: tail (40%)" on one line: the file
    name's escaping of control characters escaped the caption's own line break too."""
    figure, _ = _drawn(
        monkeypatch,
        lambda: plot_group_maps(
            torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8), tmp_path / "m.png",
            titles=["true: wing\npred: tail (40%)", "a\tb.png\npred: tail (40%)"],
        ),
    )  # fmt: skip
    captions = [axis.get_title() for axis in figure.get_axes() if axis.get_title()]
    assert captions == ["true: wing\npred: tail (40%)", "a\\tb.png\npred: tail (40%)"]


def test_long_class_names_stay_inside_their_column_of_the_group_maps(monkeypatch, tmp_path):
    """birds32's class names (crested-barred-forked-clear-webbed) ran over the next column's
    caption and off the figure's left edge."""
    name = "crested-barred-forked-clear-webbed"
    images, maps = torch.rand(3, 3, 16, 16), torch.rand(3, 5, 16, 16)
    titles = [f"true: {name}\npred: {name} (3%)"] * 3
    extents, page = _drawn_titles(
        monkeypatch, lambda: plot_group_maps(images, maps, tmp_path / "m.png", titles=titles)
    )
    assert len(extents) == 3
    assert page.x0 <= extents[0].x0 and extents[-1].x1 <= page.x1
    assert all(left.x1 < right.x0 for left, right in itertools.pairwise(extents))


def test_the_parts_summary_of_five_groups_stays_inside_the_figure(monkeypatch, tmp_path):
    """The summary line of a G = 5 birds32 model was cut off at both sides of the figure."""
    names = ["head", "wing", "tail", "breast", "feet"]
    nearest = torch.randint(0, 5, (64, 5), generator=torch.Generator().manual_seed(0))
    report = part_report(nearest, names, static_nearest=nearest.flip(0))
    peaks = torch.full((2, 5, 2), 8.0)
    parts = [dict.fromkeys(names, (4.0, 4.0))] * 2
    extents, page = _drawn_titles(
        monkeypatch,
        lambda: plot_parts(
            report.fractions, names, torch.rand(2, 3, 16, 16), peaks, parts,
            tmp_path / "p.png", summary=report.summary(),
        ),
    )  # fmt: skip
    assert extents and all(page.x0 <= e.x0 and e.x1 <= page.x1 for e in extents)


def _apart(extents, along: str) -> bool:
    """Whether the pixel extents do not overlap along ``along`` ("x" or "y")."""
    spans = sorted((getattr(e, f"{along}0"), getattr(e, f"{along}1")) for e in extents)
    return all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))


@pytest.mark.parametrize("groups", [2, 8, 32])
def test_the_correlation_figure_of_many_groups_keeps_its_labels_apart(
    monkeypatch, tmp_path, groups
):
    """At G = 16 every "group g" tick label and every value of D ran into the next: the axes
    were a black smear."""
    figure, renderer = _drawn(
        monkeypatch,
        lambda: plot_correlation(
            torch.rand(64, 64), [64 // groups] * groups, tmp_path / "c.png", images=2
        ),
    )
    for axis in figure.get_axes()[:2]:  # the two matrices, not their colour bars
        extents = {
            along: [label.get_window_extent(renderer) for label in labels if label.get_text()]
            for along, labels in (("x", axis.get_xticklabels()), ("y", axis.get_yticklabels()))
        }
        assert extents["x"] and _apart(extents["x"], "x") and _apart(extents["y"], "y")
        values = [text.get_window_extent(renderer) for text in axis.texts]
        assert all(
            _apart(pair, "x") or _apart(pair, "y") for pair in itertools.combinations(values, 2)
        )


def test_the_parts_legend_of_many_groups_stays_inside_the_figure(monkeypatch, tmp_path):
    """At G = 16 the legend of the example peaks, one column beside one row of images, ran off
    the figure's foot after its 13th group."""
    groups, names = 16, ["head", "wing", "tail"]
    report = part_report(torch.zeros(4, groups, dtype=torch.long), names)
    figure, renderer = _drawn(
        monkeypatch,
        lambda: plot_parts(
            report.fractions, names, torch.rand(2, 3, 16, 16), torch.full((2, groups, 2), 8.0),
            [dict.fromkeys(names, (4.0, 4.0))] * 2, tmp_path / "p.png", summary="test",
        ),
    )  # fmt: skip
    (legend,) = [legend for subfigure in figure.subfigs for legend in subfigure.legends]
    shown, page = legend.get_window_extent(renderer), figure.bbox
    assert len(legend.get_texts()) == groups
    assert (
        page.x0 <= shown.x0 and shown.x1 <= page.x1 and page.y0 <= shown.y0 <= shown.y1 <= page.y1
    )


def test_the_curves_of_many_group_heads_keep_their_legend_inside_the_panel(monkeypatch, tmp_path):
    """At G = 16 the legend of the group heads' panel, a row per group, ran over its title and
    out of the panel, and matplotlib's ten colours came round again from group 11."""
    records = [{"epoch": e, "eval_top1": 0.5, "eval_group_top1": [0.1] * 16} for e in (1, 2)]
    figure, renderer = _drawn(monkeypatch, lambda: plot_curves(records, tmp_path / "c.png"))
    heads = next(a for a in figure.get_axes() if a.get_title().startswith("Discriminability"))
    legend = heads.get_legend().get_window_extent(renderer)
    panel = heads.get_window_extent(renderer)
    assert panel.y0 <= legend.y0 and legend.y1 <= panel.y1
    colours = {tuple(line.get_color()) for line in heads.get_lines()[:16]}
    assert len(colours) == 16


def test_parts_of_a_model_of_data_without_parts_is_refused_before_its_data_is_sought(
    demo_checkpoint, tmp_path
):
    """`sef viz parts` of a CUB model whose data had moved asked for --data-root; with the data
    found, it then said that parts need the demo data."""
    from sef.trained import load_trained_model

    trained = load_trained_model(demo_checkpoint)
    trained.config.data.dataset, trained.config.data.root = "cub", str(tmp_path / "moved")
    with pytest.raises(DataError, match="the cub dataset this model was trained on has no part"):
        parts_figure(trained, tmp_path / "parts.png")


def test_a_group_map_figure_of_many_groups_takes_fewer_images(tmp_path):
    """32 images of a 32-group model were 1,056 pictures: two minutes of drawing on a CPU for
    an 8228 x 7678 PNG."""
    model = SEF(_Identity(), num_classes=2, groups=3)
    model.group_sizes = [1] * 32  # as a 32-group model's
    with pytest.raises(ValueError, match="at most 8 fit beside 32 groups; asked for 9"):
        activation_figure(SimpleNamespace(model=model), tmp_path / "cam.png", images=9)
