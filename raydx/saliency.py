"""Where the winner looks: SmoothGrad maps of test images for the report.

A model that scores well by reading a ruler, a caliper mark or burnt-in text instead
of the lesion is a known failure of medical image classifiers (shortcut learning); a
map of which pixels move the positive-class probability is the cheapest first check.
SmoothGrad (Smilkov et al., 2017) averages input gradients over noisy copies of the
image, which works for every family's network without naming a layer (Grad-CAM needs
one, and at 28 px the last feature map is 1-3 pixels wide).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from raydx.train import probabilities


def smoothgrad(
    members: list[nn.Module],
    x: torch.Tensor,
    *,
    positive: int,
    samples: int = 16,
    sigma: float = 0.15,
    seed: int = 0,
) -> np.ndarray:
    """(N, H, W) maps in [0, 1]: |d p(positive) / d x|, averaged over ``samples`` noisy
    copies (noise std ``sigma`` times the image's range) and over the ensemble members,
    maximum over channels, scaled per image."""
    gen = torch.Generator().manual_seed(seed)
    device = next(members[0].parameters()).device
    x = x.to(device)
    span = (x.amax(dim=(1, 2, 3), keepdim=True) - x.amin(dim=(1, 2, 3), keepdim=True)).clamp(
        min=1e-6
    )
    total = torch.zeros_like(x)
    for m in members:
        m.eval()
    # One noisy copy of every image at a time: memory stays that of one batch of N at any
    # image size (all copies at once took 4.9 GB for 16 images of 128 px).
    for _ in range(samples):
        noise = torch.randn(x.shape, generator=gen).to(device) * sigma * span
        for m in members:
            xg = (x + noise).requires_grad_(True)
            p = probabilities(m(xg))
            p_pos = p if p.ndim == 1 else p[:, positive]
            (grad,) = torch.autograd.grad(p_pos.sum(), xg)
            total += grad.abs()
    maps = total.amax(dim=1)
    maps = maps / maps.flatten(1).amax(dim=1).clamp(min=1e-12)[:, None, None]
    return maps.detach().cpu().numpy()


def pick_examples(is_pos: np.ndarray, p_pos: np.ndarray, k: int = 4) -> dict[str, np.ndarray]:
    """Row indices of each class's highest and lowest scored images: where the model is
    surest, and its worst misses (where a shortcut shows first). No image is in two rows;
    a class of fewer than 2k images gives shorter rows."""
    order = np.argsort(-p_pos, kind="stable")
    pos, neg = order[is_pos[order]], order[~is_pos[order]]
    top_pos, low_neg = pos[:k], neg[::-1][:k]
    return {
        "positives scored highest": top_pos,
        "negatives scored lowest": low_neg,
        "positives scored lowest": pos[::-1][: max(0, min(k, len(pos) - len(top_pos)))],
        "negatives scored highest": neg[: max(0, min(k, len(neg) - len(low_neg)))],
    }


def write_saliency(
    members: list[nn.Module],
    x: np.ndarray,
    is_pos: np.ndarray,
    p_pos: np.ndarray,
    *,
    positive: int,
    positive_name: str,
    path: Path,
    k: int = 4,
) -> Path | None:
    """A grid of test images (rows: the groups of :func:`pick_examples`) with their maps
    overlaid; None when the test split lacks a class."""
    if is_pos.all() or not is_pos.any():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = pick_examples(is_pos, p_pos, k)
    rows = np.concatenate(list(groups.values()))
    maps = smoothgrad(members, torch.from_numpy(np.ascontiguousarray(x[rows])), positive=positive)
    fig, axes = plt.subplots(len(groups), 2 * k, figsize=(2 * k * 1.1, len(groups) * 1.35))
    at = 0
    for r, (title, idx) in enumerate(groups.items()):
        for j in range(k):
            ax_img, ax_map = axes[r, 2 * j], axes[r, 2 * j + 1]
            ax_img.axis("off")
            ax_map.axis("off")
            if j >= len(idx):
                continue
            img = x[idx[j]].transpose(1, 2, 0)
            img = (img - img.min()) / max(float(img.max() - img.min()), 1e-6)
            colour = img.shape[2] == 3
            cmap = None if colour else "gray"
            shown = img if colour else img.mean(axis=2)
            ax_img.imshow(shown, cmap=cmap)
            ax_map.imshow(shown, cmap=cmap)
            ax_map.imshow(maps[at + j], cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            ax_img.set_title(f"p={p_pos[idx[j]]:.2f}", fontsize=7)
        axes[r, 0].text(
            -0.1, 0.5, title, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8
        )
        at += len(idx)
    fig.suptitle(
        f"Test images and where the probability of '{positive_name}' changes most "
        "(SmoothGrad; bright: sensitive pixels)",
        fontsize=9,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
