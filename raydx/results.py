"""The results contract: files written atomically, rewritten as each trial ends.

``ResultsWriter`` is a Tune callback on the driver. It keeps every epoch report of
every trial and, whenever a trial finishes or fails, rewrites ``trials.parquet`` and
``folds.parquet`` (temporary file, then rename), so that partial results can be read
while a search runs and a crash never leaves a truncated file.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ray.tune import Callback

from raydx.cv import unbatched
from raydx.errors import count

# Ray-free writers (raydx.files_out), re-exported for the callers that import them here.
from raydx.files_out import atomic_write as atomic_write
from raydx.files_out import builtin as builtin
from raydx.files_out import write_json as write_json
from raydx.files_out import write_parquet as write_parquet
from raydx.files_out import write_yaml as write_yaml

FOLD_COLUMNS = ("val_auc", "val_acc", "val_loss")
FINAL = ("TERMINATED", "ERROR")  # the statuses of a trial that ended
INTERRUPTED = "INTERRUPTED"
EVENTS = "events.jsonl"
_REPORT_PREFIXES = ("cv_", "fold_", "startup_")
_REPORT_KEYS = {
    "epoch",
    "objective",
    "best_epoch",
    "resumed_from",
    "checkpoint_path",
    "time_total_s",
    "epoch_time_s",
}


def _is_report_key(key: str) -> bool:
    return key in _REPORT_KEYS or key.startswith(_REPORT_PREFIXES)


def _json_default(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return str(v)


_WRAPPERS = (
    "TrainingFailedError",
    "RayTaskError",
    "WorkerGroupError",
    "TuneError",
    "RayActorError",
)
_ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$")


def error_reason(text: str | None) -> str:
    """The innermost ``XError: message`` of a Ray traceback, for one readable line."""
    if not text or not text.strip():
        return "unknown error"
    found = [m for line in text.splitlines() if (m := _ERROR_LINE.match(line))]
    inner = [m for m in found if m.group(1) not in _WRAPPERS]
    best = (inner or found)[-1] if (inner or found) else None
    if best is None:
        return text.strip().splitlines()[-1][:500]
    return f"{best.group(1)}: {best.group(2).strip()}"[:500]


def _error_text(trial: Any) -> str | None:
    """What Tune wrote to the trial's error file (every failure so far), if anything."""
    if trial.error_file and os.path.exists(trial.error_file):
        return Path(trial.error_file).read_text(errors="replace")
    return None


# Set by ``raydx.run`` while it restores a search: the run folder being resumed, and
# where its trial lines go (see ``ResultsWriter.__setstate__``).
RESUMING: list[tuple[Path, Callable[[str], Any]]] = []


