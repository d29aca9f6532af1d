"""When do SEF's channel groups separate when fine-tuning an ImageNet backbone, and does it help?

Protocol (version 1, committed before any of its runs; the runs come from that commit):

- Why: benchmarks/finetune_ablation.py found that the reference group loss never separated the
  groups of an ImageNet MobileNetV2 fine-tuned on birds32 (within - between channel correlation
  <= 0.004 in every row), while from scratch the same code separates them. Candidate causes: too
  few steps; the reference loss's easy way down is collapse (all channels alike scores 1/G, not
  far above separation's 0) where Eq. 4 (``loss.group_variant=paper``) ranks collapse worst;
  too weak a pull at C = 1280 (a φ sweep); λ = 1 from the first step.
- Set and recipe: as finetune_ablation's (``birds32``, 960 / 800 images, 32 classes, 128 px;
  ImageNet MobileNetV2, output stride 16, 8x8 last map, 1280 channels, G = 5; SGD 0.9, lr 0.01,
  batch 32, no weight decay; 12 epochs = 360 steps, lr x0.1 every 5 epochs; preset
  ``birds32-mobilenet_v2[-METHOD]``). SEF means λ = 1, γ = 0.05; groups-only λ = γ = 0.
- Rows, 12 epochs, seeds 0, 1, 2 each:
  plain; groups-only and SEF, each with the reference loss at φ = 1 and 10 and the paper's
  Eq. 4 at φ = 0.01, 0.1 and 1 (SEF reference φ = 1 is the paper's SEF); the warm-up rows, SEF
  with λ ramped linearly from 0 to 1 over the first 5 epochs (until the first lr step;
  ``loss.lam_warmup=5``) with the reference loss at φ = 1 and with the paper's at φ = 0.1; and
  SEF at λ = 0.05 with the paper's loss at φ = 0.1 (λ = 0.05 was harmless in finetune_ablation).
  Version 3 adds, last, groups-only and SEF with the paper's loss at φ = 0.3: after seed 0 of
  the first six rows showed nothing moving below a threshold and the group loss taking over
  above it (Eq. 4: φ = 0.1 inert, φ = 1 a class-free partition), and benchmarks/
  group_gradients.py put Eq. 4's pull equal to cross-entropy's at φ ≈ 0.4-1.1, φ = 0.3 is the
  one place between them where both could act. They take part in rule R and the candidate like
  every row; being chosen after looking, a candidate among them is what the confirmation on
  birds32b is for.
  Version 4 adds, last, three rows with φ ramped linearly from 0 to 1 over the first 5 epochs
  (``loss.phi_warmup=5``, a new loss option, off by default; the λ warm-up's length), each with
  the paper's loss at φ = 1: groups-only, SEF, and SEF at λ = 0.05. After seeds 0 and 1 showed
  Eq. 4 at φ = 1 going one of two ways by seed (the group loss taking the map before the
  classifier learnt anything, top-1 at chance; or, once, cross-entropy falling first and the
  groups then separating cleanly, 0.90 / 0.08, with a classifier that learnt, SEF seed 1), the
  warm-up lets cross-entropy move first in every seed. Rule R, the candidate and the birds32b
  confirmation treat them as version 3's rows.
  Version 5 adds, last, four rows with ``loss.norm_floor=0.01`` (a new loss option, off by
  default: a channel whose norm is under 1 % of its image's mean channel norm is divided by
  that floor instead of being scaled up to unit length): groups-only, SEF and SEF at λ = 0.05
  with the paper's loss at φ = 1, and SEF with the reference loss at φ = 1 (the paper's SEF).
  After the first 51 runs, 6 had lost what they had learnt within one epoch 7 times (test
  top-1 under half the previous epoch's, from >= 10 %: the seed table's new column ``falls``),
  and an exploratory replay of one of them (sef-paper-0.3, seed 1, bit for bit up to its fall
  after epoch 9) with a log of every step found two steps applying gradients 40 and 140 times
  the median one, each in a batch holding a channel of norm about 1e-7 that the cosine's 1 / |x|
  had scaled up to unit length; with a floor of 1 % the same run had no step over 2 times the
  median and did not fall (48.7 % after 9 epochs against 4.9 %). benchmarks/step_log.py is that
  replay, committed with this version. Rule R, the candidate and the birds32b
  confirmation treat them as version 3's rows; the runner reaches them at each seed before the
  rows of that seed it has not run yet.
  Version 6 adds, last, two rows with the floor and the paper's loss: groups-only at φ = 3, and
  SEF at λ = 0.3 with φ = 1. At seeds 0 and 1 of version 5, with the floor no run fell and Eq. 4
  at φ = 1 went the same way in both seeds: with SEF (λ = 1) the groups separated (gap 0.54,
  0.68) 16-20 points under plain, without the entropy term (groups-only; SEF at λ = 0.05) they
  did not (gap 0.02-0.04) and the classifier kept its accuracy. The two rows ask whether a
  stronger group loss separates the groups without the entropy term (φ = 3: three to seven
  times the φ at which Eq. 4 pulled as hard as cross-entropy after 12 epochs,
  group_gradients.py), and whether a smaller λ keeps the separation at a smaller cost. Rule R,
  the candidate and the birds32b confirmation treat them as version 3's rows; the runner
  reaches them at each seed before the rows of that seed it has not run yet.
  Version 7 adds, after the 12-epoch stage was complete and rule R had chosen
  sef-paper-1-floor, one row: SEF with the paper's loss at φ = 1 and the floor, with λ = 1 for
  the first 4 epochs and 0 after (``loss.lam_until=4``, a new loss option, off by default;
  step 120 is where the entropy term's and cross-entropy's pulls turn against each other in
  sef-paper-1-floor seed 0). Exploratory replays (benchmarks/step_log.py ``--lam-from 120=0``,
  the same arithmetic) at seeds 0 and 1 gave gaps of 0.19 and 0.53 on the training batches at
  67.6 and 81.0 % test top-1, where λ = 1 throughout gave 53.6 and 70.4 %: its seeds 0 and 1
  are therefore not fresh, seed 2 is. It takes part in the candidate like every row (and a
  candidate among it goes to the birds32b confirmation, with fresh seeds, as any other), but
  not in rule R, which had already chosen among the rows of versions 1 to 6. The runner trains
  its three seeds before the 48-epoch runs still to do.
  Version 8 adds one 48-epoch row, after seed 0 of the three 48-epoch rows: version 7's setting
  at 48 epochs, λ = 1 for the first 16 epochs and 0 after (``loss.lam_until=16``: the same
  third of the schedule as 4 of 12, ending before the first lr step, at epoch 19, as 4 ends
  before 5). At seed 0, 48 epochs cost the entropy term less than 12 did (the paper's SEF -7.9
  points against -18.4; rule R's row -12.5 against -20.4, its groups separating almost
  perfectly: within 0.991, between 0.012), and at 12 epochs the entropy term early was the best
  trade-off measured (-7.7 points, two seeds of three separated); the row asks whether at 48
  epochs it separates in every seed and keeps accuracy. None of its seeds was run or replayed
  before this commit. It is paired with plain of 48 epochs, takes part in the candidate like
  every row (a candidate among it goes to the birds32b confirmation with fresh seeds) and not
  in rule R. The runner reaches it at each seed after that seed's three rule-R rows.
  Version 9 adds one 48-epoch row, after the study of version 8 was complete (90 runs) and
  named no candidate: sef-paper-1-lam0.05-floor (SEF at λ = 0.05 with the paper's loss at φ = 1
  and the floor) at 48 epochs. At 12 epochs it kept accuracy (+4.4 points against plain, 95 %
  interval -4.4 to +13.1) and separated in one seed of three, but its gap on the training
  batches grew in nearly every epoch, to 0.04, 0.10 and 0.21 (seeds 0 and 1 still growing at
  lr 0.0001; seed 2 fastest at lr 0.01 and just after it, 0.025 to 0.191 in epochs 4 to 6); at
  48 epochs lr 0.01 lasts 19 epochs instead of 5, and 48 epochs turned λ = 1's separation from
  0.69-0.90 / 0.06-0.15 into 0.99 / 0.01. The row asks whether
  the setting the docs recommend for a pretrained backbone separates its groups in every seed
  at 48 epochs and keeps accuracy. None of its seeds was run or replayed at 48 epochs before
  this commit. It is paired with plain of 48 epochs, takes part in the candidate like every row
  (a candidate among it goes to the birds32b confirmation with fresh seeds) and not in rule R.
  The runner reaches it at each seed after version 8's row.
- Rows, 48 epochs (1,440 steps, lr x0.1 every 19 epochs, the paper's 40 %), seeds 0, 1, 2:
  plain, SEF (reference, φ = 1), and the most promising paper-variant row, chosen from the
  12-epoch results by rule R once they are complete: among the rows with the paper's loss, those
  whose groups separate in every seed, the one with the highest mean paired difference to plain;
  if none separates, the one with the largest mean within - between gap (ties: table order);
  since version 8, then sef-paper-1-floor-lamuntil16 and, since version 9,
  sef-paper-1-lam0.05-floor (above).
- Statistic: last-epoch test top-1 on the 800 test images, mean ± sample std over seeds; per
  seed the paired difference to plain of the same length, seed and CPU model, its mean and 95 %
  t interval (version 2: the same seed gave plain 81.2 % on an AMD EPYC and 74.0 % on an Intel
  Xeon, so a run is paired only with plain trained on its CPU model; where that plain is
  missing, it is trained there first). A run's groups **separated** when, on 256 fixed test
  images after its last epoch, the mean channel correlation within its 5 groups exceeds the one
  between them by at least 0.2 (``sef.losses.SEPARATION_GAP``; ``sef viz corr``'s statistic;
  plain's channels split into 5 as SEF would); a row separates when every seed does. A row
  **keeps accuracy** when its mean paired difference to plain is >= -2 points, and **helps**
  when the 95 % interval of that difference lies above 0. Also recorded, not judged: every
  epoch's readout of the training batches and the test images (``train_corr_*``,
  ``eval_corr_*``), part distinctness against its static baseline, the group heads' top-1.
- Figures: within - between of the training batches against SGD steps, one panel per family
  (groups only, SEF, warm-up and small λ, 48 epochs), each row's seeds and their mean.
- Confirmation: the candidate is the row (other than plain, any length) that separates and
  keeps accuracy with the highest mean paired difference; if there is none, there is nothing to
  confirm and the docs say so. The candidate and plain of its length are then run on birds32b
  (other part variants, generation seed 1, never used here) with 5 fresh seeds 10-14; its rows
  and statistic are committed before it runs, in a protocol of its own.
- Order and time: 12-epoch rows seed by seed (all rows at seed 0 first), then the 48-epoch rows
  seed by seed. A 12-epoch run takes 4-5 minutes on an idle 2-core CPU, a 48-epoch one about 20:
  42 + 9 runs, about 6.5 hours (version 3: 48 + 9, and 7-10 minutes a 12-epoch run on the Intel
  Xeon; version 4: 57 + 9, 5-6 minutes a 12-epoch run on the quiet Intel Xeon; version 5:
  69 + 9, about 10 hours in all; version 6: 75 + 9; version 7: 78 + 9; version 8: 78 + 12,
  a 48-epoch run 20 to 30 minutes on the Intel Xeon; version 9: 78 + 15). Run niced
  with OMP_WAIT_POLICY=PASSIVE; runs resume after a stop. Version 4's order puts its rows at
  seeds 0 and 1 before the rest of seed 2 (the order above, rows appended last).

Every finished run is added to the JSON at once (``--out``) with its date, command and commit
(and the commit it started under, where a resume changed it); runs live
in ``--runs``; an interrupted run resumes from its last epoch; a run in the JSON is not retrained.

    python benchmarks/group_study.py                     # everything, in the order above
    python benchmarks/group_study.py --stage short       # only the 12-epoch rows
    python benchmarks/group_study.py --report            # the tables of the JSON so far
    python benchmarks/group_study.py --figure docs/figures/group_study.png
    python benchmarks/group_study.py --quick             # tiny smoke run, random init
"""

