"""Which searched parameters mattered: Optuna's fANOVA over a search's trials.

A search of 20 trials over 18 parameters ranks them only roughly, and a bar chart of
one fANOVA fit does not show it. So each importance is the median of fits on
resamples of the trials (with replacement), with the range it takes over them: where
two ranges overlap, the search cannot tell which of the two parameters mattered more.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raydx.results import atomic_write
from raydx.space import ParamSpec, SearchSpace

MIN_TRIALS = 5  # below this, fANOVA's forest has nothing to split
RESAMPLES = 50
RANGE = (10, 90)  # percentiles of the resampled importances
COLUMNS = ("param", "importance", "low", "high", "n_trials", "kind", "note")


def distribution(p: ParamSpec) -> Any:
    """The Optuna distribution that ``p.suggest`` samples from (None for a constant)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if p.type == "int":
        step = 1 if p.step is None else int(p.step)
        return IntDistribution(int(p.low), int(p.high), log=p.log, step=step)  # type: ignore[arg-type]
    if p.type == "float":
        return FloatDistribution(float(p.low), float(p.high), log=p.log, step=p.step)  # type: ignore[arg-type]
    if p.type == "categorical":
        return CategoricalDistribution(list(p.choices))
    return None


def kind(p: ParamSpec) -> str:
    """How the report draws the parameter's axis."""
    return p.type + ("-log" if p.log else "")


def param_importances(
    trials: pd.DataFrame,
    configs: Mapping[str, Mapping[str, Any]],
    space: SearchSpace,
    *,
    seed: int,
    resamples: int = RESAMPLES,
) -> pd.DataFrame | None:
    """fANOVA importance of each searched parameter for the trials' CV AUC: the median,
    10th and 90th percentile of ``resamples`` fits on bootstrap resamples of the trials;
    None with too few trials. The median, not one fit on all trials: with a dozen
    trials, one fit can lie outside the range of the resampled ones (a parameter whose
    apparent effect rests on one or two trials), and the median ranks more stably.

    Every trial that reached a CV AUC counts, a trial stopped early with the CV AUC it
    reached (as the search ranked it): left out, the trials ASHA stopped for being weak
    would leave only the strong ones, whose parameters vary least. A parameter that a
    ``when:`` condition leaves out of some trials, or that took one value in all of them,
    gets a row with a note instead of a number (fANOVA needs it in every trial).
    """
    ok = scored_trials(trials, configs)
    searched = [p for p in space.params if p.type != "fixed"]
    if len(ok) < MIN_TRIALS or not searched:
        return None
    values = ok["cv_auc_mean"].to_numpy(float)
    ids = ok["trial_id"].tolist()
    rows: list[dict[str, Any]] = []
    used: dict[str, Any] = {}
    for p in searched:
        present = [configs[t].get(p.name) for t in ids if p.name in configs[t]]
        note = ""
        if len(present) < len(ids):
            note = f"set in {len(present)} of {len(ids)} trials (a when: or unless: condition)"
        elif len({repr(v) for v in present}) < 2:
            note = f"one value in every trial ({present[0]!r})"
        else:
            used[p.name] = distribution(p)
        rows.append({"param": p.name, "kind": kind(p), "note": note})
    if not used or np.ptp(values) == 0:
        return None
    params = [{name: _plain(configs[t][name]) for name in used} for t in ids]

    rng = np.random.default_rng(seed)
    boot: dict[str, list[float]] = {name: [] for name in used}
    for b in range(resamples):
        pick = rng.integers(0, len(ids), len(ids))
        if np.ptp(values[pick]) == 0:
            continue
        # scikit-learn's random_state takes < 2**32, as --seed does
        fit = _fanova(
            [params[i] for i in pick], values[pick], used, n_trees=32, seed=(seed + b) % 2**32
        )
        for name in used:
            boot[name].append(fit.get(name, 0.0))
    for row in rows:
        name = row["param"]
        if name in used:
            got = boot[name] or [math.nan]
            lo, mid, hi = np.percentile(got, (RANGE[0], 50, RANGE[1]))
            row |= {"importance": float(mid), "low": float(lo), "high": float(hi)}
        row["n_trials"] = len(ids)
    table = pd.DataFrame(rows).reindex(columns=list(COLUMNS))
    table = table.sort_values("importance", ascending=False, na_position="last", kind="stable")
    return table.reset_index(drop=True)


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _fanova(
    params: list[dict[str, Any]],
    values: np.ndarray,
    distributions: dict[str, Any],
    *,
    n_trees: int,
    seed: int,
) -> dict[str, float]:
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" lines
    try:
        study = optuna.create_study(direction="maximize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(
        [
            optuna.trial.create_trial(params=p, distributions=distributions, value=float(v))
            for p, v in zip(params, values, strict=True)
        ]
    )
    evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=n_trees, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {k: float(v) for k, v in found.items()}


