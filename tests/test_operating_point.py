"""The operating point: each rule reaches its target on the data it is given, and gives
up no more of the other rate than it must; bad spellings are refused with a suggestion."""

from __future__ import annotations

import numpy as np
import pytest

from raydx.config import RunOptions
from raydx.errors import RaydxError
from raydx.metrics import youden_threshold
from raydx.operating_point import STANDARD, OperatingPoint, operating_points


def _rates(y: np.ndarray, p: np.ndarray, t: float) -> tuple[float, float]:
    return float(np.mean(p[y] >= t)), float(np.mean(p[~y] < t))


def _data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 300))
    y = rng.random(n) < rng.uniform(0.1, 0.9)
    y[:2] = [True, False]
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    if seed % 3 == 0:  # ties, as sigmoid outputs in float32 give
        p = np.round(p, 1)
    return y, p


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("target", [0.8, 0.9, 0.95, 1.0])
@pytest.mark.parametrize("rule", ["sensitivity", "specificity"])
def test_each_rule_reaches_its_target_giving_away_no_more_of_the_other(rule, target, seed):
    y, p = _data(seed)
    t = OperatingPoint(rule, target).threshold(y, p)
    rate = 0 if rule == "sensitivity" else 1
    got = _rates(y, p, t)
    assert got[rate] >= target - 1e-12
    # No threshold that reaches the target does better on the other rate, nor as well
    # on it and better on the target's (the roc_curve corners): the best trade there is.
    for q in [*np.unique(p), np.nextafter(p.max(), np.inf)]:
        other = _rates(y, p, q)
        if other[rate] >= target - 1e-12:
            assert other[1 - rate] <= got[1 - rate]
            if other[1 - rate] == got[1 - rate]:
                assert other[rate] <= got[rate]


def test_ties_on_one_rate_go_to_the_threshold_better_on_the_other():
    # specificity >= 0.8 allows one of 5 negatives flagged: 0.8 first reaches it with
    # every positive found, and 0.9 finds them all too without flagging that negative
    y = np.array([1, 1, 0, 0, 0, 0, 0], bool)
    p = np.array([0.95, 0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    t = OperatingPoint("specificity", 0.8).threshold(y, p)
    assert t == 0.9 and _rates(y, p, t) == (1.0, 1.0)
    # sensitivity >= 0.6 needs 2 of 3 positives: 0.6 does it, and 0.5 finds the third
    # while flagging no more negatives (0.9 is flagged either way)
    y = np.array([1, 1, 1, 0, 0, 0], bool)
    p = np.array([0.95, 0.6, 0.5, 0.9, 0.3, 0.2])
    t = OperatingPoint("sensitivity", 0.6).threshold(y, p)
    assert t == 0.5 and _rates(y, p, t) == (1.0, 2 / 3)


def test_youden_is_the_default_and_one_class_gives_one_half():
    y, p = _data(1)
    assert OperatingPoint.parse("youden").threshold(y, p) == youden_threshold(y, p)
    for rule in ("sensitivity=0.9", "specificity=0.9"):
        assert OperatingPoint.parse(rule).threshold(np.ones(4, bool), np.linspace(0, 1, 4)) == 0.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("youden", "youden"),
        (" Sensitivity = 0.950 ", "sensitivity=0.95"),
        ("specificity=0.9999999", "specificity=0.9999999"),  # applied as given, unrounded
        ("specificity=1", "specificity=1"),
    ],
)
def test_parse_normalises_the_spelling(text, expected):
    assert str(OperatingPoint.parse(text)) == expected
    assert RunOptions(operating_point=text).operating_point == expected


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("sens=0.9", "Did you mean 'sensitivity=0.9'?"),
        ("sens=95", "Did you mean 'sensitivity=0.95'?"),
        ("sens=high", "Did you mean 'sensitivity=S'?"),
        ("sensitivity=95", "Did you mean 'sensitivity=0.95' (a rate, not a percentage)?"),
        ("specificity=90.5", "Did you mean 'specificity=0.905' (a rate, not a percentage)?"),
        ("specificity=100", "Did you mean 'specificity=1'"),
        ("spec", "Did you mean 'specificity=S'?"),
        ("specifity=0.8", "Did you mean 'specificity=0.8'?"),
        ("yuden", "Did you mean 'youden'?"),
        ("sensitivity=1.5", "with S in (0, 1], but got operating_point='sensitivity=1.5'."),
        ("sensitivity=0", "with S in (0, 1], but got operating_point='sensitivity=0'."),
        ("sensitivity", "but got operating_point='sensitivity'."),
        ("specificity=high", "but got operating_point='specificity=high'."),
        ("youden=0.5", "'youden' takes no value"),
    ],
)
def test_bad_operating_points_are_refused_with_what_is_allowed(text, said):
    with pytest.raises(RaydxError, match="operating_point") as e:
        RunOptions(operating_point=text)
    assert said in str(e.value)
    if "Did you mean" not in said:
        assert "Did you mean" not in str(e.value)