from __future__ import annotations

import argparse
import re
import statistics
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
from common import RESULTS_DIR, cpu_model, parse_arguments, write_report

from sef.losses import SEPARATION_GAP, groups_separated

PRESET = "birds32-mobilenet_v2"
SEEDS = [0, 1, 2]
SHORT, LONG = 12, 48
WARMUP_EPOCHS = 5
KEEPS_ACCURACY = -0.02  # mean paired difference to plain, as a fraction
# Version 2 pairs a run with plain of its own CPU model (version 1 paired by seed alone); runs
# of version 1 are kept, with the CPU its file recorded (every one of them ran on that machine).
# Version 3 adds the two rows at φ = 0.3 (the docstring says why); earlier runs are unchanged.
# Version 4 adds the three φ warm-up rows (the docstring says why); earlier runs are unchanged.
# Version 5 adds the four norm-floor rows (the docstring says why); earlier runs are unchanged.
# Version 6 adds two more rows with the floor (the docstring says why); earlier runs unchanged.
# Version 7 adds one row after the 12-epoch stage, outside rule R (the docstring says why).
# Version 8 adds one 48-epoch row, outside rule R (the docstring says why).
# Version 9 adds another 48-epoch row, outside rule R (the docstring says why).
PROTOCOL_VERSION = 9  # change it (and say why) if anything above changes
QUICK = [
    "data.options.per_class=2", "data.options.test_per_class=2", "data.options.resolution=32",
    "data.image_size=32", "optim.batch_size=16", "model.weights=null",
]  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One row: a method (preset suffix) with loss overrides, trained for ``epochs``."""

    name: str
    family: str
    method: str
    overrides: tuple[str, ...] = ()
    epochs: int = SHORT

    @property
    def preset(self) -> str:
        return PRESET if self.method == "sef" else f"{PRESET}-{self.method}"

    @property
    def uses_paper_loss(self) -> bool:
        return "loss.group_variant=paper" in self.overrides

    def key(self, seed: int) -> str:
        """The run's name; every row's name is unique (a test checks it)."""
        length = "" if self.epochs == SHORT else f"-{self.epochs}ep"
        return f"{self.name}{length}-seed{seed}"

    def lengthened(self, epochs: int) -> Row:
        return Row(self.name, f"{epochs} epochs", self.method, self.overrides, epochs)

    def settings(self, quick: bool) -> list[str]:
        """The run's overrides: the row's, its length (tiny in --quick), and --quick's."""
        epochs = (1 if self.epochs == SHORT else 2) if quick else self.epochs
        length = [f"optim.epochs={epochs}", f"optim.step_size={max(1, round(0.4 * epochs))}"]
        if self.epochs == SHORT and not quick:
            length = []  # the preset's own 12 epochs, lr step every 5
        return [*self.overrides, *length, *(QUICK if quick else [])]


