"""Where the binary decision threshold goes: Youden's J, or a sensitivity or specificity
the clinic asks for.

A screening test that must miss few cancers is run at a fixed sensitivity (say 0.95) and
lives with the specificity that leaves; a confirmatory test the other way round. Youden's
J (sensitivity + specificity - 1, maximal) weighs both alike. Every rule is applied to
the winner's out-of-fold predictions, never to the test split, so the test split then
says honestly whether the target held on images the rule did not see.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from raydx.errors import RaydxError
from raydx.lookup import suggest
from raydx.metrics import finite_scores, rates, youden_threshold

RULES = ("youden", "sensitivity", "specificity")
# The points a report lays side by side, so that a clinic can pick one for predict.
STANDARD = ("youden", "sensitivity=0.9", "sensitivity=0.95", "specificity=0.9", "specificity=0.95")
_FORMS = "'youden', 'sensitivity=S' or 'specificity=S' with S in (0, 1]"


@dataclass(frozen=True)
class OperatingPoint:
    rule: str = "youden"
    target: float | None = None  # the sensitivity or specificity to reach

    @classmethod
    def parse(cls, text: str) -> OperatingPoint:
        """``'youden'``, ``'sensitivity=0.95'`` or ``'specificity=0.9'``."""
        raw = str(text).strip()
        rule, sep, value = raw.partition("=")
        rule = rule.strip().lower()
        if rule not in RULES:
            msg = f"operating_point must be {_FORMS}, but got operating_point={raw!r}."
            # With a value only the two rates fit; "sens" and "spec" are prefixes of them.
            options = RULES[1:] if sep else RULES
            prefixed = [r for r in options if rule and r.startswith(rule)]
            close = prefixed[0] if len(prefixed) == 1 else suggest(rule, options, cutoff=0.4)
            if close == "youden":
                msg += " Did you mean 'youden'?"
            elif close:
                msg += f" Did you mean '{close}={_valid(value) or _from_percent(value) or 'S'}'?"
            raise RaydxError(msg)
        if rule == "youden":
            if sep:
                raise RaydxError(
                    f"operating_point 'youden' takes no value, but got operating_point={raw!r}."
                )
            return cls()
        if not _valid(value):
            msg = f"operating_point must be {_FORMS}, but got operating_point={raw!r}."
            rate = _from_percent(value)
            if rate:
                msg += f" Did you mean '{rule}={rate}' (a rate, not a percentage)?"
            raise RaydxError(msg)
        return cls(rule, float(value))

    def __str__(self) -> str:
        # 15 digits: the spelling in run.json is the target that was applied, unrounded.
        return self.rule if self.target is None else f"{self.rule}={self.target:.15g}"

    def describe(self) -> str:
        """How the threshold was chosen, for reports: "Youden's J", "sensitivity >= 0.95"."""
        return "Youden's J" if self.target is None else f"{self.rule} >= {self.target:.15g}"

    def threshold(self, y01: np.ndarray, prob: np.ndarray) -> float:
        """The threshold (predict positive iff ``prob >= t``) that this rule picks.

        Thresholds are observed scores, as in scikit-learn's ``roc_curve``.
        ``sensitivity=S``: of those at which at least a fraction S of the positives is
        found, one with the most specificity, and of those the most sensitive.
        ``specificity=S``: of those at which at most a fraction 1 - S of the negatives
        is flagged, one with the most sensitivity, and of those the most specific (just
        above the top score when none finds a positive). No other threshold is better
        on both rates, as with ``roc_curve(drop_intermediate=True)``. Either target
        holds exactly on these predictions and only about on new ones: the test split's
        figure scatters around the target. 0.5 when only one class is present.
        """
        if self.target is None:
            return youden_threshold(y01, prob)
        y = np.asarray(y01)
        if not np.isin(y, (0, 1)).all():
            bad = np.unique(y[~np.isin(y, (0, 1))])[:5].tolist()
            raise ValueError(f"y01 must hold 0/1 labels, but got values {bad}.")
        y = y.astype(bool)
        p = np.asarray(prob, dtype=np.float64)
        if p.ndim != 1 or len(p) != len(y):
            raise ValueError(
                f"prob must be 1-D and as long as y01, but got shapes {p.shape} and {y.shape}."
            )
        finite_scores(p)
        pos, neg = np.sort(p[y])[::-1], np.sort(p[~y])[::-1]
        if len(pos) == 0 or len(neg) == 0:
            return 0.5
        if self.rule == "sensitivity":
            # The k-th highest positive score, with k the fewest positives reaching S...
            k = int(np.ceil(self.target * len(pos) - 1e-9))
            t = float(pos[max(k, 1) - 1])
            # ...lowered to just above the next negative score: the same negatives
            # flagged, and every positive in between found too.
            below = neg[neg < t]
            return float(p[p > below[0]].min()) if below.size else float(p.min())
        # Flag at most m negatives: the threshold must lie above the (m+1)-th highest
        # negative score; the lowest observed score there, else just above it...
        m = int(np.floor((1.0 - self.target) * len(neg) + 1e-9))
        if m >= len(neg):
            return float(min(p.min(), 0.5))
        bar = neg[m]
        above = p[p > bar]
        t = float(above.min()) if above.size else float(np.nextafter(bar, np.inf))
        # ...raised to the lowest positive score from there: the same positives found,
        # and fewer negatives flagged (none above the top score when no positive is).
        found = pos[pos >= t]
        return float(found[-1]) if found.size else float(np.nextafter(p.max(), np.inf))


# Runs and models saved before the rule was recorded used Youden's J.
DEFAULT = OperatingPoint()


def operating_points(
    oof: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    chosen: str = "youden",
    rules: tuple[str, ...] = STANDARD,
    cross_fitted: Callable[[OperatingPoint], tuple[float | None, float | None]] | None = None,
) -> pd.DataFrame:
    """One row per rule (``chosen``, the run's own, first and marked): the threshold it
    picks on the out-of-fold ``(y01, prob)``, the rates there, with ``cross_fitted`` (a
    rule -> the out-of-fold rates when each fold's threshold is chosen on the other
    folds) those, and with ``test`` the rates on the test split at the threshold."""
    mine = OperatingPoint.parse(chosen)
    points = [mine] + [q for q in map(OperatingPoint.parse, rules) if q != mine]
    rows = []
    for q in points:
        t = q.threshold(*oof)
        row: dict[str, object] = {
            "operating point": str(q) + (" (this run's)" if q == mine else ""),
            "threshold": t,
        }
        row["out of fold sensitivity"], row["out of fold specificity"] = _rates(oof, t)
        if cross_fitted is not None:
            row["cross-fitted sensitivity"], row["cross-fitted specificity"] = cross_fitted(q)
        if test is not None:
            row["test sensitivity"], row["test specificity"] = _rates(test, t)
        rows.append(row)
    return pd.DataFrame(rows)


def _rates(scored: tuple[np.ndarray, np.ndarray], t: float) -> tuple[float, float]:
    y01, prob = scored
    return rates(np.asarray(y01).astype(bool), prob, t)


def threshold_text(t: float, digits: int = 3) -> str:
    """A threshold for reports: ``digits`` decimals, except where that would read as a
    round 0 or 1 (saturated scores), and one above every score, which flags no image."""
    if t > 1:
        return f"1 + {t - 1:.1e} (flags none)"
    if 0 < t < 10**-digits / 2:
        return f"{t:.1e}"
    if 1 - 10**-digits / 2 <= t < 1:
        return f"1 - {1 - t:.1e}"
    return f"{t:.{digits}f}"


def of_predictions(
    pred: pd.DataFrame, chosen: str | None, best: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """:func:`operating_points` of a run's ``predictions.parquet`` (binary): its CV rows
    are the out-of-fold predictions, its test rows (when scored) the test split's. With
    the run's ``best.yaml`` (saved with a cross-fitted block), the cross-fitted rates
    too."""

    def scores(split: str) -> tuple[np.ndarray, np.ndarray] | None:
        rows = pred[pred["split"] == split]
        if rows.empty:
            return None
        return rows["is_positive"].to_numpy(bool).astype(int), rows["prob"].to_numpy(float)

    oof = scores("cv")
    if oof is None:  # every run has them; a hand-made table might not
        raise ValueError("predictions have no out-of-fold ('cv') rows.")
    crossed = None
    if best is not None and "cross_fitted" in (best.get("oof") or {}):
        from raydx.cross_fit import cross_fitted_scores

        fold = pred.loc[pred["split"] == "cv", "fold"].to_numpy()
        per_fold = (best.get("member_calibration") or {}).get("method")

        def crossed(q: OperatingPoint) -> tuple[float | None, float | None]:
            got = cross_fitted_scores(
                best["params"], oof[0].astype(bool), oof[1], fold, q, per_fold=per_fold
            )
            return got["sensitivity"], got["specificity"]

    return operating_points(
        oof, scores("test"), chosen=chosen or str(DEFAULT), cross_fitted=crossed
    )


def _from_percent(value: str) -> str | None:
    """``'95'`` -> ``'0.95'``: a target written as a percentage, as a rate (from 10%:
    ``sensitivity=1.5`` is more likely a slip than a target of 1.5%)."""
    try:
        v = float(value)
    except ValueError:
        return None
    return f"{v / 100:g}" if 10.0 <= v <= 100.0 else None


def _valid(value: str) -> str | None:
    """The target as written if it is a number in (0, 1], else None."""
    try:
        ok = 0.0 < float(value) <= 1.0
    except ValueError:
        return None
    return value.strip() if ok else None


def threshold_source(rule: object, refit: bool) -> str:
    """Where a model's threshold came from, as ``test_metrics.json`` and predict's metrics
    say it: a refit model's was chosen on models other than itself."""
    of = " of the fold models (the refit model was not among them)" if refit else ""
    return f"{rule} on out-of-fold predictions{of}"


def multi_class_note(n_classes: int, rule: object) -> str:
    """With more than two classes a threshold moves no prediction; say what it does."""
    return (
        f"note: with {n_classes} classes the prediction is the most probable class; "
        f"operating_point={rule} only sets where the positive class's sensitivity and "
        "specificity are read"
    )
