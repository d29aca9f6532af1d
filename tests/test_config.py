"""Config: presets carry the paper's recipe; bad keys, types and values fail in one line."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from sef.config import (
    Config,
    apply_overrides,
    apply_values,
    config_from_dict,
    config_to_dict,
    describe_preset,
    flatten,
    load_config_file,
    load_preset,
    parse_overrides,
    preset_names,
    resolve_config,
    run_name,
    save_config,
    stored_values,
)
from sef.datasets import RECORDS
from sef.errors import ConfigError, said_to_command

PAPER = {  # dataset: (G, lr, recipe) from Section III-A
    "cub": (4, 0.01, "resize_crop"),
    "cars": (2, 0.01, "resize"),
    "dogs": (2, 0.001, "resize"),
    "aircraft": (3, 0.01, "resize_crop"),
}
TABLE_III = {  # method suffix: (lam, gamma, phi)
    "-groups-only": (0.0, 0.0, 1.0),
    "-matching-only": (0.05, 0.05, 0.0),
    "-matching-groups": (0.05, 0.05, 1.0),
    "": (1.0, 0.05, 1.0),
}


@pytest.mark.parametrize("dataset", PAPER)
@pytest.mark.parametrize("backbone", ["resnet50", "resnet18"])
def test_paper_presets_hold_the_recipe(dataset: str, backbone: str) -> None:
    groups, lr, recipe = PAPER[dataset]
    c = load_preset(f"{dataset}-{backbone}")
    assert (c.model.backbone, c.model.weights, c.model.groups) == (
        backbone,
        "IMAGENET1K_V1",
        groups,
    )
    assert (c.data.dataset, c.data.recipe, c.data.image_size) == (dataset, recipe, 448)
    assert (c.data.train_split, c.data.eval_split) == ("trainval", "test")
    o = c.optim
    assert (o.optimizer, o.lr, o.momentum, o.batch_size, o.epochs) == ("sgd", lr, 0.9, 32, 50)
    assert (o.scheduler, o.step_size, o.lr_decay) == ("step", 20, 0.1)
    assert o.weight_decay == 0.0  # the authors' code: SGD(lr, momentum=0.9), no weight decay
    for suffix, weights in TABLE_III.items():
        loss = load_preset(f"{dataset}-{backbone}{suffix}").loss
        assert (loss.lam, loss.gamma, loss.phi) == weights
        # the group loss the authors' code computes; their teacher P_w is not detached
        assert (loss.group_variant, loss.detach_teacher) == ("reference", False)
        assert (loss.lam_warmup, loss.phi_warmup, loss.norm_floor, loss.lam_until) == (0, 0, 0, 0)
    plain = load_preset(f"{dataset}-{backbone}-plain")
    assert (plain.loss.lam, plain.loss.gamma, plain.loss.phi, plain.model.groups) == (0, 0, 0, 1)
    maxent = load_preset(f"{dataset}-{backbone}-maxent")
    assert (maxent.loss.lam, maxent.loss.gamma, maxent.loss.phi) == (1, 0, 0)


def test_demo_presets_weight_the_group_loss_at_a_tenth() -> None:
    """From scratch the paper's phi=1 costs accuracy on the demo (benchmarks/demo_ablation.py)."""
    for suffix, (lam, gamma, phi) in TABLE_III.items():
        loss = load_preset(f"demo{suffix}").loss
        assert (loss.lam, loss.gamma, loss.phi) == (lam, gamma, phi / 10)
    for suffix in ("-plain", "-maxent"):
        assert load_preset(f"demo{suffix}").loss.phi == 0


def test_a_preset_s_line_names_a_group_loss_other_than_the_reference_and_a_norm_floor() -> None:
    finetune, same_weights = (describe_preset(f"cub-resnet50-{m}") for m in
                              ("finetune", "matching-groups"))  # fmt: skip
    assert "lam/gamma/phi=0.05/0.05/1 (group_variant=paper, norm_floor=0.01)," in finetune
    assert "lam/gamma/phi=0.05/0.05/1," in same_weights and "group_variant" not in same_weights


def test_every_preset_loads_and_describes_itself_in_one_line() -> None:
    names = preset_names()
    # 7 methods: demo, 4 paper datasets and 2 own-data readers x 2 backbones, birds32 and
    # birds32b x mobilenet_v2
    assert names[0] == "demo" and len(names) == len(set(names)) == 7 * (1 + 6 * 2 + 2)
    for name in names:
        assert load_preset(name).name == name
        assert "\n" not in describe_preset(name)
    demo = resolve_config()
    assert demo.name == "demo" and demo.model.weights is None and demo.data.dataset == "demo"


