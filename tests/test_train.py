"""One fold's epoch loop: learning, target direction, determinism, class balance, divergence."""

from __future__ import annotations

import dataclasses
import itertools
import warnings

import numpy as np
import pytest
import torch

from raydx.config import TrialConfig
from raydx.errors import RaydxError
from raydx.metrics import auc
from raydx.train import DivergedError, FoldTrainer, num_outputs, predict

SIZE = 16


def _blobs(n: int, *, n_pos: int | None = None, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Grey 16x16 noise; label 1 adds a bright Gaussian blob somewhere in the middle."""
    rng = np.random.default_rng(seed)
    n_pos = n // 2 if n_pos is None else n_pos
    y = np.zeros(n, dtype=np.int64)
    y[:n_pos] = 1
    rng.shuffle(y)
    x = rng.normal(0.0, 0.3, size=(n, 1, SIZE, SIZE)).astype(np.float32)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in np.flatnonzero(y == 1):
        cy, cx = rng.integers(4, SIZE - 4, size=2)
        x[i, 0] += 2.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0)
    return torch.from_numpy(x), y


@pytest.fixture(scope="module")
def data() -> dict[str, object]:
    x, y = _blobs(160)
    return {"x_train": x[:120], "y_train": y[:120], "x_val": x[120:], "y_val": y[120:]}


def _trainer(
    data: dict[str, object],
    cfg: TrialConfig | None = None,
    *,
    positive: int = 1,
    epochs: int = 3,
    seed: int = 0,
    fold: int = 0,
    n_classes: int = 2,
) -> FoldTrainer:
    cfg = cfg or TrialConfig(model="cnn_tiny", lr=1e-2, batch_size=32)
    return FoldTrainer(
        cfg,
        **data,  # type: ignore[arg-type]
        n_classes=n_classes,
        positive=positive,
        epochs=epochs,
        seed=seed,
        fold=fold,
    )


def _fit(trainer: FoldTrainer, epochs: int) -> list:
    return [trainer.run_epoch(e) for e in range(1, epochs + 1)]


def test_num_outputs() -> None:
    assert num_outputs(2) == 1  # one logit: probability of the positive class
    assert num_outputs(3) == 3
    assert num_outputs(9) == 9


def test_learns_separable_set(data) -> None:
    tr = _trainer(data)
    results = _fit(tr, 3)
    assert [r.epoch for r in results] == [1, 2, 3]
    last = results[-1]
    assert last.val_auc > 0.9
    assert last.val_acc > 0.8
    assert results[-1].train_loss < results[0].train_loss
    assert last.val_prob.shape == (40,)
    assert ((last.val_prob >= 0) & (last.val_prob <= 1)).all()
    # The reported AUC is the AUC of the returned probabilities against y == positive.
    assert last.val_auc == pytest.approx(auc((data["y_val"] == 1).astype(int), last.val_prob))
    # ``predict`` (eval mode, batched) gives the probabilities ``evaluate`` scored.
    np.testing.assert_allclose(predict(tr.model, data["x_val"]), last.val_prob, atol=1e-6)
    np.testing.assert_allclose(
        predict(tr.model, data["x_val"], batch_size=7), last.val_prob, atol=1e-6
    )


def test_positive_class_sets_the_target_direction(data) -> None:
    """positive=0: the single output is the probability of class 0, not class 1."""
    tr = _trainer(data, positive=0)
    assert torch.equal(tr.t_train, torch.as_tensor(data["y_train"] == 0, dtype=torch.float32))
    last = _fit(tr, 3)[-1]
    is_class_1 = (data["y_val"] == 1).astype(int)
    assert last.val_auc > 0.9  # scored against y == 0
    assert auc(is_class_1, last.val_prob) < 0.1  # so it ranks class 1 low
    assert auc(1 - is_class_1, last.val_prob) == pytest.approx(last.val_auc)
    # Accuracy is measured against the same target.
    expected_acc = ((last.val_prob >= 0.5) == (data["y_val"] == 0)).mean()
    assert last.val_acc == pytest.approx(expected_acc)


def test_same_seed_same_probabilities(data) -> None:
    aug = {"hflip": 0.5, "rotate": 10.0, "noise": 0.05}
    cfg = TrialConfig.from_params({"model": "cnn_tiny", "lr": 1e-2, "batch_size": 32, **aug})
    a = _fit(_trainer(data, cfg, seed=3), 2)[-1].val_prob
    torch.manual_seed(12345)  # global state from elsewhere must not matter
    b = _fit(_trainer(data, cfg, seed=3), 2)[-1].val_prob
    c = _fit(_trainer(data, cfg, seed=4), 2)[-1].val_prob
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4
    # The fold index is part of the seed too: two folds of one trial are not clones.
    d = _fit(_trainer(data, cfg, seed=3, fold=1), 2)[-1].val_prob
    assert np.abs(a - d).max() > 1e-4


@pytest.mark.parametrize("setting", [{"mixup": 0.4}, {"sam": 0.05}])
def test_a_training_option_learns_reproducibly_and_changes_training(data, setting) -> None:
    cfg = TrialConfig(model="cnn_tiny", lr=1e-2, batch_size=32, **setting)
    a = _fit(_trainer(data, cfg, seed=3), 3)
    torch.manual_seed(12345)  # the draws come from the fold's own generator
    b = _fit(_trainer(data, cfg, seed=3), 3)
    plain = _fit(_trainer(data, seed=3), 3)
    np.testing.assert_array_equal(a[-1].val_prob, b[-1].val_prob)
    assert np.abs(a[-1].val_prob - plain[-1].val_prob).max() > 1e-4
    assert a[-1].val_auc > 0.9


@pytest.mark.parametrize("n_classes", [2, 3])
def test_mixup_loss_is_the_loss_of_mixed_targets(n_classes: int) -> None:
    """Mixing two losses of one output equals the loss against the mixed target."""
    x, y = _blobs(64, seed=1)
    y = y if n_classes == 2 else np.arange(64) % 3
    cfg = TrialConfig(model="cnn_tiny", lr=1e-2, batch_size=32, mixup=0.4)
    tr = FoldTrainer(
        cfg, x_train=x, y_train=y, x_val=None, y_val=None, n_classes=n_classes,
        positive=1, epochs=1, seed=0,
    )  # fmt: skip
    tr.model.eval()  # no dropout or batch statistics in the way
    t = tr.t_train
    state = tr.generator.get_state()
    got = tr._loss_fn(x, t)()
    tr.generator.set_state(state)
    draw = int(torch.randint(0, 2**31 - 1, (1,), generator=tr.generator))
    lam = float(np.random.default_rng(draw).beta(0.4, 0.4))
    perm = torch.randperm(64, generator=tr.generator)
    assert 0.0 <= lam <= 1.0 and not torch.equal(perm, torch.arange(64))
    logits = tr.model(lam * x + (1 - lam) * x[perm])
    if n_classes == 2:
        soft = lam * t + (1 - lam) * t[perm]
        want = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], soft)
    else:
        onehot = torch.nn.functional.one_hot(t, 3).float()
        soft = lam * onehot + (1 - lam) * onehot[perm]
        want = torch.nn.functional.cross_entropy(logits, soft)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_label_smoothing_softens_training_targets_only(n_classes: int) -> None:
    """Smoothing s pulls a binary target to t(1 - s) + s/2 (cross-entropy's own rule with
    more classes); the validation loss, which picks the best epoch, stays unsmoothed."""
    x, y = _blobs(64, seed=2)
    y = y if n_classes == 2 else np.arange(64) % 3
    s = 0.2
    cfg = TrialConfig(model="cnn_tiny", lr=1e-2, batch_size=32, label_smoothing=s)
    tr = FoldTrainer(
        cfg, x_train=x, y_train=y, x_val=None, y_val=None, n_classes=n_classes,
        positive=1, epochs=1, seed=0,
    )  # fmt: skip
    t = tr.t_train
    F = torch.nn.functional
    # confident and right, where smoothing matters most
    logits = 4 * (2 * t[:, None] - 1) if n_classes == 2 else 8 * F.one_hot(t, 3).float() - 4
    if n_classes == 2:
        smooth = F.binary_cross_entropy_with_logits(logits[:, 0], t * (1 - s) + 0.5 * s)
        plain = F.binary_cross_entropy_with_logits(logits[:, 0], t)
    else:
        smooth = F.cross_entropy(logits, t, label_smoothing=s)
        plain = F.cross_entropy(logits, t)
    assert tr._loss(logits, t, train=True).item() == pytest.approx(smooth.item(), rel=1e-6)
    assert tr._loss(logits, t, train=False).item() == pytest.approx(plain.item(), rel=1e-6)
    assert abs(smooth.item() - plain.item()) > 0.05


def test_a_batch_of_one_is_refused_for_training(data: dict[str, object]) -> None:
    """Every trainer skips a batch of one image, so batch_size 1 trained on one image an
    epoch (a GAN on none), without a word. A saved model of batch size 1 still loads."""
    cfg = TrialConfig.from_params({"model": "cnn_tiny", "batch_size": 1})
    with pytest.raises(RaydxError, match=r"batch_size must be >= 2 to train .*batch_size=1\."):
        _trainer(data, cfg)
    with pytest.raises(RaydxError, match=r"batch_size must be >= 1, but got batch_size=0\."):
        TrialConfig.from_params({"model": "cnn_tiny", "batch_size": 0})


def test_mixup_must_not_be_negative() -> None:
    with pytest.raises(RaydxError, match=r"mixup must be >= 0 \(0: off\), but got mixup=-0.2"):
        TrialConfig(mixup=-0.2)


def test_sam_step_uses_the_gradient_at_the_perturbed_weights(data: dict[str, object]) -> None:
    """One SAM step by hand: ascend rho along the normalised gradient, take the gradient
    there, come back, step. Batch-norm running statistics move once, not twice."""
    cfg = TrialConfig(model="cnn", lr=1e-2, batch_size=120, sam=0.05, model_params={"depth": 2})
    x, y = data["x_train"], data["y_train"]
    tr = _trainer({"x_train": x, "y_train": y, "x_val": None, "y_val": None}, cfg)
    ref = _trainer({"x_train": x, "y_train": y, "x_val": None, "y_val": None}, cfg)
    ref.model.load_state_dict(tr.model.state_dict())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in tr.model.modules())
    start = {k: v.clone() for k, v in tr.model.state_dict().items()}

    order = tr._order()  # the batch the trainer will draw (one batch of all rows)
    tr.generator.set_state(ref.generator.get_state())
    xb, tb = x[order], ref.t_train[order]  # type: ignore[index]
    with torch.random.fork_rng():
        ref.model.train()
        loss = ref._loss(ref.model(xb), tb, train=True)
        grads = torch.autograd.grad(loss, list(ref.model.parameters()))
        norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
        bn_after_first = {k: v.clone() for k, v in ref.model.state_dict().items() if "running" in k}
        with torch.no_grad():
            for p, g in zip(ref.model.parameters(), grads, strict=True):
                p.add_(0.05 * g / norm)
        for m in ref.model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 0.0
        sam_grads = torch.autograd.grad(
            ref._loss(ref.model(xb), tb, train=True), list(ref.model.parameters())
        )

    moved = max((a - b).abs().max().item() for a, b in zip(grads, sam_grads, strict=True))
    assert moved > 1e-3  # the two gradients are told apart at the tolerance below
    tr.optimizer.step = lambda: None  # type: ignore[method-assign,assignment]  # look, don't step
    tr.train_epoch(1)
    for p, g in zip(tr.model.parameters(), sam_grads, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)
    state = tr.model.state_dict()
    for k, v in start.items():  # the weights came back exactly
        if "running" not in k and "num_batches" not in k:
            torch.testing.assert_close(state[k], v, rtol=0, atol=1e-6)
    for k, v in bn_after_first.items():
        torch.testing.assert_close(state[k], v)
    assert not torch.allclose(state[next(iter(bn_after_first))], start[next(iter(bn_after_first))])


def test_sam_must_not_be_negative() -> None:
    with pytest.raises(RaydxError, match=r"sam must be >= 0 \(0: off\), but got sam=-0.1"):
        TrialConfig(sam=-0.1)


@pytest.mark.parametrize(("positive", "expected"), [(1, 90 / 30), (0, 30 / 90)])
def test_weighted_sets_pos_weight(positive: int, expected: float) -> None:
    x, y = _blobs(120, n_pos=30)
    cfg = TrialConfig(model="cnn_tiny", class_balance="weighted", batch_size=32)
    tr = _trainer({"x_train": x, "y_train": y, "x_val": x, "y_val": y}, cfg, positive=positive)
    assert tr.class_weight is not None
    assert tr.class_weight.tolist() == pytest.approx([expected])  # n_neg / n_pos
    assert tr.sample_weight is None
    # It is used in the training loss only, never in the validation loss.
    logits = torch.zeros(4, 1)
    target = torch.tensor([1.0, 1.0, 0.0, 0.0])
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], target)
    assert tr._loss(logits, target, train=False).item() == pytest.approx(plain.item())
    assert tr._loss(logits, target, train=True).item() == pytest.approx(
        plain.item() * (expected + 1) / 2
    )


def test_no_balance_has_no_weights(data) -> None:
    tr = _trainer(data)
    assert tr.class_weight is None and tr.sample_weight is None
    order = tr._order()
    assert sorted(order.tolist()) == list(range(120))  # a permutation: every row once


def test_sampler_draws_minority_about_half_the_time() -> None:
    x, y = _blobs(200, n_pos=20)  # 10% positive
    cfg = TrialConfig(model="cnn_tiny", class_balance="sampler", batch_size=32)
    tr = _trainer({"x_train": x, "y_train": y, "x_val": x, "y_val": y}, cfg)
    assert tr.class_weight is None
    draws = torch.cat([tr._order() for _ in range(20)]).numpy()
    assert len(draws) == 20 * 200
    share = (y[draws] == 1).mean()
    assert 0.45 < share < 0.55  # vs 0.10 without the sampler
    # Epoch length is unchanged: the scheduler's step count still holds.
    assert len(tr._order()) == 200


def test_sampler_balances_the_positive_class_for_positive_0() -> None:
    x, y = _blobs(200, n_pos=180)  # class 0 is the 10% minority, and positive
    cfg = TrialConfig(model="cnn_tiny", class_balance="sampler", batch_size=32)
    tr = _trainer({"x_train": x, "y_train": y, "x_val": x, "y_val": y}, cfg, positive=0)
    draws = torch.cat([tr._order() for _ in range(20)]).numpy()
    assert 0.45 < (y[draws] == 0).mean() < 0.55


def test_huge_lr_raises_diverged_naming_epoch_and_fold(data) -> None:
    cfg = TrialConfig(model="cnn_tiny", optimizer="sgd", lr=1e30)
    tr = _trainer(data, cfg, fold=2, epochs=3)
    with pytest.raises(DivergedError, match=r"nan|inf") as info:
        _fit(tr, 3)
    msg = str(info.value)
    assert "at epoch 1" in msg
    assert "(fold 2)" in msg
    assert "lower lr" in msg
    assert isinstance(info.value, RuntimeError)  # a failed configuration, not a user error


def test_multiclass_probabilities_sum_to_one() -> None:
    rng = np.random.default_rng(1)
    x, y = _blobs(90, seed=1)
    y = np.where(y == 1, 1, 0)
    y[rng.choice(np.flatnonzero(y == 0), 30, replace=False)] = 2
    x[y == 2] *= -1  # a third, distinguishable class
    data = {"x_train": x[:60], "y_train": y[:60], "x_val": x[60:], "y_val": y[60:]}
    tr = _trainer(data, n_classes=3)
    assert tr.t_train.dtype == torch.long
    assert tr.model(data["x_val"][:2]).shape == (2, 3)
    r = _fit(tr, 2)[-1]
    assert r.val_prob.shape == (30, 3)
    np.testing.assert_allclose(r.val_prob.sum(1), 1.0, atol=1e-5)
    assert r.val_acc == pytest.approx((r.val_prob.argmax(1) == data["y_val"]).mean())
    assert np.isfinite(r.val_auc) and 0.0 <= r.val_auc <= 1.0
    assert predict(tr.model, data["x_val"]).shape == (30, 3)


def _used_lrs(tr: FoldTrainer, epochs: int) -> list[float]:
    """The lr of every optimizer step actually taken, over ``epochs`` epochs."""
    used: list[float] = []
    tr.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"])
    )
    for e in range(1, epochs + 1):
        tr.train_epoch(e)
    return used


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
@pytest.mark.parametrize(
    "n_train",
    [120, 112, 97],  # 97 = 3 x 32 + 1: last batch of one
)
def test_lr_schedule_runs_all_epochs_and_decays(data, schedule: str, n_train: int) -> None:
    cfg = TrialConfig(model="cnn_tiny", lr=1e-2, batch_size=32, lr_schedule=schedule)
    d = dict(data, x_train=data["x_train"][:n_train], y_train=data["y_train"][:n_train])
    epochs = 4
    tr = _trainer(d, cfg, epochs=epochs)
    assert tr.scheduler is not None
    used = _used_lrs(tr, epochs)  # no "stepped too many times" error either
    assert len(used) == epochs * (n_train // 32 + (n_train % 32 > 1))
    assert max(used) <= cfg.lr * (1 + 1e-9)
    assert tr.optimizer.param_groups[0]["lr"] < cfg.lr  # ends lower than the maximum
    assert used[-1] < 0.02 * cfg.lr  # the last step ran at the end of the schedule
    if schedule == "cosine":
        assert used[0] == pytest.approx(cfg.lr)
        assert all(a >= b for a, b in itertools.pairwise(used))
    else:  # warm-up to the maximum in the first quarter, then down
        peak = int(np.argmax(used))
        assert used[peak] > 0.95 * cfg.lr
        assert used[0] < 0.1 * cfg.lr
        assert 0 < peak <= len(used) // 3


def test_no_schedule_keeps_lr(data) -> None:
    tr = _trainer(data)
    assert tr.scheduler is None
    tr.train_epoch(1)
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
@pytest.mark.parametrize("steps", range(1, 10))
def test_lr_schedules_take_any_number_of_steps(schedule: str, steps: int) -> None:
    """A tiny run (2 epochs of 2 batches: OneCycleLR's warm-up of one step) must not crash,
    and a one-cycle schedule spans exactly the steps that run: it ends at its minimum."""
    from raydx.train import make_lr_schedule

    lr = 0.1
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sched = make_lr_schedule(
        TrialConfig.from_params({"lr_schedule": schedule, "lr": lr}), opt, steps
    )
    assert sched is not None
    used = []
    for _ in range(steps):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert all(np.isfinite(g["lr"]) and g["lr"] >= 0 for g in opt.param_groups)
    assert max(used) <= lr * (1 + 1e-9)
    if schedule == "onecycle":  # torch's defaults: div_factor 25, final_div_factor 1e4
        assert used[-1] == pytest.approx(lr / 25 / 1e4)  # the last step at the minimum
        if steps >= 2:  # a warm-up of at least one step, from lr / 25
            assert used[0] == pytest.approx(lr / 25)
        if steps >= 3:  # up to (near) the maximum, and down to the minimum
            assert used[1] > used[0] and max(used) >= 0.9 * lr
            assert all(a >= b for a, b in itertools.pairwise(used[int(np.argmax(used)) :]))
        if steps in (3, 4):  # short runs reach the maximum exactly, at step 1
            assert used[1] == pytest.approx(lr)


@pytest.mark.parametrize("steps", [5, 6, 12, 40, 97])
def test_onecycle_runs_of_5_steps_or_more_keep_their_schedule(steps: int) -> None:
    """Only runs of fewer than 5 steps changed schedule: longer ones have the quarter
    warm-up they always had (OneCycleLR with pct_start=0.25), rate for rate."""
    from raydx.train import make_lr_schedule

    cfg = TrialConfig.from_params({"lr_schedule": "onecycle", "lr": 3e-3, "optimizer": "adamw"})
    opts = [torch.optim.AdamW(torch.nn.Linear(2, 1).parameters(), lr=3e-3) for _ in range(2)]
    ours = make_lr_schedule(cfg, opts[0], steps)
    before = torch.optim.lr_scheduler.OneCycleLR(
        opts[1], max_lr=3e-3, total_steps=steps, pct_start=0.25
    )
    assert ours is not None
    for _ in range(steps):
        a, b = opts[0].param_groups[0], opts[1].param_groups[0]
        assert (a["lr"], a["betas"]) == (b["lr"], b["betas"])
        for opt in opts:
            opt.step()
        ours.step()
        before.step()


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_onecycle_still_cycles_adams_beta1(data, optimizer: str) -> None:
    """Adam and AdamW keep fastai's one-cycle beta1 (0.95 -> 0.85 -> 0.95), as before."""
    cfg = TrialConfig(
        model="cnn_tiny", optimizer=optimizer, lr=1e-2, batch_size=32, lr_schedule="onecycle"
    )
    tr = _trainer(data, cfg, epochs=2)
    beta1: list[float] = []
    tr.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: beta1.append(opt.param_groups[0]["betas"][0])
    )
    for e in (1, 2):
        tr.train_epoch(e)
    assert len(beta1) == 8  # 2 epochs of 4 batches of 32 (120 images)
    assert beta1[0] == pytest.approx(0.95)
    assert min(beta1) == pytest.approx(0.85, abs=0.01)
    assert beta1[-1] == pytest.approx(0.95)


def _sgd_onecycle(data: dict[str, object], momentum: float) -> FoldTrainer:
    cfg = TrialConfig(
        model="cnn_tiny",
        optimizer="sgd",
        momentum=momentum,
        lr=1e-2,
        batch_size=32,
        lr_schedule="onecycle",
    )
    return _trainer(data, cfg, epochs=2)


def test_onecycle_keeps_sgds_momentum(data) -> None:
    """OneCycleLR's default would replace SGD's momentum by its own 0.95 -> 0.85 cycle:
    then momentum 0.3 and 0.8 trained bit-identical weights, and momentum 0 (plain SGD)
    became a heavy ball."""
    weights = []
    for momentum in (0.3, 0.8):
        tr = _sgd_onecycle(data, momentum)
        _fit(tr, 2)
        weights.append(torch.cat([p.detach().flatten() for p in tr.model.parameters()]))
    assert (weights[0] - weights[1]).abs().max() > 1e-4

    tr = _sgd_onecycle(data, 0.0)
    seen: list[tuple[float, bool]] = []
    tr.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append(
            (opt.param_groups[0]["momentum"], opt.param_groups[0]["nesterov"])
        )
    )
    _fit(tr, 2)
    assert seen == [(0.0, False)] * 8  # every step plain SGD
    assert tr.optimizer.param_groups[0]["momentum"] == 0.0
    assert not any(tr.optimizer.state[p] for p in tr.model.parameters())  # no momentum buffer


