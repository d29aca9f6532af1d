"""Confirm the group study's candidate on birds32b, a set the study never looked at.

Protocol (version 1, committed before any of its runs; the runs come from that commit):

- Why: benchmarks/group_study.py proposes at most one setting, "SEF whose groups separate when
  fine-tuning without losing accuracy" (or that helps), chosen on birds32 after looking at 51
  runs. A choice made by looking is confirmed on data it was not chosen on (issue 23, step 4).
- Candidate: the study's confirmation candidate, recomputed here from its JSON (``--study``)
  once the study is complete (every 12-epoch run and every 48-epoch run): of all its rows of
  either length, plain excepted, those whose groups separate in every seed and that keep
  accuracy (mean paired difference to plain >= -2 points); the highest mean paired difference.
  An incomplete study is refused. If the study names no candidate, nothing is trained and the
  JSON records that there was nothing to confirm.
- Set and recipe: ``birds32b`` (32 classes of other part variants, generation seed 1, made for
  this and never used by the study), preset ``birds32b-mobilenet_v2[-METHOD]`` with the
  candidate's overrides and length; everything else as in the study (ImageNet MobileNetV2, 128
  px, 8x8 last map, G = 5, SGD 0.9, lr 0.01, batch 32).
- Rows: plain of the candidate's length, and the candidate; 5 fresh seeds 10, 11, 12, 13, 14;
  each candidate run paired with plain of the same seed, length and CPU model (trained first).
- Statistic: last-epoch top-1 on birds32b's 800 test images; per seed the paired difference
  candidate - plain, its mean and 95 % t interval over the 5 seeds; per seed whether the groups
  separated, as in the study (within - between channel correlation >= 0.2 on 256 fixed test
  images after the last epoch, ``sef.losses.SEPARATION_GAP``).
- Verdict: **confirmed** when the groups separate in all 5 seeds and the mean paired difference
  is >= -2 points; **confirmed, helps** when in addition its 95 % interval lies above 0; else
  **not confirmed**, naming what failed. Only a confirmed candidate becomes a preset; the
  paper's presets stay the paper's.
- Order and time: seed by seed, plain first: 10 runs, about 1.2 hours on a quiet 2-core CPU at
  12 epochs (7 minutes a run), about 5 hours at 48.

    python benchmarks/group_confirm.py                # train what is missing -> group_confirm.json
    python benchmarks/group_confirm.py --report       # the verdict of the JSON so far
    python benchmarks/group_confirm.py --figure docs/figures/group_confirm.png  # its trajectories
    python benchmarks/group_confirm.py --quick --study S.json   # tiny smoke run of a --quick study
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import group_study as study
import torch
from ablation import measured_stamp, protocol_fields, protocol_parser, start_call
from common import RESULTS_DIR, parse_arguments, write_report

PRESET = "birds32b-mobilenet_v2"
SEEDS = [10, 11, 12, 13, 14]
PROTOCOL_VERSION = 1  # change it (and say why) if anything above changes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = protocol_parser(__doc__, "group_confirm", "1-2 epochs")
    parser.add_argument("--study", type=Path, default=RESULTS_DIR / "group_study.json")
    parser.add_argument("--figure", type=Path, help="draw the candidate's trajectories; no runs")
    return parse_arguments(parser, argv, {})


def study_candidate(args: argparse.Namespace) -> tuple[study.Row | None, dict]:
    """The study's candidate row (None if it has none) and what the JSON records about it."""
    runs = study.load_runs(argparse.Namespace(out=args.study, quick=args.quick))
    long = study.long_rows(runs)
    if not long or not study.complete(long, runs):
        raise SystemExit(f"{args.study}: the study is not complete; the confirmation waits for it")
    chosen = study.candidate(study.tables_of(runs))
    source = {"study": str(args.study), "candidate": chosen}
    if chosen is None:
        return None, source
    rows = study.SHORT_ROWS if chosen["table"] == f"{study.SHORT} epochs" else long
    return next(r for r in rows if r.name == chosen["row"]), source


def verdict(entry: dict | None) -> str:
    """The protocol's verdict on the candidate's row summary (None: no run yet)."""
    if entry is None or "minus_plain" not in entry or entry["minus_plain"]["n"] < len(SEEDS):
        return "not yet: runs missing"
    failed = []
    if not entry["separates"]:
        failed.append("the groups did not separate in every seed")
    if not entry["keeps_accuracy"]:
        failed.append("it lost more than 2 points to plain")
    if failed:
        return "not confirmed: " + " and ".join(failed)
    return "confirmed, helps" if entry["helps"] else "confirmed"


def train(row: study.Row, args: argparse.Namespace, runs: dict, argv: list[str], write) -> None:
    """Plain then the candidate, seed by seed; each finished run saved at once."""
    for seed in SEEDS:
        for key, todo in study.still_to_train(row, seed, runs):
            record = study.run_one(todo, seed, key, args, argv, base=PRESET)
            runs[key] = record | {"measured": measured_stamp(__file__, argv, args.runs / key)}
            write(runs)


def report(payload: dict) -> int:
    """Print the candidate, the verdict and the table of a written JSON."""
    if not payload:
        raise SystemExit("no confirmation written yet")
    print(f"candidate: {(payload['row'] or {}).get('name')}; {payload['verdict']}")
    if payload["table"]:
        print(study.markdown({f"birds32b, seeds {SEEDS[0]}-{SEEDS[-1]}": payload["table"]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv, args, start, previous = start_call(argv, parse_args, PROTOCOL_VERSION)
    if args.report:
        return report(previous)
    runs = previous.get("runs", {})
    row, source = study_candidate(args)
    if args.figure:
        if row is None:
            raise SystemExit("the study names no candidate: nothing to draw")
        print(study.draw(runs, [row], args.figure, seeds=SEEDS))
        return 0

    def write(runs: dict) -> dict:
        rows = [study.plain_of(row), row] if row else []
        table = {r.name: study.summarise_row(r, runs, SEEDS) for r in rows}
        payload = {
            **protocol_fields(__doc__.split("\n\n")[1], PROTOCOL_VERSION, args.quick, start),
            **source,
            "row": row and {"name": row.name, "epochs": row.epochs, "overrides": row.overrides},
            "verdict": verdict(table[row.name]) if row else "nothing to confirm",
            "table": {name: entry for name, entry in table.items() if entry is not None},
            "runs": runs,
        }
        write_report(args.out, payload, torch.device("cpu"), [__file__, *argv])
        return payload

    if row is not None:
        train(row, args, runs, argv, write)
    return report(write(runs))


if __name__ == "__main__":
    sys.exit(main())