def _loss(variant: str, phi: float) -> tuple[str, ...]:
    return (f"loss.group_variant={variant}", f"loss.phi={phi}")


WARMUP = (f"loss.lam_warmup={WARMUP_EPOCHS}",)
PHI_WARMUP = (f"loss.phi_warmup={WARMUP_EPOCHS}",)
FLOOR = ("loss.norm_floor=0.01",)
PLAIN = Row("plain", "baseline", "plain")
LAM005_FLOOR = Row("sef-paper-1-lam0.05-floor", "norm floor", "sef",
                   _loss("paper", 1) + ("loss.lam=0.05",) + FLOOR)  # fmt: skip
SEF = Row("sef-reference-1", "SEF", "sef", _loss("reference", 1))
RULE_R_ROWS = [  # versions 1 to 6: rule R chose among these once they were complete
    PLAIN,
    *(Row(f"groups-{v}-{phi}", "groups only", "groups-only", _loss(v, phi))
      for v, phi in (("reference", 1), ("reference", 10), ("paper", 0.01), ("paper", 0.1),
                     ("paper", 1))),
    SEF,
    *(Row(f"sef-{v}-{phi}", "SEF", "sef", _loss(v, phi))
      for v, phi in (("reference", 10), ("paper", 0.01), ("paper", 0.1), ("paper", 1))),
    Row("sef-reference-1-warmup", "warm-up and small λ", "sef", _loss("reference", 1) + WARMUP),
    Row("sef-paper-0.1-warmup", "warm-up and small λ", "sef", _loss("paper", 0.1) + WARMUP),
    Row("sef-paper-0.1-lam0.05", "warm-up and small λ", "sef",
        _loss("paper", 0.1) + ("loss.lam=0.05",)),
    Row("groups-paper-0.3", "groups only", "groups-only", _loss("paper", 0.3)),  # version 3
    Row("sef-paper-0.3", "SEF", "sef", _loss("paper", 0.3)),
    Row("groups-paper-1-phiwarmup", "φ warm-up", "groups-only",  # version 4
        _loss("paper", 1) + PHI_WARMUP),
    Row("sef-paper-1-phiwarmup", "φ warm-up", "sef", _loss("paper", 1) + PHI_WARMUP),
    Row("sef-paper-1-lam0.05-phiwarmup", "φ warm-up", "sef",
        _loss("paper", 1) + ("loss.lam=0.05",) + PHI_WARMUP),
    Row("groups-paper-1-floor", "norm floor", "groups-only", _loss("paper", 1) + FLOOR),  # v. 5
    Row("sef-paper-1-floor", "norm floor", "sef", _loss("paper", 1) + FLOOR),
    LAM005_FLOOR,
    Row("sef-reference-1-floor", "norm floor", "sef", _loss("reference", 1) + FLOOR),
    Row("groups-paper-3-floor", "norm floor", "groups-only", _loss("paper", 3) + FLOOR),  # v. 6
    Row("sef-paper-1-lam0.3-floor", "norm floor", "sef",
        _loss("paper", 1) + ("loss.lam=0.3",) + FLOOR),
]  # fmt: skip
SHORT_ROWS = [
    *RULE_R_ROWS,
    Row("sef-paper-1-floor-lamuntil4", "entropy term early", "sef",  # version 7
        _loss("paper", 1) + FLOOR + ("loss.lam_until=4",)),
]  # fmt: skip
LONG_ONLY_ROWS = [  # versions 8 and 9: after the rule-R rows at each seed, not in rule R
    Row("sef-paper-1-floor-lamuntil16", f"{LONG} epochs", "sef",
        _loss("paper", 1) + FLOOR + ("loss.lam_until=16",), LONG),
    LAM005_FLOOR.lengthened(LONG),
]  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=["short", "long", "all"], default="all")
    parser.add_argument("--runs", type=Path, default=Path("runs/group-study"))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "group_study.json")
    parser.add_argument("--quick", action="store_true", help="tiny data, 1-2 epochs: a smoke test")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds (default: all)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--report", action="store_true", help="print the tables of --out; no runs")
    parser.add_argument("--figure", type=Path, help="draw the trajectories of --out here; no runs")
    return parse_arguments(parser, argv, {})


