"""Output files written atomically, without Ray.

``raydx.results`` (a Tune callback, so it imports Ray) re-exports these; ``raydx
predict`` and the model folder use them directly, so that a saved model needs nothing
but raydx and PyTorch.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from raydx.jsonfile import strict_json


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through ``write(tmp)`` then rename over ``path``: readers never see half a file.

    The file gets the mode an ordinary ``open`` would give it (0644 under the usual
    umask), not ``mkstemp``'s 0600: in a shared run folder, colleagues read the report
    and the model card as they read the weights.

    The bytes are flushed to disk before the rename and the rename after it: without
    that, a crash or a power cut soon after can leave ``path`` empty (the rename
    reached the disk, the data not yet), which is what the atomic write is for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:  # ``write`` wrote it by name: open it again to sync
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; best effort, as some platforms (Windows)
    and file systems cannot open or sync a directory."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask: from /proc on Linux (reading it elsewhere means setting it,
    for an instant, in every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda p: df.to_parquet(p, index=False))


def yaml_text(obj: Any) -> str:
    """What ``write_yaml`` writes."""
    return yaml.safe_dump(builtin(obj), sort_keys=False)


def write_yaml(obj: Any, path: Path) -> None:
    text = yaml_text(obj)
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def builtin(obj: Any) -> Any:
    """Nested dicts and lists with numpy scalars as Python numbers: ``yaml.safe_dump``
    refuses numpy types, and metrics computed with numpy hand them over."""
    if isinstance(obj, dict):
        return {k: builtin(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [builtin(v) for v in obj]
    return obj.item() if isinstance(obj, np.generic) else obj


def write_json(obj: Any, path: Path) -> None:
    atomic_write(path, lambda p: p.write_text(strict_json(obj) + "\n"))
