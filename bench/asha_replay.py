"""Replay Tune's ASHA on random search's full learning curves, with an optional start-up.

    .venv/bin/python bench/asha_replay.py /tmp/raydx-eff-random-*/run

``bench/search_efficiency.py`` leaves each random search's run folder under
``/tmp/raydx-eff-random-<seed>-*/run``; its trials ran every epoch, so ASHA's decisions
on them can be replayed offline, free. TPE's first five trials are random search's
first five (the same seeded stream), so the replay of those five shows exactly what a
scheduler variant would have done to them in the real TPE + ASHA search. The variant
here is a start-up: no stop at a rung until it holds ``min_samples`` trials, as
Optuna's ``MedianPruner(n_startup_trials=...)`` or Tune's
``MedianStoppingRule(min_samples_required=...)``; 1 is Tune's ASHA as it is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from search_efficiency import finishing_order  # bench/, this script's folder


def curves(out: Path) -> list[list[float]]:
    """Each trial's objective (running best CV AUC) per epoch, trials in finishing order."""
    by: dict[str, dict[int, float]] = {}
    for line in (out / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["e"] == "result":
            by.setdefault(e["trial_id"], {})[e["result"]["epoch"]] = e["result"]["objective"]
    return [[by[t][k] for k in sorted(by[t])] for t in finishing_order(out) if t in by]


def replay(
    cs: list[list[float]], *, grace: int, rf: int, min_samples: int
) -> list[tuple[int, float]]:
    """(epochs spent, best so far) after each trial, with Tune's ASHA rule at each rung:
    stop below the (1 - 1/rf) quantile of the trials recorded there before it."""
    max_t = min(len(c) for c in cs)
    rungs: list[tuple[int, list[float]]] = []
    t = grace
    while t < max_t:
        rungs.append((t, []))
        t *= rf
    spent, best, points = 0, float("-inf"), []
    for c in cs:
        stop_at = len(c)
        for milestone, recorded in rungs:
            cut = None
            if len(recorded) >= min_samples and recorded:
                cut = float(np.nanpercentile(recorded, (1 - 1 / rf) * 100))
            recorded.append(c[milestone - 1])
            if cut is not None and c[milestone - 1] < cut:
                stop_at = milestone
                break
        spent += stop_at
        best = max(best, max(c[:stop_at]))
        points.append((spent, best))
    return points


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="random search run folders")
    ap.add_argument("--first", type=int, default=5, help="TPE's random start-up trials")
    ap.add_argument("--grace-period", type=int, nargs="+", default=[3, 5])
    ap.add_argument("--min-samples", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--reduction-factor", type=int, default=3)
    args = ap.parse_args(argv)
    for out in args.runs:
        cs = curves(out)
        target = max(max(c) for c in cs)
        print(f"{out}: random search's best {target:.3f} (trial {_argbest(cs) + 1})")
        for grace in args.grace_period:
            for k in args.min_samples:
                pts = replay(cs[: args.first], grace=grace, rf=args.reduction_factor, min_samples=k)
                reach = next((e for e, b in pts if b >= target - 1e-12), None)
                shown = ", ".join(f"{e}:{b:.3f}" for e, b in pts)
                where = f"reached at {reach} epochs" if reach else "not reached"
                print(f"  grace {grace}, start-up {k}: {shown}; {where}")


def _argbest(cs: list[list[float]]) -> int:
    return int(np.argmax([max(c) for c in cs]))


if __name__ == "__main__":
    main()