# ------------------------------------------------------------------------- one run, measured


def run_one(
    row: Row, seed: int, key: str, args: argparse.Namespace, argv: list[str], base: str = PRESET
) -> dict:
    """Train one row at one seed (or resume it) into runs/KEY and measure it; ``base`` replaces
    the study's preset family (the confirmation trains the same rows on birds32b)."""
    overrides = [*row.settings(args.quick), f"run.seed={seed}"]
    preset = row.preset.replace(PRESET, base, 1)
    out = args.runs / key
    record = finetune_run(preset, overrides, out, progress=not args.no_progress)
    measured = measured_stamp(__file__, argv, out)
    return {"seed": seed, "row": row.name, "preset": preset, "overrides": overrides,
            "cpu": cpu_model(), **record, "measured": measured}  # fmt: skip


def plain_of(row: Row) -> Row:
    """The plain row a row is compared with: plain of the same length."""
    return PLAIN if row.epochs == SHORT else PLAIN.lengthened(row.epochs)


def partner_key(row: Row, seed: int, cpu: str, runs: dict) -> str:
    """Where the plain run paired with ``row`` at ``seed`` on ``cpu`` is (or is to be) kept:
    plain's own name, unless that run is of another CPU model."""
    key = plain_of(row).key(seed)
    if key not in runs or runs[key]["cpu"] == cpu:
        return key
    return key.replace(f"-seed{seed}", f"-{re.sub(r'[^a-z0-9]+', '-', cpu.lower())}-seed{seed}")


