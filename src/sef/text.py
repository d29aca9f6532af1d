"""Plain text for the terminal: rows of cells as aligned columns (commands, predict, reproduce)."""

from __future__ import annotations

from collections.abc import Sequence


def table(rows: Sequence[Sequence[str]], align: str = "") -> str:
    """``rows`` of cells (a header is just the first row) as lines of aligned columns two spaces
    apart, without trailing spaces. ``align`` holds one character per column, ``<`` (left, the
    default for columns it does not reach) or ``>`` (right)."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    sides = align.ljust(len(widths), "<")
    lines = (
        "  ".join(
            f"{cell:{side}{width}}" for cell, side, width in zip(row, sides, widths, strict=True)
        )
        for row in rows
    )
    return "\n".join(line.rstrip() for line in lines)
