"""Plain text for the terminal: rows of cells as aligned columns (commands, predict, reproduce),
and JSON that any parser reads."""

from __future__ import annotations

import difflib
import json
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, plural unless the count is 1: "1 epoch", "3 epochs" ("2 classes"
    with ``plural``)."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def some(names: Sequence[str], show: Callable[[str], str] = str) -> str:
    """The first three ``names`` for a message, each as ``show`` writes it, then "..." if there
    are more."""
    return ", ".join(map(show, names[:3])) + ", ..." * (len(names) > 3)


def close_to(word: str, choices: Iterable[str], most: int = 3) -> str:
    """ "did you mean 'a', 'b' or 'c'? " for the ``choices`` spelt most like ``word`` (case
    aside), for a message that lists or points to them; "" where none is close."""
    spelt = {choice.lower(): choice for choice in choices}
    close = [repr(spelt[c]) for c in difflib.get_close_matches(word.lower(), spelt, n=most)]
    if not close:
        return ""
    listed = f"{', '.join(close[:-1])} or {close[-1]}" if len(close) > 1 else close[0]
    return f"did you mean {listed}? "


def duration(seconds: float) -> str:
    """``seconds`` for a person: "42 s" under a minute, else "3.5 min (210 s)"."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def rate(value: float) -> str:
    """A speed for a person: whole from 10 up, two significant figures under it ("0.43", not
    "0", for a CPU's images per second at 448 px)."""
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def bars_drawn(progress: bool | None, stream: TextIO | None = None) -> bool:
    """Whether to draw progress bars on ``stream`` (default stderr): as ``progress`` says, else
    (None) only where a bar is redrawn in place: a terminal, or a Jupyter notebook's cell (an
    IPython kernel's stream). A log file or a pipe would keep every redraw, a line of ``\\r``
    updates per batch."""
    if progress is not None:
        return progress
    stream = sys.stderr if stream is None else stream
    if type(stream).__module__.startswith("ipykernel."):
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no stream (pythonw), or a closed one
        return False


def shown(name: str) -> str:
    """``name`` as it can be printed or drawn: a file name that is not UTF-8 (Python holds its
    bytes as surrogates, which a terminal or a font refuses) with U+FFFD where they were, and
    :func:`printable`."""
    return printable(name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


# A lone surrogate: how Python holds a file name's byte that is not UTF-8 (U+DC80 to U+DCFF).
_SURROGATE = re.compile("[\ud800-\udfff]")


def unicode_text(name: str) -> str:
    """``name`` as valid Unicode that still names its file: a byte that is not UTF-8 (held as a
    surrogate) as ``\\xe9``, as Python's backslashreplace writes a byte; any other lone
    surrogate (a Windows name) as ``\\udc00``."""
    return _SURROGATE.sub(_escaped_surrogate, name)


def _escaped_surrogate(match: re.Match) -> str:
    code = ord(match[0])
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def json_text(value: object) -> str:
    """``value`` (dicts, lists, strings, numbers) as indented JSON whose every string is
    :func:`unicode_text`: json.dumps writes a name that is not UTF-8 with a lone surrogate
    ("caf\\udce9.png"), which strict parsers refuse as invalid Unicode."""
    return json.dumps(_unicode_strings(value), indent=2)


def _unicode_strings(value: object) -> object:
    if isinstance(value, str):
        return unicode_text(value)
    if isinstance(value, dict):
        return {_unicode_strings(key): _unicode_strings(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_unicode_strings(item) for item in value]
    return value


def printable(name: str) -> str:
    """``name`` with its control characters escaped (``\\n``, ``\\x1b``), as `ls` shows them:
    a folder named with a newline broke a table's row in two, and one with a terminal's escape
    codes (ESC [ 2 J) would have cleared the screen it was printed on."""
    if name.isprintable():
        return name
    return "".join(
        repr(char)[1:-1] if unicodedata.category(char) == "Cc" else char for char in name
    )


def width(text: str) -> int:
    """How many terminal columns ``text`` takes: two for a wide character (Chinese, Japanese,
    most emoji), none for a combining accent (an "é" written as macOS writes file names)."""
    return sum(map(_columns, text))


def _columns(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def table(rows: Sequence[Sequence[str]], align: str = "") -> str:
    """``rows`` of cells (a header is just the first row) as lines of aligned columns two spaces
    apart, without trailing spaces, each cell :func:`shown`, its :func:`width` what it takes on
    a terminal. ``align`` holds one character per column, ``<`` (left, the default for columns
    it does not reach) or ``>`` (right)."""
    return table_lines(rows, column_widths(rows), align)


def column_widths(rows: Sequence[Sequence[str]]) -> list[int]:
    """How many terminal columns each column of ``rows`` takes, its cells :func:`shown`: the
    widths of a table printed a few rows at a time (:func:`table_lines`), known beforehand."""
    rows = [[shown(cell) for cell in row] for row in rows]
    return [max(width(row[column]) for row in rows) for column in range(len(rows[0]))]


def table_lines(rows: Sequence[Sequence[str]], widths: Sequence[int], align: str = "") -> str:
    """``rows`` as :func:`table` writes them, in columns ``widths`` wide."""
    sides = align.ljust(len(widths), "<")

    def padded(cell: str, side: str, room: int) -> str:
        pad = " " * (room - width(cell))
        return pad + cell if side == ">" else cell + pad

    lines = (
        "  ".join(
            padded(shown(cell), side, room)
            for cell, side, room in zip(row, sides, widths, strict=True)
        )
        for row in rows
    )
    return "\n".join(line.rstrip() for line in lines)


GIST = 260  # the most characters of another library's error that sef quotes
GIST_TAIL = 80  # of which its end: where a library says what to do


def gist(error: Exception) -> str:
    """``error``'s message on one line, at most ``GIST`` characters: a database client's error
    carries its whole SQL statement and parameters (SQLAlchemy's, under MLflow). A longer one
    keeps its start and its last ``GIST_TAIL`` characters, where a client says what to do
    (MLflow's refusal of its file store ends with the setting that allows it)."""
    text = " ".join(str(error).split()) or type(error).__name__
    if len(text) <= GIST:
        return text
    return f"{text[: GIST - GIST_TAIL - 5].rstrip()} ... {text[-GIST_TAIL:].lstrip()}"
