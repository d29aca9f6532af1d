"""The fixed words that configs and commands accept, in a module that imports nothing.

So `sef --help` and config checks start without torch. The module that acts on each set imports
it from here (``sef.adapters.POOLS`` is this ``POOLS``).
"""

POOLS = ("avg", "token")  # how token backbones pool (sef.adapters)
GROUP_LOSS_VARIANTS = ("reference", "paper")  # sef.losses
RECIPES = ("resize_crop", "resize")  # the paper's image pipelines (sef.transforms)
BAD_IMAGE_POLICIES = ("stop", "skip", "off")  # sef.datasets.checking
# data.holdout: how own data without declared splits hold out val and test (sef.datasets.splits)
HOLDOUTS = ("stable", "ranked")
CACHE_MODES = ("off", "auto")  # data.cache, else a folder (sef.datasets.cache)
TTA_MODES = ("flip", "crops", "flip+crops")  # test-time augmentation (sef.tta)
EXPORT_FORMATS = ("onnx", "torchscript", "safetensors")  # sef.export
LOGGERS = ("tensorboard", "wandb", "mlflow", "none")  # run.loggers (sef.engine.log, sef.trackers)
DEVICE_WORDS = "auto, cpu, cuda or cuda:N"  # --device and run.device (sef.distributed)
# run.seed and the commands' --seed: NumPy's seed sequences take no negative seed; torch's
# sampler seeds with seed + epoch, 64 bits.
MAX_SEED = 2**63 - 1


def is_device(request: str) -> bool:
    """Whether ``request`` is one of ``DEVICE_WORDS``: auto, cpu, cuda or cuda:N."""
    index = request.removeprefix("cuda:")
    return request in ("auto", "cpu", "cuda") or (index != request and index.isdigit())
