"""Export: every format reproduces PyTorch's logits, batch stays free, no group heads ship."""

import copy
import json
import os
from pathlib import Path

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from sef import SEF
from sef.errors import CheckpointError, DiskFull, OutputError, said_to_command
from sef.export import (
    EXPORT_FORMATS,
    check_export,
    check_formats,
    export_model,
    exported_logits,
    load_safetensors,
    write_onnx,
)
from sef.transforms import Preprocessing

SIZE = 32
CLASSES = ["albatross", "bunting", "cardinal", "dove", "egret"]
PREPROCESSING = Preprocessing(SIZE, "resize_crop", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.fixture(scope="module")
def model() -> SEF:
    torch.manual_seed(0)
    sef_model = SEF("resnet18", num_classes=len(CLASSES), groups=3)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding them is tested too
        for module in sef_model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return sef_model.eval()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return export_model(
        model, out, classes=CLASSES, preprocessing=PREPROCESSING, backbone_name="resnet18"
    )


@pytest.mark.slow
def test_all_files_are_written(exported):
    names = sorted(p.name for p in exported.values())
    assert names == sorted(
        [
            "labels.json",
            "model.onnx",
            "model.safetensors",
            "model.torchscript.pt",
            "preprocessing.json",
        ]
    )
    assert json.loads(exported["labels"].read_text()) == CLASSES
    prep = json.loads(exported["preprocessing"].read_text())
    assert prep["image_size"] == prep["crop_size"] == SIZE
    assert prep["resize_size"] == round(SIZE * 600 / 448)
    assert prep["mean"] == [0.485, 0.456, 0.406] and prep["std"] == [0.229, 0.224, 0.225]
    assert prep["recipe"] == "resize_crop"
    assert not list(exported["onnx"].parent.glob(".*tmp*"))  # no temp files left behind


def test_the_onnx_input_is_as_deployment_md_describes_it(exported):
    """float32 [batch, 3, S, S]; another dtype or size is refused, any batch size runs."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(exported["onnx"]))
    (images,) = session.get_inputs()
    assert (images.name, images.type, images.shape) == (
        "images",
        "tensor(float)",
        ["batch", 3, SIZE, SIZE],
    )
    for batch in (1, 17):
        x = np.zeros((batch, 3, SIZE, SIZE), np.float32)
        assert session.run(None, {"images": x})[0].shape == (batch, len(CLASSES))
    with pytest.raises(Exception, match="Unexpected input data type"):
        session.run(None, {"images": np.zeros((1, 3, SIZE, SIZE), np.float16)})
    with pytest.raises(Exception, match="Got invalid dimensions for input: images"):
        session.run(None, {"images": np.zeros((1, 3, SIZE + 8, SIZE + 8), np.float32)})


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_and_torchscript_match_pytorch(model, exported, batch):
    images = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        reference = model(images)
    outputs = exported_logits(exported, images)
    assert set(outputs) == {"onnx", "torchscript"}
    for name, logits in outputs.items():
        assert logits.shape == (batch, len(CLASSES)), name
        assert torch.allclose(logits, reference, atol=1e-4, rtol=0), name


@pytest.mark.slow
def test_safetensors_reloads_into_a_fresh_plain_model(model, exported):
    from safetensors import safe_open
    from safetensors.torch import load_file

    fresh = SEF("resnet18", num_classes=len(CLASSES), groups=1).export()  # other init, other G
    fresh.load_state_dict(load_file(str(exported["safetensors"])))
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(fresh(images), model(images))
    with safe_open(str(exported["safetensors"]), "pt") as handle:
        meta = handle.metadata()
        assert not any("group" in key for key in handle.keys())
    assert meta["backbone"] == "resnet18" and meta["num_classes"] == str(len(CLASSES))


@pytest.mark.slow
def test_check_export_reports_every_format(model, exported):
    check = check_export(model, exported, SIZE)
    assert set(check.differences) == set(EXPORT_FORMATS)
    assert all(d < 1e-4 for d in check.differences.values()) and check.failed() == {}


class _Branchy(torch.nn.Module):
    """An export-unsafe backbone: tracing on a blank image records the branch without ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)

    def forward(self, images):
        features = self.conv(images)
        return torch.relu(features) if float(images.abs().max()) > 0 else features


