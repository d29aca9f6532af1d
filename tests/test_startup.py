"""`import sef` and the CLI's start load no torch: heavy modules wait until a command needs them.

Checked in fresh processes by what is in ``sys.modules`` afterwards, not by timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sef

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = (
    "torch", "torchvision", "PIL", "matplotlib", "numpy", "scipy", "tensorboard", "safetensors",
    "timm", "onnx", "onnxruntime", "wandb", "mlflow", "lightning",
)  # fmt: skip
CLI = "from sef.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"


def _heavy_modules_after(code: str) -> list[str]:
    """The HEAVY modules a fresh interpreter has imported after running ``code``."""
    report = f"\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-c", code + report], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    "code",
    [
        "import sef",
        CLI.format(argv=["--version"]),
        CLI.format(argv=["--help"]),
        CLI.format(argv=["presets"]),
        CLI.format(argv=["data", "caches"]),
    ],
    ids=[
        "import sef",
        "sef --version",
        "sef --help",
        "sef presets",
        "sef data caches",
    ],
)
def test_starting_loads_no_torch(code: str) -> None:
    assert _heavy_modules_after(code) == []


def test_commands_that_need_no_model_load_no_torch(tmp_path: Path) -> None:
    """Each command's --help, a usage error, `sef presets NAME` and `sef score`, in one process
    (`sef score` loaded torch for its tensor metrics' sake: 2 s for a CSV's ranks)."""
    from sef.cli import COMMAND_MODULES

    table = tmp_path / "accuracies.csv"
    table.write_text("method,cub,cars\nSEF,87.3,94.0\nBase,85.5,92.7\n")
    argvs = [[name, "--help"] for name in COMMAND_MODULES]
    argvs += [["train", "--epochs", "abc"], ["presets", "demo"], ["score", str(table)]]
    assert _heavy_modules_after("".join(CLI.format(argv=argv) for argv in argvs)) == []


def test_config_errors_of_train_and_reproduce_load_no_torch(tmp_path: Path) -> None:
    """`sef train` and `sef reproduce` with a wrong config, in one process: each imported the
    engine (torch and torchvision, seconds) before it read the config, so a typo waited that
    long for its line."""
    typo = tmp_path / "typo.yaml"
    typo.write_text("base: demo\nloss:\n  gama: 1\n")
    argvs = [
        ["train", "--set", "loss.gama=1"],
        ["train", "--set", "loss.gamma=abc"],
        ["train", "--epochs", "0"],
        ["train", "--preset", "no-such-preset"],
        ["train", "--config", str(typo)],
        ["train", "--preset", "cub-resnet50"],  # needs --data-root
        ["reproduce", "table2", "--dry-run", "--set", "loss.gama=1"],
    ]
    code = "from sef.cli import main\n" + "".join(f"assert main({a!r}) == 2\n" for a in argvs)
    assert _heavy_modules_after(code) == []


def _small_cnn_checkpoint(path: Path) -> Path:
    """A checkpoint as `sef train` writes it, of a small_cnn (no torchvision backbone)."""
    from sef.checkpoint import save_checkpoint
    from sef.config import Config, config_to_dict
    from sef.model import SEF

    config = Config(name="small")
    config.model.backbone, config.model.weights = "small_cnn", None
    model = SEF("small_cnn", num_classes=3, groups=config.model.groups)
    state = {"model": model.state_dict(), "config": config_to_dict(config)}
    save_checkpoint(path, state | {"classes": ["a", "b", "c"], "epoch": 1, "metrics": {}})
    return path


@pytest.mark.slow
def test_what_needs_no_torchvision_or_scipy_loads_neither(
    folder_root: Path, cub_root: Path, csv_root: Path, tmp_path: Path
) -> None:
    """In one process (each of these loads torch): `sef data check` imported the training engine,
    and with it torchvision (whose import imports torch._dynamo: as long again as torch's), for
    its check of the classes; `import sef.model` imported torchvision for its named backbones,
    also for a small_cnn or an nn.Module of one's own; the readers of CUB and CSV lists imported
    SciPy, which reads the .mat files of Stanford Cars and Stanford Dogs alone; `sef info
    --checkpoint` of a small_cnn imported torchvision for the transforms of a model it describes."""
    checkpoint = _small_cnn_checkpoint(tmp_path / "last.pt")
    code = CLI.format(argv=["data", "check", "folder", str(folder_root)])
    code += f"assert main({['info', '--checkpoint', str(checkpoint)]!r}) == 0\n"
    code += "import sef, torch\nsef.SEF('small_cnn', 3)\nsef.SEF(torch.nn.Conv2d(3, 4, 1), 3)\n"
    for name, root in (("cub", cub_root), ("csv", csv_root)):
        code += f"sef.datasets.load({name!r}, {str(root)!r}, 'trainval')\n"
    loaded = _heavy_modules_after(code)
    assert "torch" in loaded and not {"torchvision", "scipy"} & set(loaded), loaded


def test_public_names_and_submodules_resolve_on_first_use() -> None:
    assert sef.SEF.__module__ == "sef.model" and sef.fit.__module__ == "sef.engine.run"
    assert sef.datasets.ImageList.__module__ == "sef.datasets.imagelist"
    assert sef.checkpoint.load_checkpoint is sef.load_checkpoint
    for name in sef.__all__:
        assert getattr(sef, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        sef.nothing_here  # noqa: B018


def test_type_checkers_see_every_lazy_name_from_its_home() -> None:
    """The TYPE_CHECKING imports of sef/__init__.py name exactly the lazy names and homes."""
    import ast

    tree = ast.parse(Path(sef.__file__).read_text(encoding="utf-8"))
    guarded = next(
        n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
    )
    seen = {a.name: node.module for node in guarded.body for a in node.names}
    assert seen == sef._HOMES