def test_describe_reads_as_the_rule():
    assert OperatingPoint().describe() == "Youden's J"
    assert OperatingPoint.parse("sensitivity=0.95").describe() == "sensitivity >= 0.95"


def test_labels_other_than_0_and_1_are_a_caller_bug():
    with pytest.raises(ValueError, match=r"y01 must hold 0/1 labels, but got values \[2\]"):
        OperatingPoint("sensitivity", 0.9).threshold(np.array([0, 1, 2]), np.array([0.1, 0.5, 0.9]))


def test_out_of_fold_scores_binary_multiclass_and_one_class_survive_yaml():
    from types import SimpleNamespace

    import yaml

    from raydx.final import out_of_fold_scores
    from raydx.metrics import auc

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    prob = rng.dirichlet(np.ones(3), 90)
    prob[np.arange(90), y] += 0.5
    prob /= prob.sum(1, keepdims=True)
    groups = np.repeat([f"p{i}" for i in range(30)], 3)
    table = SimpleNamespace(groups=groups)
    rows = np.arange(90)
    multi = out_of_fold_scores(y, prob, table, rows, positive=2, threshold=0.4)
    assert multi["pooled_auc"] == pytest.approx(auc(y, prob))  # macro one-vs-rest
    is_pos, p2 = y == 2, prob[:, 2]
    assert multi["sensitivity"] == pytest.approx(np.mean(p2[is_pos] >= 0.4))
    assert multi["specificity"] == pytest.approx(np.mean(p2[~is_pos] < 0.4))
    assert multi["n_patients"] == 30 and "patient_aggregation" not in multi
    assert yaml.safe_load(yaml.safe_dump(multi)) == multi  # plain numbers, exactly

    binary = out_of_fold_scores(
        (y == 2).astype(int), p2, SimpleNamespace(groups=None), rows, 1, 0.4
    )
    assert binary["pooled_auc"] == pytest.approx(auc(is_pos.astype(int), p2))
    assert "patient_auc" not in binary

    one = out_of_fold_scores(np.ones(5, int), np.full(5, 0.7), table, rows[:5], 1, 0.5)
    assert one["sensitivity"] == 1.0 and one["specificity"] is None
    assert yaml.safe_load(yaml.safe_dump(one))["specificity"] is None


def test_threshold_warnings_say_what_the_rule_cannot_do():
    from raydx.run import threshold_warnings

    ok = {"threshold": 0.3, "oof": {"sensitivity": 0.9, "specificity": 0.7}}
    assert threshold_warnings("sensitivity=0.9", 2, ok) == []
    (note,) = threshold_warnings("sensitivity=0.9", 3, ok)
    assert "with 3 classes the prediction is the most probable class" in note
    none_found = {"threshold": 1.0000000000000002, "oof": {"sensitivity": 0.0, "specificity": 1.0}}
    (warning,) = threshold_warnings("specificity=1", 2, none_found)
    assert "classes every out-of-fold positive image wrongly (sensitivity 0)" in warning
    assert threshold_warnings("youden", 2, {"threshold": 0.5}) == []  # an older best.yaml


