"""The package's layers, read from the source: the core imports nothing above it and no import
cycle exists, counting every import a module can make (module level, inside functions, under
TYPE_CHECKING, and modules named as strings for importlib, as ``sef.lazy`` and
``sef.datasets.RECORDS`` name them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

# The method itself (docs/developing.md): it knows no config, data, checkpoint or training.
CORE = (
    "sef.model", "sef.losses", "sef.backbones", "sef.timm_backbones", "sef.weights",
    "sef.adapters", "sef.modes", "sef.groups", "sef.loss_config",
)  # fmt: skip
# What the core may import: itself and the leaves that import nothing of sef's but each other.
LEAVES = (
    "sef.choices", "sef.errors", "sef.extras", "sef.network", "sef.space", "sef.text",
    "sef.version",
)  # fmt: skip
CORE_MAY_IMPORT = (*CORE, *LEAVES)
# What the issue names as above the core; a prefix covers a package and its modules.
ABOVE_CORE = (
    "sef.config", "sef.datasets", "sef.transforms", "sef.engine", "sef.checkpoint",
    "sef.reproduce", "sef.trained", "sef.viz", "sef.parts", "sef.analysis", "sef.export",
    "sef.predict", "sef.tta", "sef.report", "sef.cli",
)  # fmt: skip


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted((SRC / "sef").rglob("*.py"))}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of the module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _resolve(name: str, imported: str | None = None) -> str:
    """The sef module an import reaches: ``from P import N`` reaches P.N when that is a module."""
    if imported is not None and f"{name}.{imported}" in MODULES:
        return f"{name}.{imported}"
    return name


def imports(module: str) -> dict[str, list[tuple[str, int]]]:
    """{"import" | "type_checking" | "lazy_string": [(sef module, line)]} of one module; "import"
    holds every import statement outside TYPE_CHECKING blocks, inside functions included."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            guarded |= {id(n) for n in ast.walk(node)}
    docstrings = _docstrings(tree)
    found: dict[str, list[tuple[str, int]]] = {"import": [], "type_checking": [], "lazy_string": []}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        kind = "type_checking" if id(node) in guarded else "import"
        if isinstance(node, ast.Import):
            found[kind] += [(a.name, node.lineno) for a in node.names if a.name.startswith("sef")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package upwards
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            if base == "sef" or base.startswith("sef."):
                found[kind] += [(_resolve(base, a.name), node.lineno) for a in node.names]
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value in MODULES
            and id(node) not in docstrings
            and not module.startswith(f"{node.value}.")  # its own package, e.g. for resources:
        ):  # imported before the module itself, so naming it cannot import anything
            found["lazy_string"].append((node.value, node.lineno))
    return found


def _graph(kinds: tuple[str, ...]) -> dict[str, set[str]]:
    """module -> the sef modules it imports."""
    graph = {}
    for module in MODULES:
        found = imports(module)
        graph[module] = {target for kind in kinds for target, _ in found[kind]} - {module}
    return graph


def test_the_root_package_imports_eagerly_only_its_lazy_resolver():
    """Every module's parent, so it resolves its public names on first use (sef.lazy)."""
    assert {t for t, _ in imports("sef")["import"]} == {"sef.lazy"}
    assert {t for t, _ in imports("sef.lazy")["import"]} == set()


def _above_core(target: str) -> bool:
    return any(target == p or target.startswith(f"{p}.") for p in ABOVE_CORE)


def test_the_reader_sees_lazy_and_type_checking_imports():
    """The checks below are only as good as this reader: it must see each kind of import."""

    def targets(module: str, kind: str) -> set[str]:
        return {target for target, _ in imports(module)[kind]}

    assert "sef.trained" in targets("sef.engine.evaluation", "import")  # at module level
    assert {"sef.engine", "sef.report", "sef.outputs"} <= targets("sef.cli.eval", "import")  # run()
    assert "sef.model" in targets("sef.losses", "type_checking")
    assert {"sef.datasets.cub", "sef.datasets.imagelist"} <= targets("sef.datasets", "lazy_string")
    assert {"sef.engine", "sef.trained"} <= targets("sef", "lazy_string")
    assert "sef.distributed" in targets("sef.engine.loop", "import")  # from sef import distributed


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_nothing_above_it(module):
    every = [
        (target, line, kind) for kind, hits in imports(module).items() for target, line in hits
    ]
    assert [hit for hit in every if _above_core(hit[0])] == [], f"{module} reaches above the core"
    assert [hit for hit in every if hit[0] not in CORE_MAY_IMPORT] == [], (
        f"{module} imports beyond {CORE_MAY_IMPORT}"
    )


@pytest.mark.parametrize("module", LEAVES)
def test_the_leaves_the_core_imports_import_nothing_of_sefs_but_each_other(module):
    every = [(target, line) for hits in imports(module).values() for target, line in hits]
    assert [hit for hit in every if hit[0] not in LEAVES] == [], f"{module} is no leaf"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycle_counting_imports_inside_functions_and_lazy_names():
    graph = _graph(("import", "lazy_string"))
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_no_import_cycle_counting_type_checking_imports_too():
    graph = _graph(("import", "lazy_string", "type_checking"))
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_lazy_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