def test_a_wrong_export_fails_its_check_even_with_large_logits(tmp_path):
    """The tolerance grows with the logits, yet not enough to pass a wrong TorchScript trace."""
    torch.manual_seed(0)
    wrong = SEF(_Branchy(), num_classes=len(CLASSES), groups=2).eval()
    with torch.no_grad():
        wrong.head.weight.mul_(1e4)
    paths = export_model(
        wrong, tmp_path, classes=CLASSES, preprocessing=PREPROCESSING, formats=["torchscript"]
    )
    check = check_export(wrong, paths, SIZE)
    assert check.largest_logit > 100 and check.tolerance == 1e-3 + 1e-5 * check.largest_logit
    assert set(check.failed()) == {"torchscript"}


def _onnx_cost(path):
    import onnx

    graph = onnx.load(str(path)).graph
    numel = sum(int(torch.tensor(list(t.dims)).prod()) for t in graph.initializer)
    ops = sorted(node.op_type for node in graph.node)
    return numel, ops


@pytest.mark.slow
def test_exported_cost_equals_the_plain_backbone(model, exported, tmp_path):
    """Same parameters, FLOPs and ONNX graph as torchvision's resnet18 with the same classes."""
    plain = model.export()
    reference = torchvision.models.resnet18(num_classes=len(CLASSES)).eval()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(plain) == count(reference) == count(model) - model.extra_parameters()
    # Same tensors in the same order: give torchvision's model the exported weights.
    names = reference.state_dict().keys()
    reference.load_state_dict(dict(zip(names, plain.state_dict().values(), strict=True)))

    images = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(reference(images), plain(images))
    flops = []
    for network in (plain, reference):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            network(images)
        flops.append(counter.get_total_flops())
    assert flops[0] == flops[1] > 0

    write_onnx(reference, tmp_path / "reference.onnx", SIZE)
    numel, ops = _onnx_cost(exported["onnx"])
    assert (numel, ops) == _onnx_cost(tmp_path / "reference.onnx")
    assert ops.count("Gemm") == 1  # the global head only; group heads would add G more


def test_subset_of_formats_and_bad_inputs(model, tmp_path):
    paths = export_model(
        model,
        tmp_path / "new" / "dir",
        classes=CLASSES,
        preprocessing=PREPROCESSING,
        formats=["safetensors"],
    )
    assert sorted(paths) == ["labels", "preprocessing", "safetensors"]
    assert not (tmp_path / "new" / "dir" / "model.onnx").exists()
    with pytest.raises(ValueError, match="choose from onnx, torchscript, safetensors"):
        check_formats(["tflite"])
    with pytest.raises(ValueError, match="3 class names .* 5 outputs"):
        export_model(model, tmp_path, classes=CLASSES[:3], preprocessing=PREPROCESSING)


def test_an_export_of_one_format_that_finds_no_room_counts_one_file(model, tmp_path, monkeypatch):
    """It said "(1 files of 45.0 MB)"."""
    monkeypatch.setattr("sef.space.free_bytes", lambda path: 1000)
    with pytest.raises(
        DiskFull, match=r"\(1 file of .*\); free some space or choose another out_d"
    ):
        export_model(
            model, tmp_path, classes=CLASSES, preprocessing=PREPROCESSING, formats=["torchscript"]
        )


def test_labels_json_names_a_class_that_is_not_utf8_in_valid_unicode(model, tmp_path):
    """A class folder named in Latin-1 gave labels.json a lone surrogate ("caf\\udce9"), which
    strict JSON parsers (a C++ deployment's) refuse."""
    classes = ["caf\udce9", *CLASSES[1:]]
    paths = export_model(
        model, tmp_path, classes=classes, preprocessing=PREPROCESSING, formats=["safetensors"]
    )
    text = paths["labels"].read_bytes().decode("utf-8")
    assert "\\ud" not in text and json.loads(text)[0] == "caf\\xe9"


