"""A run's folder: claimed once and locked while a driver writes it, checked before any
work is done, and stamped with where the run came from (``run.json``)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from raydx.config import RunOptions
from raydx.data.sources import is_named_source
from raydx.data.table import FINGERPRINT_VERSION, ImageTable
from raydx.errors import RaydxError
from raydx.files_out import yaml_text
from raydx.space import SearchSpace

LOCK = ".raydx.lock"


def lock_holder(path: Path) -> int | None:
    """The pid of a live process holding the run folder's lock, if any (same host)."""
    lock = path / LOCK
    if not lock.exists():
        return None
    try:
        info = json.loads(lock.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if info.get("host") != platform.node():
        return int(info.get("pid", -1))  # cannot tell; assume it is alive
    try:
        os.kill(int(info["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        return None  # a stale lock of a killed driver
    except PermissionError:
        pass
    recorded, now = info.get("process_start"), _process_start(int(info["pid"]))
    if recorded is not None and now is not None and recorded != now:
        return None  # the pid is another process's now (a restarted container's pid 1)
    return int(info["pid"])


def lock_text(path: Path, *, new_run: bool = False) -> str:
    """Who holds the lock, and what to do if that driver is gone: ``lock_holder`` cannot
    tell for a driver on another host (or in another container, whose host name differs),
    so a lock that a killed driver left there would otherwise block the run for good."""
    try:
        info = json.loads((path / LOCK).read_text())
    except (OSError, json.JSONDecodeError):
        info = {}
    where = f" on host '{info['host']}'" if info.get("host") else ""
    since = ""
    if isinstance(info.get("started"), int | float):
        since = f" since {datetime.fromtimestamp(info['started']).strftime('%Y-%m-%d %H:%M')}"
    said = f"run '{path}' is being written by process {info.get('pid', '?')}{where}{since}; "
    if new_run:  # the folder is taken whatever becomes of that search
        return said + "choose another --output."
    if info.get("host") == platform.node() and lock_holder(path) is not None:
        # checked alive here (lock_holder): deleting its lock would break a live search
        return said + "not resuming it while that search runs: let it finish, or stop it first."
    return said + (
        "not resuming it. If that driver is gone (killed, or its container or machine "
        f"stopped), delete '{path / LOCK}' and resume again."
    )


def _process_start(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (Linux), which tells a pid's
    reuse by another process apart from the process that took the lock."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def take_lock(path: Path, *, replace_stale: bool = True) -> None:
    """Lock the run folder for this process; a RaydxError where another holds it.

    The lock file appears whole and at once (written aside, then hard-linked to its
    name, which fails where the name exists), so of two drivers that try together one
    gets it. A stale lock (``lock_holder``: its driver is gone) is replaced, unless
    ``replace_stale`` is False; two drivers replacing the same stale lock take turns
    (``flock`` on the folder) and the second finds the first's lock live.
    """
    import fcntl

    info = {
        "pid": os.getpid(),
        "host": platform.node(),
        "started": time.time(),
        "process_start": _process_start(os.getpid()),
    }
    mine = path / f"{LOCK}.{os.getpid()}.{time.monotonic_ns()}"
    mine.write_text(json.dumps(info))
    folder = os.open(path, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # no flock on folders (some NFS): no turns
            fcntl.flock(folder, fcntl.LOCK_EX)
        for _ in range(2):
            try:
                _create_whole(mine, path / LOCK)
                return
            except FileExistsError:
                if not replace_stale or lock_holder(path) is not None:
                    raise RaydxError(lock_text(path)) from None
                (path / LOCK).unlink(missing_ok=True)  # a killed driver's
        raise RaydxError(lock_text(path))
    finally:
        os.close(folder)  # and with it the flock
        mine.unlink(missing_ok=True)


def _create_whole(source: Path, target: Path) -> None:
    """``target`` with ``source``'s content, made at once; FileExistsError if it exists.
    A hard link where the file system has them; else (a mounted bucket) an exclusive
    create, written right after (a driver reading it in that instant takes it for a
    stale lock: the one race left where hard links are missing)."""
    try:
        os.link(source, target)
        return
    except FileExistsError:
        raise
    except OSError:  # no hard links here
        pass
    fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(source.read_text())


def default_output() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def _new_default_output() -> Path:
    """``runs/<time>``, made here and now: two searches started in the same second from
    one folder get ``runs/<time>`` and ``runs/<time>-2``, not one folder between them."""
    base = default_output().resolve()
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RaydxError(f"could not make a new run folder beside '{base}'; give --output.")


def check_output_location(path: str | Path | None) -> None:
    """Refuse a run folder in Ray's copy of a job's working directory.

    A job submitted with ``ray job submit --working-dir`` runs in a copy of that folder
    which Ray keeps in its session's cache of runtime environments, on one node. A run
    folder there (a relative ``--output``, or none) is out of reach of the fold
    workers of other nodes, and goes with the session, or sooner when Ray needs room.
    """
    resolved = Path(path if path is not None else default_output()).resolve()
    parts = resolved.parts
    if "runtime_resources" not in parts:
        return
    cache = Path(*parts[: parts.index("runtime_resources") + 1])
    given = f"--output '{path}'" if path is not None else "the default --output, runs/<time>,"
    raise RaydxError(
        f"{given} puts the run in Ray's temporary copy of this job's working directory "
        f"(under {cache}), which other nodes cannot write to and Ray deletes; give an "
        f"absolute path on storage every node can write, such as --output /shared/runs/NAME."
    )


def absolute_data(data: str) -> str:
    """A file or folder source as an absolute path; named sources as given."""
    path = Path(data).expanduser()
    return data if is_named_source(data) or not path.exists() else str(path.resolve())


def check_saved_data(data: str | None, run_json: Path, hint: str = "") -> None:
    """A clear error for a run's data that is not where the run found it (the loader's
    own error would say to pass another path, which a resume takes no flag for)."""
    if data is None or is_named_source(data) or Path(data).exists():
        return
    if Path(data).expanduser().is_absolute():
        hint = hint or " (--resume takes no --data: a resumed search sees the same images)"
        raise RaydxError(
            f"the run's data '{data}' (from {run_json}) no longer exists; put it back at "
            f"that path{hint}."
        )
    raise RaydxError(
        f"the run's data '{data}' (from {run_json}) is a path relative to the folder the "
        f"run was started in, and does not exist from here ({Path.cwd()}); run from that "
        f"folder{hint}."
    )


def check_space_unchanged(space: SearchSpace, saved: dict[str, Any], path: Path) -> None:
    """A resumed search goes on with the space it began with (Tune restores its searcher
    from its own record), so an edited ``space.yaml`` would only make the tables, the
    parameter importances and the report describe a search that did not run."""
    before = saved.get("searched")
    if before is None:  # run.json of an older raydx, which did not record them
        return
    if saved.get("sha256") == hashlib.sha256(path.read_bytes()).hexdigest():
        return  # as written (a later raydx may write the same space another way)
    now = json.loads(json.dumps(space.to_dict()["params"]))
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        named = ", ".join(map(repr, changed[:5])) + (", ..." if len(changed) > 5 else "")
        raise RaydxError(
            f"'{path}' was edited since the run started (parameters {named} differ), but a "
            "resumed search goes on with the space it began with; restore the file (run.json "
            "holds the parameters as searched, under 'space'), or start a new run with the "
            "edited space."
        )


def check_writable(output: str | Path, folder: Path, longest: str) -> None:
    """Whether files named as long as ``longest`` can be made in ``folder``, or in the
    folder above it that exists (``folder`` is made later): found out before any work,
    not after it. A file system that cannot say its longest name is not held against
    it."""
    import errno
    import tempfile

    from raydx.shared_storage import _nearest_existing

    here = Path(folder).expanduser().resolve()
    try:
        here = _nearest_existing(here)
        try:
            too_long = len(longest.encode()) > os.pathconf(here, "PC_NAME_MAX")
        except (OSError, ValueError):
            too_long = False
        if too_long:
            raise OSError(errno.ENAMETOOLONG, "file name too long")
        if not here.is_dir():
            raise OSError(errno.ENOTDIR, "not a directory")
        with tempfile.NamedTemporaryFile(dir=here, prefix=".raydx-check-"):
            pass
    except OSError as e:
        raise RaydxError(
            f"output '{output}' cannot be written ({e.strerror or e}, in '{here}'); choose "
            "another --output."
        ) from None


def check_output_not_data(path: str | Path | None, data: str) -> None:
    """Refuse ``--output`` that is the image folder itself: the run's model, plots and
    records would lie beside the class folders, and the next search of it took them
    for classes ('model' holds no images). (A run folder inside it, as ``--data .``'s
    default runs/<time>, is passed over by the listing.)"""
    if path is None or is_named_source(data) or not Path(data).expanduser().is_dir():
        return
    out, root = Path(path).resolve(), Path(data).expanduser().resolve()
    if out == root:
        raise RaydxError(
            f"--output '{path}' is the image folder --data names; its model, plots and "
            "records would join the class folders; choose another --output."
        )
    if root not in out.parents:
        return
    from raydx.data.files import is_image_file, walk_folder

    first = root / out.relative_to(root).parts[0]  # a class folder, or runs/
    if first.is_dir() and any(is_image_file(p) for p in walk_folder(first)[0]):
        raise RaydxError(
            f"--output '{path}' lies in '{first.name}', a folder of images of --data; as a "
            "run folder, the next search of the data would pass that class over; choose "
            "another --output."
        )


def check_output_free(path: str | Path | None) -> None:
    """Refuse a run folder that already holds a run (before any work is done)."""
    if path is None:
        return  # a new timestamped folder
    path = Path(path).resolve()
    if path.exists() and not path.is_dir():
        raise RaydxError(f"output '{path}' exists and is not a directory.")
    markers = (LOCK, "run.json", "trials.parquet")
    if path.is_dir() and any((path / m).exists() for m in markers):
        if lock_holder(path) is not None:  # a search writes it now: no --resume to suggest
            raise RaydxError(lock_text(path, new_run=True))
        try:
            finished = is_finished(path, read_run_record(path / "run.json", "its record"))
        except RaydxError:  # no run.json, or not one raydx wrote: not finished either
            finished = False
        raise RaydxError(
            f"output '{path}' already holds a finished raydx run; choose another --output."
            if finished
            else f"output '{path}' already holds a raydx run; choose another --output "
            f"(or continue it with: raydx tune --resume {shlex.quote(str(path))})."
        )


def claim_output(path: str | Path | None) -> Path:
    """Create the run folder; refuse one that already holds a run."""
    path = _new_default_output() if path is None else Path(path).resolve()
    check_output_free(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only place, a file on the way, a name too long
        raise RaydxError(
            f"output '{path}' cannot be made ({e.strerror or e}); choose another --output."
        ) from None
    try:
        take_lock(path, replace_stale=False)
    except RaydxError:  # another driver claimed it since the check above
        check_output_free(path)
        raise
    return path


def read_run_record(path: Path, role: str) -> dict[str, Any]:
    """A run's ``run.json``, checked to be the record raydx writes: a mapping with an
    ``options`` mapping. ``role`` says what reads it, for the message."""
    try:
        run = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise RaydxError(
            f"'{path}', {role}, is not valid JSON ({e}); restore it from a copy of the run folder."
        ) from None
    if not isinstance(run, dict) or not isinstance(run.get("options"), dict):
        raise RaydxError(
            f"'{path}', {role}, has no 'options' mapping; restore it from a copy of the run folder."
        )
    return run


def is_finished(out: Path, run: dict[str, Any]) -> bool:
    """Whether ``raydx.final.finish`` completed: its last file is the test scores, or
    best.yaml when the run does not score the test split. (The report and the model
    card come after it; ``--resume`` writes them where a killed driver left them out.)"""
    if run.get("options", {}).get("score_test", True):
        return (out / "test_metrics.json").is_file()
    return (out / "best.yaml").is_file()


def sha256_of(data: str) -> str | None:
    p = Path(data)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_state(package: Path | None = None) -> dict[str, Any]:
    """The commit of the raydx checkout that runs, and its tracked files that differ from
    it (an audit: a run recorded a commit while five source files had changed). Nothing
    where raydx is not a checkout's own package: installed into a virtualenv that sits
    in some project's repository, git would name that project's commit."""
    package = (package or Path(__file__).resolve().parent).resolve()

    def git(*args: str) -> str:
        # --no-optional-locks: git must not rewrite the user's index (index.lock)
        return subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=package, capture_output=True, text=True, timeout=5, check=True,
        ).stdout  # fmt: skip

    state: dict[str, Any] = {"git_commit": None}
    try:
        top = Path(git("rev-parse", "--show-toplevel").strip()).resolve()
        if top / package.name != package or not git("ls-files", "__init__.py").strip():
            return state
        state["git_commit"] = git("rev-parse", "HEAD").strip()
        state["git_changed"] = None  # unknown, unless git diff answers
        # -z: paths unquoted; --no-renames: a moved file names both its paths
        out = git("diff", "--name-only", "--no-renames", "-z", "HEAD", "--")
        state["git_changed"] = sorted(p for p in out.split("\0") if p)
    except (OSError, subprocess.SubprocessError):
        pass
    return state


def other_raydx(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """(what ran, what runs now) where a run's record names another raydx than the one
    that runs: another commit of a checkout, the same commit with source changes on
    either side, or another version; None where it is the same or cannot be told."""
    then_version = (record.get("packages") or {}).get("raydx")
    then_commit = record.get("git_commit")
    from raydx import __version__ as now_version

    now = git_state() if then_commit else {}
    now_commit = now.get("git_commit")
    if then_commit and now_commit:  # both checkouts: the commit and its changes decide
        if then_commit != now_commit:
            return f"commit {then_commit[:10]}", f"commit {now_commit[:10]}"
        changed = [
            sorted(p for p in side if p.startswith("raydx/")) if side is not None else None
            for side in (record.get("git_changed"), now.get("git_changed"))
        ]
        if not any(c is None or c for c in changed):
            return None

        def named(c: list[str] | None) -> str:
            if c is None:
                return f"commit {then_commit[:10]} (its changes unknown)"
            return f"commit {then_commit[:10]}" + (f" with changes to {', '.join(c)}" if c else "")

        return named(changed[0]), named(changed[1])
    if then_version and then_version != now_version:
        return f"raydx {then_version}", f"raydx {now_version}"
    return None


def other_raydx_text(record: Mapping[str, Any]) -> str | None:
    """What a re-check of a run by another raydx than the one that trained it must say:
    training changes between commits (an audit: a winner of two days before re-checked on
    its own folds at 0.656 against its 0.735, since the one-cycle schedule had changed),
    and the re-check would otherwise read as the run's own figure not reproducing."""
    other = other_raydx(record)
    if other is None:
        return None
    then, now = other
    return (
        f"the run was trained by {then}, and this is {now}: training may have changed "
        "between them, so on the run's own folds its CV AUC need not come out again; "
        "re-check with the raydx that trained it to reproduce it."
    )


def provenance(
    opts: RunOptions, space: SearchSpace, table: ImageTable, positive: int
) -> dict[str, Any]:
    pkgs: dict[str, str | None] = {}
    for name in (
        "raydx",
        "ray",
        "torch",
        "torchvision",
        "optuna",
        "scikit-learn",
        "numpy",
        "pandas",
    ):
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pkgs[name] = None
    from raydx import __version__

    pkgs["raydx"] = __version__  # the code that runs (an editable install's record lags)
    return {
        "command": sys.argv,
        "options": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(opts).items()
        },
        "space": {
            "path": space.path,
            "params": [p.name for p in space.params],
            # the parameters as searched, which a resume holds its space.yaml to, and the
            # sha256 of that file as written (unchanged: nothing to compare)
            "searched": space.to_dict()["params"],
            "sha256": hashlib.sha256(yaml_text(space.to_dict()).encode("utf-8")).hexdigest(),
        },
        "seed": opts.seed,
        "data": {
            "source": opts.data,
            "name": table.name,
            "sha256": sha256_of(opts.data),
            "fingerprint": table.fingerprint(),
            # run.check_fingerprint compares only fingerprints of one version
            "fingerprint_version": FINGERPRINT_VERSION,
            "n": len(table),
            "ingest": {k: v for k, v in table.info.items() if k not in ("bad", "duplicates")},
            "image_shape": list(table.images.shape[1:]),
            "class_names": list(table.class_names),
            "label_map": table.label_map,
            "positive_class": positive,
            "positive_class_name": table.class_names[positive],
        },
        "packages": pkgs,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **git_state(),
        "started": datetime.now().isoformat(timespec="seconds"),
    }


def with_run_positive(options: dict[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` (a run's saved ones) with the positive class the run used, where it
    was chosen by default: a later raydx's default rule may choose another (it learnt
    that ``NoTumor`` says absence), and a resumed search or a re-check of its winner
    must score the same class, or its AUCs would turn into 1 - AUC."""
    name = run.get("data", {}).get("positive_class_name")
    if options.get("positive_class") is None and name is not None:
        return {**options, "positive_class": name}
    return options