def gap(run: dict) -> float:
    """Within - between channel correlation on the fixed test images after the last epoch."""
    analysis = run["analysis"]
    return analysis["within_group_correlation"] - analysis["between_group_correlation"]


def separated(run: dict) -> bool:
    analysis = run["analysis"]
    return groups_separated(
        analysis["within_group_correlation"], analysis["between_group_correlation"]
    )


# --------------------------------------------------------------------------------- summaries


def summarise_row(row: Row, runs: dict, seeds: list[int] | None = None) -> dict | None:
    """A row's seeds so far (of ``seeds``, the study's by default): accuracy, paired gap to
    plain of its length, separation."""
    done = [runs[row.key(s)] for s in seeds or SEEDS if row.key(s) in runs]
    if not done:
        return None
    entry = {"seeds": [r["seed"] for r in done], "family": row.family, "epochs": row.epochs}
    entry["last_top1_mean"], entry["last_top1_std"] = mean_std([r["last_top1"] for r in done])
    entry["gaps"] = [gap(r) for r in done]
    entry["gap_mean"] = statistics.fmean(entry["gaps"])
    entry["within_mean"] = statistics.fmean(r["analysis"]["within_group_correlation"] for r in done)
    entry["between_mean"] = statistics.fmean(
        r["analysis"]["between_group_correlation"] for r in done
    )
    entry["separated"] = [separated(r) for r in done]
    entry["separates"] = all(entry["separated"])
    parts = [r["analysis"]["part_distinctness"] for r in done]
    statics = [r["analysis"]["part_static_distinctness"] for r in done]
    entry["part_distinctness_mean"] = statistics.fmean(parts) if None not in parts else None
    entry["part_static_mean"] = statistics.fmean(statics) if None not in statics else None
    heads = [r["last_group_top1"] for r in done if r["groups"] > 1]
    by_head = zip(*heads, strict=True)
    entry["group_top1_mean"] = [statistics.fmean(h) for h in by_head] if heads else None
    partners = {s: partner_key(row, s, runs[row.key(s)]["cpu"], runs) for s in entry["seeds"]}
    paired = [s for s in entry["seeds"] if partners[s] in runs]
    if row.method != "plain" and paired:
        entry["minus_plain"] = paired_difference(
            [runs[row.key(s)]["last_top1"] for s in paired],
            [runs[partners[s]]["last_top1"] for s in paired],
        ) | {"seeds": paired, "plain_runs": [partners[s] for s in paired]}
        diff = entry["minus_plain"]
        entry["keeps_accuracy"] = bool(diff["mean"] >= KEEPS_ACCURACY)
        entry["helps"] = bool(diff["n"] > 1 and diff["interval"][0] > 0)  # not numpy's bool
    return entry


