"""``--limit``: which rows a stratified subset keeps, decided from labels and the
official split alone, so that a folder or manifest is cut before its images are
decoded (``raydx.data.files``) and an in-memory source after (``prepare.limit_rows``),
by one rule that picks the same rows either way."""

from __future__ import annotations

import numpy as np

from raydx.errors import RaydxError


def limit_index(
    labels: np.ndarray,
    official_split: np.ndarray | None,
    limit: int,
    seed: int,
    name: str,
) -> np.ndarray:
    """Sorted row numbers of a subset of ``limit`` rows, stratified by (split, label).

    Each stratum keeps its share of ``limit`` (largest remainders), and at least one
    row, so no class vanishes from a split. ``labels`` are class indices (their string
    forms order the strata, as they always have: a run's subset stays the same).
    """
    strata = labels.astype(str).astype(object)
    if official_split is not None:
        strata = official_split.astype(str).astype(object) + "/" + strata
    names, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    if limit < len(names):
        raise RaydxError(
            f"limit={limit} is smaller than the {len(names)} (split, label) groups of "
            f"'{name}' that a subset must keep; use --limit >= {len(names)}."
        )
    share = counts * limit / counts.sum()
    take = np.floor(share).astype(int)
    rest = limit - int(take.sum())
    take[np.argsort(-(share - take), kind="stable")[:rest]] += 1
    for s in np.flatnonzero(take == 0):  # keep every stratum, paid by the largest
        take[s] = 1
        take[np.argmax(take)] -= 1
    rng = np.random.default_rng(seed)
    idx = [rng.permutation(np.flatnonzero(inverse == s))[:t] for s, t in enumerate(take)]
    return np.sort(np.concatenate(idx))
