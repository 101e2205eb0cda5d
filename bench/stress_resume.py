"""Kill the driver of a search at random moments, resume it, and count what was lost.

    .venv/bin/python bench/stress_resume.py --kills 20 --seed 0

Each round starts `raydx tune` (or `--resume`) in its own session, SIGKILLs the
whole session (the driver and the Ray it started) after a random delay, and goes on
until the search finishes. Then it prints how many finished trials and reported
epochs were lost: a finished trial whose row changed or vanished, or an epoch that
was reported before a kill and had to be trained again after the resume.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SPACE = """run: {scheduler: none}
params:
  model: cnn_seed
  lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
  batch_size: {type: categorical, choices: [32, 64]}
"""


# raydx's own per-epoch metrics; a retrained epoch changes them (its timing at least)
METRIC_PREFIXES = ("cv_", "fold_", "epoch_time_s", "objective")


def events(out: Path) -> list[dict]:
    p = out / "events.jsonl"
    if not p.exists():
        return []
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip().endswith("}")]


def finished_rows(out: Path) -> pd.DataFrame:
    p = out / "trials.parquet"
    if not p.exists():
        return pd.DataFrame()
    t = pd.read_parquet(p)
    return t[t.status == "TERMINATED"].set_index("trial_id")[["cv_auc_mean", "best_epoch"]]


def epoch_losses(out: Path) -> tuple[int, int]:
    """(epochs trained again after a resume, epochs missing from folds.parquet).

    A resumed fold worker re-sends its checkpoint's history, so the same report can
    arrive twice (Tune adds its own timing and checkpoint keys); only different
    metrics for the same (trial, epoch) mean that the epoch was trained again.
    """
    seen: dict[tuple[str, int], set[str]] = {}
    for e in events(out):
        if e["e"] == "result":
            r = e["result"]
            key = (e["trial_id"], r["epoch"])
            metrics = {k: v for k, v in r.items() if k.startswith(METRIC_PREFIXES)}
            seen.setdefault(key, set()).add(json.dumps(metrics, sort_keys=True))
    replayed = sum(len(v) - 1 for v in seen.values())
    trials = pd.read_parquet(out / "trials.parquet")
    folds = pd.read_parquet(out / "folds.parquet")
    missing = 0  # epochs a trial ran whose rows are not in folds.parquet
    for t in trials.itertuples():
        have = set(folds.loc[folds.trial_id == t.trial_id, "epoch"])
        missing += len(set(range(1, int(t.epochs_run) + 1)) - have)
    return replayed, missing


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--analyse", type=Path, default=None, help="only count losses in this run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-delay", type=float, default=15.0)
    ap.add_argument("--max-delay", type=float, default=45.0)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args()
    if args.analyse is not None:
        replayed, missing = epoch_losses(args.analyse)
        print(f"reported epochs trained again after a resume: {replayed}")
        print(f"epochs missing from folds.parquet: {missing}")
        return
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="raydx-stress-"))
    out = work / "run"
    (work / "space.yaml").write_text(SPACE)
    raydx = [sys.executable, "-m", "raydx.cli", "tune"]
    first = [
        *raydx,
        "--space",
        str(work / "space.yaml"),
        "--data",
        "synthetic:400",
        "--trials",
        str(args.trials),
        "--folds",
        "2",
        "--epochs",
        str(args.epochs),
        "--output",
        str(out),
        "--checkpoint-every",
        "1",
        "--seed",
        str(args.seed),
    ]
    kills = 0
    lost_trials: set[str] = set()
    t0 = time.perf_counter()
    rounds = 0
    while True:
        rounds += 1
        cmd = first if not (out / "run.json").exists() else [*raydx, "--resume", str(out)]
        before_rows = finished_rows(out)
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        delay = rng.uniform(args.min_delay, args.max_delay)
        began = time.perf_counter()
        try:
            rc = proc.wait(timeout=delay if kills < args.kills else None)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            rc = None
        after_rows = finished_rows(out)
        for tid, row in before_rows.iterrows():
            if tid not in after_rows.index or not row.equals(after_rows.loc[tid]):
                lost_trials.add(tid)
        state = "finished" if rc == 0 else ("killed" if rc is None else f"exit {rc}")
        took = time.perf_counter() - began  # the drawn delay where it was killed
        print(
            f"round {rounds:2d}: {state} after {took:5.1f} s; {len(after_rows)} trials finished",
            flush=True,
        )
        if rc == 0:
            break
        if rc not in (None, 130):
            raise SystemExit(f"the run failed (exit {rc}); see {out}")
    replayed, missing = epoch_losses(out)
    trials = pd.read_parquet(out / "trials.parquet")
    print()
    print(f"kills: {kills}; wall time {time.perf_counter() - t0:.0f} s; run folder {out}")
    print(
        f"trials: {len(trials)} of {args.trials} asked, "
        f"{(trials.status == 'TERMINATED').sum()} TERMINATED"
    )
    print(f"finished trials lost or changed by a resume: {len(lost_trials)}")
    print(f"reported epochs trained again after a resume: {replayed}")
    print(f"epochs missing from folds.parquet: {missing}")


if __name__ == "__main__":
    main()