def complete(rows: list[Row], runs: dict) -> bool:
    return all(row.key(s) in runs for row in rows for s in SEEDS)


def most_promising_paper_row(summary: dict[str, dict]) -> str | None:
    """Rule R: of the 12-epoch rows with the paper's loss, those that separate in every seed, the
    highest mean paired difference to plain; if none separates, the largest mean gap. Only the
    rows of versions 1 to 6 (version 7 came after rule R had chosen)."""
    paper = [r.name for r in RULE_R_ROWS if r.uses_paper_loss and summary.get(r.name)]
    if not paper:
        return None
    separating = [n for n in paper if summary[n]["separates"]]
    if separating:
        return max(separating, key=lambda n: summary[n]["minus_plain"]["mean"])
    return max(paper, key=lambda n: summary[n]["gap_mean"])


def rule_r_choice(runs: dict) -> str | None:
    """Rule R's row, once every run of its rows is in (it needs them all), else None."""
    if not complete(RULE_R_ROWS, runs):
        return None
    return most_promising_paper_row(summarise(RULE_R_ROWS, runs))


def long_rows(runs: dict) -> list[Row]:
    """The 48-epoch rows, once every run of rule R's rows is in: plain, SEF and rule R's row
    lengthened, then versions 8 and 9's."""
    if not complete(RULE_R_ROWS, runs):
        return []
    chosen = rule_r_choice(runs)
    rows = {r.name: r for r in SHORT_ROWS}
    picked = [PLAIN, SEF] + ([rows[chosen]] if chosen else [])
    return [row.lengthened(LONG) for row in picked] + LONG_ONLY_ROWS


def summarise(rows: list[Row], runs: dict) -> dict[str, dict]:
    summary = {row.name: summarise_row(row, runs) for row in rows}
    return {name: entry for name, entry in summary.items() if entry is not None}


def candidate(tables: dict[str, dict]) -> dict | None:
    """The confirmation's candidate: separates, keeps accuracy, highest mean paired difference."""
    rows = [
        (table, name, entry)
        for table, summary in tables.items()
        for name, entry in summary.items()
        if entry.get("separates") and entry.get("keeps_accuracy")
    ]
    if not rows:
        return None
    table, name, entry = max(rows, key=lambda r: r[2]["minus_plain"]["mean"])
    return {"table": table, "row": name, "minus_plain": entry["minus_plain"]["mean"]}


