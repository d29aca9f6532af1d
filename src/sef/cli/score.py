"""`sef score`: the paper's cross-dataset Score from a table of accuracies."""

from __future__ import annotations

import argparse
import json

from sef.cli.options import NON_NEGATIVE, PATH


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="the paper's Score (mean rank over datasets) from a CSV of accuracies",
        description=(
            "Rank methods on each dataset by accuracy (ties share the better rank) and average "
            "each method's ranks over the datasets it reports (Section III-A of the paper). "
            "The CSV has a header 'method,<dataset>,...' (or ';' or tabs between cells, with "
            "decimal commas, as spreadsheets write them); leave a cell blank (or '-') when a "
            "method does not report a dataset."
        ),
    )
    parser.add_argument("table", type=PATH, help="CSV of accuracies, one row per method")
    parser.add_argument(
        "--decimals", type=NON_NEGATIVE, default=1, help="rounding, half up (default 1)"
    )
    parser.add_argument("--json", action="store_true", help="print {method: score} as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sef.metrics import paper_scores, read_accuracy_table, round_half_up
    from sef.text import table

    accuracies = read_accuracy_table(args.table)
    scores = {m: round_half_up(s, args.decimals) for m, s in paper_scores(accuracies).items()}
    if args.json:
        print(json.dumps(scores, indent=2))
        return 0
    rows = [["method", "score", "datasets"]]
    for method, score in sorted(scores.items(), key=lambda item: item[1]):
        reported = sum(value is not None for value in accuracies[method].values())
        rows.append([method, f"{score:.{args.decimals}f}", str(reported)])
    print(table(rows, "<>"))
    return 0