def test_batches_and_steps_for_agree() -> None:
    """Every trainer's loop cuts its epoch with ``batches``; the schedules count its
    batches with ``steps_for``: they must agree, or OneCycleLR stops short or raises."""
    from raydx.train import batches, steps_for

    for bs in range(2, 10):
        for n in range(0, 40):
            got = list(batches(torch.arange(n), bs))
            assert len(got) == steps_for(n, bs), (n, bs)
            kept = torch.cat(got).tolist() if got else []
            # in order; all but a trailing single image, which a lone image is not
            assert kept == list(range(n - 1 if n > 1 and n % bs == 1 else n)), (n, bs)
            assert all(len(b) >= 2 for b in got) or n == 1
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        list(batches(torch.arange(3), 1))
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        steps_for(3, 1)


# ---------------------------------------------------------------- SGD, model kinds


@pytest.mark.parametrize(("momentum", "nesterov"), [(0.0, False), (0.9, True)])
def test_sgd_momentum_0_is_plain_sgd_and_trains(data, momentum: float, nesterov: bool) -> None:
    cfg = TrialConfig(model="cnn_tiny", optimizer="sgd", momentum=momentum, batch_size=32)
    tr = _trainer(data, cfg, epochs=1)
    group = tr.optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"]) == (momentum, nesterov)
    before = [p.detach().clone() for p in tr.model.parameters()]
    (r,) = _fit(tr, 1)
    assert np.isfinite(r.train_loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.model.parameters(), strict=True))


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("momentum", 1.0, r"in \[0, 1\)"),
        ("momentum", -0.1, r"in \[0, 1\)"),
        ("weight_decay", -1e-4, ">= 0"),
        ("weight_decay", float("inf"), ">= 0"),
        ("weight_decay", float("nan"), ">= 0"),
    ],
)
def test_momentum_and_weight_decay_out_of_range_are_rejected(
    field: str, value: float, allowed: str
) -> None:
    with pytest.raises(RaydxError, match=rf"^{field} must .*{allowed}, but got {field}={value}\.$"):
        TrialConfig(**{field: value})


