"""raydx's overhead: one configuration cross-validated by raydx vs a plain PyTorch loop.

    .venv/bin/python bench/overhead.py                      # BreastMNIST, seed CNN, 5 x 50
    .venv/bin/python bench/overhead.py --folds 3 --epochs 5 # a quick check
    python3 bench/overhead.py --device cuda --threads 1     # on a GPU (bench/gpu_check.sh)

The plain baseline is what a careful user writes without Ray: the same folds, the same
seed CNN and hyperparameters (``SEED_POINT``, no augmentation), the
same batches and augmentation (raydx's ``FoldTrainer``, which is plain PyTorch), the
folds trained one after another in one process, with the faster of 1 or 2 torch
threads. raydx runs the same configuration as a one-trial search (``tune`` with a
one-point space, no scheduler), fold-parallel, with its checkpoints and reports.

Fixed costs come from the wall clock of the driver and the arrival time of each line of
the run's ``events.jsonl`` (polled every 20 ms): Ray start, search set-up (data into Ray,
Optuna, Tune), trial start to first report minus the first epoch's own compute, the
mean gap between reports minus an epoch's compute, and what follows the last epoch
(winner, test scoring, report).

With ``--device cuda`` both run on the GPU: the plain loop's folds one after another,
raydx's fold workers side by side, each holding ``1/folds`` of the GPU (the issue's
target there: at most 0.5x the plain loop). GPU utilisation comes from ``nvidia-smi``,
sampled every 200 ms, averaged over each one's training.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "breastmnist.npz"


SEED_POINT = {  # the seed CNN as it is trained without a search
    "family": "cnn",
    "model": "cnn_seed",
    "dropout": 0.0,
    "optimizer": "adam",
    "lr": 0.001,
    "weight_decay": 1.0e-6,
    "lr_schedule": "none",
    "batch_size": 64,
    "class_balance": "none",
}


def seed_point() -> dict[str, Any]:
    return dict(SEED_POINT)


class GpuSampler:
    """GPU utilisation (%) and memory (MiB) from ``nvidia-smi``, with arrival times."""

    def __init__(self, every_ms: int = 200) -> None:
        self.samples: list[tuple[float, float, float]] = []
        query = "--query-gpu=utilization.gpu,memory.used"
        cmd = ["nvidia-smi", query, "--format=csv,noheader,nounits", f"-lms={every_ms}"]
        try:
            self._proc: subprocess.Popen[str] | None = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
        except OSError:  # no nvidia-smi: utilisation is reported as n/a
            self._proc = None
            return
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            parts = [x.strip() for x in line.split(",")]
            try:  # the first GPU's line; others would follow it
                util, mem = float(parts[0]), float(parts[1])
            except (ValueError, IndexError):
                continue
            self.samples.append((time.perf_counter(), util, mem))

    def between(self, t0: float, t1: float) -> dict[str, float]:
        got = [(u, m) for t, u, m in self.samples if t0 <= t <= t1]
        if not got:
            return {"util_mean": float("nan"), "mem_max_mib": float("nan")}
        return {
            "util_mean": statistics.mean(u for u, _ in got),
            "mem_max_mib": max(m for _, m in got),
        }

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()


def plain_loop(
    data: str, folds: int, epochs: int, seed: int, threads: int, device: str = "cpu"
) -> dict[str, Any]:
    """The folds one after another in this process; returns wall time and CV AUC."""
    from raydx.config import TrialConfig
    from raydx.data.folds import make_splits
    from raydx.data.npz import load_npz
    from raydx.data.pipeline import Preprocessing, normalise_batch
    from raydx.train import FoldTrainer

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    table = load_npz(data)
    splits = make_splits(
        table.labels,
        folds=folds,
        seed=seed,
        test_mask=table.official_split == "test",
        class_names=table.class_names,
    )
    x = normalise_batch(table.images, Preprocessing(table.image_size, table.channels))
    cfg = TrialConfig.from_params(seed_point())
    positive = 0  # malignant, as raydx resolves it for breastmnist
    curves = []
    for fold in range(folds):
        tr, va = splits.train_val_indices(fold)
        trainer = FoldTrainer(
            cfg,
            x_train=torch.from_numpy(x[tr]),
            y_train=table.labels[tr],
            x_val=torch.from_numpy(x[va]),
            y_val=table.labels[va],
            n_classes=table.n_classes,
            positive=positive,
            epochs=epochs,
            seed=seed,
            fold=fold,
            device=device,
        )
        curves.append([trainer.run_epoch(e).val_auc for e in range(1, epochs + 1)])
    wall = time.perf_counter() - t0  # val_auc is read back each epoch: the GPU is done
    mean_curve = np.mean(curves, axis=0)
    return {
        "wall": wall,
        "cv_auc": float(mean_curve.max()),
        "images": int((splits.split == "cv").sum()),
        "t0": t0,
        "t1": t0 + wall,
    }


class EventClock:
    """Arrival time of every line of ``events.jsonl`` (the driver writes it as it goes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        offset = 0
        while not self._stop.is_set():
            if self.path.exists():
                with self.path.open() as f:
                    f.seek(offset)
                    chunk = f.read()
                now = time.perf_counter()
                complete = chunk[: chunk.rfind("\n") + 1]
                offset += len(complete)
                for line in complete.splitlines():
                    if line.strip():
                        self.seen.append((now, json.loads(line)))
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


CLK_TCK = 100.0  # os.sysconf("SC_CLK_TCK") on Linux


def _group(cmdline: str) -> str:
    if "RayTrainWorker" in cmdline:
        return "fold workers"
    if cmdline.startswith("ray::"):
        return "other Ray actors (trial, Train controller)"
    for name in ("raylet", "gcs_server", "dashboard", "agent", "monitor", "runtime_env"):
        if name in cmdline:
            return "Ray system processes"
    return ""


def cpu_snapshot(driver: int) -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by this driver and the Ray it started (its descendants)."""
    stats: dict[int, tuple[str, int, float]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid, used = int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK
        stats[int(d.name)] = (cmd, ppid, used)

    def ours(pid: int) -> bool:
        for _ in range(64):
            if pid == driver:
                return True
            if pid not in stats or pid <= 1:
                return False
            pid = stats[pid][1]
        return False

    out: dict[int, tuple[str, float]] = {}
    for pid, (cmd, _, used) in stats.items():
        if ours(pid):
            group = "driver (Tune loop)" if pid == driver else _group(cmd) or "other"
            out[pid] = (group, used)
    return out


class CpuSampler:
    """Snapshots of every Ray process's CPU time, so a phase's CPU use can be split up."""

    def __init__(self, every: float = 0.5) -> None:
        import os

        self.driver = os.getpid()
        self.samples: list[tuple[float, dict[int, tuple[str, float]]]] = []
        self._stop = threading.Event()
        self._every = every
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), cpu_snapshot(self.driver)))
            time.sleep(self._every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, t0: float, t1: float) -> dict[str, float]:
        """CPU seconds by group from the last snapshot at or before t0 to the first after t1."""
        a = max((s for s in self.samples if s[0] <= t0), key=lambda s: s[0])
        b = min((s for s in self.samples if s[0] >= t1), key=lambda s: s[0], default=None)
        b = b or self.samples[-1]
        # A process's last sample in the window: the fold workers exit as the trial
        # ends, often before the snapshot after the last report.
        last: dict[int, tuple[str, float]] = {}
        for t, snap in self.samples:
            if a[0] <= t <= b[0]:
                last.update(snap)
        used: dict[str, float] = {}
        for pid, (group, sec) in last.items():
            group = a[1].get(pid, (group, 0.0))[0]  # a process may rename itself when done
            used[group] = used.get(group, 0.0) + sec - a[1].get(pid, (group, 0.0))[1]
        used["(wall seconds)"] = b[0] - a[0]
        return used


def raydx_run(
    data: str,
    folds: int,
    epochs: int,
    seed: int,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    gpu: GpuSampler | None = None,
) -> dict[str, Any]:
    from raydx.ray_env import init_ray
    from raydx.run import tune
    from raydx.space import parse_space

    t0 = time.perf_counter()
    init_ray(None, include_dashboard=True, log_to_driver=False)
    t_ray = time.perf_counter()
    out = Path(tempfile.mkdtemp(prefix="raydx-overhead-")) / "run"
    clock = EventClock(out / "events.jsonl")
    sampler = CpuSampler()
    space = parse_space({"run": {"scheduler": "none"}, "params": seed_point()})
    lines: list[str] = []
    try:
        res = tune(
            space,
            data=data,
            trials=1,
            folds=folds,
            epochs=epochs,
            seed=seed,
            workers_per_trial=workers,
            gpus_per_worker=gpus_per_worker,
            output=out,
            log=lines.append,
        )
    finally:
        clock.stop()
        sampler.stop()
    t_end = time.perf_counter()
    starts = [t for t, e in clock.seen if e["e"] == "start"]
    reports = [(t, e["result"]) for t, e in clock.seen if e["e"] == "result"]
    done = [t for t, e in clock.seen if e["e"] == "complete"]
    compute = [float(r.get("epoch_time_s", 0.0)) for _, r in reports]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(reports)]
    first_report = reports[0][0]
    # The epochs that arrived with the first report (short ones come several at once)
    first_batch = sum(float(r.get("epoch_time_s", 0.0)) for t, r in reports if t == first_report)
    return {
        "wall_total": t_end - t0,
        "ray_start": t_ray - t0,
        "setup": starts[0] - t_ray,  # data into Ray, Optuna study, Tune, trial actor
        "trial_start_to_first_report": first_report - starts[0],
        "worker_start": first_report - starts[0] - first_batch,
        "training": (done[0] if done else reports[-1][0]) - starts[0],
        "first_epoch_to_cv": reports[-1][0] - (first_report - first_batch),
        # Conservative: the trial's start event comes a little before the TorchTrainer
        # is created, which is what startup_first_worker_s counts from.
        "first_worker_to_cv": reports[-1][0]
        - (starts[0] + float(reports[0][1].get("startup_first_worker_s", 0.0))),
        "epoch_compute": statistics.mean(compute),
        # per epoch: short epochs arrive several to a report (raydx.cv.batched)
        "report_gap": statistics.mean(gaps) if gaps else float("nan"),
        "reports": len({t for t, _ in reports}),
        "epochs": len(reports),
        "after_last_epoch": t_end - reports[-1][0],
        "startup": {k: v for k, v in reports[0][1].items() if k.startswith("startup_")},
        # who used the cores while the epochs after the first ran
        "cpu_during_epochs": sampler.between(first_report, reports[-1][0]),
        "cv_auc": float(res.best["cv_auc_mean"]),
        "gpu_during_epochs": gpu.between(first_report, reports[-1][0]) if gpu else None,
        "workers": next(
            (m.group(1) for x in lines if (m := re.search(r"(\d+) worker\(s\) per trial", x))),
            "?",
        ),
        "out": str(out),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads",
        type=int,
        nargs="*",
        default=[1, 2],
        help="torch threads of the plain loops to run (none: raydx alone)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Train workers of the raydx trial (default: raydx's own choice for the machine)",
    )
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        help="with --device cuda: each fold worker's share of the GPU (default 1/folds)",
    )
    args = ap.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda needs a CUDA GPU, and torch sees none.")
    share = 0.0
    if cuda:
        share = args.gpus_per_worker or int(100 / args.folds) / 100
    gpu = GpuSampler() if cuda else None

    plain = {
        t: plain_loop(args.data, args.folds, args.epochs, args.seed, t, args.device)
        for t in args.threads
    }
    if not plain:  # raydx alone, e.g. to compare its settings; as if the plain loop took 1 s
        plain = {0: {"wall": 1.0, "cv_auc": float("nan"), "images": 624}}
    best_t = min(plain, key=lambda t: plain[t]["wall"])
    base = plain[best_t]
    torch.set_num_threads(1)
    r = raydx_run(args.data, args.folds, args.epochs, args.seed, args.workers, share, gpu)
    if gpu is not None:
        gpu.stop()
    n_img = base["images"] * args.epochs * (args.folds - 1) / args.folds  # training images
    # images per second per core on CPUs; on a GPU, per GPU
    per = 1 if cuda else (os.cpu_count() or 1)

    where = (
        f"on {torch.cuda.get_device_name()}, {share:g} GPU per fold worker"
        if cuda
        else f"on {per} CPU cores"
    )
    print(
        f"\n{args.folds} folds x {args.epochs} epochs, seed CNN, {Path(args.data).name}, "
        f"raydx with {r['workers']} Train workers, {where}"
    )
    print(f"{'':38}{'seconds':>9}{'CV AUC':>9}{'img/s/GPU' if cuda else 'img/s/core':>12}")
    for t, p in plain.items():
        if t == 0:
            continue
        print(
            f"{f'plain loop, {t} torch thread(s)':38}{p['wall']:9.1f}{p['cv_auc']:9.3f}"
            f"{n_img / p['wall'] / per:12.0f}"
        )
    rows = [
        ("raydx, trial start -> CV result", r["training"]),
        ("raydx, first worker start -> CV result", r["first_worker_to_cv"]),
        ("raydx, first epoch start -> CV result", r["first_epoch_to_cv"]),
        ("raydx, whole command (Ray start incl.)", r["wall_total"]),
    ]
    for i, (name, sec) in enumerate(rows):
        cv = f"{r['cv_auc']:9.3f}" if i < 3 else f"{'':9}"
        print(f"{name:38}{sec:9.1f}{cv}{n_img / sec / per:12.0f}")
    target = "0.5x" if cuda else "1.0x"
    print(
        f"\nratio raydx / plain ({best_t} thread): "
        + "; ".join(f"{name.split(', ')[1]} {sec / base['wall']:.2f}x" for name, sec in rows)
        + f" (target <= {target} from the first worker start)"
    )
    if gpu is not None:
        print("GPU utilisation (nvidia-smi, mean over the training; most memory used):")
        for t, p in plain.items():
            g = gpu.between(p["t0"], p["t1"])
            print(
                f"  plain loop, {t} thread(s){'':14}{g['util_mean']:6.1f} %"
                f"{g['mem_max_mib']:9.0f} MiB"
            )
        g = r["gpu_during_epochs"]
        print(
            f"  raydx, first report to last{'':11}{g['util_mean']:6.1f} %"
            f"{g['mem_max_mib']:9.0f} MiB"
        )
    print("\nraydx fixed costs (s):")
    for key in (
        "ray_start",
        "setup",
        "worker_start",
        "after_last_epoch",
    ):
        print(f"  {key:<28}{r[key]:8.2f}")
    print(
        f"  {'epoch gap - epoch compute':<28}{r['report_gap'] - r['epoch_compute']:8.3f}"
        f"  (mean gap between epochs' results {r['report_gap']:.3f} s, epoch compute"
        f" {r['epoch_compute']:.3f} s; {r['reports']} reports for {r['epochs']} epochs)"
    )
    print("  worker start, by phase (slowest worker for launch, rank 0 for the rest):")
    for key, sec in r["startup"].items():
        print(f"    {key.removeprefix('startup_').removesuffix('_s'):<26}{sec:8.2f}")
    cpu = dict(r["cpu_during_epochs"])
    wall = cpu.pop("(wall seconds)")
    print(
        f"  CPU use from the first report to the last ({wall:.1f} s wall, {os.cpu_count()} cores):"
    )
    for group, sec in sorted(cpu.items(), key=lambda kv: -kv[1]):
        print(f"    {group:<44}{sec:8.1f} s  ({sec / wall:.0%} of a core)")
    fixed = r["ray_start"] + r["setup"] + r["worker_start"] + r["after_last_epoch"]
    print(f"  {'sum':<28}{fixed:8.2f}  ({fixed / r['wall_total']:.0%} of the whole command)")
    print(f"run folder: {r['out']}")


if __name__ == "__main__":
    main()
