"""The benchmark yardstick and scripts: the naive C x C group loss equals sef.group_loss, and
every script runs in its quick mode and writes the JSON the docs quote from."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path

import pytest
import torch

import sef
from sef.seeding import SeededItems

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import common  # noqa: E402
from common import argv_without_memory_flags, paired_ratio, summarise  # noqa: E402
from naive_group_loss import naive_group_loss  # noqa: E402

SHAPES = [  # (B, C, H, W, G): even and uneven splits, G = 1, HW < C and HW >= C
    (2, 8, 2, 2, 4),
    (3, 10, 3, 3, 3),
    (2, 7, 4, 4, 2),
    (2, 9, 2, 3, 1),
    (2, 6, 5, 5, 4),
]


@pytest.mark.parametrize("variant", ["reference", "paper"])
@pytest.mark.parametrize("shape", SHAPES)
def test_naive_group_loss_equals_fast_in_value_and_gradient(shape, variant):
    *dims, groups = shape
    torch.manual_seed(sum(shape))
    features = torch.randn(*dims).relu() + 0.1 * torch.randn(*dims)
    naive_input = features.clone().requires_grad_()
    fast_input = features.clone().requires_grad_()
    naive = naive_group_loss(naive_input, groups, variant)
    fast = sef.group_loss(fast_input, groups, variant)
    naive.backward()
    fast.backward()
    assert naive.item() == pytest.approx(fast.item(), abs=1e-5)
    torch.testing.assert_close(naive_input.grad, fast_input.grad, atol=1e-5, rtol=1e-4)


def test_naive_group_loss_rejects_an_unknown_variant():
    with pytest.raises(ValueError, match="unknown group loss variant 'eq4'"):
        naive_group_loss(torch.rand(1, 4, 2, 2), 2, "eq4")


def test_summaries_and_paired_ratios():
    summary = summarise([4.0, 1.0, 3.0, 2.0])
    assert summary["median"] == 2.5
    assert (summary["min"], summary["max"], summary["n"]) == (1.0, 4.0, 4)
    assert summary["q1"] == 1.75 and summary["q3"] == 3.25
    assert summary["relative_iqr"] == pytest.approx(1.5 / 2.5)
    # ratios pair repeat r with repeat r: a 2x slower variant under a drifting load is 2x
    assert paired_ratio([2.0, 4.0, 8.0], [1.0, 2.0, 4.0])["median"] == 2.0


def test_memory_subprocesses_get_the_scripts_own_arguments():
    argv = ["--quick", "--out", "x.json", "--sizes", "32", "--out=y.json", "--memory-of", "a"]
    assert argv_without_memory_flags(argv) == ["--quick", "--sizes", "32"]


def git(folder: Path, *arguments: str) -> str:
    """``git arguments`` in ``folder`` as a test's throwaway author; its output."""
    author = ["-c", "user.name=t", "-c", "user.email=t@t"]
    command = ["git", "-C", str(folder), *author, *arguments]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    """A one-commit git repository that the scripts take for the checkout they run from."""
    folder = tmp_path / "checkout"
    (folder / "results").mkdir(parents=True)
    (folder / "code.py").write_text("one\n")
    (folder / "results" / "r.json").write_text("{}\n")
    git(folder, "init", "-q")
    git(folder, "add", ".")
    git(folder, "commit", "-qm", "one")
    monkeypatch.setattr(common, "CODE_DIR", folder)  # its results/ is the scripts' by name
    return folder


def test_a_report_names_the_commit_it_ran_from_and_its_changed_files(checkout, tmp_path):
    report = common.write_report(tmp_path / "a.json", {}, torch.device("cpu"), ["x.py"])
    clean = {"commit": git(checkout, "rev-parse", "HEAD"), "dirty": False}
    assert report["code"] == clean | {"changed_count": 0, "changed": []}
    (checkout / "code.py").write_text("two\n")
    (checkout / "results" / "r.json").write_text("[]\n")  # a study rewrites it between runs
    report = common.write_report(tmp_path / "a.json", {}, torch.device("cpu"), ["x.py"])
    assert report["code"] == clean | {"dirty": True, "changed_count": 1, "changed": ["code.py"]}
    assert json.loads((tmp_path / "a.json").read_text())["code"] == report["code"]