# ------------------------------------------------------------------------------ the outputs

HEADER = (
    "| row | last top-1 | row - plain, paired (95 % CI) | within / between corr. (gap per seed) "
    "| separated | group heads' top-1 | parts (static) |"
)


def _cells(entry: dict) -> list[str]:
    top = f"{100 * entry['last_top1_mean']:.1f}"
    if len(entry["seeds"]) > 1:
        top += f" ± {100 * entry['last_top1_std']:.1f}"
    diff = entry.get("minus_plain")
    paired = ""
    if diff:
        paired = f"{100 * diff['mean']:+.1f}"
        if diff["n"] > 1:
            paired += f" ({100 * diff['interval'][0]:+.1f}, {100 * diff['interval'][1]:+.1f})"
    gaps = ", ".join(f"{g:.2f}" for g in entry["gaps"])
    corr = f"{entry['within_mean']:.3f} / {entry['between_mean']:.3f} ({gaps})"
    split = f"{sum(entry['separated'])} of {len(entry['separated'])}"
    heads = " / ".join(f"{100 * h:.1f}" for h in entry["group_top1_mean"] or [])
    parts, static = entry["part_distinctness_mean"], entry["part_static_mean"]
    located = f"{parts:.2f} ({static:.2f})" if parts is not None else ""
    return [top, paired, corr, split, heads, located]


def markdown(tables: dict[str, dict]) -> str:
    lines = []
    for name, summary in tables.items():
        lines += ["", f"{name}:", HEADER, "|---|---|---|---|---|---|---|"]
        for row, entry in summary.items():
            lines.append("| " + " | ".join([row, *_cells(entry)]) + " |")
    return "\n".join(lines)


