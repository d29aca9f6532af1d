"""Ship a trained SEF as a plain network: ONNX, TorchScript and safetensors, plus labels and
the preprocessing a deployment must repeat.

Only what ``SEF.export()`` returns is written (backbone + global head, no group heads), so the
shipped model costs exactly its backbone. ``export_model`` works on any SEF in memory;
``export_trained`` on a model loaded with ``sef.load_trained_model`` (what ``sef export`` does).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sef import extras, filekinds, outputs, space, transforms
from sef.adapters import input_channels
from sef.choices import EXPORT_FORMATS
from sef.errors import CheckpointError, DiskFull, OutputError, for_reader, warn
from sef.metrics import not_finite_images, not_finite_said
from sef.model import SEF
from sef.text import counted, json_text
from sef.trained import TrainedModel
from sef.transforms import Preprocessing
from sef.weights import shape_mismatch

FILE_NAMES = {
    "onnx": "model.onnx",
    "torchscript": "model.torchscript.pt",
    "safetensors": "model.safetensors",
    "labels": "labels.json",
    "preprocessing": "preprocessing.json",
}
# How a stage line names each model format: "exporting ONNX ...".
FORMAT_NAMES = {"onnx": "ONNX", "torchscript": "TorchScript", "safetensors": "safetensors"}
INPUT_NAME = "images"
OUTPUT_NAME = "logits"


def preprocessing_json(preprocessing: Preprocessing, channels: int = 3) -> dict:
    """preprocessing.json: the record (recipe "resize_crop": resize to resize_size squared, then
    center-crop crop_size; "resize": resize to image_size squared; then scale to [0, 1] and
    normalise with mean/std per channel), the resize's ``interpolation`` and ``antialias``, the
    input and output names, the input's ``channels`` and the layout (RGB for 3 channels)."""
    kind = "RGB" if channels == 3 else f"{counted(channels, 'channel')} (the model's own, not RGB)"
    return {
        **preprocessing.to_dict(),
        "interpolation": transforms.RESIZE_INTERPOLATION,
        "antialias": transforms.RESIZE_ANTIALIAS,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "channels": channels,
        "layout": f"NCHW, {kind}, float32, pixel values scaled to [0, 1] before normalising",
    }


def _check_normalisation(preprocessing: Preprocessing, channels: int) -> None:
    """ValueError where ``preprocessing`` has not one mean and one std per input channel."""
    mean, std = len(preprocessing.mean), len(preprocessing.std)
    if mean != channels or std != channels:
        raise ValueError(
            f"preprocessing has {counted(mean, 'mean')} and {counted(std, 'std')} for a model "
            f"whose images have {counted(channels, 'channel')}; pass Preprocessing(image_size, "
            f"recipe, mean, std) with one mean and one std per channel"
        )


def check_formats(formats: Sequence[str]) -> list[str]:
    """The requested formats (one name, or several) in canonical order; ValueError on an
    unknown one."""
    formats = [formats] if isinstance(formats, str) else list(formats)
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise ValueError(
            f"unknown export format {unknown[0] if unknown else '(none)'!r}; "
            f"choose from {', '.join(EXPORT_FORMATS)}"
        )
    return [f for f in EXPORT_FORMATS if f in formats]


