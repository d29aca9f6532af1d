"""Optional dependencies, grouped as pyproject.toml's extras, and how to install what is missing.

The distribution is ``sef-fgvc`` (``sef`` on PyPI is an unrelated project), so a hint names the
packages themselves, and the extra as installed inside a clone of sef.
"""

from __future__ import annotations

import importlib

from sef.errors import SEFError

DISTRIBUTION = "sef-fgvc"
# extra -> the modules it provides (pyproject.toml's [project.optional-dependencies])
EXTRAS = {
    "export": ("onnx", "onnxruntime", "onnxscript"),
    "timm": ("timm",),
    "wandb": ("wandb",),
    "mlflow": ("mlflow", "sqlalchemy", "alembic"),  # the last two: MLflow's SQLite store
    "lightning": ("lightning",),
}
# module -> the package that installs it, where the two names differ
PACKAGES = {"mlflow": "mlflow-skinny"}


def require(extra: str, purpose: str, error: type[Exception] = SEFError) -> None:
    """Raise ``error`` in one sentence if a module of ``extra`` cannot be imported."""
    missing = []
    for module in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        packages = " ".join(PACKAGES.get(module, module) for module in missing)
        raise error(
            f"{purpose} needs {', '.join(missing)} (the {extra!r} extra): "
            f'pip install {packages}, or pip install ".[{extra}]" inside a clone of sef'
        )