def test_preprocessing_resize_recipe_has_no_crop_margin():
    prep = Preprocessing(448, "resize", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert prep.resize_size == prep.to_dict()["crop_size"] == 448
    assert Preprocessing(448, "resize_crop", (0, 0, 0), (1, 1, 1)).resize_size == 600


def test_preprocessing_json_names_the_resize_the_test_transform_does():
    """A deployment outside Python (OpenCV's INTER_LINEAR does not antialias) must know it."""
    from torchvision.transforms import v2

    from sef.export import preprocessing_json

    steps = PREPROCESSING.test_transform().transforms
    resize = next(step for step in steps if isinstance(step, v2.Resize))
    record = preprocessing_json(PREPROCESSING)
    assert (record["interpolation"], record["antialias"]) == ("bilinear", True)
    assert (record["interpolation"], record["antialias"]) == (
        resize.interpolation.value,
        resize.antialias,
    )


def _deploy_rgb(image):
    """docs/deployment.md's rgb(): an image as sef reads it, with Pillow alone."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", image.size, "white"), image).convert("RGB")
    if image.mode.startswith("I"):
        return image.convert("I").point(lambda v: v / 256).convert("L").convert("RGB")
    if image.mode == "F" and image.getextrema()[1] <= 1:  # float grey in 0-1, not 0-255
        return image.point(lambda v: v * 255).convert("L").convert("RGB")
    return image.convert("RGB")


def _deploy_preprocess(image, prep: dict):
    """What docs/deployment.md tells deployments to do with preprocessing.json: PIL + NumPy only."""
    import numpy as np
    from PIL import Image, ImageOps

    side, crop = prep["resize_size"], prep["crop_size"]
    image = _deploy_rgb(ImageOps.exif_transpose(image))
    image = image.resize((side, image.height), Image.BILINEAR)  # width first, as torchvision
    image = image.resize((side, side), Image.BILINEAR)
    left = round((side - crop) / 2)
    image = image.crop((left, left, left + crop, left + crop))
    x = (np.asarray(image, np.float32) / 255 - prep["mean"]) / prep["std"]
    return torch.from_numpy(x.transpose(2, 0, 1).astype(np.float32))


@pytest.mark.parametrize("recipe", ["resize", "resize_crop"])
@pytest.mark.parametrize("rows, columns", [(45, 70), (70, 45)])
def test_preprocessing_json_reproduces_the_test_transform(recipe, rows, columns):
    """Also for a portrait image, which one resize of PIL's shrinks height first: off by a grey
    level on a quarter of the pixels, where torchvision shrinks width first."""
    from PIL import Image

    from sef import transforms

    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (rows, columns, 3), dtype=torch.uint8, generator=generator)
    image = Image.fromarray(pixels.numpy())
    prep = Preprocessing(SIZE, recipe, transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)
    expected = transforms.test_transform(recipe, SIZE)(image)
    difference = (_deploy_preprocess(image, prep.to_dict()) - expected).abs()
    # PIL and torchvision resize round differently: at most one grey level, on few pixels.
    one_level = 1.001 / 255 / min(transforms.IMAGENET_STD)
    assert difference.max() <= one_level and difference.mean() < 0.05 * one_level


def test_the_onnx_example_of_deployment_md_runs_as_written(
    model, exported, tmp_path, monkeypatch, capsys
):
    """The page's example, copied as it stands (shipped/, bird.jpg), prints the class PyTorch
    predicts: the copies of its pieces above would not notice an edit of the page itself."""
    import re

    from PIL import Image

    from sef import transforms

    page = (Path(__file__).parents[1] / "docs" / "deployment.md").read_text()
    blocks = re.findall(r"```python\n(.*?)\n```", page, re.S)
    example = next(block for block in blocks if "onnxruntime.InferenceSession" in block)
    pixels = torch.randint(
        0, 256, (45, 70, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    Image.fromarray(pixels.numpy()).save(tmp_path / "bird.jpg", quality=95)
    (tmp_path / "shipped").symlink_to(exported["onnx"].parent)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/deployment.md", "exec"), {})
    with Image.open("bird.jpg") as image:
        images = transforms.test_transform(PREPROCESSING.recipe, SIZE)(image.convert("RGB"))
    with torch.no_grad():
        expected = CLASSES[int(model(images[None]).argmax())]
    assert capsys.readouterr().out == f"{expected}\n"


@pytest.mark.parametrize("mode", ["RGBA", "I;16", "F"])
def test_the_deployment_preprocessing_reads_transparent_16_bit_and_float_images_as_sef(mode):
    """The page's convert("RGB") kept the colour under transparent pixels (sef: white),
    clipped 16-bit grey to white (sef: scaled to 8 bits) and made 0-1 float grey black (sef:
    scaled to 0-255)."""
    import numpy as np
    from PIL import Image

    from sef import transforms
    from sef.datasets.images import to_rgb

    rows = np.random.default_rng(0).integers(0, 2**16, (45, 70, 4), dtype=np.uint16)
    if mode == "RGBA":
        rows[:, :35, 3] = 0  # half of it transparent over blue-ish colours
        image = Image.fromarray((rows >> 8).astype(np.uint8), "RGBA")
    elif mode == "F":  # a float TIFF's grey in 0-1
        image = Image.fromarray((rows[..., 0] / 2**16).astype(np.float32))
    else:
        image = Image.fromarray(rows[..., 0])
    assert image.mode == mode
    prep = Preprocessing(SIZE, "resize", transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)
    expected = transforms.test_transform("resize", SIZE)(to_rgb(image))
    one_level = 1.001 / 255 / min(transforms.IMAGENET_STD)
    assert (_deploy_preprocess(image, prep.to_dict()) - expected).abs().max() <= one_level


def test_a_new_export_removes_only_the_files_an_earlier_export_wrote(model, tmp_path, monkeypatch):
    export_model(
        model, tmp_path, classes=CLASSES, preprocessing=PREPROCESSING, formats=["safetensors"]
    )
    (tmp_path / "model.onnx").write_bytes(b"the user's own")
    real, read = Path.read_text, []
    monkeypatch.setattr(
        Path, "read_text", lambda path, *a, **k: read.append(path) or real(path, *a, **k)
    )
    with pytest.warns(UserWarning) as said:
        export_model(
            model, tmp_path, classes=CLASSES, preprocessing=PREPROCESSING, formats=["torchscript"]
        )
    assert [str(warning.message) for warning in said] == [
        f"removed {tmp_path / 'model.safetensors'}: formats of the earlier export in {tmp_path} "
        f"that this one does not write (a folder holds one export; name every format to keep)",
        f"kept {tmp_path / 'model.onnx'}: no earlier sef export wrote it",
    ]  # the removal was silent
    assert not (tmp_path / "model.safetensors").exists()  # the earlier export's other format
    assert read.count(tmp_path / "preprocessing.json") == 1  # what may be replaced and removed
    assert (tmp_path / "model.onnx").read_bytes() == b"the user's own"


def test_an_export_refuses_to_replace_a_file_no_earlier_export_wrote(model, tmp_path):
    """A model.safetensors of the user's own in --out was silently replaced by the export."""
    (tmp_path / "model.safetensors").write_bytes(b"the user's own")

    def export() -> None:
        export_model(
            model, tmp_path, classes=CLASSES, preprocessing=PREPROCESSING, formats=["safetensors"]
        )

    with pytest.raises(
        OutputError, match=r"\.safetensors: no earlier sef export .* another out_dir$"
    ):
        export()
    with (
        said_to_command(),
        pytest.raises(OutputError, match="; move it away or choose another --o"),
    ):
        export()
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
    assert (tmp_path / "model.safetensors").read_bytes() == b"the user's own"


def _export_of_sef_before_files_were_listed(model, folder) -> None:
    """An export into ``folder`` as sef left it before 2026-12-07 (commit 1aadabd): the same
    files, and a preprocessing.json without ``files``."""
    export_model(
        model, folder, classes=CLASSES, preprocessing=PREPROCESSING, formats=["safetensors"]
    )
    record = json.loads((folder / "preprocessing.json").read_text())
    del record["files"]
    (folder / "preprocessing.json").write_text(json.dumps(record, indent=2) + "\n")


def test_an_export_of_an_older_sef_is_replaced_and_other_files_stay_refused(model, tmp_path):
    """Exporting again into a folder an older sef exported to was refused: "cannot write
    DIR/labels.json: no earlier sef export in DIR wrote it"."""
    _export_of_sef_before_files_were_listed(model, tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"the user's own")  # not ONNX: no export wrote it
    kept = r"kept .*model\.onnx: no earlier sef export wrote it$"
    with pytest.warns(UserWarning, match=kept), pytest.warns(UserWarning, match="removed "):
        export_model(
            model, tmp_path, classes=CLASSES, preprocessing=PREPROCESSING, formats=["torchscript"]
        )
    assert sorted(os.listdir(tmp_path)) == [
        "labels.json", "model.onnx", "model.torchscript.pt", "preprocessing.json"
    ]  # fmt: skip
    # a preprocessing.json and labels.json of another tool's: still not sef's to replace
    other = tmp_path / "other"
    other.mkdir()
    (other / "preprocessing.json").write_text('{"mean": [0.5], "std": [0.5]}\n')
    (other / "labels.json").write_text('["cat", "dog"]\n')
    with pytest.raises(OutputError, match=r"labels\.json: no earlier sef export in .* wrote it"):
        export_model(
            model, other, classes=CLASSES, preprocessing=PREPROCESSING, formats=["safetensors"]
        )
    assert (other / "labels.json").read_text() == '["cat", "dog"]\n'


@pytest.mark.parametrize("channels", [1, 4])
def test_an_export_records_the_channels_its_model_takes(channels, tmp_path):
    """A grayscale or RGB + infrared model's export said "RGB" with 3 means in
    preprocessing.json, and its TorchScript and ONNX tracing failed on a 3-channel example."""
    net = torch.nn.Sequential(torch.nn.Conv2d(channels, 8, 3, stride=4), torch.nn.ReLU())
    small = SEF(net, num_classes=len(CLASSES), groups=2).eval()
    formats = ["torchscript", "safetensors"]
    with pytest.raises(ValueError) as refused:  # ImageNet's 3 means and stds
        export_model(small, tmp_path, classes=CLASSES, preprocessing=PREPROCESSING, formats=formats)
    assert str(refused.value) == (
        f"preprocessing has 3 means and 3 stds for a model whose images have {channels} "
        f"channel{'s' * (channels > 1)}; pass Preprocessing(image_size, recipe, mean, std) with "
        f"one mean and one std per channel"
    )
    assert not os.listdir(tmp_path)
    own = Preprocessing(SIZE, "resize", (0.5,) * channels, (0.25,) * channels)
    paths = export_model(small, tmp_path, classes=CLASSES, preprocessing=own, formats=formats)
    record = json.loads(paths["preprocessing"].read_text())
    assert (record["channels"], record["mean"]) == (channels, [0.5] * channels)
    assert record["layout"].startswith(f"NCHW, {channels} channel")
    assert "RGB)" in record["layout"]  # "(the model's own, not RGB)"
    assert not check_export(small, paths, SIZE).failed()


class _SideBranchFirst(torch.nn.Module):
    """An RGB backbone whose first-registered convolution is a 1-channel side branch (a mask
    encoder its forward does not use on the images)."""

    def __init__(self):
        super().__init__()
        self.mask = torch.nn.Conv2d(1, 4, 1).requires_grad_(False)  # unused: frozen, unwarned
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.ReLU())

    def forward(self, images):
        return self.body(images)


