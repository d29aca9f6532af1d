"""Does the finetune method's gain over plain come from its group loss? Its row without it.

Protocol (version 1, committed before any of its runs; the runs come from that commit):

- Why: the `finetune` method (SEF at lambda 0.05, gamma 0.05, Eq. 4 at phi 1 with
  loss.norm_floor=0.01, 48 epochs) separated its groups and beat plain on birds32 (+5.2 points)
  and on birds32b (+6.6, benchmarks/group_confirm.py). Whether the gain comes from the group
  loss, the part the paper is about, or from the small entropy and distillation terms on the
  same schedule, was never measured: no run had those terms without the group loss at 48 epochs.
- Row: the confirmation's candidate with loss.phi=0 (everything else as it: preset
  birds32b-mobilenet_v2, lambda 0.05, gamma 0.05, 48 epochs, lr x0.1 every 19, batch 32, 128
  px, G = 5; group_variant and norm_floor are then unused).
- Seeds 11, 12, 13, 14, in this order: the confirmation's seeds whose plain and candidate runs
  were trained on the AMD EPYC (seed 10's on the Intel Xeon: left out). Each run is paired with
  the confirmation's plain and candidate runs of its seed, and trained only on the CPU model they
  were trained on (else refused): the two CPUs' arithmetic differs.
- Statistic: last-epoch top-1 on birds32b's 800 test images; per seed candidate - row (the group
  loss's share of the gain) and row - plain (the other terms' share), each with its mean and 95 %
  t interval over the 4 seeds; the row's within / between channel correlation on 256 fixed test
  images (``analysis``, as in the study), expected not to separate.
- Verdict, once all 4 seeds are in: the group loss **adds accuracy** when candidate - row's
  interval lies above 0; **costs accuracy** when it lies below 0; otherwise **no share of the
  group loss measurable at four seeds**, with its mean. The docs report it whichever way.
- Time: four 48-epoch runs, about 30 minutes each on a quiet 2-core CPU; resumable.

    python benchmarks/group_ablation.py              # train what is missing -> group_ablation.json
    python benchmarks/group_ablation.py --report     # the verdict of the JSON so far
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import group_confirm as confirm
import group_study as study
import torch
from ablation import (
    describe_difference,
    measured_stamp,
    paired_difference,
    protocol_fields,
    protocol_parser,
    start_call,
)
from common import RESULTS_DIR, cpu_model, parse_arguments, write_report

SEEDS = [11, 12, 13, 14]
PROTOCOL_VERSION = 1  # change it (and say why) if anything above changes
CANDIDATE = study.LAM005_FLOOR.lengthened(study.LONG)
ROW = study.Row(
    "sef-paper-1-lam0.05-floor-phi0",
    "ablation",
    "sef",
    tuple("loss.phi=0" if o.startswith("loss.phi=") else o for o in CANDIDATE.overrides),
    study.LONG,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = protocol_parser(__doc__, "group_ablation")
    parser.add_argument("--confirmation", type=Path, default=RESULTS_DIR / "group_confirm.json")
    return parse_arguments(parser, argv, {})


def partners(confirmation: dict, seed: int) -> dict[str, dict]:
    """The confirmation's plain and candidate runs of ``seed`` on the candidate's CPU model."""
    runs = confirmation["runs"]
    candidate = runs[CANDIDATE.key(seed)]
    plain = [
        run
        for run in runs.values()
        if run["row"] == "plain" and run["seed"] == seed and run["cpu"] == candidate["cpu"]
    ]
    if len(plain) != 1:
        raise SystemExit(f"the confirmation has no single plain run of seed {seed} on its CPU")
    return {"plain": plain[0], "candidate": candidate}


def summarise(runs: dict, confirmation: dict) -> dict:
    """The pairs, their paired differences and the verdict over the seeds trained so far."""
    seeds = [seed for seed in SEEDS if ROW.key(seed) in runs]
    top1 = {"row": [runs[ROW.key(seed)]["last_top1"] for seed in seeds]}
    for name in ("plain", "candidate"):
        top1[name] = [partners(confirmation, seed)[name]["last_top1"] for seed in seeds]
    analyses = [runs[ROW.key(seed)]["analysis"] for seed in seeds]
    summary = {
        "seeds": seeds,
        "top1": top1,
        "row_gap": [
            a["within_group_correlation"] - a["between_group_correlation"] for a in analyses
        ],
    }
    if len(seeds) >= 2:
        summary["candidate_minus_row"] = paired_difference(top1["candidate"], top1["row"])
        summary["row_minus_plain"] = paired_difference(top1["row"], top1["plain"])
    summary["verdict"] = verdict(summary)
    return summary


def verdict(summary: dict) -> str:
    """The protocol's verdict on the group loss's share (not before every seed is in)."""
    if summary["seeds"] != SEEDS:
        return f"not yet: {len(summary['seeds'])} of {len(SEEDS)} seeds"
    share = summary["candidate_minus_row"]
    low, high = share["interval"]
    if low > 0:
        return "the group loss adds accuracy"
    if high < 0:
        return "the group loss costs accuracy"
    return f"no share of the group loss measurable at four seeds (mean {100 * share['mean']:+.1f})"


def report(payload: dict) -> int:
    if not payload:
        raise SystemExit("no ablation written yet")
    summary = payload["summary"]
    print(f"{ROW.name}: {summary['verdict']}")
    for i, seed in enumerate(summary["seeds"]):
        top1 = {name: 100 * values[i] for name, values in summary["top1"].items()}
        print(
            f"seed {seed}: plain {top1['plain']:.1f}, row {top1['row']:.1f}, candidate "
            f"{top1['candidate']:.1f}; row's gap {summary['row_gap'][i]:.3f}"
        )
    for name in ("candidate_minus_row", "row_minus_plain"):
        if name in summary:
            print(describe_difference(name, summary[name]))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv, args, start, previous = start_call(argv, parse_args, PROTOCOL_VERSION)
    if args.report:
        return report(previous)
    runs = previous.get("runs", {})
    confirmation = json.loads(args.confirmation.read_text())

    def write() -> dict:
        payload = {
            **protocol_fields(__doc__.split("\n\n")[1], PROTOCOL_VERSION, args.quick, start),
            "row": {"name": ROW.name, "epochs": ROW.epochs, "overrides": ROW.overrides},
            "summary": summarise(runs, confirmation),
            "runs": runs,
        }
        write_report(args.out, payload, torch.device("cpu"), [__file__, *argv])
        return payload

    for seed in SEEDS:
        if ROW.key(seed) in runs:
            continue
        cpu = partners(confirmation, seed)["candidate"]["cpu"]
        if cpu != cpu_model():
            raise SystemExit(f"seed {seed} pairs with runs trained on {cpu}, not {cpu_model()}")
        record = study.run_one(ROW, seed, ROW.key(seed), args, argv, base=confirm.PRESET)
        measured = measured_stamp(__file__, argv, args.runs / ROW.key(seed))
        runs[ROW.key(seed)] = record | {"measured": measured}
        write()
    return report(write())


if __name__ == "__main__":
    sys.exit(main())
