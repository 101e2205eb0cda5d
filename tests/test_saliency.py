"""Saliency maps for the report: the right pixels, the right examples, never a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from raydx import saliency
from raydx.saliency import pick_examples, smoothgrad, write_saliency


def _one_pixel_model(row: int, col: int, size: int = 8, outputs: int = 1) -> nn.Module:
    """Its logit reads one pixel of channel 1 alone."""
    lin = nn.Linear(2 * size * size, outputs)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[:, size * size + row * size + col] = 3.0
    return nn.Sequential(nn.Flatten(), lin)


def test_the_map_lights_up_the_pixel_the_model_reads() -> None:
    x = torch.randn(5, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    maps = smoothgrad([_one_pixel_model(2, 5), _one_pixel_model(2, 5)], x, positive=0)
    assert maps.shape == (5, 8, 8)
    np.testing.assert_allclose(maps[:, 2, 5], 1.0)
    mask = np.ones((8, 8), bool)
    mask[2, 5] = False
    assert np.abs(maps[:, mask]).max() == 0.0


def test_multiclass_maps_follow_the_positive_class() -> None:
    m = _one_pixel_model(1, 1, outputs=3)
    with torch.no_grad():  # class 2 reads another pixel as well
        m[1].weight[2, 64 + 6 * 8 + 6] = 3.0
    x = torch.zeros(2, 2, 8, 8)
    maps = smoothgrad([m], x, positive=2, sigma=0.0)
    assert maps[:, 6, 6].min() > 0.2 and maps.max() == 1.0


def test_examples_are_each_classs_highest_and_lowest_scored_never_twice() -> None:
    is_pos = np.array([True, True, True, True, False, False, False, False])
    p = np.array([0.9, 0.2, 0.6, 0.4, 0.1, 0.8, 0.3, 0.5])
    g = pick_examples(is_pos, p, k=2)
    assert g["positives scored highest"].tolist() == [0, 2]
    assert g["negatives scored lowest"].tolist() == [4, 6]
    assert g["positives scored lowest"].tolist() == [1, 3]
    assert g["negatives scored highest"].tolist() == [5, 7]
    # Three images a class and k=2: the lowest row gets only the one image left.
    small = pick_examples(is_pos[[0, 1, 2, 4, 5, 6]], p[[0, 1, 2, 4, 5, 6]], k=2)
    assert small["positives scored lowest"].tolist() == [1]
    assert small["negatives scored highest"].tolist() == [4]
    shown = np.concatenate(list(small.values()))
    assert len(shown) == len(set(shown.tolist())) == 6


def test_writes_the_picked_examples_maps_or_nothing_for_one_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = np.random.default_rng(0).normal(size=(10, 2, 8, 8)).astype(np.float32)
    is_pos = np.arange(10) < 4
    p = np.linspace(0, 1, 10)
    members = [_one_pixel_model(3, 3)]
    kw = {"positive": 0, "positive_name": "malignant"}
    seen: list[torch.Tensor] = []

    def spy(ms: list[nn.Module], xs: torch.Tensor, **k: object) -> np.ndarray:
        seen.append(xs)
        return smoothgrad(ms, xs, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(saliency, "smoothgrad", spy)
    out = write_saliency(members, x, is_pos, p, path=tmp_path / "s.png", k=2, **kw)
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Exactly the picked images are mapped, in the order the rows are drawn.
    rows = np.concatenate(list(pick_examples(is_pos, p, k=2).values()))
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0].numpy(), x[rows])
    none = write_saliency(members, x, np.ones(10, bool), p, path=tmp_path / "t.png", **kw)
    assert none is None and not (tmp_path / "t.png").exists()