def test_an_export_takes_the_channels_the_backbone_ran_on_not_its_first_conv(tmp_path):
    """The export counted the channels of the first-registered Conv2d (1) while SEF's probe had
    run on 3: the right RGB preprocessing was refused, and a 1-channel one failed in tracing."""
    model = SEF(_SideBranchFirst(), num_classes=len(CLASSES), groups=2).eval()
    formats = ["torchscript", "safetensors"]
    paths = export_model(
        model, tmp_path, classes=CLASSES, preprocessing=PREPROCESSING, formats=formats
    )
    assert json.loads(paths["preprocessing"].read_text())["channels"] == 3
    assert not check_export(model, paths, SIZE).failed()
    assert model.image_channels == model.export().image_channels == 3


def test_an_export_whose_network_cannot_take_its_images_says_so_in_one_line(tmp_path):
    model = SEF(_SideBranchFirst(), num_classes=len(CLASSES), groups=2).eval()
    model.image_channels = 1  # a count that is wrong for the network
    gray = Preprocessing(SIZE, "resize", (0.5,), (0.25,))
    said = (
        "the exported network cannot run on 1-channel 32 x 32 images (Given groups=1, weight of "
        "size [8, 3, 3, 3], expected input[{batch}, 1, 32, 32] to have 3 channels, but got 1 "
        "channels instead); sef gives it the channels its backbone ran on when SEF was built "
        "(SEF.image_channels) at preprocessing.image_size: set image_channels to the channels "
        "its images have, or pass the image size it was trained at"
    )
    with pytest.raises(ValueError) as refused:  # was torch's traceback from the tracer
        export_model(model, tmp_path / "out", classes=CLASSES, preprocessing=gray)
    assert str(refused.value) == said.format(batch=2) and not (tmp_path / "out").exists()
    with pytest.raises(ValueError) as refused:
        check_export(model, {}, SIZE)
    assert str(refused.value) == said.format(batch=3)


