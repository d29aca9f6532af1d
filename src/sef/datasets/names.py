"""Class names as users' own data spell them: one class however its name's accents are stored.

An accented letter can be stored as one character (NFC, as Linux and Windows write it) or as the
letter and a combining accent (NFD, as macOS writes file names): "Mésange" in a folder copied
from a Mac and "Mésange" typed on Linux look the same and differ as strings.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from sef.errors import warn


def key(name: str) -> str:
    """What ``name`` is compared by: its NFC form."""
    return unicodedata.normalize("NFC", name)


def class_of(names: Iterable[str]) -> dict[str, str]:
    """Each of ``names`` to the class it names: names that differ only in how their accents are
    stored are one class, named in NFC; a name stored one way only stays as it is (the class
    names, and so the labels, of data read before are unchanged)."""
    spellings: dict[str, set[str]] = {}
    for name in names:
        spellings.setdefault(key(name), set()).add(name)
    return {
        name: nfc if len(found) > 1 else name for nfc, found in spellings.items() for name in found
    }


def warn_case_twins(classes: Iterable[str], source: str) -> None:
    """Warn of two ``classes`` that differ only in case or spacing (Cat and cat, a typo in a
    CSV's labels; a non-breaking or doubled space pasted from the web), which are two classes
    where one was most likely meant."""
    first: dict[str, str] = {}
    for name in classes:
        other = first.setdefault(" ".join(key(name).casefold().split()), name)
        if other != name:
            cased = key(other).casefold() == key(name).casefold()
            warn(
                f"{source}: the classes {other!r} and {name!r} differ only in "
                f"{'case' if cased else 'spacing'}, so they are two classes; spell them alike if "
                f"they are one"
            )
            return