def test_a_report_outside_a_checkout_or_without_git_names_no_code(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.setattr(common, "CODE_DIR", tmp_path / "outside")
    (tmp_path / "outside").mkdir()
    assert common.write_report(tmp_path / "a.json", {}, torch.device("cpu"))["code"] is None
    monkeypatch.setattr(common, "CODE_DIR", BENCHMARKS)
    monkeypatch.setenv("PATH", str(tmp_path))  # no git to run: the report is written all the same
    assert common.write_report(tmp_path / "a.json", {}, torch.device("cpu"))["code"] is None


def test_a_run_resumed_under_another_commit_records_the_one_it_started_under(checkout, tmp_path):
    ablation = importlib.import_module("ablation")
    run = tmp_path / "run"
    ablation.record_code_at_start(run)
    started = common.code_state()
    assert ablation.measured_stamp("x.py", [], run)["code"] == started
    assert "code_at_start" not in ablation.measured_stamp("x.py", [], run)  # one code throughout
    (checkout / "code.py").write_text("two\n")
    git(checkout, "commit", "-qam", "two")
    stamp = ablation.measured_stamp("x.py", [], run)
    assert stamp["code_at_start"] == started and stamp["code"] == common.code_state() != started
    older = tmp_path / "older"  # a folder trained before runs recorded their code: unknown
    older.mkdir()
    assert ablation.run_code(older) == {"code": common.code_state(), "code_at_start": None}


def measured_as_reported(report: dict) -> bool:
    """Every run in ``report`` records the code its report names, and started under it."""
    stamps = [run["measured"] for run in report["runs"].values()]
    return all(s["code"] == report["code"] and "code_at_start" not in s for s in stamps)


MEASURING = sorted(  # every script whose --out defaults to a measurement in results/
    path.stem
    for path in BENCHMARKS.glob("*.py")
    if "def parse_args(" in path.read_text() and path.stem != "step_log"
)


@pytest.mark.parametrize("script", MEASURING)
def test_quick_writes_outside_the_measurements_unless_told_where(script, tmp_path):
    """`python benchmarks/X.py --quick`, as each docstring says to check that it runs, neither
    replaced the committed results/X.json with a toy run nor trained into runs/ (nor refused,
    for the scripts that keep results of several calls)."""
    parse_args = importlib.import_module(script).parse_args
    measured = parse_args([])
    quick = parse_args(["--quick"])
    assert measured.out.parent == common.RESULTS_DIR
    assert quick.out == common.QUICK_DIR / measured.out.name
    if hasattr(measured, "runs"):
        assert quick.runs == common.QUICK_DIR / measured.runs.name
    assert parse_args(["--quick", "--out", str(tmp_path / "x.json")]).out == tmp_path / "x.json"


def check_report(path: Path, script: str) -> dict:
    report = json.loads(path.read_text())
    assert report["command"].startswith(f"python {os.path.relpath(BENCHMARKS / script)} --quick")
    assert report["machine"]["torch"] == torch.__version__
    assert report["date"]
    assert report["code"] == common.code_state()  # the checkout the script ran from
    return report


def run_script(script: str, *args: str) -> dict:
    """Run benchmarks/<script> as a user would; return the JSON it wrote."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return check_report(Path(args[args.index("--out") + 1]), script)


@pytest.fixture(autouse=True)
def quick_dir(tmp_path, monkeypatch) -> None:
    """--quick's default folder in the test's own (runs/NAME there), not shared between tests."""
    monkeypatch.setattr(common, "QUICK_DIR", tmp_path / "runs")


@pytest.fixture
def run_main():
    """Run a script's main() in this process (saves a slow torch import); restore the global
    torch settings it changes."""
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    try:
        yield (
            lambda script, *args: (
                importlib.import_module(script.removesuffix(".py")).main(list(args)) == 0
                and check_report(Path(args[args.index("--out") + 1]), script)
            )
        )
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = benchmark


@pytest.mark.slow
def test_group_loss_script_times_both_variants_against_the_naive_form(tmp_path):
    report = run_script(
        "group_loss.py", "--quick", "--no-memory", "--out", str(tmp_path / "g.json")
    )
    names = {f"{impl}/{v}" for impl in ("fast", "naive") for v in ("reference", "paper")}
    assert set(report["seconds"]) == names
    assert all(report["seconds"][n]["median"] > 0 for n in names)
    assert set(report["speedup_naive_over_fast"]) == {"reference", "paper"}
    assert report["speedup_naive_over_fast"]["paper"]["n"] == 3
    assert report["peak_memory"] is None


@pytest.mark.slow
def test_step_script_compares_plain_sef_and_naive_with_memory(tmp_path, run_main):
    report = run_main("step.py", "--quick", "--out", str(tmp_path / "s.json"))
    result = report["by_image_size"]["32"]
    assert set(result["seconds"]) == {"plain", "sef", "sef_naive"}
    assert set(result["ratio_to_plain"]) == {"sef", "sef_naive"}
    assert result["ratio_to_plain"]["sef"]["median"] > 0
    sef_step = result["seconds"]["sef"]["median"]
    for readout in ("readout", "gradient_norm"):  # each timed alone, as a share of SEF's step
        assert result[f"{readout}_seconds"]["n"] == 50
        assert 0 < result[f"{readout}_share_of_sef_step"] < 1
        assert result[f"{readout}_share_of_sef_step"] * sef_step == pytest.approx(
            result[f"{readout}_seconds"]["median"]
        )
    for variant in ("plain", "sef", "sef_naive"):
        memory = result["peak_memory"][variant]
        assert memory["kind"] == "rss_high_water"
        assert memory["peak_mb"] >= memory["before_mb"] > 0


@pytest.mark.slow
def test_step_script_runs_a_timm_token_backbone_against_timms_own_model(tmp_path, run_main):
    arguments = ["--backbone", "timm:vit_tiny_patch16_224", "--groups", "3", "--no-memory"]
    report = run_main("step.py", "--quick", *arguments, "--out", str(tmp_path / "s.json"))
    assert report["backbone"] == "timm:vit_tiny_patch16_224"
    result = report["by_image_size"]["32"]
    assert result["ratio_to_plain"]["sef"]["median"] > 0
    assert result["flops"]["sef_naive"] > result["flops"]["sef"] > result["flops"]["plain"] > 0


@pytest.mark.slow
def test_gpu_epoch_script_runs_every_cpu_road_through_the_engine(gpu_check_out):
    report = json.loads((gpu_check_out / "gpu_epoch.json").read_text())  # its --quick run
    roads = report["roads"]
    cpu_roads = {"authors_fp32", "fast", "fast_cache", "plain", "sef_compute", "plain_compute"}
    assert set(roads) == cpu_roads
    assert report["skipped_roads"] == ["fast_gpu_decode"]  # GPU decoding needs CUDA
    assert all(r["images_per_second"] > 0 and r["steps"] == 2 for r in roads.values())
    for evaluated in ("authors_fp32", "fast", "fast_cache"):
        assert roads[evaluated]["eval_seconds"] > 0 and roads[evaluated]["eval_seconds_first"] > 0
    assert roads["fast"]["eval_compute_seconds"] > 0
    facts = roads["fast_cache"]["cache"]
    assert facts["images"] == 4 and facts["bytes"] == 4 * 3 * 43 * 43  # 4 JPEGs at 43 px
    assert facts["build_seconds"] > 0
    summary = report["summary"]
    assert summary["fastest_road"] in ("fast", "fast_cache") and summary["cache_over_jpeg"] > 0
    assert set(summary["projected_recipe_minutes"]) == {"authors_fp32", "fast", "fast_cache"}
    assert summary["eval_over_model_alone"] > 0
    assert len(summary["targets_met"]) == 4 and len(summary["targets_met_issue_6"]) == 3
    for targets in (summary["targets_met"], summary["targets_met_issue_6"]):
        assert all(isinstance(met, bool) for met in targets.values())
    assert report["settings"]["mean_jpeg_kb"] > 0


@pytest.mark.slow
def test_gpu_epoch_counts_and_warms_up_the_last_shorter_batch(tmp_path, run_main):
    out = str(tmp_path / "short.json")
    report = run_main("gpu_epoch.py", "--quick", "--roads", "fast", "--batch-size", "3",
                      "--train-images", "8", "--out", out)  # fmt: skip
    fast = report["roads"]["fast"]
    assert fast["steps"] == 3  # 3 + 3 + 2 images
    assert fast["images_per_second"] == pytest.approx(8 / fast["epoch_seconds"])


@pytest.mark.slow
def test_cache_road_script_times_both_roads_on_cub_shaped_data(tmp_path, run_main):
    report = run_main("cache_road.py", "--quick", "--out", str(tmp_path / "c.json"))
    names = ["jpeg", "cache", "jpeg_normalised", "cache_normalised", "jpeg_eval", "cache_eval"]
    assert list(report["results"]) == names
    assert all(r["images_per_second"] > 0 and r["pass_seconds"]["n"] == 2
               for r in report["results"].values())  # fmt: skip
    assert report["bit_identical_first_batch"] == {"train": True, "normalised": True, "eval": True}
    assert set(report["cache_speedup"]) == {"train", "normalised", "eval"}
    assert report["data"] == {"train_images": 6, "test_images": 4,
                              "mean_jpeg_kb": report["data"]["mean_jpeg_kb"]}  # fmt: skip
    assert report["cache"]["images"] == 10 and report["cache"]["bytes"] == 10 * 3 * 43 * 43


def test_dali_road_says_in_one_line_how_to_install_dali_where_it_is_missing(
    tmp_path, monkeypatch, capsys
):
    """benchmarks/dali_road.py without NVIDIA DALI (never in CI's venv) exits 2 before writing any
    data, saying how to install it (here DALI is hidden, so that it holds where DALI is present)."""
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)
    out = tmp_path / "d.json"
    assert importlib.import_module("dali_road").main(["--quick", "--out", str(out)]) == 2
    said = capsys.readouterr()
    assert said.out == "" and said.err.count("\n") == 1
    assert "needs NVIDIA DALI" in said.err and "pip install nvidia-dali-cuda120" in said.err
    assert not out.exists() and not (tmp_path / "runs").exists()


@pytest.fixture(scope="session")
def gpu_check_out(tmp_path_factory) -> Path:
    """benchmarks/gpu_check.sh run once in its CPU quick mode (every part but syncs): its folder.
    The tests of gpu_epoch.py, sef_cost.py and gpu_eval.py read their quick reports from it.
    pytest-xdist's workers share the one run (75 s): the first to need it runs it under a file
    lock in the run's common folder; the others wait for it and read the same folder."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    common = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    finished = common / "gpu-check.done"  # holds the folder of the run that succeeded
    with FileLock(str(common / "gpu-check.lock")):
        if finished.is_file():
            return Path(finished.read_text())
        tmp = tmp_path_factory.mktemp("gpu-check")
        env = {**os.environ, "SEF_CHECK_QUICK": "1", "SEF_CACHE": str(tmp / "cache")}
        out = tmp / "out"
        command = ["bash", str(BENCHMARKS / "gpu_check.sh"), str(out), "epoch", "cost", "eval"]
        done = subprocess.run([*command, "compile", "train"], env=env, capture_output=True,
                              text=True, timeout=900)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        finished.write_text(str(out))
    return out


@pytest.mark.slow
def test_gpu_check_runs_every_part_in_its_cpu_quick_mode(gpu_check_out):
    """The prepared GPU script as a dry run on the CPU: each part's command line, the train
    part's runs (the cache road's too), and the files the next GPU session brings back."""
    out = gpu_check_out
    log = (out / "log.txt").read_text()
    for step in ("gpu_epoch", "sef_cost", "gpu_eval", "gpu_epoch_compile", "demo-bf16",
                 "demo-resumed", "cub-shaped", "cub-shaped-cache"):  # fmt: skip
        assert f"== {step}: exit 0 at " in log, log[-3000:]
    assert "demo-fp16" not in log  # the gradient scaler needs CUDA
    epoch = json.loads((out / "gpu_epoch.json").read_text())
    assert "fast_cache" in epoch["roads"] and "cache_over_jpeg" in epoch["summary"]
    compiled = json.loads((out / "gpu_epoch_compile.json").read_text())
    assert compiled["settings"]["compile"] and list(compiled["roads"]) == ["plain_compute"]
    assert json.loads((out / "gpu_eval.json").read_text())["seconds"]["persistent_2"] > 0
    assert "no_group_loss" in json.loads((out / "sef_cost.json").read_text())["share_of_sef_step"]
    runs = out / "runs"
    metrics = [(runs / name / "metrics.jsonl").read_text().splitlines() for name in
               ("cub-shaped", "cub-shaped-cache")]  # fmt: skip
    assert len(metrics[0]) == len(metrics[1]) == 6
    timing = ("seconds", "images_per_second")
    same = [{k: v for k, v in json.loads(line).items() if k not in timing} for line in metrics[0]]
    assert same == [{k: v for k, v in json.loads(line).items() if k not in timing}
                    for line in metrics[1]]  # fmt: skip
    assert (out / "runs.tar.gz").is_file()


@pytest.mark.slow
def test_sef_cost_times_every_variant_and_lists_the_busiest_operators(gpu_check_out):
    report = json.loads((gpu_check_out / "sef_cost.json").read_text())  # its --quick run
    counts = report["operators_per_step"]
    assert counts["plain"] < counts["no_group_loss"] < counts["sef"] < counts["with_readout"]
    assert counts["loss_compiled"] < counts["sef"]  # the loss's operators fused
    assert counts["heads_batched"] < counts["sef"]  # the group heads in one product, not G
    sef_cost = importlib.import_module("sef_cost")
    assert set(report["seconds"]) == set(sef_cost.VARIANTS)
    assert set(report["ratio_to_plain"]) == set(sef_cost.VARIANTS) - {"plain"}
    assert set(report["share_of_sef_step"]) == {"no_group_loss", "no_distill", "no_entropy"}
    for name in sef_cost.PROFILED:
        table = report["operators"][name]
        assert 0 < len(table) <= sef_cost.TOP_OPERATORS
        assert [row["self_ms"] for row in table] == sorted(
            (row["self_ms"] for row in table), reverse=True
        )
    assert any(
        row["operator"] == "aten::convolution_backward" for row in report["operators"]["sef"]
    )


@pytest.mark.slow
def test_a_compiled_sef_loss_gives_the_eager_loss_s_terms_and_gradients():
    """sef_cost's loss_compiled candidate changes the kernels, not the numbers."""
    torch.manual_seed(0)
    features = torch.randn(3, 12, 5, 5, requires_grad=True)
    output = sef.SEFOutput(torch.randn(3, 7), torch.randn(3, 3, 7), features)
    target = torch.tensor([1, 4, 6])
    eager, compiled = sef.SEFLoss(3), torch.compile(sef.SEFLoss(3))
    first, second = eager(output, target), compiled(output, target)
    for name in sef.losses.LOSS_TERMS:
        assert second[name].item() == pytest.approx(first[name].item(), rel=1e-5, abs=1e-6)
    (expected,) = torch.autograd.grad(first["total"], features)
    (found,) = torch.autograd.grad(second["total"], features)
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-6)


def test_the_bf16_group_loss_variant_is_the_reference_loss_in_float32():
    """sef_cost's candidate computes the same loss; only autocast's precision may differ."""
    sef_cost = importlib.import_module("sef_cost")
    features = torch.randn(2, 12, 5, 5)
    assert sef_cost.bf16_group_loss(features, 3).item() == pytest.approx(
        sef.losses.group_loss(features, 3).item(), rel=1e-5
    )


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "autocast-bf16"])
def test_the_batched_heads_variant_gives_the_loops_logits_and_gradients(bf16):
    """sef_cost's heads_batched candidate against SEF's G Linear calls (the slow, obviously
    right version), under autocast too: the same logits and gradients, the heads' own."""
    sef_cost = importlib.import_module("sef_cost")
    torch.manual_seed(0)
    model = sef.SEF("small_cnn", num_classes=5, groups=4).train()
    pooled = torch.randn(3, model.channels)
    results = []
    for heads in (partial(sef_cost.batched_group_logits, model.group_heads), model._group_logits):
        model.zero_grad()
        features = pooled.clone().requires_grad_()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            logits = heads(features)
        (logits.float() * torch.linspace(-1, 1, logits.numel()).view_as(logits)).sum().backward()
        grads = [p.grad.clone() for p in model.group_heads.parameters()]
        results.append((logits.grad_fn.name(), logits, features.grad, grads))
    (batched_by, *batched), (loop_by, *loop) = results
    assert (batched_by, loop_by) == ("BaddbmmBackward0", "StackBackward0")
    torch.testing.assert_close(batched, loop, **(dict(rtol=1.6e-2, atol=1e-2) if bf16 else {}))