def write_importance(table: pd.DataFrame, out: Path) -> Path:
    path = out / "importance.csv"
    atomic_write(path, lambda p: table.to_csv(p, index=False, float_format="%.6g"))
    return path


def ended(trials: pd.DataFrame) -> np.ndarray:
    """Which trials ended as TERMINATED (run to their end or stopped by the scheduler),
    not failed or interrupted: only their AUCs are scores. Runs saved without a status
    column: all of them."""
    if "status" not in trials:
        return np.ones(len(trials), bool)
    return (trials["status"] == "TERMINATED").to_numpy()


def scored_trials(
    trials: pd.DataFrame, configs: Mapping[str, Mapping[str, Any]] | None = None
) -> pd.DataFrame:
    """The trials fANOVA ranks: ended as TERMINATED (run to their end or stopped by the
    scheduler) with a finite CV AUC, and with their parameters in ``configs`` when given.
    A trial that failed or was interrupted is not among them, whatever AUC it had
    reached. Runs saved without a status column: every trial with a CV AUC."""
    auc = pd.to_numeric(trials["cv_auc_mean"], errors="coerce").to_numpy(float)
    ok = trials[np.isfinite(auc) & ended(trials)]
    return ok if configs is None else ok[ok["trial_id"].isin(list(configs))]


def too_few_line(
    trials: pd.DataFrame, configs: Mapping[str, Mapping[str, Any]], space: SearchSpace
) -> str:
    """Why a search of a space with searched parameters wrote no importance.csv ("" when
    it did, or had nothing to rank): a user looking for the file learns what it needs."""
    n = len(scored_trials(trials, configs))
    if n >= MIN_TRIALS or all(p.type == "fixed" for p in space.params):
        return ""
    return (
        f"raydx: parameter importance needs at least {MIN_TRIALS} trials with a CV AUC, "
        f"and this search has {n}: no importance.csv"
    )


def importance_line(table: pd.DataFrame, top: int = 3) -> str:
    """The console's line: the leading parameters with their ranges."""
    ranked = table[table["importance"].notna()].head(top)
    n = int(table["n_trials"].iloc[0])
    parts = [
        f"{r.param} {r.importance:.2f} [{r.low:.2f}-{r.high:.2f}]" for r in ranked.itertuples()
    ]
    scored = table[table["importance"].notna()]
    # the leader's range reaching into the next one's: this many trials cannot rank them
    tied = len(scored) > 1 and scored["low"].iloc[0] <= scored["high"].iloc[1]
    caveat = (
        f" (the leader's range overlaps the next one's: {n} trials cannot rank them)"
        if tied
        else ""
    )
    return (
        f"raydx: parameter importance (fANOVA over {n} trials: median and {RANGE[0]}th-"
        f"{RANGE[1]}th percentile of {RESAMPLES} resamples): "
        + ", ".join(parts)
        + caveat
        + "; all in importance.csv"
    )