def test_a_configuration_without_a_model_gets_its_familys_and_records_it() -> None:
    from raydx.train import diagnosis_network

    assert TrialConfig().model == "cnn_seed"
    ae = TrialConfig(family="autoencoder")
    assert ae.model == "conv_ae"
    assert diagnosis_network(ae)[0] == "conv_ae"  # what a saved model's config names
    assert TrialConfig.from_params({"family": "autoencoder"}).model == "conv_ae"
    assert TrialConfig(family="gan").model == "cnn_seed"  # augment mode's classifier


def test_every_family_names_a_default_model_of_its_own_kind() -> None:
    """One rule, registered with the family (``Family.default_model``): a configuration
    that names no model gets it, and the messages name it."""
    from raydx.config import model_kind_error
    from raydx.families import list_families

    for fam in list_families():
        assert fam.default_model in fam.models(), fam.name
        assert TrialConfig(family=fam.name).model == fam.default_model
        assert TrialConfig.from_params({"family": fam.name}).model == fam.default_model
        wrong = "dcgan"  # no family's model
        assert f"{fam.default_model} when none is named" in str(model_kind_error(wrong, fam.name))


def test_an_older_raydxs_autoencoder_with_the_cnn_default_reads_as_the_conv_ae_it_trained() -> None:
    # Saved models, runs and best.yaml of that pairing: an older raydx trained conv_ae
    # with cnn_seed's parameters only (a searched depth went nowhere).
    params = {"family": "autoencoder", "model": "cnn_seed", "depth": 4, "dropout": 0.1}
    with pytest.warns(UserWarning, match="read as 'conv_ae'"):
        cfg = TrialConfig.from_params(params)
    assert cfg.model == "conv_ae" and cfg.model_params == {"dropout": 0.1}
    with pytest.raises(RaydxError, match="model must be a model of family 'autoencoder'"):
        TrialConfig(family="autoencoder", model="cnn_seed")  # built directly: refused