@pytest.mark.slow
def test_gpu_syncs_script_times_both_precisions_with_and_without_a_wait_per_step(
    tmp_path, run_main
):
    report = run_main("gpu_syncs.py", "--quick", "--out", str(tmp_path / "s.json"))
    assert set(report["results"]) == {"bf16", "fp16"}
    for result in report["results"].values():
        assert result["syncs_per_epoch"] is None  # counted on CUDA only
        assert set(result["step_seconds"]) == {"shipped", "wait_per_step"}
        assert all(t["median"] > 0 and t["n"] == 2 for t in result["step_seconds"].values())
        assert result["wait_per_step_over_shipped"]["median"] > 0
    assert "evaluate_syncs" in report and report["evaluate_syncs"] is None  # CUDA only


@pytest.mark.slow
def test_gpu_eval_script_times_every_part_of_an_evaluation_pass(gpu_check_out):
    report = json.loads((gpu_check_out / "gpu_eval.json").read_text())  # its --quick run
    parts = ["loader_1", "compute", "evaluate_full", "evaluate_1", "evaluate_2", "evaluate_3"]
    parts += ["persistent_1", "persistent_2", "persistent_3", "start_fresh", "stop_fresh"]
    parts += ["start_persistent", "stop_persistent", "gpu_epoch_timing_1", "gpu_epoch_timing_2"]
    parts += ["evaluate_authors"]
    assert list(report["seconds"]) == parts
    assert all(seconds > 0 for seconds in report["seconds"].values())
    test_images = report["settings"]["test_images"]
    for name, seconds in report["seconds"].items():
        assert report["images_per_second"][name] == pytest.approx(test_images / seconds)


@pytest.mark.slow
def test_inference_script_finds_the_exported_graph_equal_to_the_plain_one(tmp_path, run_main):
    report = run_main("inference.py", "--quick", "--out", str(tmp_path / "i.json"))
    assert set(report["seconds"]) == {
        "plain",
        "sef_export",
        "sef_eval",
        "onnx_plain",
        "onnx_sef_export",
    }
    assert set(report["ratio_to_plain"]) == {"sef_export", "sef_eval", "onnx_sef_export"}
    graphs = report["onnx_graphs"]
    assert graphs["same_operators"] and graphs["same_weight_shapes"] and graphs["operators"] > 0
    parameters = report["parameters"]
    assert parameters["sef_export"] == parameters["plain"] < parameters["sef_eval"]


def test_gpu_epoch_roads_read_the_jpegs_as_sef_train_does(tmp_path):
    """The authors' road yields normalised floats, the fast road sef train's uint8 images of
    the same crops; the GPU road hands over the undecoded files."""
    gpu_epoch = importlib.import_module("gpu_epoch")
    files = gpu_epoch.write_jpegs(tmp_path, 2, 80)
    args = gpu_epoch.parse_args(["--quick"])
    authors = gpu_epoch._authors_batches(args, files).dataset
    loader = gpu_epoch._fast_batches(args, files, torch.device("cpu"), "uint8")
    assert loader.persistent_workers and isinstance(loader.dataset, SeededItems)
    fast = loader.dataset.dataset
    assert gpu_epoch.images_per_epoch(loader, args.batch_size) == args.train_images
    assert authors.samples == fast.samples and len(fast) == args.train_images
    for index in range(len(fast)):
        torch.manual_seed(index)  # the same random crop and flip on both roads
        expected, label = authors[index]
        torch.manual_seed(index)
        uint8, same_label = fast[index]
        assert expected.dtype == torch.float32 and uint8.dtype == torch.uint8
        assert label == same_label
        assert torch.equal(sef.transforms.normalise_batch(uint8), expected)
    undecoded = gpu_epoch.JpegBytes(fast.samples)
    data, label = undecoded[1]
    assert label == fast.samples[1][1] and data.tolist() == list(files[1].read_bytes())


@pytest.mark.slow
def test_demo_ablation_adds_rows_one_call_at_a_time(tmp_path, demo_root, run_main, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "a.json")
    tiny = ["--quick", "--seeds", "0", "1", "--no-progress", "--out", out]
    first = run_main("demo_ablation.py", *tiny, "--methods", "plain", "groups-only")
    assert list(first["results"]) == ["plain", "groups-only"]
    plain = first["results"]["plain"]
    assert [run["seed"] for run in plain["runs"]] == [0, 1]
    assert all(run["code"] == first["code"] for run in plain["runs"])  # started under it too
    assert all("code_at_start" not in run for run in plain["runs"])
    tops = [run["last_top1"] for run in plain["runs"]]
    assert plain["summary"]["last_top1_mean"] == pytest.approx(sum(tops) / 2)
    assert (tmp_path / "runs/demo-ablation/groups-only-seed1/last.pt").is_file()
    groups = first["results"]["groups-only"]["runs"]
    differences = first["against_plain"]["groups-only"]["differences"]
    expected = [g["last_top1"] - p for g, p in zip(groups, tops, strict=True)]
    assert differences == pytest.approx(expected)
    assert list(first["against_plain"]) == ["groups-only"]
    assert all(run["last_corr"] == [None, None] for run in plain["runs"])  # G = 1: no readout
    assert all(-1 <= value <= 1 for run in groups for value in run["last_corr"])

    second = run_main("demo_ablation.py", *tiny, "--methods", "sef")
    assert list(second["results"]) == ["plain", "sef", "groups-only"]  # kept, in table order
    assert second["results"]["plain"] == plain
    assert "--methods plain groups-only" in plain["measured"]["command"]
    assert second["results"]["sef"]["measured"]["command"].endswith("--methods sef")
    assert plain["measured"]["date"] <= second["results"]["sef"]["measured"]["date"]
    third = run_main("demo_ablation.py", *tiny, "--set", "loss.phi=0.5", "--methods", "sef",
                     "--runs", "runs/phi0.5")  # fmt: skip
    assert list(third["results"]) == ["sef"]  # other settings: nothing kept


def test_paired_difference_is_the_t_interval_of_the_per_seed_differences():
    from ablation import paired_difference

    result = paired_difference([0.5, 0.7, 0.6, 0.9, 0.8], [0.5, 0.6, 0.4, 0.6, 0.4])
    differences = [0.0, 0.1, 0.2, 0.3, 0.4]
    assert result["differences"] == pytest.approx(differences)
    mean = sum(differences) / 5
    std = (sum((d - mean) ** 2 for d in differences) / 4) ** 0.5
    half = 2.7764451051977987 * std / 5**0.5  # t(0.975, 4 degrees of freedom), from a table
    assert result["mean"] == pytest.approx(0.2) and result["std"] == pytest.approx(std)
    assert result["interval"] == pytest.approx([mean - half, mean + half])