class ResultsWriter(Callback):
    """Collects per-epoch reports and keeps the trial and fold tables on disk current."""

    def __init__(
        self,
        output: Path,
        *,
        folds: int,
        epochs: int,
        param_names: list[str],
        param_values: dict[str, list[Any]] | None = None,
        log: Callable[[str], Any] | None = None,
    ) -> None:
        self.output = Path(output)
        self.log = log
        self.folds = folds
        self.epochs = epochs
        self.param_names = list(param_names)
        self.param_values = dict(param_values or {})  # SearchSpace.param_values
        self.paced = False  # the pace line said (_pace)
        self.history: dict[str, list[dict[str, Any]]] = {}
        # the reports Tune's scheduler saw: history less the epochs recovered from
        # checkpoints after the search (recover_unreported), for raydx.stopper's replay
        self.told: dict[str, list[dict[str, Any]]] = {}
        self.trials: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        # a finished trial's best report by (trial, reports seen): derived, not pickled
        self._best_cache: dict[str, tuple[int, dict[str, Any] | None]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment; a print function patched by
        # Ray's log forwarding is not picklable, and a restored copy prints nothing.
        state = {**self.__dict__, "log": None}
        del state["_best_cache"]  # derived; rebuilt on the next "done" line
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A run folder may have been moved or copied since it was pickled: a restored
        # writer must write into the folder being resumed, never the old path.
        self.__dict__.update({"told": {}, **state})  # a writer pickled before "told"
        self._best_cache = {}
        if RESUMING:
            self.output, self.log = RESUMING[-1]

    # -- the event log: every report, appended as it arrives ---------------------------
    # Tables are derived state; ``events.jsonl`` is what survives a killed driver, so
    # that ``--resume`` rebuilds the history of every trial, finished or not.
    @property
    def log_path(self) -> Path:
        return self.output / EVENTS

    def _append(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, default=_json_default) + "\n"
        with self.log_path.open("a+b") as f:
            if f.seek(0, os.SEEK_END):
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a line cut by a crash: keep it apart, or this
                    line = "\n" + line  # event would join it and be lost to replay()
            f.write(line.encode())
            f.flush()
            os.fsync(f.fileno())

    def _apply(self, event: dict[str, Any]) -> None:
        tid, kind = event["trial_id"], event["e"]
        if tid not in self.trials:
            self.order.append(tid)
            self.history[tid] = []
            self.trials[tid] = {"status": "RUNNING", "error": None, "config": {}}
        if kind == "start":
            self.trials[tid]["config"] = event["config"]
        elif kind == "result":
            self.history[tid].append(event["result"])
            if not event.get("from_checkpoint"):  # a report Tune's scheduler was told of
                self.told.setdefault(tid, []).append(event["result"])
        elif kind == "complete":
            self.trials[tid].update(
                status="TERMINATED",
                error=None,
                budget=bool(event.get("budget")),
                silent_s=event.get("silent_s"),
            )
        elif kind == "error":
            self.trials[tid].update(status="ERROR", error=event["error"])
        elif kind == "abandon":  # raydx.run, on --resume: a trial Tune's snapshot never held
            if self.history[tid]:  # its epochs stay on record; it ranks nowhere
                self.trials[tid].update(status=INTERRUPTED, abandoned=True)
            else:  # never reported: as if it had not begun (the search replaces it)
                self.order.remove(tid)
                del self.trials[tid], self.history[tid]

    def _event(self, event: dict[str, Any]) -> None:
        self._append(event)
        self._apply(event)

    def replay(self) -> int:
        """Rebuild the state from ``events.jsonl`` (on resume); returns the event count."""
        self.history, self.trials, self.order, self.told = {}, {}, [], {}
        self._best_cache = {}
        if not self.log_path.exists():
            return 0
        n = 0
        for line in self.log_path.read_text().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:  # a line cut by the crash
                continue
            self._apply(event)
            n += 1
        return n

    # -- the record's view of each trial ----------------------------------------------
    def ended(self, tid: str) -> bool:
        """Whether the record closed the trial: finished, failed, or abandoned."""
        t = self.trials.get(tid)
        return t is not None and (t["status"] in FINAL or bool(t.get("abandoned")))

    def finished(self) -> list[str]:
        """Trials the record has as finished or failed (``--resume`` runs them no more)."""
        return [tid for tid, t in self.trials.items() if t["status"] in FINAL]

    def completed(self) -> list[str]:
        """Trials Tune completed: ran every epoch or were stopped (not failed)."""
        return [tid for tid, t in self.trials.items() if t["status"] == "TERMINATED"]

    def unfinished(self) -> list[str]:
        """Trials still running in the record (a search stopped while they ran)."""
        return [tid for tid in self.trials if not self.ended(tid)]

    def counted(self) -> int:
        """Trials that count towards the search's number of trials: an abandoned one does
        not (the search starts another in its place)."""
        return sum(not t.get("abandoned") for t in self.trials.values())

    def abandon(self, held: set[str]) -> list[str]:
        """On ``--resume``: close the running trials that Tune's snapshot, ``held``, does
        not hold; returns them.

        A driver killed within Tune's snapshot period of a trial's start leaves the
        trial's ``start`` event (and, rarely, its first epochs) but no trial that Tune can
        restore: nothing would ever finish it, and every resume would stop on it. One
        without an epoch is dropped, as a trial that never began; one with epochs keeps
        them, as INTERRUPTED, out of the ranking. Neither counts towards the search's
        trials, so the search starts another in each one's place.
        """
        gone = [tid for tid in self.unfinished() if tid not in held]
        for tid in gone:
            self._event({"e": "abandon", "trial_id": tid})
        if gone:
            self.flush()
        return gone

    # -- Tune callback hooks --------------------------------------------------------
    def setup(
        self,
        stop: Any = None,
        num_samples: int | None = None,
        total_num_samples: int | None = None,
        **info: Any,
    ) -> None:
        self.replay()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ensure(trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if self.ended(trial.trial_id):  # see on_trial_complete
            return
        self._ensure(trial)
        # Epochs sent along with a later one (raydx.cv.batched) get their own rows.
        for r in unbatched(result):
            if r.get("oom_restart") and self.log is not None:  # raydx.cv.fold_worker
                n = self.order.index(trial.trial_id) + 1
                self.log(
                    f"raydx: trial {n} ({trial.trial_id}) ran out of GPU memory and its fold "
                    f"workers restarted from its last checkpoint ({r['oom_restart']}); a "
                    "second time is the configuration's failure"
                )
            if "epoch" in r and "failed" not in r:
                keep = {k: v for k, v in r.items() if _is_report_key(k)}
                self._event({"e": "result", "trial_id": trial.trial_id, "result": keep})
                self._pace(trial.trial_id, r)

    def _pace(self, trial_id: str, r: dict[str, Any]) -> None:
        """Once a search, at the first epoch reported: how long a whole trial takes at
        that pace, and whether the time budget leaves it that long (an audit: 96-px
        tiles, 100-112 s an epoch of 960 of them, and the first news of it 2.5 minutes
        into the run)."""
        from raydx import budget

        epoch_s = r.get("epoch_time_s")
        if getattr(self, "paced", False) or self.log is None or not epoch_s:
            return
        self.paced = True
        n = self.order.index(trial_id) + 1
        rest = epoch_s * (self.epochs - int(r.get("epoch", 1)))  # this trial's epochs to go
        left = budget.remaining()
        cut = "(a smaller --image-size, fewer folds or epochs shorten them)"
        short = (
            f"; the time budget is spent, so trials stop at their next report {cut}"
            if left <= 0
            else f"; the time budget has {_duration(left)} left, so trials stop before their "
            f"last epoch {cut}"
            if rest > left
            else ""
        )
        self.log(
            f"raydx: an epoch of trial {n} took {epoch_s:.1f} s ({self.folds} folds): a "
            f"trial that runs all {count(self.epochs, 'epoch')} takes about "
            f"{_duration(epoch_s * self.epochs)} at this pace{short}"
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from raydx import budget

        if self.ended(trial.trial_id):
            # Finished in the record, running in Tune's older snapshot: resumed, it ends at
            # once (raydx.cv.trial_fn), and its record (epochs, who stopped it) stands.
            return
        self._ensure(trial)
        event: dict[str, Any] = {"e": "complete", "trial_id": trial.trial_id}
        if trial.trial_id in budget.stopped_trials():
            event["budget"] = True  # stopped at the deadline, not by the scheduler
        quiet = budget.silenced_trials().get(trial.trial_id)
        if quiet is not None:  # stopped for its silence past the deadline
            event["silent_s"] = round(quiet, 1)
        self._event(event)
        self.flush()
        self._say(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.ended(trial.trial_id):  # see on_trial_complete
            return
        self._ensure(trial)
        reason = error_reason(_error_text(trial))
        self._event({"e": "error", "trial_id": trial.trial_id, "error": reason})
        self.flush()
        self._say(trial.trial_id)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial whose process or node was lost, restarted by Tune (``--max-failures``);
        said, since Tune's own traceback just before reads as the trial's end."""
        self._ensure(trial)
        # Tune's error file adds a "Failure # N" section for each failure
        latest = (_error_text(trial) or "").rsplit("Failure # ", 1)[-1]
        if "TrialFailure" in latest:  # a failed configuration that Tune restarted all the
            return  # same (raydx.retry); raised again at once, it ends as an error, said then
        reason = error_reason(latest)
        self._append({"e": "recover", "trial_id": trial.trial_id, "error": reason})
        if self.log is not None:
            n = self.order.index(trial.trial_id) + 1
            lost = (
                "ran out of GPU memory, the first time"  # raydx.cv.OutOfGpuMemory
                if "OutOfGpuMemory" in latest
                else "had processes killed by Ray's memory monitor (the node ran low on "
                "memory: fewer trials at once, or a smaller --image-size, would help)"
                if "running low on memory" in latest  # not torch's OutOfMemoryError
                else "lost its process or node"
            )
            # one whose worker never started (an audit: Ray could not start it) has no
            # checkpoint: it starts again from its first epoch
            kept = _last_checkpoint(self.history[trial.trial_id]) is not None
            self.log(
                f"raydx: trial {n} ({trial.trial_id}) {lost} ({reason}); "
                + ("restarted from its last checkpoint" if kept else "started again")
                + f" (restart {trial.num_failures} of {trial.max_failures})"
            )

    def _say(self, tid: str) -> None:
        if self.log is None:
            return
        t, hist = self.trials[tid], self.history[tid]
        n = self.order.index(tid) + 1
        if t["status"] == "ERROR":
            self.log(f"raydx: trial {n} ({tid}) failed: {t['error']}")
            return
        best = _best_report(hist)
        epochs = max((h["epoch"] for h in hist), default=0)
        by = self._stopped_by(tid, epochs)
        stopped = f" (stopped by the {by})" if by else ""
        if by and t.get("silent_s") is not None:
            stopped = (
                f" (stopped by the time budget after {t['silent_s']:.0f} s without a report; "
                "it may have been waiting for resources)"
            )
        if best is None:
            cv = "no finite AUC"
        else:
            cv = f"CV AUC {best['cv_auc_mean']:.3f} ± {best['cv_auc_std']:.3f}"
            cv += f" at epoch {best['epoch']}"
        secs = f", {hist[-1].get('time_total_s', 0.0):.0f} s" if hist else ""
        self.log(
            f"raydx: trial {n} ({tid}) done: {cv}; {count(epochs, 'epoch')}{stopped}{secs}"
            + self._best_so_far(tid)
        )

    def _best_so_far(self, tid: str) -> str:
        """Where the search stands, for a console of hundreds of trials, in which Tune's
        status table lists the first trials, not the best. Ranked as the winner is
        (``raydx.final.pick_winner``): mean, then the smaller spread, then the earlier."""
        # A finished trial's best report is kept by (trial, reports seen): one line then
        # costs a pass over the trials, not over every report of the search.
        cache = self._best_cache
        scored = []
        for i, t in enumerate(self.order):
            if self.trials[t]["status"] != "TERMINATED":
                continue
            hist = self.history[t]
            if cache.get(t, (-1, None))[0] != len(hist):
                cache[t] = (len(hist), _best_report(hist))
            b = cache[t][1]
            if b is not None:
                std = b.get("cv_auc_std")
                spread = float(std) if std is not None and math.isfinite(std) else math.inf
                scored.append((-b["cv_auc_mean"], spread, i, t, b["cv_auc_mean"], i + 1))
        if not scored:
            return ""
        *_, lead, auc, n = min(scored)
        if lead == tid:
            return "; best so far" if len(scored) > 1 else ""
        return f"; best so far {auc:.3f} (trial {n})"

    def _stopped_by(self, tid: str, epochs_run: int) -> str | None:
        """Who ended a finished trial before its last epoch: the scheduler (ASHA) or the
        search's time budget; ``None`` for a trial that ran all epochs or failed."""
        t = self.trials[tid]
        if t["status"] != "TERMINATED" or epochs_run >= self.epochs:
            return None
        return "time budget" if t.get("budget") else "scheduler"

    # -- tables -----------------------------------------------------------------------
    def _ensure(self, trial: Any) -> None:
        tid = trial.trial_id
        if tid not in self.trials or not self.trials[tid]["config"]:
            self._event({"e": "start", "trial_id": tid, "config": dict(trial.config)})

    def trial_rows(self) -> pd.DataFrame:
        rows = []
        for tid in self.order:
            t, hist = self.trials[tid], self.history[tid]
            row: dict[str, Any] = {"trial_id": tid, "status": t["status"]}
            cfg = t["config"]
            row["family"] = cfg.get("family", "cnn")
            for name in self.param_names:
                row[name] = cfg.get(name)
            best = _best_report(hist)
            row["epochs_run"] = max((h["epoch"] for h in hist), default=0)
            row["stopped_by"] = self._stopped_by(tid, row["epochs_run"])
            row["stopped_early"] = row["stopped_by"] is not None
            row["best_epoch"] = int(best["epoch"]) if best else None
            for key in ("cv_auc_mean", "cv_auc_std", "cv_acc_mean", "cv_loss_mean"):
                row[key] = best[key] if best else math.nan
            for i in range(self.folds):
                row[f"fold_{i}_auc"] = best[f"fold_{i}_val_auc"] if best else math.nan
            # (epochs taken from a checkpoint's record have none: raydx.results'
            # recover_unreported)
            times = [h["time_total_s"] for h in hist if h.get("time_total_s") is not None]
            row["time_total_s"] = times[-1] if times else None
            row["checkpoint_path"] = _rebased(_last_checkpoint(hist), self.output)
            row["error"] = t["error"]
            rows.append(row)
        df = pd.DataFrame(rows)
        if len(df):  # one dtype whether or not some trial has no epoch yet
            df["best_epoch"] = df["best_epoch"].astype("Int64")
            # (a writer pickled by an earlier raydx has no param_values)
            kinds = getattr(self, "param_values", {})
            for name in self.param_names:  # from the raw values: pandas made 128 into 128.0
                df[name] = _typed([r[name] for r in rows], kinds.get(name, []))
            for name in ("stopped_by", "error"):
                df[name] = df[name].astype("str")
        return df

    def fold_rows(self) -> pd.DataFrame:
        rows = []
        extra: list[str] = []  # family metrics (reconstruction error, ...), in first-seen order
        for tid in self.order:
            by_epoch = {h["epoch"]: h for h in self.history[tid]}  # a replayed epoch replaces
            for epoch in sorted(by_epoch):
                h = by_epoch[epoch]
                for i in range(self.folds):
                    prefix = f"fold_{i}_"
                    own = {k[len(prefix) :]: v for k, v in h.items() if k.startswith(prefix)}
                    extra += [k for k in own if k not in FOLD_COLUMNS and k not in extra]
                    rows.append({"trial_id": tid, "fold": i, "epoch": int(epoch)} | own)
        cols = ["trial_id", "fold", "epoch", *FOLD_COLUMNS, *extra]
        return pd.DataFrame(rows, columns=cols)

    def epoch_rows(self) -> pd.DataFrame:
        """Cross-fold mean and std per trial and epoch (for learning curves)."""
        rows = []
        for tid in self.order:
            latest = {h["epoch"]: h for h in self.history[tid]}  # a replayed epoch replaces
            for h in latest.values():
                rows.append(
                    {"trial_id": tid, "epoch": int(h["epoch"])}
                    | {
                        k: h.get(k)
                        for k in ("cv_auc_mean", "cv_auc_std", "cv_loss_mean", "cv_acc_mean")
                    }
                )
        return pd.DataFrame(rows)

    def mark_unfinished(self) -> list[str]:
        """Trials still running when the search ended (it was interrupted): say so on disk.

        Only the tables say INTERRUPTED; the event log does not, so ``--resume``
        continues these trials.
        """
        ids = self.unfinished()
        for tid in ids:
            self.trials[tid]["status"] = INTERRUPTED
        self.flush()
        for tid in ids:
            self.trials[tid]["status"] = "RUNNING"
        return ids

    def recover_unreported(self, train_dir: Path) -> list[str]:
        """For finished trials whose record names no checkpoint that holds its last
        epochs: the epochs of their newest complete checkpoint, from its own record;
        returns those trials.

        A trial stopped (by the scheduler or the time budget) just after Ray Train took a
        checkpoint, but before Tune took the report that names it, is left with an
        earlier checkpoint as the last one Tune knows. Ray Train keeps two (raydx.cv), so
        that one is normally still there; after two such checkpoints it is not, and the
        winner's files would be missing when it is scored. A trial cut so by a Ctrl-C and
        resumed has its Train run send the epochs up to that checkpoint again, without
        it (an audit: the record then named the epoch before, the end of the search
        deleted the newer one, and the winner could never be scored). A newer
        checkpoint past the record's epochs, beside the one it names, is left: the
        scheduler judged the trial on the epochs it was told of.
        """
        from raydx.cv import CKPT_META, is_complete

        def meta(d: Path) -> dict[str, Any] | None:
            try:
                return dict(json.loads((d / CKPT_META).read_text()))
            except (OSError, ValueError):  # cut short: not one to take
                return None

        recovered = []
        for tid in self.order:
            if self.trials[tid]["status"] != "TERMINATED":
                continue
            hist = self.history[tid]
            known = _rebased(_last_checkpoint(hist), self.output)
            there = known is not None and Path(known).is_dir()
            last = max((int(h["epoch"]) for h in hist), default=0)
            # by the epoch each holds (not by name: the nodes' clocks may differ)
            found = []
            for d in (train_dir / tid).glob("checkpoint_*"):
                got = meta(d) if is_complete(d, self.folds) else None
                if got is not None and (not there or int(got["epoch"]) <= last):
                    found.append((int(got["epoch"]), d.name, d, got))
            if not found:
                continue
            _, _, newest, info = max(found, key=lambda f: (f[0], f[1]))
            if there:
                assert known is not None
                if newest.resolve() == Path(known).resolve():
                    continue
                named = meta(Path(known)) if is_complete(Path(known), self.folds) else None
                if named is not None and int(named["epoch"]) >= int(info["epoch"]):
                    continue
            record = info.get("history", [])
            new = [r for r in record if int(r.get("epoch", 0)) > last]
            if not new:  # the epoch is in the tables; this names its checkpoint
                new = [r for r in record if int(r.get("epoch", 0)) == int(info["epoch"])][-1:]
            if not new:
                continue
            new[-1] = {**new[-1], "checkpoint_path": str(newest)}
            for r in new:
                keep = {k: v for k, v in r.items() if _is_report_key(k)}
                self._event(
                    {"e": "result", "trial_id": tid, "result": keep, "from_checkpoint": True}
                )
            recovered.append(tid)
        return recovered

    def prune_checkpoints(self, train_dir: Path) -> int:
        """Delete every finished trial's checkpoints but the one its record names (Ray
        Train keeps two while a trial runs), and all of an abandoned trial's (nothing can
        continue it); returns how many went. For a search that ended: an interrupted one
        resumes from the newest."""
        gone = 0
        for tid in self.order:
            if self.trials[tid].get("abandoned"):
                known = None
            elif self.trials[tid]["status"] in FINAL:
                known = _rebased(_last_checkpoint(self.history[tid]), self.output)
                if known is None:
                    continue
            else:
                continue
            for d in (train_dir / tid).glob("checkpoint_*"):
                if d.is_dir() and (known is None or d.resolve() != Path(known).resolve()):
                    shutil.rmtree(d, ignore_errors=True)
                    gone += 1
        return gone

    def configs(self) -> dict[str, dict[str, Any]]:
        return {tid: dict(t["config"]) for tid, t in self.trials.items()}

    def flush(self) -> None:
        write_parquet(self.trial_rows(), self.output / "trials.parquet")
        write_parquet(self.fold_rows(), self.output / "folds.parquet")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _typed(raw: list[Any], kind: list[Any] | None = None) -> pd.Series:
    """A parameter's column in its own type, missing where it does not apply to a trial
    (a ``when:`` condition, another family): whole numbers stay whole (``Int64``, not
    ``128.0``), yes/no stays ``boolean``, text ``str``, and a categorical whose choices mix
    types is written as text; every gap reads ``pd.isna``. A column no trial fills takes
    the type of ``kind``, values of the param's kind (else Parquet's ``null``)."""
    values = [v for v in raw if v is not None and not (isinstance(v, float) and math.isnan(v))]
    col = pd.Series(raw, dtype=object)
    if not values:
        return col.astype(_typed(kind).dtype) if kind else col
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return col.astype("boolean")
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return col.astype("Int64")
    if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
        return col.astype("float64")
    if all(isinstance(v, str) for v in values):
        return col.astype("str")
    # Mixed choices, e.g. [none, 0.2]: Parquet columns hold one type, so their text.
    return pd.Series([None if v is None else str(v) for v in raw], dtype="str")


def _best_report(hist: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The report of the best epoch: maximum cross-fold mean AUC, earliest on ties."""
    latest = {h["epoch"]: h for h in hist}  # an epoch replayed after a restart replaces
    good = [
        h
        for h in latest.values()
        if h.get("cv_auc_mean") is not None and math.isfinite(h["cv_auc_mean"])
    ]
    if not good:
        return None
    return max(good, key=lambda h: (h["cv_auc_mean"], -h["epoch"]))


def _rebased(path: str | None, output: Path) -> str | None:
    """A checkpoint path as it is inside ``output`` now.

    ``events.jsonl`` holds the absolute paths Ray reported; a run folder moved or copied
    since then (and resumed there) holds the same checkpoint under its new root.
    """
    if path is None:
        return None
    parts = Path(path).parts
    for i in range(len(parts) - 1, 0, -1):
        if parts[i - 1 : i + 1] == ("ray", "train"):
            moved = Path(output, *parts[i - 1 :])
            return str(moved) if moved.exists() or not Path(path).exists() else path
    return path


def _last_checkpoint(hist: list[dict[str, Any]]) -> str | None:
    for h in reversed(hist):
        if h.get("checkpoint_path"):
            return str(h["checkpoint_path"])
    return None