def seed_table(rows: list[Row], runs: dict) -> str:
    """Every run of ``rows``, seed by seed, as docs/finetune.md tabulates them: test top-1, its
    difference to plain of the same seed and CPU model, the gap, within / between, parts, and
    the epochs after which its test top-1 fell by half (``falls``)."""
    lines = [
        "| row | seeds | top-1 | − plain | gap | within, between | parts (static) | falls |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        done = [runs[row.key(s)] for s in SEEDS if row.key(s) in runs]
        if done:
            cells = [_seed_cell(row, run, runs) for run in done]
            columns = [" / ".join(column).strip(" /") for column in zip(*cells, strict=True)]
            lines.append(f"| {row.name} | " + " | ".join(columns) + " |")
    return "\n".join(lines)


def _seed_cell(row: Row, run: dict, runs: dict) -> tuple[str, ...]:
    partner = runs.get(partner_key(row, run["seed"], run["cpu"], runs))
    minus = ""
    if row.method != "plain":
        minus = f"{100 * (run['last_top1'] - partner['last_top1']):+.1f}" if partner else "?"
    analysis = run["analysis"]
    within, between = analysis["within_group_correlation"], analysis["between_group_correlation"]
    parts, static = analysis["part_distinctness"], analysis["part_static_distinctness"]
    located = f"{parts:.2f} ({static:.2f})" if parts is not None else "-"
    fell = ",".join(str(epoch) for epoch in falls(run)) or "-"
    return (str(run["seed"]), f"{100 * run['last_top1']:.1f}", minus, f"{gap(run):.3f}",
            f"{within:.3f}, {between:.3f}", located, fell)  # fmt: skip


def falls(run: dict) -> list[int]:
    """The epochs after which test top-1 was under half the previous epoch's, from >= 10 %: a
    run that lost what it had learnt at once (recorded, not judged)."""
    top1 = run["eval_top1_by_epoch"]
    return [e + 1 for e in range(1, len(top1)) if top1[e - 1] >= 0.1 and top1[e] < top1[e - 1] / 2]


def trajectory(run: dict) -> tuple[list[int], list[float]]:
    """SGD steps and the training batches' within - between correlation after each epoch."""
    steps = [r["epoch"] * run["steps_per_epoch"] for r in run["history"]]
    gaps = [r["train_corr_within"] - r["train_corr_between"] for r in run["history"]]
    return steps, gaps


def draw(runs: dict, rows: list[Row], out: Path, seeds: list[int] | None = None) -> Path:
    """One panel per family: each row's seeds (thin; the study's unless given) and their mean
    (thick) against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = SEEDS if seeds is None else seeds
    drawn = [r for r in rows if r.method != "plain" and any(r.key(s) in runs for s in seeds)]
    families = list(dict.fromkeys(r.family for r in drawn))  # those with runs to draw
    size = (4.2 * len(families), 3.6)
    figure, axes = plt.subplots(1, len(families), figsize=size, sharey=True, squeeze=False)
    for axis, family in zip(axes[0], families, strict=True):
        for index, row in enumerate(r for r in rows if r.family == family):
            if row not in drawn:
                continue
            done = [runs[row.key(s)] for s in seeds if row.key(s) in runs]
            colour = f"C{index}"
            paths = [trajectory(run) for run in done]
            for steps, gaps in paths:
                axis.plot(steps, gaps, color=colour, alpha=0.3, linewidth=0.8)
            mean = [statistics.fmean(g) for g in zip(*(g for _, g in paths), strict=True)]
            axis.plot(paths[0][0], mean, color=colour, linewidth=2, label=row.name)
        axis.axhline(SEPARATION_GAP, color="grey", linestyle="--", linewidth=0.8)
        axis.set_title(family)
        axis.set_xlabel("SGD steps")
        axis.legend(fontsize=7)
    axes[0][0].set_ylabel("within - between correlation (train batches)")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


# ------------------------------------------------------------------------------------- main


def load_runs(args: argparse.Namespace) -> dict:
    """Runs already measured under this protocol (and this --quick setting)."""
    previous = read_results(args.out, tuple(range(1, PROTOCOL_VERSION + 1)), args.quick)
    runs = previous.get("runs", {})
    for run in runs.values():  # version 1's runs: all on the machine that wrote the file
        run.setdefault("cpu", previous["machine"]["cpu"])
    return runs


def tables_of(runs: dict) -> dict[str, dict]:
    return {
        f"{SHORT} epochs": summarise(SHORT_ROWS, runs),
        f"{LONG} epochs": summarise(long_rows(runs), runs),
    }


def write(args: argparse.Namespace, runs: dict, argv: list[str], start: float) -> dict:
    tables = tables_of(runs)
    payload = {
        **protocol_fields(__doc__.split("\n\n")[1], PROTOCOL_VERSION, args.quick, start),
        "rule_r_choice": rule_r_choice(runs),
        "confirmation_candidate": candidate(tables) if long_rows(runs) else None,
        "tables": tables,
        "runs": runs,
    }
    write_report(args.out, payload, torch.device("cpu"), [__file__, *argv])
    return tables


def train(rows: list[Row], args, runs: dict, argv: list[str], start: float) -> None:
    """Every missing run of ``rows``, seed by seed (every row has a first seed early), each
    after its plain partner on this CPU model; each finished run is saved at once."""
    for seed in args.seeds or SEEDS:
        for row in rows:
            if seed not in SEEDS:
                continue
            for key, todo in still_to_train(row, seed, runs):
                runs[key] = run_one(todo, seed, key, args, argv)
                write(args, runs, argv, start)


def still_to_train(row: Row, seed: int, runs: dict) -> list[tuple[str, Row]]:
    """What ``row`` at ``seed`` still needs, in order: its plain partner on this CPU model, then
    itself; nothing once it is in (it was paired on its own CPU, whatever CPU goes on)."""
    if row.key(seed) in runs:
        return []
    pair = ((partner_key(row, seed, cpu_model(), runs), plain_of(row)), (row.key(seed), row))
    return [(key, todo) for key, todo in pair if key not in runs]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    start = time.perf_counter()
    runs = load_runs(args)
    if args.figure:
        print(draw(runs, SHORT_ROWS + long_rows(runs), args.figure))
        return 0
    if not args.report:
        if args.stage in ("short", "all"):
            train(SHORT_ROWS, args, runs, argv, start)
        if args.stage in ("long", "all"):
            if not complete(RULE_R_ROWS, runs):
                raise SystemExit("the 48-epoch rows need every 12-epoch run first (rule R)")
            train(long_rows(runs), args, runs, argv, start)
    tables = write(args, runs, argv, start) if not args.report else tables_of(runs)
    print(markdown(tables))
    for name, rows in ((f"{SHORT} epochs", SHORT_ROWS), (f"{LONG} epochs", long_rows(runs))):
        print(f"\n{name}, seed by seed:\n{seed_table(rows, runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