def test_finetune_ablation_saves_each_run_and_shares_runs_between_tables(
    tmp_path, demo_root, run_main, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "f.json")
    tiny = ["--quick", "--seeds", "0", "1", "--no-progress", "--out", out]
    first = run_main("finetune_ablation.py", *tiny, "--tables", "main", "--rows", "plain", "sef")
    assert sorted(first["runs"]) == ["plain-seed0", "plain-seed1", "sef-seed0", "sef-seed1"]
    run = first["runs"]["sef-seed1"]
    assert run["groups"] == 5 and len(run["last_group_top1"]) == 5 and run["epochs"] == 1
    assert measured_as_reported(first)
    analysis = first["runs"]["plain-seed0"]["analysis"]
    assert analysis["groups"] == 5 and not analysis["own_groups"]  # split as SEF would
    assert len(analysis["group_correlation_matrix"]) == 5
    assert analysis["part_chance_distinctness"] == pytest.approx(0.8)  # five parts
    main = first["tables"]["main"]
    assert list(main) == ["plain", "sef"]
    tops = {k: [first["runs"][f"{k}-seed{s}"]["last_top1"] for s in (0, 1)] for k in main}
    assert main["sef"]["last_top1_mean"] == pytest.approx(sum(tops["sef"]) / 2)
    expected = [a - b for a, b in zip(tops["sef"], tops["plain"], strict=True)]
    assert main["sef"]["minus_plain"]["differences"] == pytest.approx(expected)
    assert "minus_plain" not in main["plain"]

    trained = sorted(p.name for p in (tmp_path / "runs/finetune-ablation").iterdir())
    second = run_main("finetune_ablation.py", *tiny, "--tables", "phi", "--rows", "φ=1")
    assert second["runs"]["sef-seed0"] == first["runs"]["sef-seed0"]  # reused, not retrained
    assert sorted(p.name for p in (tmp_path / "runs/finetune-ablation").iterdir()) == trained
    assert second["tables"]["phi"]["φ=1"]["minus_plain"] == main["sef"]["minus_plain"]
    assert "λ=1" in second["tables"]["lambda"]  # the same run, in every table that has it

    capsys.readouterr()
    finetune_ablation = importlib.import_module("finetune_ablation")
    assert finetune_ablation.main(["--quick", "--out", out, "--report"]) == 0
    sef_row = next(
        line for line in capsys.readouterr().out.splitlines() if line.startswith("| sef")
    )
    per_seed = ", ".join(f"{100 * t:.1f}" for t in tops["sef"])
    assert f"| {per_seed} |" in sef_row


def test_finetune_ablation_gives_runs_of_different_settings_different_names():
    """Runs are reused by name, so two settings sharing a name would silently share a run."""
    finetune_ablation = importlib.import_module("finetune_ablation")
    settings: dict[str, set] = {}
    for rows, _ in finetune_ablation.TABLES.values():
        for row in rows:
            settings.setdefault(row.key(0), set()).add((row.preset, frozenset(row.overrides)))
    assert all(len(s) == 1 for s in settings.values()), settings


def test_group_study_trains_short_then_long_rows_and_records_the_trajectories(
    tmp_path, demo_root, run_main, monkeypatch, capsys
):
    """Three of the study's rows at two seeds, then rule R's long rows, in --quick mode."""
    study = importlib.import_module("group_study")
    paper = next(r for r in study.SHORT_ROWS if r.name == "groups-paper-1")
    for rows in ("SHORT_ROWS", "RULE_R_ROWS"):
        monkeypatch.setattr(study, rows, [study.PLAIN, paper, study.SEF])
    monkeypatch.setattr(study, "SEEDS", [0, 1])
    long_only = ["sef-paper-1-floor-lamuntil16", "sef-paper-1-lam0.05-floor"]  # versions 8, 9
    assert [r.name for r in study.LONG_ONLY_ROWS] == long_only
    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "g.json")
    first = run_main("group_study.py", "--quick", "--no-progress", "--stage", "short", "--out", out)
    assert sorted(first["runs"]) == sorted(
        f"{n}-seed{s}" for n in ("plain", "groups-paper-1", "sef-reference-1") for s in (0, 1)
    )
    run = first["runs"]["groups-paper-1-seed1"]
    assert measured_as_reported(first)
    assert run["epochs"] == 1 and "loss.group_variant=paper" in run["overrides"]
    assert {"train_corr_within", "eval_corr_between"} <= set(run["history"][0])
    assert "train_corr_within" not in first["runs"]["plain-seed0"]["history"][0]  # one group
    short = first["tables"]["12 epochs"]
    assert list(short) == ["plain", "groups-paper-1", "sef-reference-1"]
    tops = {n: [first["runs"][f"{n}-seed{s}"]["last_top1"] for s in (0, 1)] for n in short}
    expected = [a - b for a, b in zip(tops["sef-reference-1"], tops["plain"], strict=True)]
    assert short["sef-reference-1"]["minus_plain"]["differences"] == pytest.approx(expected)
    analysis = run["analysis"]
    gap = analysis["within_group_correlation"] - analysis["between_group_correlation"]
    assert short["groups-paper-1"]["gaps"][1] == pytest.approx(gap)
    assert short["groups-paper-1"]["separated"][1] == (gap >= 0.2)
    assert first["rule_r_choice"] == "groups-paper-1"  # the only row with the paper's loss
    with warnings.catch_warnings():  # the 48-epoch rows, chosen but not run: no empty panel
        warnings.simplefilter("error")
        rows = study.SHORT_ROWS + study.long_rows(first["runs"])
        study.draw(first["runs"], rows, tmp_path / "short.png")

    trained = sorted(p.name for p in (tmp_path / "runs/group-study").iterdir())
    second = run_main("group_study.py", "--quick", "--no-progress", "--out", out)
    assert all(second["runs"][k] == first["runs"][k] for k in first["runs"])  # not retrained
    # the 48-epoch rows: plain, SEF, rule R's choice, then versions 8 and 9's rows
    long_names = ["plain", "sef-reference-1", "groups-paper-1", *long_only]
    assert sorted(p.name for p in (tmp_path / "runs/group-study").iterdir()) == sorted(
        trained + [f"{n}-48ep-seed{s}" for n in long_names for s in (0, 1)]
    )
    assert list(second["runs"])[len(first["runs"]) :] == [
        f"{n}-48ep-seed{s}" for s in (0, 1) for n in long_names
    ]  # seed by seed
    long = second["runs"]["groups-paper-1-48ep-seed0"]
    assert long["epochs"] == 2 and len(long["history"]) == 2
    early = second["runs"]["sef-paper-1-floor-lamuntil16-48ep-seed1"]
    assert early["epochs"] == 2 and "loss.lam_until=16" in early["overrides"]
    assert list(second["tables"]["48 epochs"]) == long_names

    capsys.readouterr()
    assert study.main(["--quick", "--out", out, "--report"]) == 0
    assert "| groups-paper-1 |" in capsys.readouterr().out
    figure = tmp_path / "study.png"
    assert study.main(["--quick", "--out", out, "--figure", str(figure)]) == 0
    assert figure.stat().st_size > 10_000


def test_group_study_seed_table_lists_every_run_beside_plain_of_its_seed():
    study = importlib.import_module("group_study")
    paper = next(r for r in study.SHORT_ROWS if r.name == "groups-paper-1")

    def run(seed, top1, within, between, parts=0.5, by_epoch=(0.5, 0.6)):
        analysis = {"within_group_correlation": within, "between_group_correlation": between,
                    "part_distinctness": parts, "part_static_distinctness": 0.25}  # fmt: skip
        return {"seed": seed, "last_top1": top1, "cpu": "X", "analysis": analysis,
                "eval_top1_by_epoch": list(by_epoch)}  # fmt: skip

    runs = {"plain-seed0": run(0, 0.8, 0.3, 0.2), "plain-seed1": run(1, 0.7, 0.3, 0.3, None),
            "groups-paper-1-seed0": run(0, 0.75, 0.9, 0.1, by_epoch=(0.4, 0.19, 0.5, 0.06, 0.03)),
            "groups-paper-1-seed1": run(1, 0.9, 0.5, 0.45)}  # fmt: skip
    lines = study.seed_table([study.PLAIN, paper, study.SEF], runs).splitlines()
    assert lines[2:] == [
        "| plain | 0 / 1 | 80.0 / 70.0 |  | 0.100 / 0.000 | 0.300, 0.200 / 0.300, 0.300 "
        "| 0.50 (0.25) / - | - / - |",
        "| groups-paper-1 | 0 / 1 | 75.0 / 90.0 | -5.0 / +20.0 | 0.800 / 0.050 "
        "| 0.900, 0.100 / 0.500, 0.450 | 0.50 (0.25) / 0.50 (0.25) | 2,4 / - |",
    ]  # SEF has no runs: no line; a fall from under 10 % (0.06 -> 0.03) is not one


def _entry(separates, minus, gap=0.0, keeps=True):
    return {"separates": separates, "minus_plain": {"mean": minus}, "gap_mean": gap,
            "keeps_accuracy": keeps}  # fmt: skip


def test_group_study_rule_r_and_the_candidate_follow_the_protocol():
    study = importlib.import_module("group_study")
    summary = {  # the paper-loss rows only count for rule R
        "groups-paper-0.01": _entry(False, 0.01, gap=0.1),
        "groups-paper-0.1": _entry(True, -0.03, gap=0.4),
        "sef-paper-0.1": _entry(True, -0.01, gap=0.3),
        "groups-reference-1": _entry(True, 0.05, gap=0.9),
    }
    assert study.most_promising_paper_row(summary) == "sef-paper-0.1"  # separates, best paired
    for name in ("groups-paper-0.1", "sef-paper-0.1"):
        summary[name]["separates"] = False
    assert study.most_promising_paper_row(summary) == "groups-paper-0.1"  # none: largest gap
    late = {"separates": True, "minus_plain": {"mean": 0.5}, "gap_mean": 0.9}
    summary["sef-paper-1-floor-lamuntil4"] = late  # version 7: never rule R's choice
    assert study.most_promising_paper_row(summary) == "groups-paper-0.1"
    del summary["sef-paper-1-floor-lamuntil4"]
    tables = {"12 epochs": summary, "48 epochs": {"sef-reference-1": _entry(True, 0.02)}}
    assert study.candidate(tables) == {
        "table": "12 epochs", "row": "groups-reference-1", "minus_plain": 0.05
    }  # fmt: skip
    tables["12 epochs"]["groups-reference-1"]["keeps_accuracy"] = False
    assert study.candidate(tables)["row"] == "sef-reference-1"
    tables["48 epochs"]["sef-reference-1"]["separates"] = False
    assert study.candidate(tables) is None


