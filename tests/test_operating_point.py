"""The operating point: each rule reaches its target on the data it is given, and gives
up no more of the other rate than it must; bad spellings are refused with a suggestion."""

from __future__ import annotations

import numpy as np
import pytest

from raydx.config import RunOptions
from raydx.errors import RaydxError
from raydx.metrics import youden_threshold
from raydx.operating_point import OperatingPoint


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
    assert _rates(y, p, t)[rate] >= target - 1e-12
    # One observed score further (higher for sensitivity, which would gain specificity;
    # lower for specificity) misses the target: the threshold is as far as it can go.
    further = np.unique(p[p > t] if rule == "sensitivity" else p[p < t])
    assert all(_rates(y, p, q)[rate] < target for q in further)


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
        ("specifity=0.8", "Did you mean 'specificity=0.8'?"),
        ("yuden", "Did you mean 'youden'?"),
        ("sensitivity=1.5", "with S in (0, 1], but got operating_point='sensitivity=1.5'."),
        ("sensitivity", "but got operating_point='sensitivity'."),
        ("specificity=high", "but got operating_point='specificity=high'."),
        ("youden=0.5", "'youden' takes no value"),
    ],
)
def test_bad_operating_points_are_refused_with_what_is_allowed(text, said):
    with pytest.raises(RaydxError, match="operating_point") as e:
        RunOptions(operating_point=text)
    assert said in str(e.value)


def test_describe_reads_as_the_rule():
    assert OperatingPoint().describe() == "Youden's J"
    assert OperatingPoint.parse("sensitivity=0.95").describe() == "sensitivity >= 0.95"
