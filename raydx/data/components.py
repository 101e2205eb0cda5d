"""Rows joined by shared values: patients with their exact copies, DICOM PatientIDs with
the patient subfolders that hold images without one."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def row_components(*keys: Sequence[Hashable | None]) -> np.ndarray:
    """Each row's component, as the index of its first row: rows that share a value of
    any one key (None: no value) are one component, and so, transitively, are rows
    joined through others."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(keys[0]) if keys else 0
    a: list[int] = []
    b: list[int] = []
    for key in keys:
        if len(key) != n:
            raise ValueError(f"every key must have one value per row ({n}), but got {len(key)}.")
        first: dict[Hashable, int] = {}
        for i, v in enumerate(key):
            if v is not None and (j := first.setdefault(v, i)) != i:
                a.append(j)
                b.append(i)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    first_row: dict[int, int] = {}
    return np.array([first_row.setdefault(int(c), i) for i, c in enumerate(label)], dtype=np.int64)