@pytest.mark.parametrize(
    ("family", "model", "allowed", "kind"),
    [
        ("autoencoder", "cnn", "conv_ae, conv_ae_tiny", "a model of family 'cnn' or 'gan'"),
        ("cnn", "conv_ae", "cnn, cnn_seed, cnn_tiny", "a model of family 'autoencoder'"),
        ("cnn", "dcgan", "cnn, cnn_seed, cnn_tiny", "which no family takes as its model"),
        ("gan", "conv_ae_tiny", "cnn, cnn_seed, cnn_tiny", "a model of family 'autoencoder'"),
    ],
)
def test_a_model_of_another_kind_than_the_familys_is_rejected(
    data, family: str, model: str, allowed: str, kind: str
) -> None:
    """Never trained quietly as another model (the autoencoder family once trained
    conv_ae for model cnn_seed and recorded cnn_seed)."""
    needle = (
        rf"^model must be a model of family '{family}' \({allowed};.*"
        rf"but got model='{model}', {kind}\.$"
    )
    with pytest.raises(RaydxError, match=needle):
        TrialConfig.from_params({"family": family, "model": model})
    with pytest.raises(RaydxError, match=needle):
        TrialConfig(family=family, model=model)
    cnn = TrialConfig(model="cnn_tiny", batch_size=32)
    with pytest.raises(RaydxError, match=needle):  # nor through a config changed in place
        _trainer(data, dataclasses.replace(cnn, family=family, model=model))