def test_group_study_rows_have_distinct_names_and_settings():
    study = importlib.import_module("group_study")
    rows = study.SHORT_ROWS + [r.lengthened(study.LONG) for r in study.SHORT_ROWS]
    keys = [row.key(0) for row in rows]
    assert len(set(keys)) == len(keys)
    settings = {(r.preset, tuple(r.settings(False))) for r in rows}
    assert len(settings) == len(rows)
    assert len(study.SHORT_ROWS) == 26 and study.SEEDS == [0, 1, 2]
    assert study.SHORT_ROWS[:25] == study.RULE_R_ROWS  # version 7's row is outside rule R
    early = study.SHORT_ROWS[-1]
    assert early.uses_paper_loss and early.method == "sef"
    assert {"loss.lam_until=4", "loss.norm_floor=0.01"} <= set(early.settings(False))
    warm = next(r for r in study.SHORT_ROWS if r.name == "sef-reference-1-warmup")
    assert "loss.lam_warmup=5" in warm.settings(False)
    phi_warm = next(r for r in study.SHORT_ROWS if r.name == "sef-paper-1-lam0.05-phiwarmup")
    assert {"loss.phi_warmup=5", "loss.lam=0.05", "loss.phi=1"} <= set(phi_warm.settings(False))
    assert phi_warm.uses_paper_loss
    floored = {r.name for r in study.SHORT_ROWS if "loss.norm_floor=0.01" in r.settings(False)}
    assert floored == {"groups-paper-1-floor", "sef-paper-1-floor", "sef-paper-1-lam0.05-floor",
                       "sef-reference-1-floor", "groups-paper-3-floor",
                       "sef-paper-1-lam0.3-floor", "sef-paper-1-floor-lamuntil4"}  # fmt: skip
    long = study.SEF.lengthened(48).settings(False)
    assert long[-2:] == ["optim.epochs=48", "optim.step_size=19"]
    late, small = study.LONG_ONLY_ROWS  # version 8: the entropy term for the first third, at 48
    assert late.settings(False) == [*early.overrides[:-1], "loss.lam_until=16",
                                    "optim.epochs=48", "optim.step_size=19"]  # fmt: skip
    assert late.key(0) not in keys and late.name not in {r.name for r in study.SHORT_ROWS}
    assert small == study.LAM005_FLOOR.lengthened(48)  # version 9: a 12-epoch row at 48
    assert small.key(0) == "sef-paper-1-lam0.05-floor-48ep-seed0"
    assert "loss.lam=0.05" in small.settings(False) and small.uses_paper_loss


def test_group_confirm_finds_a_candidate_that_only_exists_at_48_epochs(monkeypatch, tmp_path):
    """Version 8's row has no 12-epoch twin: the confirmation takes it from the long rows."""
    study = importlib.import_module("group_study")
    confirm = importlib.import_module("group_confirm")
    late = study.LONG_ONLY_ROWS[0]
    monkeypatch.setattr(study, "load_runs", lambda args: {})
    monkeypatch.setattr(study, "long_rows", lambda runs: [study.PLAIN.lengthened(48), late])
    monkeypatch.setattr(study, "complete", lambda rows, runs: True)
    monkeypatch.setattr(study, "tables_of", lambda runs: {})
    chosen = {"table": "48 epochs", "row": late.name, "minus_plain": 0.01}
    monkeypatch.setattr(study, "candidate", lambda tables: chosen)
    args = confirm.parse_args(["--study", str(tmp_path / "s.json")])
    assert confirm.study_candidate(args) == (late, {"study": str(args.study),
                                                    "candidate": chosen})  # fmt: skip


