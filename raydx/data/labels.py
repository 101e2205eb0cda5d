"""When two class names are one class written two ways, and when they are two classes.

Used by the readers (``files.py``: labels that would train as two classes, rare labels
spelt like common ones) and by the splitter's and ``raydx predict``'s hints alike
(``misspelling_of``).
"""

from __future__ import annotations

from collections.abc import Sequence

from raydx.lookup import suggest, typo_distance

SIGNS = "+-"


def _edges(name: str) -> tuple[str, str, str]:
    """``name`` stripped -> (leading sign, middle, trailing signs). A sign leads only
    directly before a digit (``-1``, ``+2``); trailing signs are those at the end
    (``HER2+``, ``ER -``)."""
    text = name.strip()
    lead = text[0] if len(text) > 1 and text[0] in SIGNS and text[1].isdigit() else ""
    body = text[len(lead) :]
    middle = body.rstrip(SIGNS)
    return lead, middle, body[len(middle) :]


def _point(middle: str, i: int) -> bool:
    """A decimal point: ``1.5`` is not ``15``."""
    return (
        middle[i] == "."
        and 0 < i < len(middle) - 1
        and middle[i - 1].isdigit()
        and middle[i + 1].isdigit()
    )


def label_key(name: str) -> str:
    """A label as written any way that means the same class: its lower-cased letters and
    digits, so that case, spaces and punctuation do not count (``COVID-19``,
    ``covid 19``; ``Grade-2``, ``Grade 2``; ``Benign.``, ``benign``; ``T1``, ``T-1``).
    A sign at either edge does (``-1``/``1``, ``HER2+``/``HER2-``, ``ER+``/``ER-``), and
    so does a decimal point (``1.5``/``15``)."""
    lead, middle, trail = _edges(name)
    kept = "".join(ch for i, ch in enumerate(middle.lower()) if ch.isalnum() or _point(middle, i))
    return lead + kept + trail


def label_marks(name: str) -> str:
    """The digits, decimal points and edge signs of a label: names that differ in them
    are different classes (``BI-RADS 4``/``BI-RADS 5``, ``HER2+``/``HER2-``), never
    misspellings of each other."""
    lead, middle, trail = _edges(name)
    kept = "".join(ch for i, ch in enumerate(middle) if ch.isdigit() or _point(middle, i))
    return lead + kept + trail


def misspelling_of(name: str, others: Sequence[str]) -> str | None:
    """The class name ``name`` most likely mistypes: one of the same ``label_key`` (case,
    spaces, punctuation), or at most two edits away (``malignnat`` -> ``malignant``).
    Never one that differs in its ``label_marks`` (``HER2+``/``HER2-``, ``BI-RADS 4``/
    ``BI-RADS 5``): those name other classes."""
    others = [o for o in others if label_marks(o) == label_marks(name)]
    same = [o for o in others if label_key(o) == label_key(name)]
    if same:
        return same[0]
    close = suggest(name, others, cutoff=0.75)
    return close if close is not None and typo_distance(name, close) <= 2 else None