def test_a_key_the_model_does_not_take_is_not_dropped_silently() -> None:
    """A saved configuration with one still loads (the key was never used), with a
    warning that names the key and the models that take it."""
    depth = (
        r"^depth is not a parameter of model 'cnn_seed' \(family 'cnn'\); "
        r"models that take it: cnn, conv_ae\. It is left out"
    )
    with pytest.warns(UserWarning, match=depth):
        cfg = TrialConfig.from_params({"model": "cnn_seed", "depth": 4})
    assert cfg.model_params == {}
    ae_lr = r"^ae_lr is not a parameter of family 'cnn'.*families that take it: autoencoder\."
    with pytest.warns(UserWarning, match=ae_lr):
        cfg = TrialConfig.from_params({"family": "cnn", "ae_lr": 0.01})
    assert "ae_lr" not in cfg.family_params
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # keys the model or family takes: no warning
        cfg = TrialConfig.from_params(
            {"family": "gan", "model": "cnn", "depth": 2, "latent_size": 16, "lr": 0.01}
        )
    assert cfg.model_params == {"depth": 2} and cfg.family_params["latent_size"] == 16


def test_a_saved_model_whose_params_hold_another_familys_key_still_loads() -> None:
    from raydx.artifact import build_member

    saved = {
        "params": {"family": "cnn", "model": "cnn_tiny", "ae_lr": 0.01, "dropout": 0.1},
        "preprocessing": {"channels": 1, "image_size": SIZE},
        "class_names": ["benign", "malignant"],
    }
    with pytest.warns(UserWarning, match="ae_lr is not a parameter of family 'cnn'"):
        model = build_member(saved)
    assert model(torch.zeros(2, 1, SIZE, SIZE)).shape == (2, 1)


def test_confident_probabilities_keep_their_order() -> None:
    # float32 rounds every logit above about 17 to 1.0: the AUC would count such
    # images of both classes as ties.
    from raydx.train import probabilities

    logits = torch.tensor([[18.0], [22.0], [30.0], [-25.0], [-35.0]])
    p = probabilities(logits).numpy()
    assert p.dtype == np.float64 and (p[:3] < 1.0).all() and (p[3:] > 0.0).all()
    assert list(np.argsort(p)) == [4, 3, 0, 1, 2]
    soft = probabilities(torch.tensor([[0.0, 20.0, 0.0], [0.0, 25.0, 0.0]])).numpy()
    assert soft[0, 1] < soft[1, 1] < 1.0