def _logits(plain: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``plain(images)`` without gradients; ValueError in one line where it cannot run on them
    (images of other channels or another size than its backbone takes)."""
    try:
        with torch.no_grad():
            return plain(images)
    except RuntimeError as error:
        channels, side = images.shape[1], images.shape[-1]
        raise ValueError(
            f"the exported network cannot run on {channels}-channel {side} x {side} images "
            f"({str(error).splitlines()[0]}); sef gives it the channels its backbone ran on when "
            f"SEF was built (SEF.image_channels) at preprocessing.image_size: set image_channels "
            f"to the channels its images have, or pass the image size it was trained at"
        ) from None


def _check_finite(logits: torch.Tensor) -> None:
    """ValueError where the network's outputs are not finite: an export of a checkpoint whose
    weights overflowed would predict nothing, and its check blamed the export."""
    non_finite = not_finite_images(logits)
    if non_finite:
        said = not_finite_said(
            non_finite, counted(len(logits), "blank image"), "an export of it would predict nothing"
        )
        raise ValueError(f"{said}; export an earlier checkpoint of its run")


def _example_input(plain: nn.Module, image_size: int) -> torch.Tensor:
    # Batch 2, not 1: a size-1 example lets torch.export specialise the batch axis.
    return torch.zeros(2, input_channels(plain), image_size, image_size)


def write_onnx(plain: nn.Module, path: Path, image_size: int) -> None:
    """ONNX via the torch.export-based exporter, with a dynamic batch axis."""
    extras.require("export", "ONNX export")
    batch = torch.export.Dim("batch", min=1)
    with outputs.atomic_path(path) as tmp, _explicit_attention(plain):
        torch.onnx.export(
            plain,
            (_example_input(plain, image_size),),
            str(tmp),
            dynamo=True,
            verbose=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            external_data=False,
        )


@contextlib.contextmanager
def _explicit_attention(model: nn.Module) -> Iterator[None]:
    """timm's attention as its matmuls and softmax while exporting: torch's ONNX exporter fails
    on fused attention with a mask (BEiT's relative position bias); ONNX holds the same ops."""
    fused = [module for module in model.modules() if getattr(module, "fused_attn", False)]
    for module in fused:
        module.fused_attn = False
    try:
        yield
    finally:
        for module in fused:
            module.fused_attn = True


def write_torchscript(plain: nn.Module, path: Path, image_size: int) -> None:
    """TorchScript by tracing (batch size stays free for CNNs without data-dependent control)."""
    with warnings.catch_warnings():
        # torch.jit is deprecated upstream but still what TorchScript consumers (C++, mobile) load.
        warnings.simplefilter("ignore", FutureWarning)
        # timm's shape asserts trace as constants; sef export checks the traced model's logits.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        with torch.no_grad():
            traced = torch.jit.trace(plain, _example_input(plain, image_size))
        buffer = io.BytesIO()  # written by Python: a full disk is an OSError, not an abort
        torch.jit.save(traced, buffer)
        with outputs.atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getvalue())


def write_safetensors(plain: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """The stripped model's state dict; loads into ``SEF(...).export()`` with load_state_dict."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous() for k, v in plain.state_dict().items()}
    with outputs.atomic_path(path) as tmp:  # bytes written by Python: its errors name the disk
        tmp.write_bytes(save(state, metadata=metadata))


def load_safetensors(path: str | os.PathLike) -> nn.Module:
    """The network ``model.safetensors`` of ``sef export`` holds, rebuilt from the architecture
    its metadata records and in eval mode: images -> logits, as ``SEF(...).export()`` gives.
    CheckpointError in one line for a file that is not such an export."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as opened:  # read once: the metadata and the weights
            metadata = opened.metadata() or {}
            state = {name: opened.get_tensor(name) for name in opened.keys()}
    except (SafetensorError, OSError) as error:
        raise _not_safetensors(path, error) from None
    if "architecture" not in metadata:
        raise CheckpointError(
            f"{path} does not record the network it was exported from (a backbone of your own "
            f"code, an export of sef before 2026-12-07, or not sef's): build it as "
            f"docs/deployment.md shows and call load_state_dict"
        )
    plain = SEF(**json.loads(metadata["architecture"]), groups=1).export()
    try:
        plain.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(
            f"{path} weights do not fit the network its metadata records "
            f"({shape_mismatch(error)}); the file is damaged"
        ) from None
    return plain


def _not_safetensors(path: Path, error: Exception) -> CheckpointError:
    """Why safetensors could not read ``path``, saying what to pass: the export's folder, or
    the checkpoint it was exported from, were "does not exist or is not a file" and "not a
    safetensors file (zip): Error while deserializing header: header too large"."""
    if path.is_dir():
        inside = path / "model.safetensors"
        held = f"pass {inside}" if inside.is_file() else "it holds no model.safetensors"
        return CheckpointError(f"{path} is a folder; {held}")
    if not path.is_file():
        return CheckpointError(f"{path} does not exist")
    kind = filekinds.sniff_file(path)
    if kind == filekinds.ZIP:  # a checkpoint, or the export's TorchScript model
        return CheckpointError(
            f"{path} is not a safetensors file but a zip archive; a checkpoint of `sef train` "
            f"loads with sef.load_trained_model, an export's network from its model.safetensors"
        )
    return CheckpointError(f"{path} is not a safetensors file ({kind}): {error}")


def _write_json(path: Path, payload: object) -> None:
    with outputs.atomic_path(path) as tmp:  # a class folder's name that is not UTF-8 as \xe9
        tmp.write_text(json_text(payload) + "\n")


def export_model(
    model: SEF,
    out_dir: str | os.PathLike,
    *,
    classes: Sequence[str],
    preprocessing: Preprocessing,
    formats: Sequence[str] = EXPORT_FORMATS,
    backbone_name: str | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Write the stripped model in ``formats`` plus labels.json and preprocessing.json; ``say``,
    if given, hears "exporting ONNX ..." as each format starts (a large model takes a minute).

    Returns {"onnx" | "torchscript" | "safetensors" | "labels" | "preprocessing": path}.
    """
    chosen = check_formats(formats)
    if len(classes) != model.num_classes:
        raise ValueError(
            f"{len(classes)} class names given for a model with {model.num_classes} outputs; "
            f"pass one name per class"
        )
    if "onnx" in chosen:  # before anything is written
        extras.require("export", "ONNX export")
    if "safetensors" in chosen:
        extras.require_installed("safetensors")
    channels = input_channels(model)
    _check_normalisation(preprocessing, channels)
    out = Path(out_dir)
    names = (*chosen, "labels", "preprocessing")
    outputs.check_writable(out, folder=True)  # before the slow exports
    earlier = _earlier_files(out)  # what may be replaced, and what is removed once this is in
    _check_only_exports_replaced(out, names, earlier)
    plain = model.export().cpu().float()
    size = preprocessing.image_size
    # in one line, before the tracers' tracebacks
    _check_finite(_logits(plain, _example_input(plain, size)))
    _check_space(out, plain, chosen)
    with _staging(out) as stage:  # the whole set is written before any file in out changes
        staged = {name: stage / FILE_NAMES[name] for name in names}
        writers = {
            "onnx": lambda path: write_onnx(plain, path, size),
            "torchscript": lambda path: write_torchscript(plain, path, size),
            "safetensors": lambda path: write_safetensors(
                plain, path, _safetensors_metadata(model, preprocessing, channels, backbone_name)
            ),
        }
        for name in chosen:
            if say is not None:
                say(f"exporting {FORMAT_NAMES[name]} ...")
            writers[name](staged[name])
        _write_json(staged["labels"], list(classes))
        files = [FILE_NAMES[name] for name in names]  # what the next export may remove
        record = {**preprocessing_json(preprocessing, channels), "files": files}
        _write_json(staged["preprocessing"], record)
        return _replace_set(staged, out, earlier)


def _safetensors_metadata(
    model: SEF, preprocessing: Preprocessing, channels: int, backbone_name: str | None
) -> dict[str, str]:
    """What model.safetensors says of itself: classes, backbone, preprocessing, architecture."""
    metadata = {
        "num_classes": str(model.num_classes),
        "backbone": backbone_name or _backbone_name(model),
        "preprocessing": json.dumps(preprocessing_json(preprocessing, channels)),
    }
    architecture = _architecture_json(model)
    if architecture is not None:
        metadata["architecture"] = architecture
    return metadata


def _backbone_name(model: SEF) -> str:
    """The name the model was built from ("resnet50", "timm:vit_small_patch16_224"), else the
    class of the user's module."""
    if model.architecture is not None:
        return model.architecture["backbone"]
    return type(model.backbone).__name__


def _architecture_json(model: SEF) -> str | None:
    """What rebuilds the network, as JSON; None, with a warning, where a setting holds a Python
    object JSON cannot write (a class in ``backbone_args``, a numpy number): sef cannot rebuild
    that code."""
    if model.architecture is None:
        return None
    try:
        return json.dumps(model.architecture)
    except TypeError as error:
        warn(
            f"model.safetensors records no architecture ({error}: a setting such as "
            f"backbone_args holds a Python object), so sef.load_safetensors cannot rebuild it; "
            f"load its weights yourself"
        )
        return None


def _another_out() -> str:
    """Where an export that cannot write its folder may go: `sef export`'s --out, the out_dir
    of a Python call."""
    return for_reader("another --out", "another out_dir")


def _check_space(out: Path, plain: nn.Module, formats: Sequence[str]) -> None:
    """DiskFull before the slow exports if ``out``'s disk cannot hold one copy of the weights
    per format (each format stores them whole)."""
    each = space.tensor_bytes(plain.state_dict())
    free = space.free_bytes(out)
    if free is not None and free < len(formats) * each:
        has, needs = space.apart(free, len(formats) * each)
        raise DiskFull(
            f"{out} has {has} free and the export needs about {needs} "
            f"({counted(len(formats), 'file')} of {space.human(each)}); free some space or choose "
            f"{_another_out()}"
        )


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A fresh folder inside ``out`` to write an export into; removed whatever happens."""
    stage = outputs.make_folder(out) / f".sef-export.{os.getpid()}.tmp"
    for leftover in [stage, *outputs.abandoned(out, r"\.sef-export\.(?P<pid>\d+)\.tmp")]:
        shutil.rmtree(leftover, ignore_errors=True)  # ours, or a killed export's
    try:
        yield outputs.make_folder(stage)
    except OutputError as error:  # name the file the user asked for, not its staged copy
        named = [str(text).replace(str(stage), str(out)) for text in (error, error.problem)]
        raise type(error)(*named) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _read_json(path: Path) -> object:
    """The JSON value of the file ``path``; None where it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _earlier_files(out: Path) -> set[str]:
    """The files the earlier export in ``out`` wrote, as its preprocessing.json lists them (or,
    for an export of sef before 2026-12-07, which listed none, as :func:`_older_export` finds)."""
    record = _read_json(out / FILE_NAMES["preprocessing"])
    if not isinstance(record, dict):  # none, or not sef's
        return set()
    if "files" not in record:
        return _older_export(out, record)
    files = record["files"]
    return {name for name in files if isinstance(name, str)} if isinstance(files, list) else set()


# The kind of file each format is (sef.filekinds): TorchScript is a zip archive.
_MODEL_KINDS = {
    "onnx": filekinds.ONNX,
    "torchscript": filekinds.ZIP,
    "safetensors": filekinds.SAFETENSORS,
}


def _older_export(out: Path, record: dict) -> set[str]:
    """The files an export of sef before 2026-12-07 left in ``out``, whose preprocessing.json
    ``record`` lists none: its labels.json and preprocessing.json, and each model file of a
    format's name that is of that format (that sef removed every other format's file, so such a
    file is its export's). Nothing unless both JSON files are recognisably an export's: sef's
    input and output names and layout, a list of class names."""
    labels = _read_json(out / FILE_NAMES["labels"])
    ours = (
        record.get("input_name") == INPUT_NAME
        and record.get("output_name") == OUTPUT_NAME
        and {"layout", "mean", "std"} <= record.keys()
        and isinstance(labels, list)
        and all(isinstance(name, str) for name in labels)
    )
    if not ours:
        return set()
    models = {
        FILE_NAMES[name]
        for name, kind in _MODEL_KINDS.items()
        if _kind(out / FILE_NAMES[name]) == kind
    }
    return {FILE_NAMES["labels"], FILE_NAMES["preprocessing"], *models}


def _kind(path: Path) -> str | None:
    """:func:`sef.filekinds.sniff_file` of ``path``; None where it cannot be read."""
    try:
        return filekinds.sniff_file(path)
    except OSError:
        return None


def _check_only_exports_replaced(out: Path, names: Sequence[str], earlier: set[str]) -> None:
    """OutputError if a file this export would replace in ``out`` was not written by an earlier
    sef export there (not in ``earlier``: a model of your own in the folder --out names must not
    be lost)."""
    theirs = [
        out / FILE_NAMES[name]
        for name in names
        if FILE_NAMES[name] not in earlier and os.path.lexists(out / FILE_NAMES[name])
    ]
    if theirs:
        problem = (
            f"cannot write {theirs[0]}: no earlier sef export in {out} wrote it (no "
            f"{FILE_NAMES['preprocessing']} there lists it), and this export would replace it"
        )
        raise OutputError(f"{problem}; move it away or choose {_another_out()}", problem)


def _replace_set(staged: dict[str, Path], out: Path, earlier: set[str]) -> dict[str, Path]:
    """Move the staged files into ``out`` and remove the files of the earlier export that this
    one did not write (``earlier``: another format's), so ``out`` holds exactly one export's set;
    a file of such a name that no earlier export wrote (a user's) is kept, with a warning."""
    paths = {name: out / FILE_NAMES[name] for name in staged}
    for name, path in staged.items():
        try:
            os.replace(path, paths[name])
        except OSError as error:
            raise outputs.output_error(paths[name], error) from None
    others = [out / FILE_NAMES[name] for name in FILE_NAMES if name not in paths]
    removed = [path for path in others if path.name in earlier and path.exists()]
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:  # exporting --format onnx next to an export of all three left ONNX alone, silently
        warn(
            f"removed {', '.join(map(str, removed))}: formats of the earlier export in {out} that "
            f"this one does not write (a folder holds one export; name every format to keep)"
        )
    kept = [str(path) for path in others if path.name not in earlier and path.exists()]
    if kept:
        them = "it" if len(kept) == 1 else "them"
        warn(f"kept {', '.join(kept)}: no earlier sef export wrote {them}")
    return paths


def export_trained(
    trained: TrainedModel,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = EXPORT_FORMATS,
    say: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Export a trained model with its class names and the test preprocessing it was trained for
    (``say``: as :func:`export_model`'s)."""
    return export_model(
        trained.model,
        out_dir,
        classes=trained.classes,
        preprocessing=trained.preprocessing,
        formats=formats,
        backbone_name=str(trained.config.model.backbone),
        say=say,
    )


def exported_logits(paths: dict[str, Path], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run every exported model file in ``paths`` on ``images``: {format: logits}.

    Used to check an export against PyTorch; safetensors needs a model and is not run here.
    """
    results = {}
    if "onnx" in paths:
        extras.require("export", "checking the ONNX export")
        import onnxruntime

        session = onnxruntime.InferenceSession(
            str(paths["onnx"]), providers=["CPUExecutionProvider"]
        )
        (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
        results["onnx"] = torch.from_numpy(logits)
    if "torchscript" in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.load(str(paths["torchscript"]), map_location="cpu")
        with torch.no_grad():
            results["torchscript"] = scripted(images)
    return results


# An export may differ from PyTorch by float32 rounding, which grows with the logits: allowed is
# ABSOLUTE_TOLERANCE plus RELATIVE_TOLERANCE times the largest |logit| of PyTorch's.
ABSOLUTE_TOLERANCE = 1e-3
RELATIVE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ExportCheck:
    """The largest |logit difference| between PyTorch and each exported file, and the largest
    |logit| of PyTorch's, on the same random images."""

    differences: dict[str, float]
    largest_logit: float

    @property
    def tolerance(self) -> float:
        """What a difference may reach: float32 rounding, relative to the logits' size."""
        return ABSOLUTE_TOLERANCE + RELATIVE_TOLERANCE * self.largest_logit

    def failed(self) -> dict[str, float]:
        """The formats whose difference exceeds the tolerance: {format: difference}."""
        return {name: d for name, d in self.differences.items() if not d <= self.tolerance}


def check_export(
    model: SEF, paths: dict[str, Path], image_size: int, batch: int = 3, seed: int = 0
) -> ExportCheck:
    """Run PyTorch and each exported file in ``paths`` on the same random images."""
    generator = torch.Generator().manual_seed(seed)
    plain = model.export().cpu().float()
    shape = (batch, input_channels(plain), image_size, image_size)
    images = torch.randn(shape, generator=generator)
    reference = _logits(plain, images)
    if "safetensors" in paths:
        from safetensors.torch import load_file

        plain.load_state_dict(load_file(str(paths["safetensors"])))
        with torch.no_grad():
            reloaded = {"safetensors": plain(images)}
    else:
        reloaded = {}
    outputs = {**exported_logits(paths, images), **reloaded}
    differences = {name: float((out - reference).abs().max()) for name, out in outputs.items()}
    return ExportCheck(differences, float(reference.abs().max()))
