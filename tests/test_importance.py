"""Parameter importance: fANOVA over a search's trials, with resampled ranges."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from raydx.importance import importance_line, param_importances, too_few_line, write_importance
from raydx.space import parse_space

SPACE = parse_space(
    {
        "params": {
            "model": "cnn",  # takes width, head and dense_units (nothing is trained here)
            "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
            "width": {"type": "int", "low": 8, "high": 32, "step": 8},
            "head": {"type": "categorical", "choices": ["dense", "gap"]},
            "dense_units": {
                "type": "categorical",
                "choices": [64, 128],
                "when": {"head": "dense"},
            },
            "optimizer": {"type": "categorical", "choices": ["adam", "adamw"]},
        }
    }
)


def search(n: int, seed: int = 0) -> tuple[pd.DataFrame, dict[str, dict]]:
    """``n`` trials whose CV AUC rises with log(lr) and nothing else (plus a little noise);
    every optimizer is adam, so that parameter takes one value."""
    rng = np.random.default_rng(seed)
    rows, configs = [], {}
    for i in range(n):
        tid = f"t{i:02d}"
        cfg = {
            "model": "cnn_tiny",
            "lr": float(10 ** rng.uniform(-4, -2)),
            "dropout": float(rng.uniform(0, 0.5)),
            "width": int(rng.choice([8, 16, 24, 32])),
            "head": str(rng.choice(["dense", "gap"])),
            "optimizer": "adam",
        }
        if cfg["head"] == "dense":
            cfg["dense_units"] = int(rng.choice([64, 128]))
        configs[tid] = cfg
        auc = 0.7 + 0.1 * (math.log10(cfg["lr"]) + 4) + rng.normal(0, 0.005)
        rows.append(
            {
                "trial_id": tid,
                "status": "TERMINATED",
                "cv_auc_mean": auc,
                "stopped_early": i % 3 == 0,
                **{k: v for k, v in cfg.items()},
            }
        )
    return pd.DataFrame(rows), configs


def test_the_parameter_that_drives_the_cv_auc_leads_and_its_range_stands_clear():
    trials, configs = search(30)
    table = param_importances(trials, configs, SPACE, seed=0)
    assert table is not None
    scored = table[table["importance"].notna()].set_index("param")
    assert scored.index[0] == "lr"
    assert scored.loc["lr", "importance"] > 0.8
    # the resampled range of the real effect lies above every other parameter's range
    others = scored.drop(index="lr")
    assert scored.loc["lr", "low"] > others["high"].max()
    assert (scored["low"] <= scored["importance"] + 1e-9).all()
    assert (scored["importance"] <= scored["high"] + 1e-9).all()
    # medians of fits whose importances each sum to 1
    assert 0.8 < scored["importance"].sum() <= 1.0 + 1e-9
    assert (table["n_trials"] == 30).all()
    assert set(table["kind"]) >= {"float-log", "float", "int", "categorical"}


def test_a_conditional_or_constant_parameter_gets_a_note_not_a_number():
    trials, configs = search(20)
    table = param_importances(trials, configs, SPACE, seed=0).set_index("param")
    n_dense = sum("dense_units" in c for c in configs.values())
    assert 0 < n_dense < 20
    assert math.isnan(table.loc["dense_units", "importance"])
    assert table.loc["dense_units", "note"] == (
        f"set in {n_dense} of 20 trials (a when: or unless: condition)"
    )
    assert math.isnan(table.loc["optimizer", "importance"])
    assert table.loc["optimizer", "note"] == "one value in every trial ('adam')"
    assert "model" not in table.index  # a constant of the space file is not searched
    # notes sort after every scored parameter
    assert table["importance"].notna().tolist() == [True] * 4 + [False] * 2


def test_failed_and_unscored_trials_are_left_out_and_too_few_give_nothing():
    trials, configs = search(8)
    trials.loc[0, "status"] = "ERROR"
    trials.loc[1, "cv_auc_mean"] = np.nan
    table = param_importances(trials, configs, SPACE, seed=0)
    assert (table["n_trials"] == 6).all()
    assert too_few_line(trials, configs, SPACE) == ""
    trials.loc[2:3, "status"] = "ERROR"
    assert param_importances(trials, configs, SPACE, seed=0) is None  # 4 < 5
    assert too_few_line(trials, configs, SPACE) == (  # the user looking for the file
        "raydx: parameter importance needs at least 5 trials with a CV AUC, and this "
        "search has 4: no importance.csv"
    )
    # a one-trial run (raydx cv) searches nothing, and says nothing about it
    one = parse_space({"params": {"model": "cnn_tiny", "lr": 0.001}})
    trials, configs = search(8)
    assert param_importances(trials, configs, one, seed=0) is None
    assert too_few_line(trials.head(1), configs, one) == ""


def test_stopped_trials_count_with_the_cv_auc_they_reached():
    trials, configs = search(12)
    assert trials["stopped_early"].sum() == 4
    table = param_importances(trials, configs, SPACE, seed=0)
    assert (table["n_trials"] == 12).all()


def test_the_same_seed_gives_the_same_table_and_another_seed_other_ranges():
    trials, configs = search(15)
    a = param_importances(trials, configs, SPACE, seed=3)
    b = param_importances(trials, configs, SPACE, seed=3)
    pd.testing.assert_frame_equal(a, b)
    c = param_importances(trials, configs, SPACE, seed=4)
    assert not np.allclose(a["low"].dropna(), c.set_index("param").loc[a["param"], "low"].dropna())


def test_equal_cv_aucs_explain_nothing():
    trials, configs = search(10)
    trials["cv_auc_mean"] = 0.5
    assert param_importances(trials, configs, SPACE, seed=0) is None


def test_the_csv_and_the_console_line(tmp_path):
    trials, configs = search(20)
    table = param_importances(trials, configs, SPACE, seed=0)
    path = write_importance(table, tmp_path)
    back = pd.read_csv(path, keep_default_na=False, na_values=[""])
    assert list(back.columns) == [
        "param",
        "importance",
        "low",
        "high",
        "n_trials",
        "kind",
        "note",
    ]
    assert back["param"].tolist() == table["param"].tolist()
    assert back["importance"].to_numpy() == pytest.approx(
        table["importance"], rel=1e-5, nan_ok=True
    )
    line = importance_line(table)
    assert line.startswith("raydx: parameter importance (fANOVA over 20 trials: median and")
    assert line.count("[") == 3 and "lr 0." in line.split(": ", 2)[2].split(",")[0]
    assert line.endswith("all in importance.csv")
    assert "cannot rank them" not in line  # lr's range stands clear of the others
    tied = table.copy()
    tied.loc[1, "high"] = tied.loc[0, "low"]
    assert "(the leader's range overlaps the next one's: 20 trials cannot rank them)" in (
        importance_line(tied)
    )


def test_the_largest_seed_reaches_the_resampled_fits() -> None:
    """--seed takes up to 2**32 - 1; seed + resample overflowed scikit-learn's
    random_state after the search had run."""
    trials, configs = search(12)
    table = param_importances(trials, configs, SPACE, seed=2**32 - 1)
    assert table is not None and table["importance"].notna().any()
