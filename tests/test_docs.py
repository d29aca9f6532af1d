"""README and docs/ link only to files that exist, their Python examples call sef as its
signatures allow, and README stays a short user's document."""

import ast
import collections
import functools
import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_point_to_existing_files(page):
    targets = [t.split("#")[0] for t in LINK.findall(page.read_text())]
    local = [t for t in targets if t and not re.match(r"[a-z]+://", t)]
    missing = [t for t in local if not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"


def test_readme_is_about_two_hundred_lines_with_two_set_up_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 220
    set_up = text.split("## Set up")[1].split("\n## ")[0]
    commands = re.findall(r"```bash\n(.*?)\n```", set_up, re.S)
    assert commands == ["pip install . && sef train", 'pip install -e ".[dev]" && pytest']


@functools.cache
def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated one suffixed -1, -2, ... (code blocks hold no headings)."""
    anchors: set[str] = set()
    seen: collections.Counter[str] = collections.Counter()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (heading := re.match(r"#{1,6} +(.*)", line)):
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            anchors.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
            seen[slug] += 1
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_to_a_section_name_one_that_exists(page):
    wrong = []
    for target in LINK.findall(page.read_text()):
        path, _, anchor = target.partition("#")
        if anchor and not re.match(r"[a-z]+://", path):
            linked = page.parent / path if path else page
            if linked.suffix == ".md" and anchor not in _anchors(linked):
                wrong.append(target)
    assert not wrong, f"{page.name} links to sections that do not exist: {wrong}"


def _documented_calls(block: str):
    """(dotted name, object, call) for each call in a Python block to something it imports from
    sef: ``from sef.tta import TTAViews`` then ``TTAViews(...)``, or ``sef.SEFLoss(...)``."""
    tree = ast.parse(block)
    names = {"sef": "sef"}  # a block may take `import sef` as read
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sef":
            names |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.asname or a.name: a.name for a in node.names if a.name.startswith("sef")}
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        parts, func = [], call.func
        while isinstance(func, ast.Attribute):
            parts.insert(0, func.attr)
            func = func.value
        if not isinstance(func, ast.Name) or func.id not in names:
            continue
        dotted = ".".join([names[func.id], *parts])
        module, _, rest = dotted.partition(".")
        target = importlib.import_module(module)
        for attribute in rest.split(".") if rest else []:
            try:
                target = getattr(target, attribute)
            except AttributeError:
                target = importlib.import_module(f"{target.__name__}.{attribute}")
        yield dotted, target, call


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_examples_call_sef_with_arguments_its_signatures_take(page):
    """Each call to sef in a page's Python examples (the blocks that import or call sef; the
    others are excerpts of files) binds to the current signature: a renamed or dropped keyword
    is caught here, not by a user. Calls needing an extra not installed here are checked where
    it is."""
    wrong = []
    blocks = re.findall(r"```python\n(.*?)\n```", page.read_text(), re.S)
    for block in (b for b in blocks if re.search(r"^(from|import) sef|^sef\.", b, re.M)):
        try:
            calls = list(_documented_calls(block))
        except ImportError as missing:
            assert not (missing.name or "sef").startswith("sef"), missing
            continue
        for dotted, target, call in calls:
            if any(isinstance(a, ast.Starred) for a in call.args) or any(
                k.arg is None for k in call.keywords
            ):
                continue
            try:
                inspect.signature(target).bind(
                    *[None] * len(call.args), **{k.arg: None for k in call.keywords}
                )
            except TypeError as problem:
                wrong.append(f"{dotted}: {problem}")
    assert not wrong, f"{page.name}: {wrong}"