def test_a_model_whose_outputs_are_not_finite_is_not_exported(model, tmp_path):
    """An overflowed checkpoint was exported, then its check blamed export-unsafe operations."""
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.head.bias[0] = float("nan")
    with pytest.raises(ValueError) as said:
        export_model(broken, tmp_path / "out", classes=CLASSES, preprocessing=PREPROCESSING)
    assert str(said.value) == (
        "the model's outputs are not finite (NaN or infinite) on 2 of 2 blank images, so an "
        "export of it would predict nothing: its weights or BatchNorm statistics overflowed in "
        "training; export an earlier checkpoint of its run"
    )
    assert not (tmp_path / "out").exists()


def test_exported_files_are_as_private_as_the_umask_says(model, tmp_path):
    previous = os.umask(0o077)
    try:
        paths = export_model(
            model, tmp_path, classes=CLASSES, preprocessing=PREPROCESSING, formats=["safetensors"]
        )
    finally:
        os.umask(previous)
    assert {path.stat().st_mode & 0o777 for path in paths.values()} == {0o600}


def test_a_killed_exports_staging_folder_is_removed_by_the_next(model, tmp_path):
    dead, live = (tmp_path / f".sef-export.{pid}.tmp" for pid in (999999999, os.getppid()))
    for stage in (dead, live):  # a killed export's (no such process); a running one's (our parent)
        stage.mkdir()
        (stage / "model.onnx").write_bytes(b"half")
    export_model(
        model, tmp_path, classes=CLASSES, preprocessing=PREPROCESSING, formats=["safetensors"]
    )
    assert not dead.exists() and live.exists()