def test_operating_points_table_puts_the_runs_rule_first_and_scores_test_at_oof_thresholds() -> (
    None
):
    rng = np.random.default_rng(5)
    y = (rng.random(300) < 0.3).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=300) + 2.0 * (y - 0.5))))
    yt = (rng.random(120) < 0.3).astype(int)
    pt = 1 / (1 + np.exp(-(rng.normal(size=120) + 2.0 * (yt - 0.5))))
    table = operating_points((y, p), (yt, pt), chosen="sensitivity=0.95")
    assert list(table["operating point"]) == [
        "sensitivity=0.95 (this run's)",
        "youden",
        "sensitivity=0.9",
        "specificity=0.9",
        "specificity=0.95",
    ]
    order = [STANDARD[2], *STANDARD[:2], *STANDARD[3:]]
    for row, rule in zip(table.itertuples(index=False), order, strict=True):
        point = OperatingPoint.parse(rule)
        t = point.threshold(y, p)
        assert row.threshold == t
        assert row[2] == np.mean(p[y == 1] >= t) and row[3] == np.mean(p[y == 0] < t)
        assert row[4] == np.mean(pt[yt == 1] >= t) and row[5] == np.mean(pt[yt == 0] < t)
        if point.rule == "sensitivity":
            assert row[2] >= point.target
        if point.rule == "specificity":
            assert row[3] >= point.target
    assert list(table.columns[2:]) == [
        "out of fold sensitivity",
        "out of fold specificity",
        "test sensitivity",
        "test specificity",
    ]
    # Without a test split: out-of-fold columns only; a rule outside the standard ones
    # is added first.
    alone = operating_points((y, p), chosen="specificity=0.8")
    assert len(alone) == len(STANDARD) + 1 and "test sensitivity" not in alone
    assert alone["operating point"][0] == "specificity=0.8 (this run's)"


def test_a_runs_table_adds_cross_fitted_rates_from_the_networks_own_probabilities() -> None:
    """With best.yaml (saved with a cross-fitted block), of_predictions adds each rule's
    cross-fitted rates: those of the networks' own probabilities, though it reads the
    saved (shifted) ones; a best.yaml saved before the block gets the table as it was."""
    import pandas as pd

    from raydx.cross_fit import cross_fitted_scores
    from raydx.operating_point import of_predictions
    from raydx.prior import fitted_class_mix, shift

    rng = np.random.default_rng(11)
    y = rng.random(400) < 0.3
    raw = 1 / (1 + np.exp(-(rng.normal(size=400) + 2.0 * (y - 0.5) + 0.8)))  # too high
    fold = rng.permutation(np.arange(400) % 4)
    mix = fitted_class_mix({}, y, raw)
    assert mix is not None and mix["shift"] < -0.5
    saved = shift(raw, mix["trained"], mix["mapped_to"])
    pred = pd.DataFrame({"split": "cv", "fold": fold, "is_positive": y, "prob": saved})
    best = {"params": {}, "class_mix": mix, "oof": {"cross_fitted": {}}}
    table = of_predictions(pred, "youden", best)
    assert list(table.columns[2:]) == [
        "out of fold sensitivity",
        "out of fold specificity",
        "cross-fitted sensitivity",
        "cross-fitted specificity",
    ]
    for row in table.itertuples(index=False):
        point = OperatingPoint.parse(row[0].removesuffix(" (this run's)"))
        expected = cross_fitted_scores({}, y, raw, fold, point)
        assert (row[4], row[5]) == pytest.approx((expected["sensitivity"], expected["specificity"]))
    before = of_predictions(pred, "youden", {"params": {}, "class_mix": mix, "oof": {}})
    assert "cross-fitted sensitivity" not in before
    assert before.equals(of_predictions(pred, "youden"))


def _one_trial() -> tuple[object, dict[str, object]]:
    """A search of one finished trial, as ``summary_table`` takes it: trials and best."""
    import pandas as pd

    trials = pd.DataFrame(
        {
            "trial_id": ["a1"],
            "family": ["cnn"],
            "model": ["cnn"],
            "status": ["TERMINATED"],
            "best_epoch": [7],
            "cv_auc_mean": [0.9],
            "cv_auc_std": [0.03],
        }
    )
    return trials, {"trial_id": "a1", "cv_auc_mean": 0.9, "cv_auc_std": 0.03, "threshold": 0.31}