def test_group_confirm_trains_the_study_s_candidate_on_birds32b_and_judges_it(
    tmp_path, run_main, monkeypatch, capsys
):
    """A --quick study (plain and SEF, one seed, both lengths), then its candidate confirmed on
    birds32b at fresh seeds, each paired with plain of its length; no candidate, nothing runs."""
    study = importlib.import_module("group_study")
    confirm = importlib.import_module("group_confirm")
    for rows in ("SHORT_ROWS", "RULE_R_ROWS"):
        monkeypatch.setattr(study, rows, [study.PLAIN, study.SEF])
    monkeypatch.setattr(study, "SEEDS", [0])
    monkeypatch.setattr(study, "LONG_ONLY_ROWS", [])
    monkeypatch.chdir(tmp_path)
    studied, out = str(tmp_path / "study.json"), str(tmp_path / "confirm.json")
    quick = ["--quick", "--no-progress", "--study", studied, "--out", out]
    run_main("group_study.py", "--quick", "--no-progress", "--stage", "short", "--out", studied)
    with pytest.raises(SystemExit, match="the study is not complete"):
        confirm.main(quick)
    run_main("group_study.py", "--quick", "--no-progress", "--out", studied)  # the long rows

    monkeypatch.setattr(study, "candidate", lambda tables: None)
    nothing = run_main("group_confirm.py", *quick)
    assert nothing["verdict"] == "nothing to confirm" and nothing["runs"] == {}
    assert not (tmp_path / "runs/group-confirm").exists()

    chosen = {"table": "48 epochs", "row": "sef-reference-1", "minus_plain": 0.0}
    monkeypatch.setattr(study, "candidate", lambda tables: chosen)
    monkeypatch.setattr(confirm, "SEEDS", [10, 11])
    out = str(tmp_path / "confirm2.json")
    report = run_main("group_confirm.py", *quick[:-1], out)
    keys = [f"{n}-48ep-seed{s}" for s in (10, 11) for n in ("plain", "sef-reference-1")]
    assert list(report["runs"]) == keys  # seed by seed, plain first
    assert {r["preset"] for r in report["runs"].values()} == {
        "birds32b-mobilenet_v2", "birds32b-mobilenet_v2-plain"
    }  # fmt: skip
    assert all(r["epochs"] == 2 and r["measured"]["command"].count("group_confirm.py") == 1
               for r in report["runs"].values())  # fmt: skip
    assert measured_as_reported(report)
    entry = report["table"]["sef-reference-1"]
    tops = [report["runs"][k]["last_top1"] for k in keys]
    assert entry["minus_plain"]["differences"] == pytest.approx([tops[1] - tops[0],
                                                                 tops[3] - tops[2]])  # fmt: skip
    assert report["verdict"] == confirm.verdict(entry) != "not yet: runs missing"
    assert report["candidate"] == chosen and report["row"]["epochs"] == 48
    capsys.readouterr()
    assert confirm.main(["--quick", "--out", out, "--report"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"candidate: sef-reference-1; {report['verdict']}")
    assert "| sef-reference-1 |" in printed
    figure = tmp_path / "confirm.png"  # the candidate's trajectories at the confirmation's seeds
    assert confirm.main([*quick[:-1], out, "--figure", str(figure)]) == 0
    assert figure.stat().st_size > 10_000


def test_group_confirm_resumed_on_another_cpu_pairs_only_the_seeds_still_missing(
    monkeypatch, tmp_path
):
    """Seed 10 done on one CPU, seed 11's plain too: another CPU retrains nothing of seed 10 and
    gives seed 11's candidate a plain partner of its own CPU model before it."""
    study = importlib.import_module("group_study")
    confirm = importlib.import_module("group_confirm")
    row = study.LAM005_FLOOR.lengthened(48)
    intel = {"cpu": "Intel Xeon", "last_top1": 0.5}
    runs = {key: dict(intel) for key in ("plain-48ep-seed10", row.key(10), "plain-48ep-seed11")}
    trained = []

    def run_one(todo, seed, key, args, argv, base):
        trained.append(key)
        return {"cpu": "AMD EPYC", "last_top1": 0.5}

    monkeypatch.setattr(study, "run_one", run_one)
    monkeypatch.setattr(study, "cpu_model", lambda: "AMD EPYC")
    monkeypatch.setattr(confirm, "SEEDS", [10, 11])
    confirm.train(row, argparse.Namespace(runs=tmp_path), runs, [], lambda runs: None)
    assert trained == ["plain-48ep-amd-epyc-seed11", row.key(11)]


@pytest.mark.parametrize("data", ["birds32", "birds32b"])
def test_the_finetune_preset_is_the_confirmed_row_exactly(data):
    """``<set>-mobilenet_v2-finetune`` trains what the confirmation confirmed: the candidate's
    overrides and 48-epoch length on the set's SEF preset, nothing else."""
    from sef.config import apply_overrides, config_to_dict, load_preset

    row = importlib.import_module("group_study").LAM005_FLOOR.lengthened(48)
    confirmed = apply_overrides(load_preset(f"{data}-mobilenet_v2"), row.settings(quick=False))
    preset = load_preset(f"{data}-mobilenet_v2-finetune")
    assert config_to_dict(preset) == config_to_dict(confirmed) | {"name": preset.name}


def test_group_gradients_measures_every_term_s_pull_at_the_start_and_on_a_checkpoint(
    tmp_path, run_main, demo_checkpoint, monkeypatch
):
    report = run_main("group_gradients.py", "--quick", "--checkpoints", str(demo_checkpoint),
                      "--out", str(tmp_path / "g.json"))  # fmt: skip
    assert list(report["models"]) == ["imagenet start", str(demo_checkpoint)]
    for pulls in report["models"].values():
        assert all(pulls[f"norm_{term}"] > 0 for term in report["terms"])
        for variant in ("reference", "paper"):
            expected = pulls["norm_ce"] / pulls[f"norm_group_{variant}"]
            assert pulls[f"phi_star_{variant}"] == pytest.approx(expected)
            assert -1 <= pulls[f"cosine_ce_group_{variant}"] <= 1
            assert -1 <= pulls[f"cosine_entropy_group_{variant}"] <= 1
        assert pulls["channel_norm"] > 0 and pulls["norm_floor"] == 0


def test_group_gradients_measures_the_group_loss_with_the_run_s_norm_floor(demo_checkpoint):
    gradients = importlib.import_module("group_gradients")
    from sef.config import apply_overrides
    from sef.trained import load_trained_model

    trained = load_trained_model(demo_checkpoint)
    floored = dataclasses.replace(
        trained, config=apply_overrides(trained.config, ["loss.norm_floor=0.5"])
    )
    plain, with_floor = (gradients.pulls(t, images=8) for t in (trained, floored))
    assert with_floor["norm_ce"] == pytest.approx(plain["norm_ce"])
    assert with_floor["norm_group_paper"] != pytest.approx(plain["norm_group_paper"], rel=1e-3)


def test_group_confirm_verdict_follows_the_protocol(monkeypatch):
    confirm = importlib.import_module("group_confirm")

    def entry(separates=True, keeps=True, helps=False, n=5):
        return {"separates": separates, "keeps_accuracy": keeps, "helps": helps,
                "minus_plain": {"n": n}}  # fmt: skip

    assert confirm.verdict(None) == "not yet: runs missing"
    assert confirm.verdict(entry(n=4)) == "not yet: runs missing"
    assert confirm.verdict(entry()) == "confirmed"
    assert confirm.verdict(entry(helps=True)) == "confirmed, helps"
    assert confirm.verdict(entry(separates=False, helps=True)) == (
        "not confirmed: the groups did not separate in every seed"
    )
    assert confirm.verdict(entry(separates=False, keeps=False)) == (
        "not confirmed: the groups did not separate in every seed and it lost more than 2 "
        "points to plain"
    )


def _group_study_script(tmp_path, timeout, **env):
    """benchmarks/gpu_group_study.sh, tiny and on the CPU, with its runs under tmp_path/runs and
    its output in tmp_path/out; ``env`` adds to the environment."""
    env = {**os.environ, "SEF_STUDY_DEVICE": "cpu", "SEF_STUDY_TINY": "1",
           "SEF_STUDY_RUNS": str(tmp_path / "runs"), **env}  # fmt: skip
    return subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_group_study.sh"), str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.mark.slow
def test_gpu_group_study_script_dry_runs_on_the_cpu_within_its_budget(tmp_path):
    """The prepared GPU script, tiny and on the CPU: the first run always goes, later runs only
    while one more of the first's length fits the budget (here none), then its figure."""
    done = _group_study_script(tmp_path, 300, BUDGET="1", SEF_CACHE=str(tmp_path / "cache"),
                               OMP_NUM_THREADS="1")  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "== sef-seed0: exit 0 after" in log
    assert "== plain-seed0: skipped" in log and "== groups-paper-seed1: skipped" in log
    assert "== finetune-seed0: skipped" in log  # the CPU study's confirmed candidate
    assert "== sef-paper-floor-seed0: skipped" in log  # the floor's setting is on the list
    assert "== sef-paper-floor-lamuntil-seed0: skipped" in log  # and the entropy term early
    assert (tmp_path / "out" / "corr-sef-seed0.png").stat().st_size > 10_000
    record = json.loads((tmp_path / "runs/sef-seed0/metrics.jsonl").read_text())
    assert record["epoch"] == 1 and "train_corr_within" in record
    assert (tmp_path / "out" / "runs.tar.gz").is_file()


def test_gpu_check_keeps_within_its_budget(tmp_path):
    """SEF_CHECK_BUDGET: a step gets at most what is left of the script's budget, and none is
    started with under 30 s left, so the lent machine's call limit never cuts the files off."""
    # `python -c`, the machine line (torch's versions, a torch import), answers at once: the
    # gpu_check_out fixture runs it; the budget is what this test is about
    shim = tmp_path / "bin" / "python"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\n[ "$1" = -c ] && exit 0\nexec {sys.executable} "$@"\n')
    shim.chmod(0o755)
    path = f"{shim.parent}{os.pathsep}{os.environ['PATH']}"

    def check(budget, folder):
        env = {**os.environ, "SEF_CHECK_QUICK": "1", "SEF_CHECK_BUDGET": str(budget), "PATH": path}
        command = ["bash", str(BENCHMARKS / "gpu_check.sh"), str(tmp_path / folder), "syncs"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "== done" in done.stdout, done.stdout[-3000:]
        return done.stdout

    # 120 s, clipped to what the budget leaves; 100 s leaves room for a slow start on a busy
    # machine (45 s did not: the step was skipped, with under 30 s left)
    limit = re.search(r"== gpu_syncs: start \S+, limit (\d+) s", check(100, "a"))
    assert limit and 30 <= int(limit[1]) <= 100
    skipped = check(1, "b")
    assert "== gpu_syncs: skipped" in skipped and "start" not in skipped
    assert not (tmp_path / "b" / "gpu_syncs.json").exists()


@pytest.mark.slow
def test_gpu_group_study_script_stops_every_command_at_its_limit(tmp_path):
    """LIMIT: past it nothing more is started (here from the start: LIMIT=0), so the lent
    machine's call limit never ends the script before it has packed what it has."""
    done = _group_study_script(tmp_path, 300, LIMIT="0")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "== sef-seed0: exit 124 after" in done.stdout
    assert done.stdout.count("== not run, no time left (LIMIT=0 s)") == 1 + 2 * 7  # data too
    assert "== done" in done.stdout and not (tmp_path / "runs" / "sef-seed0").exists()


def test_gpu_group_study_script_refuses_a_bad_setting_before_any_run(tmp_path):
    """Every run's settings are checked first: a bad one stops the script before the first run,
    naming the run, instead of after the GPU time of the runs before it."""
    done = _group_study_script(tmp_path, 120, PAPER_PHI="much")
    assert done.returncode == 2, done.stdout[-3000:]
    assert "== groups-paper: bad settings" in done.stdout and "loss.phi" in done.stdout
    assert ": start" not in done.stdout and not list((tmp_path / "runs").iterdir())


def test_gpu_group_study_script_stops_at_once_without_the_imagenet_weights(tmp_path):
    """Not carried to the lent machine (no internet there), the weights made every run fail to
    download them in turn, each costing GPU time; the script now stops before the first."""
    torch_home = tmp_path / "torch"
    done = _group_study_script(tmp_path, 60, SEF_STUDY_TINY="", TORCH_HOME=str(torch_home))
    assert done.returncode == 2, done.stdout[-3000:]
    weights = torch_home / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    assert done.stdout == (
        f"== no ImageNet MobileNetV2 weights at {weights}: run python "
        "scripts/fetch_mobilenet_v2_weights.py and carry .torch, or set TORCH_HOME\n"
    )
    assert not list((tmp_path / "runs").iterdir())


def _fake_run(seed, top1, cpu, gap=0.0):
    analysis = {"within_group_correlation": 0.3 + gap, "between_group_correlation": 0.3,
                "part_distinctness": 0.4, "part_static_distinctness": 0.3}  # fmt: skip
    return {"seed": seed, "last_top1": top1, "cpu": cpu, "groups": 1, "last_group_top1": [],
            "analysis": analysis}  # fmt: skip


def test_group_study_pairs_each_run_with_plain_of_its_own_cpu_model(monkeypatch, tmp_path):
    """Protocol version 2: a run on another CPU model is paired with plain trained there, which
    the study trains first, under a name of its own."""
    study = importlib.import_module("group_study")
    row = next(r for r in study.SHORT_ROWS if r.name == "groups-paper-0.1")
    monkeypatch.setattr(study, "SHORT_ROWS", [study.PLAIN, row])
    monkeypatch.setattr(study, "SEEDS", [0, 1])
    amd = "AMD EPYC"
    runs = {"plain-seed0": _fake_run(0, 0.80, amd), "plain-seed1": _fake_run(1, 0.70, amd),
            "groups-paper-0.1-seed0": _fake_run(0, 0.75, amd, gap=0.5)}  # fmt: skip
    trained = []

    def fake_run_one(todo, seed, key, args, argv):
        trained.append(key)
        return _fake_run(seed, {"plain": 0.60}.get(todo.name, 0.66), "Intel(R) Xeon(R) Processor")

    monkeypatch.setattr(study, "run_one", fake_run_one)
    monkeypatch.setattr(study, "cpu_model", lambda: "Intel(R) Xeon(R) Processor")
    args = study.parse_args(["--out", str(tmp_path / "g.json")])
    study.train(study.SHORT_ROWS, args, runs, [], 0.0)
    xeon = "plain-intel-r-xeon-r-processor-seed1"
    assert trained == [xeon, "groups-paper-0.1-seed1"]  # its partner first; seed 0 was done
    entry = study.summarise_row(row, runs)["minus_plain"]
    assert entry["plain_runs"] == ["plain-seed0", xeon]
    assert entry["differences"] == pytest.approx([0.75 - 0.80, 0.66 - 0.60])
    assert json.loads((tmp_path / "g.json").read_text())["runs"][xeon]["cpu"].startswith("Intel")


def test_group_study_reads_version_1_runs_with_the_cpu_of_their_file(tmp_path):
    study = importlib.import_module("group_study")
    path = tmp_path / "g.json"
    version1 = {"protocol_version": 1, "quick": False, "machine": {"cpu": "Intel(R) Xeon(R)"},
                "runs": {"plain-seed0": {"last_top1": 0.74}}}  # fmt: skip
    path.write_text(json.dumps(version1))
    runs = study.load_runs(study.parse_args(["--out", str(path)]))
    assert runs == {"plain-seed0": {"last_top1": 0.74, "cpu": "Intel(R) Xeon(R)"}}


@pytest.mark.slow
def test_loggers_script_times_sef_train_per_logger_against_tensorboard(
    tmp_path, demo_root, run_main
):
    pytest.importorskip("wandb")
    out = str(tmp_path / "l.json")
    report = run_main("loggers.py", "--quick", "--variants", "tensorboard", "wandb", "--out", out)
    assert set(report["seconds"]) == {"tensorboard", "wandb"}
    assert set(report["ratio_to_tensorboard"]) == {"wandb"}
    assert report["ratio_to_tensorboard"]["wandb"]["median"] > 0
    assert report["epochs"] == 1 and report["same_training"] is True


def test_step_log_records_every_step_and_names_the_largest_gradients(tmp_path, capsys):
    """A --quick replay of a study row: one line per SGD step with the terms, the gradient
    applied and the channel norms; the summary names the steps with the largest gradients,
    and the global hooks are gone afterwards."""
    from torch.nn.modules import module
    from torch.optim import optimizer

    step_log = importlib.import_module("step_log")
    out = tmp_path / "steps.jsonl"
    hooks = len(module._global_forward_hooks), len(optimizer._global_optimizer_pre_hooks)
    argv = ["groups-paper-1-floor", "--quick", "--epochs", "2", "--seed", "1", "--out", str(out)]
    assert step_log.main(argv) == 0
    steps = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(steps) == 2 * 4  # 64 images a batch of 16: 4 steps an epoch
    assert all(s["gradient_norm"] > 0 and s["total"] == pytest.approx(s["ce"] + s["group"])
               for s in steps)  # fmt: skip
    assert all(0 < s["smallest_channel_norm"] <= s["median_channel_norm"] for s in steps)
    printed = capsys.readouterr().out.splitlines()[-1 - step_log.TOP :]  # after the epoch lines
    assert printed[0].startswith("8 steps, median gradient norm")
    largest = max(s["gradient_norm"] for s in steps)
    assert printed[1].startswith(f"step {[s['gradient_norm'] for s in steps].index(largest) + 1}:")
    assert (len(module._global_forward_hooks), len(optimizer._global_optimizer_pre_hooks)) == hooks


def test_step_log_measures_the_pulls_every_n_steps_without_changing_the_run(tmp_path, capsys):
    step_log = importlib.import_module("step_log")
    argv = ["sef-paper-1-floor", "--quick", "--epochs", "1", "--seed", "1"]
    assert step_log.main([*argv, "--out", str(tmp_path / "plain.jsonl")]) == 0
    capsys.readouterr()
    out = tmp_path / "pulls.jsonl"
    assert step_log.main([*argv, "--out", str(out), "--pulls-every", "3"]) == 0
    steps = [json.loads(line) for line in out.read_text().splitlines()]
    before = [json.loads(line) for line in (tmp_path / "plain.jsonl").read_text().splitlines()]
    assert [s["gradient_norm"] for s in steps] == [s["gradient_norm"] for s in before]
    assert [i for i, s in enumerate(steps) if "pull_ce" in s] == [0, 3]
    assert all(-1 <= steps[0][f"cosine_{a}_{b}"] <= 1 for a, b in step_log.PAIRS)
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2].startswith("epoch  |dCE|") and printed[-1].split()[0] == "1"
    warmup = ["sef-paper-1-phiwarmup", "--quick", "--epochs", "1", "--pulls-every", "2"]
    assert step_log.main([*warmup, "--out", str(out)]) == 0  # phi is 0 at the first step
    steps = [json.loads(line) for line in out.read_text().splitlines()]
    assert ["pull_ce" in s for s in steps] == [False, False, True, False]
    assert step_log.main(["plain", "--quick", "--pulls-every", "3"]) == 2
    assert "needs a row with a group loss" in capsys.readouterr().err


def test_step_log_switches_lambda_at_the_given_step(tmp_path, capsys):
    step_log = importlib.import_module("step_log")
    out = tmp_path / "steps.jsonl"
    argv = ["sef-paper-1-floor", "--quick", "--epochs", "1", "--out", str(out)]
    assert step_log.main([*argv, "--set", "loss.lam=0", "--lam-from", "2=1"]) == 0
    entropy = [json.loads(line)["entropy"] for line in out.read_text().splitlines()]
    assert entropy[:2] == [0.0] * 2 and len(entropy) == 4 and all(e < 0 for e in entropy[2:])
    assert step_log.main([*argv, "--lam-from", "3=0"]) == 0
    entropy = [json.loads(line)["entropy"] for line in out.read_text().splitlines()]
    assert all(e < 0 for e in entropy[:3]) and entropy[3:] == [0.0]
    with pytest.raises(SystemExit):
        step_log.parse_args(["plain", "--lam-from", "five=1"])
    assert "expected STEP=LAM" in capsys.readouterr().err


def test_step_log_pulls_match_one_backward_pass_per_term(demo_checkpoint):
    """The pulls read by torch.autograd.grad against each term's own backward pass."""
    step_log = importlib.import_module("step_log")
    from sef.trained import load_trained_model

    model = load_trained_model(demo_checkpoint).model.train()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3])
    loss = sef.SEFLoss(model.groups, lam=0.5, phi=2.0, group_variant="paper")
    log = step_log.StepLog(Path(os.devnull))
    try:
        log.model = model
        output = model.forward_sef(images)
        found = log.pulls(output, loss(output, labels))
    finally:
        log.close()
    weights = [p for p in model.backbone.parameters() if p.requires_grad]

    def gradient(term: str) -> torch.Tensor:
        model.zero_grad()
        output = model.forward_sef(images)
        value = loss(output, labels)[term]
        (value / loss.lam if term == "entropy" else value).backward()
        return torch.cat([p.grad.flatten() for p in weights])

    grads = {term: gradient(term) for term in step_log.PULLS}
    for term in step_log.PULLS:
        assert found[f"pull_{term}"] == pytest.approx(grads[term].norm().item(), rel=1e-4)
    for a, b in step_log.PAIRS:
        expected = torch.dot(grads[a], grads[b]) / (grads[a].norm() * grads[b].norm())
        # Two float32 passes agree to ~1e-4 relative per gradient, so their cosine to a few
        # times that (1.1e-4 apart on an AMD EPYC); a wrong pair or sign is off by far more.
        assert found[f"cosine_{a}_{b}"] == pytest.approx(expected.item(), abs=5e-4)


