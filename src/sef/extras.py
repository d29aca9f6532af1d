"""sef's dependencies, those of a plain install and the optional ones grouped as pyproject.toml's
extras, and how to install what is missing.

The distribution is ``sef-fgvc`` (``sef`` on PyPI is an unrelated project), so a hint names the
packages themselves, and the extra as installed inside a clone of sef.
"""

from __future__ import annotations

import importlib
import re

from sef.errors import SEFError

DISTRIBUTION = "sef-fgvc"
# the modules of pyproject.toml's [project.dependencies], which a plain install brings
DEPENDENCIES = (
    "torch", "torchvision", "yaml", "tqdm", "scipy", "safetensors", "matplotlib", "tensorboard",
    "PIL", "numpy", "filelock",
)  # fmt: skip
# extra -> the modules it provides (pyproject.toml's [project.optional-dependencies])
EXTRAS = {
    "export": ("onnx", "onnxruntime", "onnxscript"),
    "timm": ("timm", "huggingface_hub"),  # the last: asked whether hub weights are cached
    "wandb": ("wandb",),
    "mlflow": ("mlflow", "sqlalchemy", "alembic"),  # the last two: MLflow's SQLite store
    "lightning": ("lightning",),
}
# module -> the package that installs it, where the two names differ
PACKAGES = {"mlflow": "mlflow-skinny", "yaml": "pyyaml", "PIL": "pillow"}
# module of an extra -> the oldest version sef works with, where an older one fails in sef's use
# (pyproject.toml's floor): timm before 1.0.10 lacks models.get_arch_pretrained_cfgs
OLDEST = {"timm": "1.0.10"}


def _release(version: str) -> tuple[int, ...]:
    """The numbers a version starts with: "1.0.10.dev0" -> (1, 0, 10)."""
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def require(extra: str, purpose: str, error: type[Exception] = SEFError) -> None:
    """Raise ``error`` in one sentence if a module of ``extra`` is not installed, cannot be
    imported (a package it needs is missing or too new for it), or is older than sef works with."""
    missing = []
    for module in EXTRAS[extra]:
        package, clone = PACKAGES.get(module, module), f'pip install ".[{extra}]" inside a clone'
        try:
            imported = importlib.import_module(module)
        except ImportError as failure:
            if isinstance(failure, ModuleNotFoundError) and failure.name == module:
                missing.append(module)
                continue
            raise error(
                f"{purpose} needs {module}, which is installed but cannot be imported "
                f"({' '.join(str(failure).split())}): pip install -U {package}, or {clone} of sef"
            ) from None
        installed, oldest = getattr(imported, "__version__", ""), OLDEST.get(module)
        if oldest and installed and _release(installed) < _release(oldest):
            raise error(
                f"{purpose} needs {module} {oldest} or later, and {installed} is installed: "
                f'pip install -U "{package}>={oldest}", or {clone} of sef'
            )
    if missing:
        packages = " ".join(PACKAGES.get(module, module) for module in missing)
        raise error(
            f"{purpose} needs {', '.join(missing)} (the {extra!r} extra): "
            f'pip install {packages}, or pip install ".[{extra}]" inside a clone of sef'
        )


def missing_dependency(error: ImportError) -> str | None:
    """What to install, in one sentence, if ``error`` says a dependency of sef is not installed
    (an install without its dependencies: ``--no-deps``, a hand-made environment); else None."""
    if not isinstance(error, ModuleNotFoundError) or error.name not in DEPENDENCIES:
        return None
    return (
        f"{error.name} is not installed, and sef needs it: pip install "
        f"{PACKAGES.get(error.name, error.name)}, or pip install . inside a clone of sef"
    )


def require_installed(*modules: str) -> None:
    """Import sef's dependencies ``modules`` now, before long work whose end needs them: SEFError
    in one line naming the pip command for one the install lacks."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            said = missing_dependency(error)
            if said is None:
                raise
            raise SEFError(said) from None
