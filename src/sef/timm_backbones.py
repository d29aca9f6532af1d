"""timm models as SEF backbones: ``"timm:<name>"`` -> a :class:`~sef.adapters.TimmFeatures`.

A local weights file goes through timm's own loading (its checkpoint filters: position
embeddings resampled for another image size), which reports the weights it could not place only
in its log and loads on; sef reads that report and refuses the file instead.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.error import URLError

from torch import nn

from sef import extras
from sef.adapters import timm_features
from sef.errors import WeightsError
from sef.network import unreachable
from sef.text import close_to
from sef.weights import (
    download_help,
    hub_cache,
    is_weights_file,
    keys_mismatch,
    mismatch,
    shape_mismatch,
)

# the names of timm's default weights for a model: IMAGENET1K_V1 is the config's default weights
_HUB_DEFAULT = ("DEFAULT", "IMAGENET1K_V1")


class _KeyReport(logging.Filter):
    """Keeps the messages in which timm reports weights it could not place: it logs them (missing
    keys at INFO) and loads on, so a wrong file would leave a backbone random without a word."""

    def __init__(self, shown_from: int) -> None:
        super().__init__()
        self.shown_from = shown_from  # the level the logger showed before: shows what it showed
        self.keys: dict[str, list[str]] = {"missing": [], "unexpected": []}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()  # "Missing keys (a, b) discovered while loading ..."
        kind = message.split(" ", 1)[0].lower()
        if kind in self.keys and message.startswith(f"{kind.title()} keys (") and ")" in message:
            self.keys[kind] += message[message.index("(") + 1 : message.index(")")].split(", ")
        return record.levelno >= self.shown_from


@contextmanager
def _timm_key_report() -> Iterator[dict[str, list[str]]]:
    """Inside the block, the keys timm's weight loading reported missing or unexpected."""
    logger = logging.getLogger("timm.models._builder")
    level = logger.level
    report = _KeyReport(logger.getEffectiveLevel())
    logger.addFilter(report)
    logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
    try:
        yield report.keys
    finally:
        logger.setLevel(level)
        logger.removeFilter(report)


def _timm_input_size(timm, model_name: str) -> tuple[int, bool]:
    """The side a timm model takes by default, and whether it takes only that size."""
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None:
        return 224, False
    return int(cfg.input_size[-1]), bool(cfg.fixed_input_size)


def timm_backbone(
    name: str,
    model_name: str,
    weights: str | os.PathLike | None,
    *,
    image_size: int | None = None,
    pool: str | None = None,
    backbone_args: dict | None = None,
) -> nn.Module:
    """The timm model ``model_name`` (called ``name`` in messages) as a
    :class:`~sef.adapters.TimmFeatures`, checked on images of ``image_size``; fixed-size models
    (ViT, Swin) are built for ``image_size`` when it differs from their own size (timm resamples
    position embeddings of pretrained weights)."""
    extras.require("timm", f"backbone {name!r}", ValueError)
    import timm

    _check_model_name(timm, name, model_name)
    if weights is not None and not is_weights_file(weights):
        model_name = _hub_name(timm, name, model_name, weights)
    kwargs: dict = {**(backbone_args or {}), "num_classes": 0, **_weight_arguments(weights)}
    own, fixed = _timm_input_size(timm, model_name)
    if fixed and image_size:
        _check_own_size(name, kwargs, image_size)
    if fixed and image_size and image_size != own:
        kwargs.setdefault("img_size", image_size)
    try:
        model = _create(timm, name, model_name, kwargs, weights)
    except TypeError as error:
        if "'img_size'" in str(error) and "img_size" not in (backbone_args or {}):
            raise ValueError(
                f"{name} takes only {own} px images and timm cannot build it for "
                f"{image_size} px; set data.image_size={own}"
            ) from None
        raise ValueError(f"{name} does not accept these arguments: {error}") from None
    except AssertionError as error:  # timm asserts what a size or an argument must be
        asked = kwargs.get("img_size")
        built = f"for {asked} px images" if asked else f"with backbone_args {backbone_args}"
        raise ValueError(
            f"timm cannot build {name} {built} ({_what_failed(error)}); choose another image "
            f"size (its own is {own}) or other backbone_args"
        ) from None
    size = image_size or kwargs.get("img_size", own)  # checked where it will run
    adapter = timm_features(model, image_size=size, pool=pool, name=name)
    asked = kwargs.get("global_pool", "avg")
    if adapter.layout == "NCHW" and asked != "avg":
        raise ValueError(
            f"{name} is a CNN, whose map sef pools by its mean, not by backbone_args "
            f"global_pool={asked!r}; leave global_pool out"
        )
    return adapter


def _what_failed(error: AssertionError) -> str:
    """timm's assertion message, or the assertion itself where it has none."""
    if str(error):
        return str(error).rstrip(".")
    failed = traceback.extract_tb(error.__traceback__)[-1]
    return f"{failed.line} in {Path(failed.filename).name}, line {failed.lineno}"


def _check_model_name(timm, name: str, model_name: str) -> None:
    """ValueError where ``model_name`` is empty ('timm:' alone), no timm model, or ends in a
    pretrained tag timm does not know for it (:func:`_check_tag`)."""
    if not model_name:
        raise ValueError(f"{name!r} names no timm model; pass 'timm:<model>', e.g. 'timm:resnet50'")
    if not timm.is_model(model_name):
        close = close_to(model_name, timm.list_models())
        raise ValueError(f"unknown timm model {model_name!r}; {close}see timm.list_models()")
    _check_tag(timm, name, model_name)


