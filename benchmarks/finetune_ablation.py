"""SEF where the paper uses it: an ImageNet backbone fine-tuned on a CUB-shaped set, measured.

Protocol (fixed before the first SEF run; only the plain row was used to size the recipe):

- Set: ``birds32`` (sef.datasets.birds32), 32 classes made of five two-way parts, 30 training
  and 25 test images per class (960 / 800), 128 px, birds 35-65 % of the image across on
  cluttered backgrounds, generation seed 0.
- Network: torchvision's ImageNet MobileNetV2 (``IMAGENET1K_V1``), output stride 16 (an 8x8
  last map, 1280 channels), all layers fine-tuned.
- Recipe (the paper's shape, preset ``birds32-mobilenet_v2[-METHOD]``): SGD momentum 0.9, lr 0.01,
  batch 32, no weight decay, StepLR x0.1 every 5 of 12 epochs (after 42 % and 83 %, as the
  paper's 20 and 40 of 50), resize to 128 + horizontal flip; 360 SGD steps. λ = 1, γ = 0.05, φ = 1,
  reference group loss; G = 5, one group per part that defines the classes.
- Tables: ``main``, rows plain, MaxEnt, SEF and Table III's groups only, matching only,
  matching + groups, seeds 0-4; ``phi``, SEF at φ = 0.01, 0.1, 1 and ``lambda``, SEF at
  λ = 0.05, 0.2, 1, seeds 0-2; ``steps``, plain and SEF at 6, 12 and 24 epochs (step every
  2, 5, 10: 180, 360, 720 steps), seeds 0-2. Runs with the same settings are shared between
  tables (SEF at φ = 1 is the main SEF row), and trained once.
- Statistic: last-epoch test top-1 (the best epoch's is recorded, not used: picking it looks at
  the test set), mean ± sample std over seeds; per seed, the paired difference to plain with the
  same seed, its mean and 95 % t interval (t of n - 1 degrees of freedom). Also: last-epoch
  group-head top-1, the mean channel correlation within and between the G = 5 groups (block
  means of the C x C cosine matrix, as ``sef viz corr``) and the part-localisation
  distinctness against its static-peak baseline (``sef viz parts``), both on 256 fixed test
  images; a model without groups (plain, MaxEnt) is split into the same 5 channel groups.

Every finished run is added to the JSON at once (``--out``), with its date, command and commit
(and the commit it started under, where a resume changed it); runs live
in ``--runs``, an interrupted run resumes from its last epoch, and a run already in the JSON is
not trained again. The main table runs first, then φ, λ and steps.

    python benchmarks/finetune_ablation.py                    # everything, in that order
    python benchmarks/finetune_ablation.py --tables main      # only the main table
    python benchmarks/finetune_ablation.py --report           # the tables of the JSON so far
    python benchmarks/finetune_ablation.py --quick            # tiny smoke run, random init
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from ablation import (
    finetune_run,
    mean_std,
    measured_stamp,
    paired_difference,
    protocol_fields,
    read_results,
)
from common import RESULTS_DIR, parse_arguments, write_report

PRESET = "birds32-mobilenet_v2"
MAIN_SEEDS, SWEEP_SEEDS = [0, 1, 2, 3, 4], [0, 1, 2]
METHODS = ["plain", "maxent", "sef", "groups-only", "matching-only", "matching-groups"]
PROTOCOL_VERSION = 1  # change it (and say why) if anything above changes; old runs are then kept
QUICK = [
    "data.options.per_class=2", "data.options.test_per_class=2", "data.options.resolution=32",
    "data.image_size=32", "optim.epochs=1", "optim.batch_size=16", "model.weights=null",
]  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One row of a table: a method (preset suffix) with extra overrides, over some seeds."""

    label: str
    method: str
    overrides: tuple[str, ...] = ()

    @property
    def preset(self) -> str:
        return PRESET if self.method == "sef" else f"{PRESET}-{self.method}"

    def key(self, seed: int) -> str:
        """The run's name: its settings, so tables share runs with equal settings."""
        settings = "".join(f"_{o.split('.')[-1]}" for o in self.overrides)
        return f"{self.method}{settings}-seed{seed}"


def _epochs(n: int) -> tuple[str, ...]:
    return (f"optim.epochs={n}", f"optim.step_size={round(0.4 * n)}")


TABLES: dict[str, tuple[list[Row], list[int]]] = {
    "main": ([Row(m, m) for m in METHODS], MAIN_SEEDS),
    "phi": (
        [Row("φ=0.01", "sef", ("loss.phi=0.01",)), Row("φ=0.1", "sef", ("loss.phi=0.1",)),
         Row("φ=1", "sef")],
        SWEEP_SEEDS,
    ),
    "lambda": (
        [Row("λ=0.05", "sef", ("loss.lam=0.05",)), Row("λ=0.2", "sef", ("loss.lam=0.2",)),
         Row("λ=1", "sef")],
        SWEEP_SEEDS,
    ),
    "steps": (
        [Row("plain, 6 epochs", "plain", _epochs(6)), Row("plain, 12 epochs", "plain"),
         Row("plain, 24 epochs", "plain", _epochs(24)), Row("SEF, 6 epochs", "sef", _epochs(6)),
         Row("SEF, 12 epochs", "sef"), Row("SEF, 24 epochs", "sef", _epochs(24))],
        SWEEP_SEEDS,
    ),
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", nargs="+", choices=list(TABLES), default=list(TABLES))
    parser.add_argument("--runs", type=Path, default=Path("runs/finetune-ablation"))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "finetune_ablation.json")
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 epoch: a smoke test")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds (default: all)")
    parser.add_argument("--rows", nargs="+", help="only rows with these labels (default: all)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--report", action="store_true", help="print the tables of --out; no runs")
    return parse_arguments(parser, argv, {})


