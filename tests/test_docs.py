"""README and docs/ link only to files that exist, their Python examples and the sef names and
calls in their text fit sef's signatures, the commands they show use options those commands take
(and print what a console example shows them printing),
the config keys, presets and dataset options they name exist (and docs/training.md lists every
key), the numbers a page
copies from a committed result file round to it, and README stays a short user's document."""

import argparse
import ast
import collections
import dataclasses
import functools
import importlib
import inspect
import itertools
import json
import re
from pathlib import Path

import pytest

from sef.cli import create_parser

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
        yield dotted, _resolve(dotted), call


def _resolve(dotted: str):
    """The object a dotted name such as ``sef.engine.fit`` names (ImportError or AttributeError
    where there is none)."""
    module, _, rest = dotted.partition(".")
    target = importlib.import_module(module)
    for attribute in rest.split(".") if rest else []:
        try:
            target = getattr(target, attribute)
        except AttributeError:
            target = importlib.import_module(f"{target.__name__}.{attribute}")
    return target


def _binding_error(target, call: ast.Call) -> str | None:
    """Why ``call``'s arguments do not fit ``target``'s signature, or None (also where a call
    unpacks arguments, or passes ``...`` for the arguments a text leaves out)."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(
        k.arg is None for k in call.keywords
    ):
        return None
    if any(isinstance(a, ast.Constant) and a.value is Ellipsis for a in call.args):
        return None
    try:
        inspect.signature(target).bind(
            *[None] * len(call.args), **{k.arg: None for k in call.keywords}
        )
    except TypeError as problem:
        return str(problem)
    return None


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
            if problem := _binding_error(target, call):
                wrong.append(f"{dotted}: {problem}")
    assert not wrong, f"{page.name}: {wrong}"


def _inline_code(page: Path) -> list[str]:
    """The page's inline code spans (outside code blocks), each on one line."""
    prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_sef_names_in_the_text_exist_and_its_calls_bind(page):
    """What the prose names in code (`sef.engine.planned_scheduler`, `sef.predict.predict_images(
    model, paths, top_k=5)`) exists, and a call there takes the arguments shown."""
    wrong = []
    for span in _inline_code(page):
        for dotted in re.findall(r"(?<![\w./])sef(?:\.[A-Za-z_]\w*)+", span):
            try:
                _resolve(dotted)
            except (ImportError, AttributeError) as problem:
                wrong.append(f"{dotted}: {problem}")
        try:
            calls = list(_documented_calls(span))
        except SyntaxError:
            continue  # prose around the name, not Python
        wrong += [
            f"{span}: {why}" for _, target, call in calls if (why := _binding_error(target, call))
        ]
    assert not wrong, f"{page.name}: {wrong}"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return actions[0].choices if actions else {}