def _check_tag(timm, name: str, model_name: str) -> None:
    """ValueError where ``model_name`` ends in a pretrained tag timm does not know for it."""
    arch, tag = timm.models.split_model_name_tag(model_name)
    known = [found.split(".", 1)[1] for found in timm.models.get_arch_pretrained_cfgs(arch)]
    if tag and tag not in known:
        raise ValueError(
            f"timm has no tag {tag!r} for {arch} ({name}); use timm:{arch} or timm:{arch}.TAG "
            f"with TAG one of {', '.join(known)}"
        )


def _check_own_size(name: str, kwargs: dict, image_size: int) -> None:
    """ValueError where ``backbone_args`` build a fixed-size model for other images than the
    run's ``image_size`` (it would fail at its first batch)."""
    asked = kwargs.get("img_size")
    if asked is None or kwargs.get("dynamic_img_size"):
        return
    if asked != image_size:  # an [h, w] pair too: sef gives one side
        raise ValueError(
            f"backbone_args img_size={asked!r} is not the image size {image_size}, and {name} "
            f"takes only the size it is built for; leave img_size out: sef builds it for "
            f"data.image_size"
        )


def _weight_arguments(weights: str | os.PathLike | None) -> dict:
    """create_model's arguments for ``weights``: a local file, the hub's, or none."""
    if weights is None:
        return {}
    if not is_weights_file(weights):
        return {"pretrained": True}
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; pass an existing file path")
    return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}


def _hub_name(timm, name: str, model_name: str, weights: object) -> str:
    """``model_name`` with the tag of the hub weights ``weights`` names (DEFAULT: timm's own
    choice); WeightsError listing the names it takes where timm has no such weights."""
    arch, own = timm.models.split_model_name_tag(model_name)
    tags = [found.split(".", 1)[1] for found in timm.list_pretrained(f"{arch}.*")]
    tags = [tag for tag in tags if tag == own] if own else tags  # the name chose its weights
    if not tags:
        raise WeightsError(
            f"timm has no pretrained weights for {name}; use weights=None (--weights none) or "
            f"a weights file"
        )
    if str(weights) in _HUB_DEFAULT:
        return model_name
    tag = str(weights).removeprefix(f"{arch}.")
    if tag not in tags:
        default = own or timm.models.get_pretrained_cfg(arch).tag
        raise WeightsError(
            f"unknown weights {str(weights)!r} for {name}; use one of DEFAULT (timm's "
            f"{default}), {', '.join(tags)}, a file path, or None"
        )
    return f"{arch}.{tag}"


def _create(timm, name: str, model_name: str, kwargs: dict, weights: object) -> nn.Module:
    """timm.create_model, with a weights file that does not fit refused in one line, and hub
    weights whose server takes no connection refused before timm tries."""
    file = "pretrained_cfg_overlay" in kwargs
    if kwargs.get("pretrained") and not file:
        _check_server(timm, name, model_name, weights)
    try:
        with _timm_key_report() as report:
            model = timm.create_model(model_name, **kwargs)
    except RuntimeError as error:  # load_state_dict: a tensor of another shape
        if not file:
            raise
        raise mismatch(weights, name, shape_mismatch(error)) from None
    except (URLError, OSError) as error:
        raise _download_help(timm, name, model_name, weights, error) from error
    if file and (report["missing"] or report["unexpected"]):
        raise keys_mismatch(weights, name, report["missing"], report["unexpected"])
    return model


def _download_help(
    timm, name: str, model_name: str, weights: object, error: Exception
) -> WeightsError:
    """:func:`~sef.weights.download_help` for timm's hub weights of ``model_name``: from the
    Hugging Face hub (its own cache) or from a URL (the torch hub cache)."""
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg.hf_hub_id:
        url = f"https://huggingface.co/{cfg.hf_hub_id}"
        return download_help(name, weights, url, error, torch_hub=False)
    return download_help(name, weights, cfg.url, error)


def _check_server(timm, name: str, model_name: str, weights: object) -> None:
    """:func:`_download_help` at once where the server of ``model_name``'s hub weights takes no
    connection: the Hugging Face client retried for about a minute before it said so."""
    down = unreachable(_server(timm, model_name) or "")
    if down:
        reason = f"{down[0]} takes no connection: {down[1]}"
        raise _download_help(timm, name, model_name, weights, reason)


def _server(timm, model_name: str) -> str | None:
    """The URL timm would download ``model_name``'s weights from; None where it downloads
    nothing (the weights in the Hugging Face or torch hub cache, ``HF_HUB_OFFLINE`` set) or
    where this timm resolves them otherwise than sef knows."""
    try:
        from timm.models._builder import _resolve_pretrained_source
        from timm.models._hub import HF_WEIGHTS_NAME, _get_safe_alternatives

        cfg = timm.models.get_pretrained_cfg(model_name).to_dict()
        source, where = _resolve_pretrained_source(cfg)
    except Exception:  # another timm's internals: left to timm
        return None
    if source == "url":
        return None if hub_cache(where).is_file() else where
    if source != "hf-hub":
        return None
    from huggingface_hub import constants, try_to_load_from_cache

    repo, _, revision = (where[0] if isinstance(where, tuple) else where).partition("@")
    file = cfg.get("hf_hub_filename") or HF_WEIGHTS_NAME
    cached = (
        try_to_load_from_cache(repo, found, revision=revision or None)
        for found in (file, *_get_safe_alternatives(file))
    )
    if constants.HF_HUB_OFFLINE or any(isinstance(path, str) for path in cached):
        return None
    return constants.ENDPOINT