# ------------------------------------------------------------------------- one run, measured


def run_one(row: Row, seed: int, args: argparse.Namespace, argv: list[str]) -> dict:
    """Train one row at one seed (or resume it) and measure it."""
    overrides = [*row.overrides, *(QUICK if args.quick else []), f"run.seed={seed}"]
    out = args.runs / row.key(seed)
    record = finetune_run(row.preset, overrides, out, progress=not args.no_progress)
    return {"seed": seed, "preset": row.preset, "overrides": list(row.overrides), **record,
            "measured": measured_stamp(__file__, argv, out)}  # fmt: skip


# --------------------------------------------------------------------------------- summaries


def summarise_table(name: str, runs: dict) -> dict:
    """Mean ± std of each row over the seeds it has, and paired differences to plain."""
    rows, seeds = TABLES[name]
    baseline = Row("plain", "plain")
    if name == "steps":
        baseline = None  # each length is compared with plain of the same length below
    summary = {}
    for row in rows:
        done = [runs[row.key(s)] for s in seeds if row.key(s) in runs]
        if not done:
            continue
        entry = {"seeds": [r["seed"] for r in done]}
        for key in ("last_top1", "best_top1", "last_class_mean"):
            entry[f"{key}_mean"], entry[f"{key}_std"] = mean_std([r[key] for r in done])
        analysis = [r["analysis"] for r in done]
        for key in ("within_group_correlation", "between_group_correlation"):
            entry[f"{key}_mean"], _ = mean_std([a[key] for a in analysis])
        for key in ("part_distinctness", "part_static_distinctness"):
            values = [a[key] for a in analysis if a[key] is not None]
            entry[f"{key}_mean"] = mean_std(values)[0] if values else None
        heads = [r["last_group_top1"] for r in done if r["groups"] > 1]
        by_head = zip(*heads, strict=True)
        entry["group_top1_mean"] = [mean_std(list(h))[0] for h in by_head] if heads else None
        reference = baseline or Row("plain", "plain", row.overrides)
        paired = [s for s in entry["seeds"] if reference.key(s) in runs]
        if row.method != "plain" and len(paired) > 1:
            entry["minus_plain"] = paired_difference(
                [runs[row.key(s)]["last_top1"] for s in paired],
                [runs[reference.key(s)]["last_top1"] for s in paired],
            ) | {"seeds": paired}
        summary[row.label] = entry
    return summary


HEADER = (
    "| row | last top-1 | per seed | row - plain, paired (95 % CI) | group heads' top-1 "
    "| within / between corr. | parts (static) |"
)


def markdown(tables: dict, runs: dict) -> str:
    """Every table as Markdown: mean ± std, each seed's number, the paired gap to plain."""
    lines = []
    for name, summary in tables.items():
        lines += ["", f"{name}:", HEADER, "|---|---|---|---|---|---|---|"]
        rows = {row.label: row for row in TABLES[name][0]}
        for label, e in summary.items():
            top = f"{100 * e['last_top1_mean']:.1f}"
            if len(e["seeds"]) > 1:  # no spread from one seed
                top += f" ± {100 * e['last_top1_std']:.1f}"
            seeds = ", ".join(
                f"{100 * runs[rows[label].key(s)]['last_top1']:.1f}" for s in e["seeds"]
            )
            diff = e.get("minus_plain")
            gap = (
                f"{100 * diff['mean']:+.1f} ({100 * diff['interval'][0]:+.1f}, "
                f"{100 * diff['interval'][1]:+.1f})"
                if diff
                else ""
            )
            heads = " / ".join(f"{100 * h:.1f}" for h in e["group_top1_mean"] or [])
            corr = (
                f"{e['within_group_correlation_mean']:.3f} / "
                f"{e['between_group_correlation_mean']:.3f}"
            )
            parts = e["part_distinctness_mean"]
            static = e["part_static_distinctness_mean"]
            located = f"{parts:.2f} ({static:.2f})" if parts is not None else ""
            lines.append(f"| {label} | {top} | {seeds} | {gap} | {heads} | {corr} | {located} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- main


def load_runs(args: argparse.Namespace) -> dict:
    """Runs already measured under this protocol (and this --quick setting)."""
    return read_results(args.out, (PROTOCOL_VERSION,), args.quick).get("runs", {})


def write(args: argparse.Namespace, runs: dict, argv: list[str], start: float) -> dict:
    tables = {name: summarise_table(name, runs) for name in TABLES}
    payload = {
        **protocol_fields(
            "\n\n".join(__doc__.split("\n\n")[1:3]), PROTOCOL_VERSION, args.quick, start
        ),
        "tables": tables,
        "runs": runs,
    }
    write_report(args.out, payload, torch.device("cpu"), [__file__, *argv])
    return tables


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    start = time.perf_counter()
    runs = load_runs(args)
    if args.report:
        print(markdown({name: summarise_table(name, runs) for name in TABLES}, runs))
        return 0
    for name in args.tables:
        rows, seeds = TABLES[name]
        for seed in args.seeds or seeds:  # seed by seed: paired comparisons complete early
            for row in rows:
                key = row.key(seed)
                if key in runs or seed not in seeds or (args.rows and row.label not in args.rows):
                    continue
                runs[key] = run_one(row, seed, args, argv)
                write(args, runs, argv, start)  # each finished run is saved at once
    tables = write(args, runs, argv, start)
    print(markdown(tables, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