def test_listing_the_presets_parses_each_fragment_file_once(monkeypatch) -> None:
    """`sef presets` describes every preset: it parsed the same few files 346 times (0.5 s)."""
    from sef.config import presets

    parsed = []
    load = presets.load_yaml
    monkeypatch.setattr(presets, "load_yaml", lambda text: parsed.append(text) or load(text))
    for name in preset_names():
        describe_preset(name)
    assert len(parsed) == len(set(parsed))


def test_birds32_presets_fine_tune_imagenet_mobilenet_v2_with_the_paper_recipe_shape() -> None:
    c = load_preset("birds32-mobilenet_v2")
    assert (c.model.backbone, c.model.weights, c.model.output_stride) == (
        "mobilenet_v2", "IMAGENET1K_V1", 16,
    )  # fmt: skip
    assert (c.data.dataset, c.data.root, c.data.image_size, c.data.recipe) == (
        "birds32", None, 128, "resize",
    )  # fmt: skip
    assert (c.optim.optimizer, c.optim.momentum, c.optim.scheduler, c.optim.lr) == (
        "sgd", 0.9, "step", 0.01,
    )  # fmt: skip
    assert c.optim.step_size / c.optim.epochs == pytest.approx(0.4, abs=0.02)  # paper: 20 of 50
    assert (c.loss.lam, c.loss.gamma, c.loss.phi, c.model.groups) == (1, 0.05, 1, 5)
    plain = load_preset("birds32-mobilenet_v2-plain")
    assert (plain.loss.lam, plain.loss.phi, plain.model.groups) == (0, 0, 1)
    assert plain.optim == c.optim and plain.data == c.data


@pytest.mark.parametrize(
    "method", ["", "-plain", "-maxent", "-groups-only", "-matching-only", "-matching-groups"]
)
def test_birds32b_presets_are_birds32s_on_birds32b(method) -> None:
    """A study's presets carry over to the confirmation set with nothing but the data changed."""
    old, new = (load_preset(f"{data}-mobilenet_v2{method}") for data in ("birds32", "birds32b"))
    assert (new.name, new.data.dataset) == (f"birds32b-mobilenet_v2{method}", "birds32b")
    moved = dataclasses.replace(old.data, dataset="birds32b")
    assert dataclasses.replace(old, name=new.name, data=moved) == new
    assert describe_preset(new.name) == describe_preset(old.name).replace("birds32", "birds32b")


def test_overrides_parse_yaml_values_and_nest_only_in_options() -> None:
    c = apply_overrides(
        load_preset("cub-resnet50"),
        ["optim.lr=1e-3", "model.weights=null", "run.amp=bf16", "data.options.size=8"],
    )
    assert c.optim.lr == 0.001 and c.model.weights is None and c.run.amp == "bf16"
    assert c.data.options == {"size": 8}
    assert c.optim.epochs == 50  # untouched keys keep the preset's value