@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_same_size_groups_cost_the_same_operators_whatever_their_number(variant):
    """Groups of one size go through one batched operator each, not a loop over the groups:
    the loss with its backward runs as many operators at G = 2 as at G = 8 (a loop: more)."""
    from sef_cost import operators_per_step

    features = torch.rand(2, 64, 3, 3, requires_grad=True)  # the Gram route: HW < C

    def count(groups):
        return operators_per_step(lambda: sef.group_loss(features * 1, groups, variant).backward())

    assert count(2) == count(8)
    assert count(7) > count(8)  # 64 = 6 x 9 + 10: a loop over the groups


def _confirmation(seeds, cpu):
    """A confirmation JSON's runs: plain and the candidate at each seed, on ``cpu``."""
    ablation = importlib.import_module("group_ablation")
    runs = {}
    for seed in seeds:
        runs[f"plain-48ep-seed{seed}"] = {"row": "plain", "seed": seed, "cpu": cpu,
                                          "last_top1": 0.70 + seed / 100}  # fmt: skip
        runs[ablation.CANDIDATE.key(seed)] = {"row": ablation.CANDIDATE.name, "seed": seed,
                                              "cpu": cpu, "last_top1": 0.80}  # fmt: skip
    runs["plain-48ep-other-seed11"] = {"row": "plain", "seed": 11, "cpu": "another", "last_top1": 0}
    return {"runs": runs}


