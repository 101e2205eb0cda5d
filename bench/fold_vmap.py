"""Would stacking the k fold models into one (``torch.func.vmap``) pay on a GPU?

    .venv/bin/python bench/fold_vmap.py                 # CPU, 1 thread
    python3 bench/fold_vmap.py --device cuda            # on a GPU (bench/gpu_check.sh)

Small images make a fold's training step a string of tiny kernels: on a GPU the step
costs its launches, not its arithmetic. Stacking the folds' models turns k launches of
each kernel into one. This times one training step (forward, BCE loss, backward, Adam)
of k models on random 28x28 batches, one model after another against all k at once
through ``torch.func.stack_module_state`` + ``functional_call`` + ``vmap``, and prints
training images per second for each. It measures the step alone: no data loading,
no validation, no Ray.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from raydx.models import create_model

MODELS: dict[str, dict[str, Any]] = {
    "cnn_seed": {"name": "cnn_seed"},
    "cnn d3 w32 no-norm": {"name": "cnn", "depth": 3, "width": 32, "norm": "none"},
    "cnn d4 w64 batch-norm": {"name": "cnn", "depth": 4, "width": 64, "norm": "batch"},
}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _rate(step: Callable[[], None], device: str, steps: int, images: int) -> float:
    for _ in range(5):  # warm-up: allocator, cuDNN algorithm choice
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return images * steps / (time.perf_counter() - t0)


def compare(spec: dict[str, Any], k: int, batch: int, steps: int, device: str) -> dict[str, float]:
    kw = dict(spec)
    name = kw.pop("name")
    torch.manual_seed(0)
    models = [create_model(name, image_size=28, **kw).to(device).train() for _ in range(k)]
    x = torch.randn(k, batch, 1, 28, 28, device=device)
    y = torch.randint(0, 2, (k, batch), device=device).float()

    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]

    def one_by_one() -> None:
        for m, opt, xi, yi in zip(models, opts, x, y, strict=True):
            loss = F.binary_cross_entropy_with_logits(m(xi).squeeze(-1), yi)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    params, buffers = stack_module_state(models)  # type: ignore[arg-type]
    base = copy.deepcopy(models[0]).to("meta")

    def loss_of(p: dict[str, Any], b: dict[str, Any], xi: torch.Tensor, yi: torch.Tensor):
        out = functional_call(base, (p, b), (xi,)).squeeze(-1)
        return F.binary_cross_entropy_with_logits(out, yi)

    stacked_loss = vmap(loss_of, randomness="different")
    opt = torch.optim.Adam(list(params.values()), lr=1e-3)

    def stacked() -> None:
        loss = stacked_loss(params, buffers, x, y).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    images = k * batch
    out = {"one_by_one": _rate(one_by_one, device, steps, images)}
    try:
        out["vmap"] = _rate(stacked, device, steps, images)
    except Exception as e:  # e.g. batch norm's in-place running statistics
        print(f"  vmap failed for {spec}: {type(e).__name__}: {str(e)[:200]}")
        out["vmap"] = float("nan")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} thr"
    print(f"{args.folds} models, batch {args.batch}, 28x28, one training step, on {where}")
    print(f"{'model':<26}{'one by one img/s':>18}{'vmap img/s':>14}{'gain':>8}")
    for label, spec in MODELS.items():
        r = compare(spec, args.folds, args.batch, args.steps, args.device)
        gain = r["vmap"] / r["one_by_one"]
        print(f"{label:<26}{r['one_by_one']:18.0f}{r['vmap']:14.0f}{gain:7.2f}x")


if __name__ == "__main__":
    main()
