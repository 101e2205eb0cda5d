"""When two class names are one class written two ways, and when they are two classes.

Used by the readers (``files.py``: labels that would train as two classes, rare labels
spelt like common ones; numbers written two ways) and by the splitter's and ``raydx
predict``'s hints alike (``misspelling_of``); ``label_number`` is the one reading of a
label as a number, for the search's labels and ``raydx predict``'s alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from raydx.lookup import suggest, typo_distance

# Marks that make another class wherever they stand: HER2 (+) / HER2 (-) (brackets do
# not count: HER2 (+) is HER2+), ER+/PR-,
# <50% / >=50%. Spaces, underscores, dots and other punctuation do not count, nor does a
# hyphen between two letters or digits (COVID-19, covid 19; T-1, T1; BI-RADS 4).
MARKS = set("+-<>=/%")


def _kept(name: str, letters: bool) -> str:
    """The characters of ``name`` that decide its class: digits, a decimal point between
    two digits, ``MARKS`` but a hyphen joining two letters or digits, and (``letters``)
    letters, lower-cased."""
    text = name.strip().lower()
    out = []
    for i, ch in enumerate(text):
        before = text[i - 1] if i > 0 else ""
        after = text[i + 1] if i + 1 < len(text) else ""
        if ch.isdigit() or (letters and ch.isalnum()):
            out.append(ch)
        elif ch == "." and before.isdigit() and after.isdigit():
            out.append(ch)  # 1.5 is not 15
        elif ch == "-" and before.isalnum() and after.isalnum():
            continue  # a hyphen: COVID-19
        elif ch in MARKS:
            out.append(ch)
    return "".join(out)


def label_key(name: str) -> str:
    """A label as written any way that means the same class: its lower-cased letters and
    digits, so that case, spaces and most punctuation do not count (``COVID-19``,
    ``covid 19``; ``Grade-2``, ``Grade 2``; ``Benign.``, ``benign``; ``T1``, ``T-1``).
    Signs and comparisons do, wherever they stand (``-1``/``1``, ``HER2+``/``HER2-``,
    ``HER2 (+)``/``HER2 (-)``, ``ER+/PR-``/``ER-/PR-``, ``<50%``/``>=50%``), and so does a
    decimal point (``1.5``/``15``)."""
    return _kept(name, letters=True)


def label_marks(name: str) -> str:
    """The digits, decimal points, signs and comparisons of a label: names that differ in
    them are different classes (``BI-RADS 4``/``BI-RADS 5``, ``HER2+``/``HER2-``), never
    misspellings of each other."""
    return _kept(name, letters=False)


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


def label_number(text: object) -> float | None:
    """``text`` as a finite number (``1``, ``1.0``, ``01``, ``+1``, ``1e3``), or None: a
    word, an empty cell, ``nan``, ``inf``, and what Python's ``float`` reads but no
    spreadsheet writes as a number (``1_0``, non-ASCII digits). The search's labels
    (``files.plain_numbers``) and ``raydx predict``'s (``predict.as_class_numbers``) are
    read with it, so ``1.0`` is the class ``1`` in both."""
    if not isinstance(text, str) or not text.isascii() or "_" in text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