def test_group_ablation_trains_the_candidate_without_its_group_loss_beside_its_pairs(
    tmp_path, run_main, monkeypatch
):
    """The confirmed row with phi = 0 only, at each seed, paired with the confirmation's plain
    and candidate runs of that seed and CPU; refused on another CPU; the verdict waits for every
    seed, then follows the protocol."""
    ablation = importlib.import_module("group_ablation")
    from common import cpu_model

    assert ablation.ROW.overrides == ("loss.group_variant=paper", "loss.phi=0", "loss.lam=0.05",
                                      "loss.norm_floor=0.01")  # fmt: skip
    assert ablation.CANDIDATE.overrides[1] == "loss.phi=1" and ablation.ROW.epochs == 48
    monkeypatch.setattr(ablation, "SEEDS", [11, 12])
    monkeypatch.chdir(tmp_path)
    confirmation = tmp_path / "confirm.json"
    confirmation.write_text(json.dumps(_confirmation([11, 12], "elsewhere")))
    args = ["--quick", "--no-progress", "--confirmation", str(confirmation)]
    with pytest.raises(SystemExit, match="seed 11 pairs with runs trained on elsewhere"):
        ablation.main([*args, "--out", str(tmp_path / "refused.json")])
    confirmation.write_text(json.dumps(_confirmation([11, 12], cpu_model())))
    report = run_main("group_ablation.py", *args, "--out", str(tmp_path / "a.json"))
    runs = report["runs"]
    assert list(runs) == ["sef-paper-1-lam0.05-floor-phi0-48ep-seed11",
                          "sef-paper-1-lam0.05-floor-phi0-48ep-seed12"]  # fmt: skip
    assert all("loss.phi=0" in r["overrides"] and r["preset"] == "birds32b-mobilenet_v2"
               for r in runs.values())  # fmt: skip
    assert measured_as_reported(report)
    summary = report["summary"]
    tops = [r["last_top1"] for r in runs.values()]
    expected = {"row": tops, "plain": [0.81, 0.82], "candidate": [0.80, 0.80]}
    assert {name: pytest.approx(values) for name, values in summary["top1"].items()} == expected
    assert summary["candidate_minus_row"]["differences"] == pytest.approx([0.8 - t for t in tops])
    assert summary["verdict"] == ablation.verdict(summary) != "not yet"


def test_group_ablation_verdict_follows_the_protocol(monkeypatch):
    ablation = importlib.import_module("group_ablation")

    def summary(seeds, low, high):
        return {"seeds": seeds, "candidate_minus_row": {"interval": [low, high], "mean": 0.02}}

    assert ablation.verdict(summary([11, 12, 13], 0.01, 0.05)) == "not yet: 3 of 4 seeds"
    every = ablation.SEEDS
    assert ablation.verdict(summary(every, 0.01, 0.05)) == "the group loss adds accuracy"
    assert ablation.verdict(summary(every, -0.05, -0.01)) == "the group loss costs accuracy"
    assert ablation.verdict(summary(every, -0.01, 0.05)).startswith(
        "no share of the group loss measurable at four seeds (mean +2.0)"
    )


def _first_look(tmp_path, differences, quick=True):
    """An ablation JSON whose pooled differences are ``differences`` (seeds 11, 12, ...)."""
    path = tmp_path / "ablation.json"
    seeds = [11 + i for i in range(len(differences))]
    summary = {"seeds": seeds, "candidate_minus_row": {"differences": differences}}
    path.write_text(json.dumps({"protocol_version": 1, "quick": quick, "summary": summary}))
    return path


def test_group_share_trains_both_rows_at_fresh_seeds_and_pools_them_with_the_first_look(
    tmp_path, run_main, monkeypatch
):
    """The candidate then the row at each fresh seed; the verdict pools the fresh differences
    with the ablation's at 99 %; a seed's second run on another CPU is refused."""
    share = importlib.import_module("group_share")
    from common import cpu_model

    assert share.ROWS["row"].overrides[1] == "loss.phi=0" and share.ROWS["row"].epochs == 48
    assert share.ROWS["candidate"].overrides[1] == "loss.phi=1"
    assert not set(share.SEEDS) & {0, 1, 2, 10, 11, 12, 13, 14}  # never used before
    monkeypatch.setattr(share, "SEEDS", [15, 16])
    monkeypatch.chdir(tmp_path)
    args = ["--quick", "--no-progress", "--ablation", str(_first_look(tmp_path, [0.1, 0.05]))]
    refused = tmp_path / "refused.json"
    first = share.ROWS["candidate"].key(15)
    refused.write_text(json.dumps({"protocol_version": 1, "quick": True,
                                   "runs": {first: {"cpu": "elsewhere"}}}))  # fmt: skip
    with pytest.raises(SystemExit, match="seed 15's other run was trained on elsewhere"):
        share.main([*args, "--out", str(refused)])
    report = run_main("group_share.py", *args, "--out", str(tmp_path / "s.json"))
    runs = report["runs"]
    assert list(runs) == [row.key(seed) for seed in (15, 16) for row in share.ROWS.values()]
    assert all(r["preset"] == "birds32b-mobilenet_v2" and r["cpu"] == cpu_model()
               for r in runs.values())  # fmt: skip
    assert measured_as_reported(report)
    summary = report["summary"]
    fresh = [runs[share.ROWS["candidate"].key(s)]["last_top1"]
             - runs[share.ROWS["row"].key(s)]["last_top1"] for s in (15, 16)]  # fmt: skip
    assert summary["fresh"]["differences"] == pytest.approx(fresh)
    assert summary["pooled"]["differences"] == pytest.approx([0.1, 0.05, *fresh])
    assert summary["pooled"]["level"] == 0.99 and summary["fresh"]["level"] == 0.95
    assert summary["verdict"] == share.verdict(summary) and "not yet" not in summary["verdict"]


def test_group_share_verdict_follows_the_protocol():
    share = importlib.import_module("group_share")

    def summary(seeds, low, high):
        return {"seeds": seeds, "pooled": {"interval": [low, high], "mean": 0.03, "n": 8}}

    assert share.verdict(summary([15, 16, 17], 0.01, 0.05)) == "not yet: 3 of 4 seeds"
    every = share.SEEDS
    assert share.verdict(summary(every, 0.01, 0.05)) == "the group loss adds accuracy"
    assert share.verdict(summary(every, -0.05, -0.01)) == "the group loss costs accuracy"
    assert share.verdict(summary(every, -0.01, 0.05)) == (
        "no share of the group loss measurable at 8 seeds (mean +3.0)"
    )


def test_group_share_pools_at_99_percent_what_the_first_look_left_open():
    """The first look's +6.8 (95 % interval -0.1 to +13.6) is reproduced from its differences,
    and its 99 % interval, wider, holds 0 too: the pooled bar is the stricter one."""
    share = importlib.import_module("group_share")
    first = [0.12625, 0.0675, 0.0525, 0.02375]
    from ablation import paired_difference

    low95, high95 = paired_difference(first, [0] * 4)["interval"]
    assert (round(100 * low95, 1), round(100 * high95, 1)) == (-0.1, 13.6)
    summary = share.summarise({}, {"seeds": [11, 12, 13, 14],
                                   "candidate_minus_row": {"differences": first}})  # fmt: skip
    low, high = summary["pooled"]["interval"]
    assert low < low95 < 0 < high95 < high and summary["verdict"] == "not yet: 0 of 4 seeds"


@pytest.mark.slow
def test_stop_signals_script_stops_runs_and_counts_each_outcome(demo_root, tmp_path):
    """The reproducer behind the stop-signal counts in docs/results.md: a SIGTERM at a random
    moment after the first last.pt ends the run in its one line and exit code 143."""
    report = run_script("stop_signals.py", "--quick", "--out", str(tmp_path / "stops.json"))
    assert (report["signal"], report["to"], report["tries"]) == ("SIGTERM", "command", 2)
    assert report["outcomes"] == {"clean": 2}


def test_confidence_script_reports_each_runs_right_class_probability(tmp_path, run_main, demo_root):
    from PIL import Image

    from sef.engine import evaluate_checkpoint
    from sef.trained import load_trained_model

    out, runs = tmp_path / "confidence.json", tmp_path / "runs"
    report = run_main("confidence.py", "--quick", "--runs", str(runs), "--out", str(out))
    assert [run["preset"] for run in report["runs"]] == ["demo", "demo-plain"]
    for run in report["runs"]:
        checkpoint = runs / run["preset"] / "best.pt"
        result, dataset = evaluate_checkpoint(checkpoint, device="cpu", progress=False)
        assert run["images"] == len(dataset) == 8 * 3 and run["top1"] == round(result.top1, 4)
        trained = load_trained_model(checkpoint, device="cpu")
        given = []  # image by image, from the files, as a user's own code would
        for path, label in dataset.samples:
            image = trained.test_transform(Image.open(path).convert("RGB"))
            with torch.no_grad():
                given.append(float(trained.model.eval()(image[None]).softmax(1)[0, label]))
        probability = run["right_class_probability"]
        assert probability["median"] == round(float(torch.tensor(given).quantile(0.5)), 3)
        assert probability["max"] == round(max(given), 3)
        assert probability["p10"] <= probability["median"] <= probability["p90"]


def test_image_check_script_times_the_check_before_and_with_the_record(tmp_path, run_main):
    previous = os.environ["SEF_CACHE"]
    report = run_main("image_check.py", "--quick", "--out", str(tmp_path / "i.json"))
    assert list(report["seconds"]) == ["before", "first", "again"] and report["images"] == 8
    assert all(summary["n"] == 1 for summary in report["seconds"].values())
    assert os.environ["SEF_CACHE"] == previous  # given back


def test_startup_script_times_commands_beside_a_baseline_and_another_tree(tmp_path, run_main):
    src = str(BENCHMARKS.parent / "src")  # its own tree as the other: the compare road runs
    report = run_main("startup.py", "--quick", "--compare", src, "--out", str(tmp_path / "s.json"))
    commands = {"sef --version", "sef train, a config error", "import sef"}
    for clock in ("wall", "cpu"):
        result = report[clock]
        assert set(result["seconds"]) == {"python", *commands, *(f"{c} @compare" for c in commands)}
        assert all(summary["n"] == 1 for summary in result["seconds"].values())
        assert set(result["compare_over_this"]) == commands
        assert result["ratio_to"]["python"]["import sef"]["median"] > 0
