"""The distribution's name and every install hint: right for a user inside a clone of sef."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from conftest import sef_process

from sef.cli import main
from sef.extras import DEPENDENCIES, DISTRIBUTION, EXTRAS, OLDEST, PACKAGES

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


def _sef(*args: str, blocked: Path | None = None) -> subprocess.CompletedProcess:
    """`sef ...` in a fresh process; modules under ``blocked`` shadow installed ones."""
    path = os.pathsep.join(str(p) for p in (blocked, SRC) if p is not None)
    return sef_process(*args, env={"PYTHONPATH": path})


def _block(folder: Path, *modules: str) -> Path:
    """Packages that fail to import, as if they were not installed."""
    for module in modules:
        (folder / module).mkdir(parents=True)
        (folder / module / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{module}'\", name='{module}')\n"
        )
    return folder


def _uninstall(monkeypatch, tmp_path: Path, package: str) -> None:
    """``package`` cannot be imported in this process until the test ends: its loaded modules
    dropped, and a package of its name that fails to import first on the path."""
    for name in [name for name in sys.modules if name.split(".")[0] == package]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(_block(tmp_path / "blocked", package))


def test_the_distribution_is_not_the_unrelated_sef_on_pypi() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION == "sef-fgvc"  # 404 on PyPI when chosen (2026-11-26)
    assert project["scripts"] == {"sef": "sef.cli:program"}
    extras = project["optional-dependencies"]
    assert extras["dev"][0] == f"{DISTRIBUTION}[{','.join(EXTRAS)}]"  # CI tests every extra
    for extra, modules in EXTRAS.items():
        packages = [PACKAGES.get(module, module) for module in modules]
        assert [re.split(r"[<>=\[]", req)[0] for req in extras[extra]] == packages


def test_the_build_backend_floor_reads_the_licence_as_written() -> None:
    """`license = "MIT"` (an SPDX string, PEP 639) is read by setuptools 77 and later; with an
    older one (Ubuntu 24.04's 68, under --no-build-isolation) the build stopped: "configuration
    error: `project.license` must be valid exactly by one definition"."""
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert isinstance(pyproject["project"]["license"], str)
    (floor,) = [r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")]
    assert int(re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", floor).group(1)) >= 77


def test_no_install_hint_names_the_wrong_package() -> None:
    files = [REPO / "README.md", *SRC.rglob("*.py"), *(REPO / "docs").rglob("*.md")]
    wrong = re.compile(r"pip install ['\"]?sef(\[|['\"\s]|$)", re.MULTILINE)
    assert [str(p) for p in files if wrong.search(p.read_text(encoding="utf-8"))] == []
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert 'pip install ".[export]"' in readme and 'pip install ".[timm]"' in readme


@pytest.mark.slow
def test_export_without_the_extra_says_what_to_install(demo_checkpoint, tmp_path: Path) -> None:
    blocked = _block(tmp_path / "blocked", "onnx", "onnxscript")
    out = tmp_path / "shipped"
    result = _sef(
        "export", "--checkpoint", str(demo_checkpoint), "--out", str(out), blocked=blocked
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "sef export: error: ONNX export needs onnx, onnxscript (the 'export' extra): pip install "
        'onnx onnxscript, or pip install ".[export]" inside a clone of sef\n'
    )
    assert not out.exists()  # refused before anything was written


@pytest.mark.slow
def test_timm_backbone_without_timm_says_what_to_install(tmp_path: Path) -> None:
    blocked = _block(tmp_path / "blocked", "timm")
    result = _sef("info", "--backbone", "timm:resnet18", blocked=blocked)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert "needs timm (the 'timm' extra): pip install timm, or pip install \".[timm]\"" in (
        result.stderr
    )


def test_the_dependencies_sef_names_are_pyprojects() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [_distribution(req) for req in project["dependencies"]]
    assert [PACKAGES.get(module, module).lower() for module in DEPENDENCIES] == declared


def test_a_dependency_missing_from_the_install_is_named_in_one_line(
    demo_checkpoint: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    # an install without its dependencies (--no-deps, a hand-made environment) met
    # ModuleNotFoundError's traceback in the middle of a command
    _uninstall(monkeypatch, tmp_path, "safetensors")
    out = tmp_path / "shipped"
    arguments = ["--checkpoint", str(demo_checkpoint), "--out", str(out), "--no-check"]
    assert main(["export", *arguments, "--format", "torchscript", "safetensors"]) == 2
    assert capsys.readouterr().err == (
        "sef export: error: safetensors is not installed, and sef needs it: pip install "
        "safetensors, or pip install . inside a clone of sef\n"
    )
    assert not out.exists()  # refused before the TorchScript export, before anything is written


def test_eval_report_without_matplotlib_stops_before_the_evaluation(
    demo_checkpoint: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    # the whole split was evaluated and its predictions written before the report's figure
    # found matplotlib missing
    _uninstall(monkeypatch, tmp_path, "matplotlib")
    predictions, report = tmp_path / "predictions.csv", tmp_path / "report"
    arguments = ["--checkpoint", str(demo_checkpoint), "--predictions", str(predictions)]
    assert main(["eval", *arguments, "--report", str(report)]) == 2
    assert capsys.readouterr() == (
        "",
        "sef eval: error: matplotlib is not installed, and sef needs it: pip install "
        "matplotlib, or pip install . inside a clone of sef\n",
    )
    assert not predictions.exists() and not report.exists()


def test_viz_without_matplotlib_stops_before_it_loads_the_model(
    demo_checkpoint: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    # the model was loaded and run over the images (256 for parts) before the figure found
    # matplotlib missing
    import sef.trained

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(sef.trained, "load_trained_model", loaded)
    _uninstall(monkeypatch, tmp_path, "matplotlib")
    arguments = ["--checkpoint", str(demo_checkpoint), "--out", str(tmp_path / "parts.png")]
    assert main(["viz", "parts", *arguments]) == 2
    assert capsys.readouterr().err == (
        "sef viz parts: error: matplotlib is not installed, and sef needs it: pip install "
        "matplotlib, or pip install . inside a clone of sef\n"
    )


def test_train_without_tensorboard_stops_before_the_data(
    demo_root: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    # the data was read and every image decoded before TensorBoard's writer found it missing
    _uninstall(monkeypatch, tmp_path, "tensorboard")
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "1", "--no-progress"]) == 2
    assert capsys.readouterr() == (
        "",
        "sef train: error: tensorboard is not installed, and sef needs it: pip install "
        "tensorboard, or pip install . inside a clone of sef\n",
    )
    assert not out.exists() and not demo_root.exists()


def test_a_dependency_the_parser_needs_is_named_in_one_line_too(tmp_path: Path) -> None:
    result = _sef("--version", blocked=_block(tmp_path / "blocked", "yaml"))  # reads the presets
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "sef: error: yaml is not installed, and sef needs it: pip install pyyaml, or pip "
        "install . inside a clone of sef\n"
    )


def test_the_oldest_versions_sef_checks_are_pyprojects_floors() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [req for extra in project["optional-dependencies"].values() for req in extra]
    floors = {req.split(">=")[0]: req.split(">=")[1] for req in reqs if ">=" in req}
    for module, oldest in OLDEST.items():
        assert floors[PACKAGES.get(module, module)] == oldest


def test_a_timm_older_than_sef_works_with_is_refused_in_one_line(monkeypatch, capsys) -> None:
    # timm 0.9.16 met pyproject's floor (timm>=0.9), and every timm: backbone ended in
    # "AttributeError: module 'timm.models' has no attribute 'get_arch_pretrained_cfgs'"
    timm = pytest.importorskip("timm")
    monkeypatch.setattr(timm, "__version__", "0.9.16")
    assert main(["info", "--backbone", "timm:resnet18"]) == 2
    assert capsys.readouterr().err == (
        "sef info: error: backbone 'timm:resnet18' needs timm 1.0.10 or later, and 0.9.16 is "
        'installed: pip install -U "timm>=1.0.10", or pip install ".[timm]" inside a clone of '
        "sef\n"
    )


def test_an_extra_installed_but_not_importable_is_not_called_missing(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    # lightning 2.3 under setuptools 81 or later (no pkg_resources) fails on import, and sef said
    # "needs lightning (the 'lightning' extra): pip install lightning" of an installed lightning
    for name in [name for name in sys.modules if name.split(".")[0] == "timm"]:
        monkeypatch.delitem(sys.modules, name)
    (tmp_path / "timm").mkdir()
    (tmp_path / "timm" / "__init__.py").write_text("import pkg_resources_gone\n")
    monkeypatch.syspath_prepend(tmp_path)
    assert main(["info", "--backbone", "timm:resnet18"]) == 2
    assert capsys.readouterr().err == (
        "sef info: error: backbone 'timm:resnet18' needs timm, which is installed but cannot be "
        "imported (No module named 'pkg_resources_gone'): pip install -U timm, or pip install "
        '".[timm]" inside a clone of sef\n'
    )


def test_trackers_and_lightning_stay_out_of_a_plain_install() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    plain = {re.split(r"[<>=\[]", req)[0] for req in project["dependencies"]}
    optional = ("wandb", "mlflow", "mlflow-skinny", "sqlalchemy", "alembic", "lightning")
    assert plain.isdisjoint(optional)


# sef's modules that are an extra's feature themselves, importing it when imported
OPTIONAL_MODULES = {"integrations/lightning.py"}


def _distribution(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=\[;\s]", requirement)[0]).lower()


def _third_party_imports(tree: ast.AST) -> set[tuple[str, bool]]:
    """(top-level module, whether the import runs when the file is imported) for every absolute
    import of a module outside the standard library and sef."""
    found: set[tuple[str, bool]] = set()

    def visit(node: ast.AST, at_import: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            else:
                in_function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                visit(child, at_import and not in_function)
                continue
            for name in names:
                module = name.split(".")[0]
                if module not in sys.stdlib_module_names and module not in ("sef", "__future__"):
                    found.add((module, at_import))

    visit(tree, True)
    return found


def test_every_package_sef_imports_is_declared_and_an_extras_only_when_used() -> None:
    """A module that base code imports but pyproject.toml declares nowhere (numpy came only with
    torchvision and scipy) or only in an extra (a plain install would fail on import) is caught."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {_distribution(req) for req in project["dependencies"]}
    optional = {
        _distribution(req)
        for extra, reqs in project["optional-dependencies"].items()
        if extra != "dev"
        for req in reqs
    }
    owners = packages_distributions()
    undeclared, eager = set(), set()
    for path in SRC.rglob("*.py"):
        name = path.relative_to(SRC / "sef").as_posix()
        for module, at_import in _third_party_imports(ast.parse(path.read_text("utf-8"))):
            dists = {_distribution(d) for d in owners.get(module, [module])}
            if not dists & (base | optional):
                undeclared.add(module)
            elif not dists & base and at_import and name not in OPTIONAL_MODULES:
                eager.add(f"{module} in {name}")
    assert undeclared == set(), "imported by sef, declared in no dependency of pyproject.toml"
    assert eager == set(), "an extra's module imported with a module a plain install imports"


@pytest.mark.slow
def test_a_tracker_without_its_client_says_what_to_install(tmp_path: Path) -> None:
    blocked = _block(tmp_path / "blocked", "mlflow")
    out = tmp_path / "run"
    result = _sef("train", "--out", str(out), "--log", "tensorboard", "mlflow", blocked=blocked)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "sef train: error: run.loggers=mlflow (--log mlflow) needs mlflow (the 'mlflow' extra): "
        'pip install mlflow-skinny, or pip install ".[mlflow]" inside a clone of sef\n'
    )
    assert not out.exists()  # refused before the data or the run folder


@pytest.mark.slow
def test_the_lightning_module_without_lightning_says_what_to_install(tmp_path: Path) -> None:
    blocked = _block(tmp_path / "blocked", "lightning")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), str(SRC)])}
    code = "import sef.integrations.lightning"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "ImportError: sef.integrations.lightning needs lightning (the 'lightning' extra): "
        'pip install lightning, or pip install ".[lightning]" inside a clone of sef'
    )


def test_the_version_is_the_one_pyproject_declares() -> None:
    """`sef --version` and `sef.__version__` are written by hand beside pyproject's version."""
    import sef

    declared = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M)
    assert declared is not None and sef.__version__ == declared[1]