def test_load_safetensors_rebuilds_the_network_its_metadata_records(model, exported):
    plain = load_safetensors(exported["safetensors"])
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert not plain.training and torch.equal(plain(images), model(images))
    resnet = torchvision.models.resnet18(num_classes=len(CLASSES)).eval()  # deployment.md's way
    names = dict(zip(plain.state_dict(), resnet.state_dict(), strict=True))
    resnet.load_state_dict({names[k]: v for k, v in plain.state_dict().items()})
    with torch.no_grad():
        assert torch.equal(resnet(images), model(images))


# docs/deployment.md's names of a ResNet's tensors in torchvision, for a server without sef.
_TORCHVISION_RESNET = {"0.0": "conv1", "0.1": "bn1", "0.4": "layer1", "0.5": "layer2",
                       "0.6": "layer3", "0.7": "layer4", "2": "fc"}  # fmt: skip


def _torchvision_name(name: str) -> str:
    prefix = "2" if name.startswith("2.") else ".".join(name.split(".")[:2])
    return _TORCHVISION_RESNET[prefix] + name[len(prefix) :]


def test_a_resnets_safetensors_loads_into_torchvision_by_its_names_without_sef(model, exported):
    """The page needed sef installed to map the file's names (sorted, so not in order)."""
    from safetensors.torch import load_file

    state = load_file(str(exported["safetensors"]))
    resnet = torchvision.models.resnet18(num_classes=len(state["2.bias"])).eval()
    resnet.load_state_dict({_torchvision_name(k): v for k, v in state.items()})
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(resnet(images), model(images))


@pytest.mark.slow
def test_load_safetensors_rebuilds_a_vit_with_its_pooling_and_size(tmp_path):
    """Built by hand with its defaults (class-token pooling, its own 224 px), such a ViT loaded
    these weights without complaint and gave other logits."""
    pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = SEF(
        "timm:vit_tiny_patch16_224", num_classes=len(CLASSES), groups=3, image_size=SIZE,
        pool="avg", backbone_args={"depth": 1},
    ).eval()  # fmt: skip
    paths = export_model(
        vit, tmp_path, classes=CLASSES, preprocessing=PREPROCESSING, formats=["safetensors"]
    )
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(load_safetensors(paths["safetensors"])(images), vit(images))