def _shown_commands(page: Path) -> list[str]:
    """Each line of the page's shell blocks, and each inline code span, that runs `sef`."""
    blocks = re.findall(r"```(?:bash|console)\n(.*?)\n```", page.read_text(), re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [text for text in lines + _inline_code(page) if re.search(r"\bsef(\.cli)? [a-z]", text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_commands_shown_use_options_their_command_takes(page):
    """Each --option after `sef COMMAND [ACTION]` (or `-m sef.cli COMMAND`) in a page is one
    that command's parser takes, and each ACTION of `sef data` and `sef viz` is one of theirs: a
    renamed or dropped option or action is caught here. Placeholders
    (NAME, [--json], flip|crops) are the page's own business."""
    parser, wrong = create_parser(), []
    for text in _shown_commands(page):
        for command, rest in re.findall(r"\bsef(?:\.cli)? ([a-z]+)((?: +[^\s#|&;`]+)*)", text):
            if (chosen := _subcommands(parser).get(command)) is None:
                continue  # "sef reads ..." in prose
            words = rest.split()
            actions = _subcommands(chosen)
            if words and words[0] in actions:
                chosen = actions[words[0]]
            elif actions and words and words[0].rstrip("\\") not in [*actions, "-h", "--help"]:
                wrong.append(f"{chosen.prog} {words[0]}: {text}")
            taken = {option for action in chosen._actions for option in action.option_strings}
            for word in words:
                option = re.match(r"\[?(--?[A-Za-z][\w-]*)", word)
                if option and option.group(1) not in taken:
                    wrong.append(f"{chosen.prog} {option.group(1)}: {text}")
    assert not wrong, f"{page.name}: {wrong}"


def _console_examples() -> list[tuple[str, str, str]]:
    """(page, command, output) of each ``console`` block that shows a `sef` command and all it
    prints: no data root of the user's (`~`) and no output left out (`…`)."""
    examples = []
    for page in PAGES:
        for block in re.findall(r"```console\n(.*?)\n```", page.read_text(), re.S):
            command, _, output = block.partition("\n")
            if command.startswith("$ sef ") and "~" not in command and "…" not in output:
                examples.append((page.name, command[2:], output))
    return examples


@pytest.mark.slow
@pytest.mark.parametrize(("page", "command", "output"), _console_examples())
def test_console_examples_print_what_the_page_shows(page, command, output, capsys):
    """What a page shows a command printing (`sef data check demo`, `sef info ...`) is what it
    prints, word for word (the counts once lost their thousands separators in a page)."""
    from sef.cli import main

    assert main(command.split()[1:]) == 0
    assert capsys.readouterr().out.rstrip("\n") == output, f"{page}: {command}"


def test_some_console_examples_are_checked():
    assert {command for _, command, _ in _console_examples()} >= {"sef data check demo"}


PRESET = re.compile(r"(?:--preset[ =]|sef presets |base: |resolve_config\(\")([a-z][\w.-]*[\w])")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_presets_a_page_names_exist(page):
    """`--preset cub-resnet50`, `sef presets NAME`, `base: cub-resnet18`: a renamed preset is
    caught here, not by a user's `unknown preset` (placeholders such as P are upper case)."""
    from sef.config.presets import preset_names

    wrong = sorted(set(PRESET.findall(page.read_text())) - set(preset_names()))
    assert not wrong, f"{page.name} names presets that do not exist: {wrong}"


CONFIG_KEY = re.compile(r"(?:--set[ =][\'\"]?|`)((?:loss|data|optim|run)\.\w+|model\.\w+(?=[=:]))")


def _config_keys() -> dict[str, list[str]]:
    """{section: [key, ...]} of the config, in their order."""
    from sef.config import Config

    config = Config()
    return {
        section.name: [key.name for key in dataclasses.fields(getattr(config, section.name))]
        for section in dataclasses.fields(config)
        if dataclasses.is_dataclass(getattr(config, section.name))
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_config_keys_a_page_names_exist(page):
    """`--set optim.lr=...`, `data.cache`, `model.pool=avg`: a renamed key is caught here, not by
    a user's `unknown config key`."""
    known = {f"{section}.{key}" for section, keys in _config_keys().items() for key in keys}
    wrong = sorted(set(CONFIG_KEY.findall(page.read_text())) - known)
    assert not wrong, f"{page.name} names config keys that do not exist: {wrong}"


def test_training_md_lists_every_config_key_under_its_section():
    """The Sections paragraph of docs/training.md is the reference of the config's keys: a new
    key must be named there, in its section's parentheses."""
    text = (ROOT / "docs" / "training.md").read_text().split("Sections: ")[1]
    parts = re.split(r"`(model|loss|data|optim|run)` \(", text.split("An unknown preset")[0])
    listed = dict(zip(parts[1::2], parts[2::2], strict=True))
    missing = {
        section: [key for key in keys if not re.search(rf"\b{key}\b", listed.get(section, ""))]
        for section, keys in _config_keys().items()
    }
    assert not any(missing.values()), f"docs/training.md does not list: {missing}"


def _rounds_to(shown: str, value: float) -> bool:
    """Whether ``shown`` ("0.22", "13.3") is ``value`` rounded to as many decimals as it shows."""
    decimals = len(shown.partition(".")[2])
    return abs(float(shown) - value) <= 0.5 * 10**-decimals + 1e-9


def _table_rows(text: str, after: str) -> list[list[str]]:
    """The cells of the first Markdown table after ``after``, its header dropped."""
    lines = text.split(after, 1)[1].splitlines()
    lines = list(itertools.dropwhile(lambda line: not line.startswith("|"), lines))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines))[2:]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in table]


def test_gradient_table_in_finetune_md_rounds_the_committed_json():
    """docs/finetune.md's table of each term's pull (|∇CE|, |∇ reference| (φ*), |∇ Eq. 4| (φ*))
    is copied from benchmarks/results/group_gradients.json: each number there is the JSON's,
    rounded as shown (it once said 0.23 for 0.2249)."""
    models = json.loads((ROOT / "benchmarks/results/group_gradients.json").read_text())["models"]
    rows = _table_rows((ROOT / "docs/finetune.md").read_text(), "### Why a threshold")
    wrong, checked = [], 0
    for label, *cells in rows:
        found = re.search(r"(reference|Eq\. 4) φ = ([\d.]+)", label)
        name = (
            f"groups-{'reference' if found.group(1) == 'reference' else 'paper'}-{found.group(2)}"
            if found
            else "imagenet start"
        )
        model = next(m for key, m in models.items() if key == name or f"/{name}-seed0/" in key)
        shown = re.findall(r"\d+\.\d+", " ".join(cells))
        keys = ["norm_ce", "norm_group_reference", "phi_star_reference"]
        keys += ["norm_group_paper", "phi_star_paper"]
        wrong += [
            f"{label}: {k} {s} for {model[k]}"
            for s, k in zip(shown, keys, strict=True)
            if not _rounds_to(s, model[k])
        ]
        checked += 1
    assert checked == len(models) and not wrong, wrong


def test_demo_confidence_quoted_rounds_the_committed_json():
    """docs/deployment.md and `sef predict --help` quote the demo model's top-1 and its right
    class's median probability from benchmarks/results/confidence.json (the help once kept the
    97.75 % and 0.47 of an earlier, unrecorded run after the page had moved on)."""
    runs = json.loads((ROOT / "benchmarks/results/confidence.json").read_text())["runs"]
    demo = next(run for run in runs if run["preset"] == "demo")
    help_text = " ".join(_subcommands(create_parser())["predict"].description.split())
    page = " ".join((ROOT / "docs/deployment.md").read_text().split())
    quoted = [
        re.search(r"at ([\d.]+) % top-1 got a median ([\d.]+)", help_text),
        re.search(r"\(([\d.]+) % test top-1 .*? median probability of ([\d.]+)", page),
    ]
    assert all(quoted), "the help or the page no longer quotes the demo's top-1 and median"
    for top1, median in (found.groups() for found in quoted):
        assert _rounds_to(top1, 100 * demo["top1"]), top1
        assert _rounds_to(median, demo["right_class_probability"]["median"]), median


def test_datasets_md_names_the_options_each_reader_takes():
    """The options column of docs/datasets.md's table names options its dataset's reader takes
    (`-o KEY=VALUE`, `data.options.KEY`): a renamed option is caught here."""
    from sef import datasets

    table = (ROOT / "docs" / "datasets.md").read_text().split("\n| name |")[1].split("\n\n")[0]
    rows = [re.split(r"(?<!\\)\|", line.strip("|")) for line in table.splitlines()[2:]]
    named = {row[0].strip(" `"): re.findall(r"`(\w+)[=`]", row[-1]) for row in rows}
    wrong = [
        f"{name}: {key}"
        for name, keys in named.items()
        for key in keys
        if key not in datasets.options(name)
    ]
    assert list(named) == list(datasets.NAMES) and not wrong, (list(named), wrong)


def test_readme_lists_every_dataset():
    """README's Datasets table names every dataset sef reads (birds32b was left out of it)."""
    from sef import datasets

    rows = _table_rows((ROOT / "README.md").read_text(), "## Datasets")
    listed = {name for row in rows for name in re.findall(r"`(\w+)`", row[0])}
    assert listed == set(datasets.NAMES), set(datasets.NAMES) ^ listed


def _yaml_blocks() -> list[tuple[str, str]]:
    """(page, text) of each ``yaml`` block of the pages."""
    return [
        (page.name, block)
        for page in PAGES
        for block in re.findall(r"```yaml\n(.*?)\n```", page.read_text(), re.S)
    ]


@pytest.mark.parametrize(("page", "block"), _yaml_blocks())
def test_yaml_examples_load_as_config_files(page, block, tmp_path):
    """A YAML block a page shows is a config file `sef train --config` takes as it stands (its
    `base:` a preset that exists, its keys in their sections, its values of the right type)."""
    from sef.config import load_config_file

    (tmp_path / "example.yaml").write_text(block)
    load_config_file(tmp_path / "example.yaml")


def test_some_yaml_examples_are_checked():
    assert any("base: " in block for _, block in _yaml_blocks())


def _config_settings(page: Path) -> list[tuple[str, dict]]:
    """(span, {section: {key: value}}) for each inline `key: value` setting of a page
    (`amp: off`, `data.holdout: stable`, `run: {out: null}`), read as a config file reads it."""
    from sef.config.values import load_yaml

    sections = _config_keys()
    section_of = {key: section for section, keys in sections.items() for key in keys}
    settings = []
    for span in _inline_code(page):
        found = re.fullmatch(r"(?:(\w+)\.)?(\w+): (.+)", span)
        if not found:
            continue
        section, key, value = found.groups()
        if section is None and key in sections:
            settings.append((span, {key: load_yaml(value)}))
        elif key in section_of and section in (None, section_of[key]):
            settings.append((span, {section_of[key]: {key: load_yaml(value)}}))
    return settings


@pytest.mark.parametrize(
    "page", [p for p in PAGES if p.name != "developing.md"], ids=lambda p: p.name
)
def test_settings_in_the_text_are_values_a_config_takes(page):
    """`bad_images: off`, `scheduler: null`, `data.cache: auto` in a page's text are values a
    config file takes (developing.md's are a dataset still to be added)."""
    from sef.config import config_from_dict
    from sef.errors import ConfigError

    wrong = []
    for span, values in _config_settings(page):
        try:
            config_from_dict(values)
        except ConfigError as problem:
            wrong.append(f"{span}: {problem}")
    assert not wrong, f"{page.name}: {wrong}"


def test_readme_cost_sentence_rounds_what_sef_info_prints():
    """README's "1.7 % more parameters in training (ResNet-50, 200 classes: 410,400 on top of
    23.9 M)" is what `sef info --backbone resnet50 --classes 200 --groups 4` prints, as method.md
    shows it (and its console example checks word for word), rounded."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    cost = r"([\d.]+) % more parameters in training \(ResNet-50, 200 classes: ([\d,]+) on top of "
    said = re.search(cost + r"([\d.]+) M\)", readme)
    shown = next(out for _, command, out in _console_examples() if "--backbone resnet50" in command)
    heads, deployed, extra = (
        re.search(rf"{row} +([\d,.]+)", shown).group(1).replace(",", "")
        for row in ("SEF group heads", "deployed model", "extra for training")
    )
    assert said, "README no longer says what SEF costs in parameters"
    assert said.group(2).replace(",", "") == heads
    assert _rounds_to(said.group(3), int(deployed) / 1e6), said.group(3)
    assert _rounds_to(said.group(1), float(extra)), said.group(1)


def test_readme_command_table_names_every_command_and_action():
    """README's Command line table is where a user meets the commands: each `sef` command and
    each action of `sef data` and `sef viz` is in it (a new one is not left to --help alone)."""
    table = (ROOT / "README.md").read_text().split("## Command line")[1].split("\n\n")[1]
    cells = [re.split(r"(?<!\\)\|", line)[1] for line in table.splitlines()[2:]]
    listed = {
        (command, action)
        for cell in cells
        for command, actions in re.findall(r"\bsef ([a-z]+)(?: ([a-z\\|]+))?", cell)
        for action in ["", *actions.split("\\|")]
    }
    commands = _subcommands(create_parser())
    wanted = {(name, "") for name in commands} | {
        (name, action) for name, parser in commands.items() for action in _subcommands(parser)
    }
    assert wanted <= listed, wanted - listed