def test_the_run_summary_gives_the_threshold_rates_fitted_and_cross_fitted(tmp_path) -> None:

    from raydx.run import summary_table

    trials, best = _one_trial()
    best["oof"] = {"sensitivity": 0.84, "specificity": 0.79}
    assert "At the threshold" not in summary_table(trials, best, None, tmp_path, 1.0)
    best["oof"]["cross_fitted"] = {"sensitivity": 0.8, "specificity": 0.77}
    text = summary_table(trials, best, None, tmp_path, 1.0)
    assert (
        "At the threshold 0.310, out of fold: sensitivity 0.840, specificity 0.790 "
        "(cross-fitted, with the threshold chosen on the other folds: 0.800, 0.770)"
    ) in text.splitlines()
    test = {"auc": 0.88, "auc_ci95": [0.8, 0.95], "accuracy": 0.39, "accuracy_at_0_5": 0.73}
    text = summary_table(trials, best, {**test, "n": 156, "model": "ensemble"}, tmp_path, 1.0)
    # the accuracy MedMNIST reports is at 0.5: both are named, so neither is misread
    assert "accuracy 0.390 at the threshold (0.730 at 0.5) (n=156, ensemble)" in text


def test_threshold_text_never_rounds_a_saturated_threshold_to_0_or_1():
    from raydx.operating_point import threshold_text

    assert threshold_text(0.3104) == "0.310" and threshold_text(0.31044, 4) == "0.3104"
    assert threshold_text(9e-7) == "9.0e-07" and threshold_text(0.0) == "0.000"
    assert threshold_text(1 - 1e-7) == "1 - 1.0e-07"
    assert threshold_text(float(np.nextafter(1.0, 2.0))) == "1 + 2.2e-16 (flags none)"


def test_the_run_summary_says_when_the_test_interval_resampled_patients(tmp_path) -> None:

    from raydx.run import summary_table

    trials, best = _one_trial()
    test = {"auc": 0.88, "auc_ci95": [0.8, 0.95], "accuracy": 0.8, "n": 40, "model": "ensemble"}
    by_image = summary_table(trials, best, test, tmp_path, 1.0)
    assert "test AUC 0.880 [95% CI 0.800-0.950], " in by_image
    by_patient = summary_table(trials, best, {**test, "auc_ci95_by": "patient"}, tmp_path, 1.0)
    assert "test AUC 0.880 [95% CI 0.800-0.950 by patient bootstrap], " in by_patient


@pytest.mark.parametrize("rule", ["youden", "sensitivity=0.9", "specificity=0.9"])
def test_a_threshold_is_not_chosen_on_scores_that_are_not_finite(rule):
    """A review: sorting put a NaN above every threshold (counted as flagged) while
    ``p >= t`` never flags it, so the target failed on the very scores it was chosen on."""
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.6, 0.7, 0.8, np.nan])
    with pytest.raises(ValueError, match=r"prob must be finite .* but got nan \(1 not finite\)"):
        OperatingPoint.parse(rule).threshold(y, p)


def test_scores_out_of_step_with_labels_are_refused() -> None:
    op = OperatingPoint.parse("sensitivity=0.9")
    with pytest.raises(ValueError, match=r"as long as y01, but got shapes \(3,\) and \(4,\)\.$"):
        op.threshold(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.2]))


def test_predictions_without_out_of_fold_rows_are_refused() -> None:
    import pandas as pd

    from raydx.operating_point import of_predictions

    test_only = pd.DataFrame(
        {"split": ["test"] * 4, "is_positive": [0, 1, 0, 1], "prob": [0.1, 0.9, 0.2, 0.8]}
    )
    with pytest.raises(ValueError, match=r"^predictions have no out-of-fold \('cv'\) rows\.$"):
        of_predictions(test_only, "youden")


def test_a_threshold_that_rounds_to_0_or_1_is_printed_as_it_is() -> None:
    """An audit: a threshold of 8.66e-08 was printed "At the threshold 0.000" on the
    console, beside a warning that gave 8.66e-08; it now reads as the report's."""
    from raydx.run import _threshold_line

    best = {"threshold": 8.66e-08, "oof": {"sensitivity": 1.0, "specificity": 0.0}}
    best["oof"]["cross_fitted"] = {"sensitivity": 1.0, "specificity": 0.0}
    (line,) = _threshold_line(best)
    assert line.startswith("At the threshold 8.7e-08, out of fold")