def test_reader_options_and_backbone_args_are_one_value_each_not_sections() -> None:
    c = apply_overrides(
        load_preset("demo"), ["data.options.per_class=4", "model.backbone_args.depth=1"]
    )
    flat = flatten(config_to_dict(c))
    assert flat["data.options"] == {"per_class": 4}
    assert flat["model.backbone_args"] == {"depth": 1}
    assert flat["optim.lr"] == c.optim.lr
    assert not [key for key in flat if key.count(".") > 1]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=0.1", "unknown config key 'lrr' in section 'optim'; did you mean 'lr'?"),
        ("optimizer.lr=0.1", "unknown config key 'optimizer' at the top level"),
        ("optim.epochs=ten", "optim.epochs must be int, got 'ten'"),
        ("optim.epochs=2.5", "optim.epochs must be int"),
        ("loss.lam=-1", "loss.lam=-1.0 is invalid: it must be a number >= 0"),
        ("loss.gamma=.nan", "loss.gamma=nan is invalid"),
        ("loss.lam_warmup=-2", "loss.lam_warmup=-2.0 is invalid: it must be a number >= 0"),
        ("run.amp=fp8", "run.amp='fp8' is invalid: it must be one of none, bf16, fp16"),
        # trained, and its first step left NaN weights (8 of the demo model's 54 tensors)
        ("optim.weight_decay=inf", "optim.weight_decay=inf is invalid: it must be a number >= 0"),
        ("model.groups=0", "model.groups=0 is invalid"),
        ("optim.accumulate=0", "optim.accumulate=0 is invalid: it must be a positive integer"),
        (  # the demo's batch of 32 cannot be taken in 3 equal micro-batches
            "optim.accumulate=3",
            "optim.accumulate=3 is invalid: it must be a divisor of optim.batch_size=32, which "
            "each step takes in that many equal micro-batches",
        ),
        ("optim.lr", "must look like section.key=value"),
        # a key of another section, or no section: the key's own spelling, not a guess
        ("data.lr=0.1", "key 'lr' in section 'data'; it is a key of section 'optim' (optim.lr);"),
        ("epochs=3", "config key 'epochs' must look like section.key (optim.epochs)"),
        ("optim={lr: 0.5}", "section.key; set the keys of section optim one by one: optim.KEY="),
        ("optim.lr.x=1", "too deep"),
        # the fourth part was set in the section itself: "unknown config key 'b' in section 'data'"
        ("data.options.a.b=1", "config key 'data.options.a.b' is too deep"),
        ("run.loggers=neptune", "run.loggers='neptune' is invalid: it must be one of tensorboard"),
        ("run.loggers=[wandb,none]", "it must be none alone, or some of tensorboard, wandb"),
        ("run.loggers=[mlflow,mlflow]", "it must be none alone, or some of"),
        (  # quoted as YAML read it, not as ['wandb', 'none'], which the user never wrote
            "run.loggers=[wandb,off]",
            "run.loggers=['wandb', False] is invalid: it must be none alone, or some of "
            "tensorboard, wandb, mlflow, each once (an unquoted off, no, false or null in it "
            "means none)",
        ),
        (
            "run.loggers=3",
            "run.loggers must be one of tensorboard, wandb, mlflow, none, or a list of them, got 3",
        ),
        ("run.loggers=on", "run.loggers must be one of tensorboard, wandb, mlflow, none, or a"),
        # numpy refused it mid-run ("expected non-negative integer"), torch's sampler overflowed
        ("run.seed=-1", "run.seed=-1 is invalid: it must be an integer from 0 to"),
        (f"run.seed={2**64}", f"run.seed={2**64} is invalid: it must be an integer from 0 to"),
        (
            "data.holdout=random",
            "data.holdout='random' is invalid: it must be one of stable, ranked",
        ),
        (  # read_split passed it beside data.holdout: a TypeError's traceback
            "data.options.holdout=ranked",
            "data.options.holdout='ranked' is invalid: it must be set as data.holdout, not as a",
        ),
        ("data.options.seed=1", "it must be set as run.seed, not as a reader option"),
    ],
)
def test_bad_overrides_fail_in_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(load_preset("demo"), [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_loggers_are_a_list_and_one_name_is_a_list_of_it() -> None:
    demo = load_preset("demo")
    assert demo.run.loggers == ["tensorboard"]
    assert apply_overrides(demo, ["run.loggers=wandb"]).run.loggers == ["wandb"]
    both = apply_overrides(demo, ["run.loggers=[wandb, mlflow]"])
    assert both.run.loggers == ["wandb", "mlflow"]
    assert flatten(config_to_dict(both))["run.loggers"] == ["wandb", "mlflow"]


@pytest.mark.parametrize("word", ["off", "no", "false", "null", "none", "[]", "[off]"])
def test_the_words_for_no_logger_read_as_none(word: str, tmp_path: Path) -> None:
    """``loggers: off`` (YAML's False) or ``--set run.loggers=false`` was refused with "must be a
    list, got False"; ``tensorboard: false``, the older switch, stays a switch of its own."""
    path = tmp_path / "mine.yaml"
    path.write_text(f"base: demo\nrun:\n  loggers: {word}\n")
    assert load_config_file(path).run.loggers == ["none"]
    demo = load_preset("demo")
    assert apply_overrides(demo, [f"run.loggers={word}"]).run.loggers == ["none"]
    old_switch = apply_overrides(demo, ["run.tensorboard=false"]).run
    assert (old_switch.tensorboard, old_switch.loggers) == (False, ["tensorboard"])


def test_unknown_preset_suggests_close_names() -> None:
    with pytest.raises(
        ConfigError, match="unknown preset 'cub-resnet5'; did you mean cub-resnet50"
    ):
        load_preset("cub-resnet5")
    with pytest.raises(
        ConfigError, match="unknown preset 'CUB-ResNet50'; did you mean cub-resnet50,"
    ):
        load_preset("CUB-ResNet50")  # no suggestion at all: the names were compared in case


@pytest.mark.parametrize("dataset", ["cub", "Cars", "folder", "birds32"])
def test_a_datasets_name_as_a_preset_suggests_its_presets(dataset: str) -> None:
    """`--preset cub` suggested nothing (`aircraft`, long enough, got its two): a dataset's
    presets name a backbone too."""
    backbones = RECORDS[dataset.lower()].backbones
    suggested = ", ".join(f"{dataset.lower()}-{backbone}" for backbone in backbones)
    listed = "call sef.config.preset_names\\(\\)"  # the command says `sef presets`
    with pytest.raises(ConfigError, match=f"did you mean {suggested}\\? {listed}"):
        load_preset(dataset)


def test_a_preset_named_with_another_presets_backbone_says_to_pass_it_with_backbone() -> None:
    """folder-mobilenet_v2-finetune suggested birds32-mobilenet_v2-finetune, which trains on
    the built-in birds32, not one's own folder; the own-data presets take --backbone
    (model.backbone)."""
    with pytest.raises(ConfigError) as refused:
        load_preset("folder-mobilenet_v2-finetune")
    assert str(refused.value) == (
        "unknown preset 'folder-mobilenet_v2-finetune': the folder presets name resnet50 or "
        "resnet18; train mobilenet_v2 with the preset folder-resnet50-finetune and "
        "model.backbone=mobilenet_v2"
    )
    with said_to_command():  # `sef train --preset csv-mobilenet_v2`
        with pytest.raises(ConfigError, match="train mobilenet_v2 with --preset csv-resnet50 --b"):
            load_preset("csv-mobilenet_v2")
    with pytest.raises(ConfigError, match="did you mean cub-resnet50"):
        load_preset("cub-resnet5")  # no backbone of any preset: a typo


def test_yaml_file_with_base_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("base: dogs-resnet18\noptim:\n  epochs: 3\ndata:\n  root: /data/dogs\n")
    c = load_config_file(path)
    assert (c.name, c.optim.epochs, c.optim.lr, c.data.root) == (
        "dogs-resnet18",
        3,
        0.001,
        "/data/dogs",
    )
    save_config(c, tmp_path / "resolved.yaml")
    assert config_to_dict(load_config_file(tmp_path / "resolved.yaml")) == config_to_dict(c)
    path.write_text("model: [1, 2]\n")
    with pytest.raises(ConfigError, match="section model must be a mapping"):
        load_config_file(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "missing.yaml")


def test_a_config_shows_in_a_notebook_and_print_as_its_yaml_not_one_long_line() -> None:
    """A notebook cell ending in a config showed the dataclass's repr, one line of some 1,000
    characters; equality, repr and what is saved stay as they were."""
    config = resolve_config("demo", overrides=["optim.epochs=3"])
    shown: list[str] = []
    config._repr_pretty_(SimpleNamespace(text=shown.append), cycle=False)  # as IPython calls it
    assert shown == [str(config)] and len(repr(config)) > 500
    lines = str(config).splitlines()
    assert lines[0] == "name: demo" and "  epochs: 3" in lines and max(map(len, lines)) < 100
    assert yaml.safe_load(str(config)) == config_to_dict(config)
    assert repr(config).startswith("Config(name='demo', model=ModelConfig(")
    assert config == resolve_config("demo", overrides=["optim.epochs=3"])


def test_what_sef_presets_prints_of_a_preset_is_a_config_file_of_it(tmp_path: Path, capsys) -> None:
    """`sef presets NAME > my.yaml` starts a config file (docs/training.md): every preset's text
    loads as that preset, and any config's YAML (a run's config.yaml, print(config)) as itself."""
    from sef.cli import presets

    path = tmp_path / "my.yaml"
    for name in preset_names():
        presets.run(SimpleNamespace(name=name))
        path.write_text(capsys.readouterr().out)
        assert load_config_file(path) == load_preset(name), name
    changed = resolve_config("folder-resnet18", overrides=[
        "data.root='/data/my birds: #1'", "data.options.extensions=[.png, .jpg]", "run.out='no'",
        "model.backbone_args.drop_rate=0.1", "model.weights=none", "run.loggers=[none]",
        "run.amp=bf16", "data.bad_images=off", "optim.scheduler=none", "optim.lr=1e-5",
    ])  # fmt: skip
    for text in (changed.to_yaml(), str(changed)):
        path.write_text(text)
        assert load_config_file(path) == changed


def test_the_list_of_presets_as_a_config_file_says_what_it_is_in_one_line(
    tmp_path: Path, capsys
) -> None:
    """`sef presets > my.yaml` (or `| grep cub`) then --config my.yaml answered "unknown config key
    'demo    demo, SEF' at the top level": YAML reads each line of the list as a key."""
    from sef.cli import presets

    presets.run(SimpleNamespace(name=None))
    listing = capsys.readouterr().out
    path = tmp_path / "my.yaml"
    for text in (listing, listing.splitlines()[9] + "\n"):
        path.write_text(text)
        with pytest.raises(ConfigError) as error:
            load_config_file(path)
        assert str(error.value) == (
            f"config file {path} is the list of presets `sef presets` prints, not a config; "
            f"`sef presets NAME > {path}` writes one preset's config to edit, or train a preset "
            f"as it is with resolve_config(NAME)"
        )
    path.write_text("demo\n")  # a preset's name alone is no list: said as any other such file
    with pytest.raises(ConfigError, match="must hold a mapping of sections, not 'demo'"):
        load_config_file(path)


def test_a_config_file_may_start_from_another_relative_to_its_own_folder(tmp_path: Path) -> None:
    """``base: a.yaml`` was read as a preset name ("unknown preset 'a.yaml'"), so settings
    shared by several experiments had to be copied into each."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "a.yaml").write_text("base: cub-resnet18\noptim: {epochs: 3}\n")
    (tmp_path / "shared" / "b.yaml").write_text("base: a.yaml\noptim: {lr: 0.5}\n")
    c = load_config_file(tmp_path / "shared" / "b.yaml")
    assert (c.name, c.model.backbone, c.optim.epochs, c.optim.lr) == (
        "cub-resnet18",
        "resnet18",
        3,
        0.5,
    )
    (tmp_path / "shared" / "a.yaml").write_text("base: ./b.yaml\n")
    with pytest.raises(ConfigError) as cycle:
        load_config_file(tmp_path / "shared" / "b.yaml")
    shared = tmp_path / "shared"
    assert str(cycle.value) == (
        f"config file {shared / 'a.yaml'} names ./b.yaml as its base, a cycle: {shared / 'b.yaml'} "
        f"-> {shared / 'a.yaml'} -> {shared / 'b.yaml'}; remove one of these base: lines"
    )
    (tmp_path / "shared" / "a.yaml").write_text("base: gone.yaml\n")
    with pytest.raises(
        ConfigError, match=r"gone.yaml does not exist; fix the base: line of .*a.yaml$"
    ):
        load_config_file(tmp_path / "shared" / "b.yaml")


def test_a_section_whose_keys_are_all_commented_out_changes_nothing(tmp_path: Path) -> None:
    """``optim:`` over commented keys is null to YAML: it stopped the run ("config section optim
    must be a mapping, got None"), and merged onto a base would have dropped the base's optim."""
    path = tmp_path / "mine.yaml"
    path.write_text("base: cub-resnet18\noptim:\n  # lr: 0.1\n")
    assert config_to_dict(load_config_file(path)) == config_to_dict(load_preset("cub-resnet18"))
    path.write_text("optim:\n  # lr: 0.1\n")
    assert load_config_file(path).optim == Config().optim


@pytest.mark.parametrize("word", ["off", "Off", "OFF"])
def test_documented_words_that_yaml_reads_as_booleans_keep_their_meaning(
    word: str, tmp_path: Path
) -> None:
    """YAML 1.1 reads an unquoted off/no/on/yes as a boolean; a field whose words include one
    takes it back, from a YAML file and from --set alike."""
    path = tmp_path / "mine.yaml"
    path.write_text(f"base: demo\ndata:\n  bad_images: {word}\n")
    assert load_config_file(path).data.bad_images == "off"
    overridden = apply_overrides(load_preset("demo"), [f"data.bad_images={word}"])
    assert overridden.data.bad_images == "off"


def test_null_and_boolean_words_follow_one_rule() -> None:
    c = apply_overrides(
        load_preset("cub-resnet50"),
        ["model.weights=none", "run.out=None", "run.tensorboard=off", "run.compile=yes"],
    )
    assert c.model.weights is None and c.run.out is None
    assert c.run.tensorboard is False and c.run.compile is True
    assert apply_overrides(c, ["run.out='no'"]).run.out == "no"  # a quoted word stays a word
    with pytest.raises(ConfigError) as info:  # a free string field cannot guess the word
        apply_overrides(c, ["run.out=no"])
    assert str(info.value) == (
        "config value run.out must be str, got False: YAML reads an unquoted yes, no, on, off, "
        "true, false or null that way; quote the word, in the YAML file or as "
        "\"run.out='WORD'\" in the overrides"
    )
    with said_to_command(), pytest.raises(ConfigError) as info:  # `sef train --set run.out=no`
        apply_overrides(c, ["run.out=no"])
    assert str(info.value).endswith(" in the YAML file or as --set \"run.out='WORD'\"")
    with pytest.raises(ConfigError) as info:  # no word of bad_images means true: none to quote
        apply_overrides(c, ["data.bad_images=yes"])
    assert str(info.value) == (
        "config value data.bad_images must be one of stop, skip, off, got True (YAML reads an "
        "unquoted yes, no, on, off, true, false or null that way); fix it in the YAML file or "
        "pass data.bad_images=VALUE in the overrides"
    )
    with said_to_command(), pytest.raises(ConfigError) as info:
        apply_overrides(c, ["data.bad_images=yes"])
    assert str(info.value).endswith(" in the YAML file or pass --set data.bad_images=VALUE")


def test_a_key_nested_too_deep_is_given_as_its_reader_gives_overrides() -> None:
    demo, deep = load_preset("demo"), ["data.options.a.b.c=1"]
    with pytest.raises(ConfigError, match="a mapping: data.options.a={b: ...} in the overrides$"):
        apply_overrides(demo, deep)
    with said_to_command(), pytest.raises(ConfigError, match="mapping: --set data.options.a={b: "):
        apply_overrides(demo, deep)


@pytest.mark.parametrize("word", ["off", "no", "false", "null", "~"])
def test_a_field_with_the_word_none_reads_false_and_null_as_none(word: str, tmp_path: Path):
    """``amp: off`` was refused ("must be str, got False ... quote the word"), and quoting it
    then gave "run.amp='off' is invalid"."""
    path = tmp_path / "mine.yaml"
    path.write_text(f"base: demo\nrun:\n  amp: {word}\noptim:\n  scheduler: {word}\n")
    config = load_config_file(path)
    assert (config.run.amp, config.optim.scheduler) == ("none", "none")
    assert apply_overrides(load_preset("demo"), [f"run.amp={word}"]).run.amp == "none"


@pytest.mark.parametrize(
    ("dataset", "stored"), [("folder", "ranked"), ("csv", "ranked"), ("cub", "stable")]
)
def test_a_stored_own_data_config_without_a_holdout_held_out_by_rank(
    dataset: str, stored: str, tmp_path: Path
) -> None:
    """Runs saved before data.holdout drew their own data's val and test by rank: evaluating and
    resuming them must too; a config a user writes, and a new run, hold out stably (the
    benchmarks ignore it: theirs is ranked whatever it says)."""
    config = apply_overrides(load_preset("demo"), [f"data.dataset={dataset}"])
    assert config.data.holdout == "stable"
    values = config_to_dict(config)
    del values["data"]["holdout"]  # as a checkpoint or config.yaml saved before it holds it
    assert config_from_dict(stored_values(values)).data.holdout == stored
    save_config(config, tmp_path / "config.yaml")
    old = (tmp_path / "config.yaml").read_text().replace("  holdout: stable\n", "")
    (tmp_path / "config.yaml").write_text(old)
    assert load_config_file(tmp_path / "config.yaml", stored=True).data.holdout == stored
    assert load_config_file(tmp_path / "config.yaml").data.holdout == "stable"  # a user's file
    values["data"]["holdout"] = "stable"  # a run saved since keeps what it says
    assert stored_values(values) == values


def test_the_cache_setting_takes_its_words_or_a_folder(tmp_path: Path) -> None:
    c = load_preset("cub-resnet50")
    assert c.data.cache == "off"
    assert apply_overrides(c, ["data.cache=off"]).data.cache == "off"  # YAML read False
    assert apply_overrides(c, ["data.cache=auto"]).data.cache == "auto"
    assert apply_overrides(c, [f"data.cache={tmp_path}"]).data.cache == str(tmp_path)
    with pytest.raises(ConfigError, match="data.cache must be str, got True: YAML reads"):
        apply_overrides(c, ["data.cache=on"])
    with pytest.raises(ConfigError, match="data.cache=' ' is invalid: it must be off, auto or"):
        apply_overrides(c, ["data.cache=' '"])


@pytest.mark.parametrize(("dataset", "backbone"), [("folder", "resnet50"), ("csv", "resnet18")])
def test_own_data_presets_hold_the_paper_recipe_on_the_users_reader(
    dataset: str, backbone: str
) -> None:
    c = load_preset(f"{dataset}-{backbone}")
    assert (c.data.dataset, c.data.recipe, c.data.image_size) == (dataset, "resize_crop", 448)
    assert (c.model.backbone, c.model.weights, c.model.groups) == (backbone, "IMAGENET1K_V1", 2)
    assert (c.optim.lr, c.optim.epochs, c.optim.scheduler) == (0.01, 50, "step")
    plain = load_preset(f"{dataset}-{backbone}-plain")
    assert (plain.data.dataset, plain.model.groups, plain.loss.phi) == (dataset, 1, 0)


@pytest.mark.parametrize(
    ("preset", "overrides", "name"),
    [
        ("folder-resnet50", ["data.root=~/data/birds/"], "birds-resnet50"),
        ("csv-resnet18-plain", ["data.root=/data/birds/labels.csv"], "birds-resnet18-plain"),
        ("csv-resnet18", ["data.root=/data/birds"], "birds-resnet18"),
        ("demo", ["data.dataset=folder", "data.root=/data/birds"], "birds"),
        ("cub-resnet50", ["data.dataset=dogs", "data.root=/data/dogs"], "dogs-resnet50"),
        ("cub-resnet50", ["data.root=/data/CUB_200_2011"], "cub-resnet50"),
        ("demo-plain", ["data.root=/tmp/cache"], "demo-plain"),
        ("folder-resnet50", [], "folder-resnet50"),
    ],
)
def test_runs_are_named_after_their_data(preset: str, overrides: list[str], name: str) -> None:
    assert run_name(apply_overrides(load_preset(preset), overrides)) == name


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("Mes données, été", "Mes données, été-resnet18"),
        (os.fsdecode(b"r\xe9sultats"), "r\ufffdsultats-resnet18"),  # TensorBoard needs UTF-8
        ("八" * 84, "八" * 79 + "~"),  # 252 bytes: with -resnet18, too long for a file name
    ],
)
def test_a_run_named_after_a_folder_gets_a_name_a_run_folder_can_have(folder, name):
    config = apply_overrides(load_preset("folder-resnet18"), [f"data.root=/data/{folder}"])
    named = run_name(config)
    assert named.startswith(name) and named.endswith("-resnet18")
    assert len(named.encode()) <= 255 and named.encode().decode() == named


@pytest.mark.parametrize(
    ("preset", "backbone", "name"),
    [
        ("cub-resnet50", "resnet18", "cub-resnet18"),
        (
            "dogs-resnet18-plain",
            "timm:convnext_tiny.fb_in1k",
            "dogs-timm-convnext_tiny.fb_in1k-plain",
        ),
        ("demo", "resnet18", "demo-resnet18"),
        ("demo-plain", "timm:hf-hub:timm/vit_tiny", "demo-timm-hf-hub-timm-vit_tiny-plain"),
        ("birds32-mobilenet_v2-finetune", "resnet18", "birds32-resnet18-finetune"),
        ("cub-resnet50", "resnet50", "cub-resnet50"),
        ("demo", "small_cnn", "demo"),
    ],
)
def test_runs_are_named_after_the_backbone_they_train(
    preset: str, backbone: str, name: str
) -> None:
    # `--preset cub-resnet50 --backbone resnet18` trained in runs/cub-resnet50, where a real
    # cub-resnet50 run then met a resnet18 one
    assert run_name(apply_values(load_preset(preset), {"model.backbone": backbone})) == name


def test_own_data_and_a_config_files_base_name_the_backbone_too(tmp_path: Path) -> None:
    own = {"model.backbone": "mobilenet_v2", "data.root": "/data/birds"}
    assert run_name(apply_values(load_preset("folder-resnet50"), own)) == "birds-mobilenet_v2"
    path = tmp_path / "mine.yaml"
    path.write_text("base: cub-resnet50\nmodel: {backbone: resnet18}\n")
    assert run_name(load_config_file(path)) == "cub-resnet18"


@pytest.mark.parametrize("value", ["5", "yes"])
def test_a_bad_name_in_a_config_file_is_fixed_there(value: str, tmp_path: Path) -> None:
    # the message said "pass --set name=VALUE", which --set refuses (not section.key)
    path = tmp_path / "mine.yaml"
    path.write_text(f"base: demo\nname: {value}\n")
    with pytest.raises(ConfigError, match="config value name must be str") as error:
        load_config_file(path)
    assert str(error.value).endswith(" in the YAML file")


def test_a_config_files_own_name_stays() -> None:
    config = Config(name="my-experiment")
    config.data.dataset, config.data.root = "folder", "/data/birds"
    assert run_name(config) == "my-experiment"


def test_a_key_given_twice_in_an_override_is_refused_not_taken_as_text() -> None:
    with pytest.raises(ConfigError) as error:
        parse_overrides(["data.options={bbox_crop: true, bbox_crop: false}"])
    assert str(error.value) == (
        "override 'data.options={bbox_crop: true, bbox_crop: false}': duplicate key 'bbox_crop' "
        "(first on line 1)"
    )


def test_a_key_given_twice_in_a_config_file_is_refused_naming_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("base: demo\noptim:\n  epochs: 1\noptim:\n  lr: 0.5\n")
    with pytest.raises(ConfigError) as error:
        resolve_config(config_file=path)
    assert str(error.value) == (
        f"config file {path} is not valid YAML: line 4, column 1: duplicate key 'optim' (first on "
        f"line 2)"
    )
    path.write_text("base: demo\noptim:\n  epochs: 1\n  lr: 0.1\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"line 5, column 3: duplicate key 'epochs' \(first on "):
        resolve_config(config_file=path)


def test_a_config_file_indented_with_a_tab_says_to_use_spaces(tmp_path: Path) -> None:
    path = tmp_path / "tab.yaml"
    path.write_text("base: demo\noptim:\n\tlr: 0.1\n")
    with pytest.raises(ConfigError) as error:
        load_config_file(path)
    assert str(error.value) == (
        f"config file {path} is not valid YAML: line 3, column 1: found character '\\t' that "
        f"cannot start any token; YAML takes no tabs there: use spaces"
    )


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")
def test_configs_are_read_and_written_by_libyaml_and_errors_keep_pyyaml_s_words(
    tmp_path: Path, monkeypatch
) -> None:
    """PyYAML's pure-Python parser and emitter read and wrote every config (the presets' 20
    fragments: some 14 ms, 1 ms by libyaml). A text libyaml refuses is read again by PyYAML's,
    whose words and lines the errors above keep; one it cannot encode (surrogates: bytes of a
    folder name that are not UTF-8) is read and written by PyYAML's, as before."""
    from sef.config import values

    class Refused:
        def __init__(self, *args, **kwargs) -> None:
            raise AssertionError("PyYAML's pure-Python loader or dumper used")

    path = tmp_path / "my.yaml"
    path.write_text("base: demo\noptim:\n  epochs: 2\n")
    with monkeypatch.context() as patched:
        patched.setattr(values, "UniqueKeyLoader", Refused)
        patched.setattr(yaml, "SafeDumper", Refused)
        config = load_config_file(path)
        assert yaml.load(config.to_yaml(), Loader=yaml.CSafeLoader) == config_to_dict(config)
    assert config.optim.epochs == 2
    assert parse_overrides(["data.root=/data/\udc80birds"]) == {"data.root": "/data/\udc80birds"}
    config.data.root = "/data/\udc80birds"
    assert '  root: "/data/\\uDC80birds"\n' in config.to_yaml()


def test_a_micro_batch_is_the_batch_split_over_processes_and_micro_batches() -> None:
    config = apply_overrides(load_preset("demo"), ["optim.batch_size=32", "optim.accumulate=4"])
    assert [config.optim.micro_batch(n) for n in (1, 2, 4)] == [8, 4, 2]
    assert [config.optim.process_batch(n) for n in (1, 2, 4)] == [32, 16, 8]