def test_load_safetensors_refuses_other_files_in_one_line(model, tmp_path):
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))
    with pytest.raises(CheckpointError, match=r"bare\.safetensors does not record the network"):
        load_safetensors(bare)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.txt is not a safetensors file \(a text"):
        load_safetensors(tmp_path / "notes.txt")
    with pytest.raises(CheckpointError, match=r"gone\.safetensors does not exist"):
        load_safetensors(tmp_path / "gone.safetensors")
    with pytest.raises(CheckpointError, match=r"is a folder; it holds no model\.safetensors$"):
        load_safetensors(tmp_path)  # the export's folder, or one without it
    torch.save({"model": {}}, tmp_path / "best.pt")
    with pytest.raises(CheckpointError, match=r"best\.pt is .* loads with sef\.load_trained_model"):
        load_safetensors(tmp_path / "best.pt")
    features = torch.nn.Sequential(*list(torchvision.models.resnet18().children())[:-2])
    own = SEF(features, num_classes=len(CLASSES), groups=2)
    paths = export_model(
        own, tmp_path / "own", classes=CLASSES, preprocessing=PREPROCESSING,
        formats=["safetensors"],
    )  # fmt: skip
    with pytest.raises(
        CheckpointError, match=r"does not record the network .*\(a backbone of your own code"
    ):
        load_safetensors(paths["safetensors"])  # a module of the user's: theirs to rebuild


def test_backbone_args_json_cannot_write_leave_the_architecture_out_with_a_warning(tmp_path):
    """A class in backbone_args made the export stop with json's TypeError traceback."""
    pytest.importorskip("timm")
    resnet = SEF(
        "timm:resnet18", len(CLASSES), groups=2, backbone_args={"act_layer": torch.nn.SiLU}
    )
    with pytest.warns(UserWarning, match=r"records no architecture \(.*type.*backbone_args holds"):
        paths = export_model(
            resnet.eval(), tmp_path, classes=CLASSES, preprocessing=PREPROCESSING,
            formats=["safetensors"],
        )  # fmt: skip
    with pytest.raises(CheckpointError, match="does not record the network"):
        load_safetensors(paths["safetensors"])


def _metadata(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as opened:
        return opened.metadata()


def test_the_safetensors_metadata_names_the_backbone_the_model_was_built_from(tmp_path):
    """Exported from Python without backbone_name, it said "Sequential" for a resnet18."""
    torch.manual_seed(0)
    paths = export_model(
        SEF("resnet18", len(CLASSES), groups=2), tmp_path, classes=CLASSES,
        preprocessing=PREPROCESSING, formats=["safetensors"],
    )  # fmt: skip
    assert _metadata(paths["safetensors"])["backbone"] == "resnet18"


def test_onnx_export_writes_timm_attention_as_matmuls_and_restores_it(tmp_path, monkeypatch):
    # torch's ONNX exporter fails to decompose fused attention with a mask (BEiT's relative
    # position bias: `sef export` of a BEiT stopped with a traceback); checked by hand on BEiT.
    pytest.importorskip("timm")
    args = {"depth": 1, "embed_dim": 16, "num_heads": 1}
    plain = SEF("timm:beit_base_patch16_224", 2, groups=1, image_size=16, backbone_args=args)
    plain = plain.export()
    attention = [m for m in plain.modules() if hasattr(m, "fused_attn")]
    for module in attention:  # as timm sets it unless TIMM_FUSED_ATTN=0
        module.fused_attn = True
    fused_while_exporting = []

    def record(model, example, path, **options):
        fused_while_exporting.extend(m.fused_attn for m in attention)
        open(path, "wb").close()

    monkeypatch.setattr(torch.onnx, "export", record)
    write_onnx(plain, tmp_path / "model.onnx", 16)
    assert fused_while_exporting == [False] * len(attention) != []
    assert all(m.fused_attn for m in attention)  # the model keeps its own afterwards
