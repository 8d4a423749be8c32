"""auto_lr(lookahead=k) and the rank score, against independent float64 NumPy oracles."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_auto_lr import np_grad, np_loss, np_minmax_exp

from autolr_jax import current_lr, rank_exp_score, zscore_exp_score
from autolr_jax.auto import auto_lr

STEPS, DIM, K = 12, 3, 3
_rng = np.random.default_rng(7)
_W = np.array([1.0, -1.5, 0.5])
TRAIN_X = _rng.normal(size=(STEPS, 8, DIM))
TRAIN_Y = TRAIN_X @ _W + 0.2 + 0.3 * _rng.normal(size=(STEPS, 8))
# K probe batches per step: K - 1 for the look-ahead updates, the last one scores.
LOOK_X = _rng.normal(size=(STEPS, K, 4, DIM))
LOOK_Y = LOOK_X @ _W + 0.2 + 0.3 * _rng.normal(size=(STEPS, K, 4))


def loss_fn(params, batch):
    x, y = batch
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def np_rank_exp(losses):
    finite = np.isfinite(losses)
    s = np.zeros(len(losses))
    for i in np.flatnonzero(finite):
        s[i] = 2.0 ** -np.sum(losses[finite] < losses[i])
    return s


def np_zscore_exp(losses):
    """The published code's score (torch.std: ddof=1), finite losses only; equal: 1."""
    finite = np.isfinite(losses)
    s = np.zeros(len(losses))
    x = losses[finite]
    std = x.std(ddof=1) if len(x) > 1 else 0.0
    s[finite] = np.exp(-(x - x.mean()) / std) if std > 0 else 1.0
    return s


def np_momentum(lr, g, m, mu):
    """optax.sgd(lr, momentum=mu): m <- g + mu * m; update -lr * m (mu None: plain SGD)."""
    if mu is None:
        return -lr * g, m
    m = g + mu * m
    return -lr * m, m


def np_run(lr, factors, every, k, momentum, score=np_minmax_exp, steps=STEPS):
    """auto_lr(optax.sgd, lookahead=k) written out in float64."""
    w, b = np.zeros(DIM), 0.0
    mw, mb = np.zeros(DIM), 0.0
    lrs, all_losses = [], []
    for t in range(steps):
        gw, gb = np_grad(w, b, TRAIN_X[t], TRAIN_Y[t])
        if t % every == 0:
            losses = []
            for f in factors:
                uw, cmw = np_momentum(lr * f, gw, mw, momentum)
                ub, cmb = np_momentum(lr * f, gb, mb, momentum)
                cw, cb = w + uw, b + ub
                for j in range(k - 1):
                    hw, hb = np_grad(cw, cb, LOOK_X[t, j], LOOK_Y[t, j])
                    uw, cmw = np_momentum(lr * f, hw, cmw, momentum)
                    ub, cmb = np_momentum(lr * f, hb, cmb, momentum)
                    cw, cb = cw + uw, cb + ub
                losses.append(np_loss(cw, cb, LOOK_X[t, k - 1], LOOK_Y[t, k - 1]))
            losses = np.array(losses)
            s = score(losses)
            lr = lr * math.exp(np.sum(s * np.log(factors)) / s.sum())
            all_losses.append(losses)
        uw, mw = np_momentum(lr, gw, mw, momentum)
        ub, mb = np_momentum(lr, gb, mb, momentum)
        w, b = w + uw, b + ub
        lrs.append(lr)
    return np.array(lrs), (w, b), all_losses


def jax_run(tx, k, steps=STEPS):
    @jax.jit
    def step(params, state, t):
        train = (jnp.asarray(TRAIN_X, jnp.float32)[t], jnp.asarray(TRAIN_Y, jnp.float32)[t])
        look = (jnp.asarray(LOOK_X, jnp.float32)[t, :k], jnp.asarray(LOOK_Y, jnp.float32)[t, :k])
        if k == 1:
            look = jax.tree.map(lambda x: x[0], look)
        grads = jax.grad(loss_fn)(params, train)
        updates, state = tx.update(grads, state, params, batch=look)
        return optax.apply_updates(params, updates), state

    params = {"w": jnp.zeros((DIM,)), "b": jnp.zeros(())}
    state = tx.init(params)
    lrs = []
    for t in range(steps):
        params, state = step(params, state, t)
        lrs.append(float(current_lr(state)))
    return np.array(lrs), params, state, step


@pytest.mark.parametrize("momentum", [None, 0.9])
@pytest.mark.parametrize("strategy", ["map", "vmap"])
def test_lookahead_matches_numpy(momentum, strategy):
    factors = (2.0, 1.0, 0.5)
    kw = {} if momentum is None else {"momentum": momentum}
    tx = auto_lr(
        optax.sgd, 0.05, loss_fn=loss_fn, factors=factors, every=4, lookahead=K,
        strategy=strategy, rule="seed", initial_search=False, **kw,
    )  # fmt: skip
    lrs, params, state, _ = jax_run(tx, K)
    want, (w, b), losses = np_run(0.05, factors, 4, K, momentum)
    np.testing.assert_allclose(lrs, want, rtol=2e-4)
    np.testing.assert_allclose(state.telemetry.losses, losses[-1], rtol=2e-4)
    np.testing.assert_allclose(params["w"], w, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(params["b"], b, rtol=1e-3, atol=1e-5)
    # The look-ahead changes what is measured: the one-step probe on the scoring batch
    # alone picks other learning rates on this problem.
    one_step, _, _ = np_run(0.05, factors, 4, 1, momentum)
    assert np.max(np.abs(one_step / want - 1)) > 1e-3


def test_lookahead_one_is_the_one_step_probe():
    factors = (4.0, 1.0, 0.25)
    tx = auto_lr(
        optax.sgd,
        0.05,
        loss_fn=loss_fn,
        factors=factors,
        every=3,
        lookahead=1,
        rule="seed",
        initial_search=False,
    )
    lrs, _, _, _ = jax_run(tx, 1)
    # With k = 1 the scoring batch is LOOK[t, 0].
    want, _, _ = np_run(0.05, factors, 3, 1, None)
    np.testing.assert_allclose(lrs, want, rtol=2e-4)


def test_lookahead_compiles_once():
    tx = auto_lr(
        optax.sgd,
        0.05,
        loss_fn=loss_fn,
        every=2,
        lookahead=K,
        momentum=0.9,
        rule="seed",
        initial_search=False,
    )
    _, _, _, step = jax_run(tx, K, steps=6)
    assert step._cache_size() == 1


def test_lookahead_divergent_candidates_score_zero():
    # Factor 1e6 overflows to inf within the look-ahead: that candidate must score 0.
    tx = auto_lr(
        optax.sgd,
        0.4,
        loss_fn=loss_fn,
        factors=(1e6, 1.0, 0.5),
        every=1,
        lookahead=K,
        rule="seed",
        initial_search=False,
    )
    lrs, params, state, _ = jax_run(tx, K, steps=3)
    assert np.all(np.isfinite(lrs)) and np.all(np.isfinite(params["w"]))
    assert float(state.telemetry.scores[0]) == 0.0


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", True])
def test_lookahead_validated(bad):
    with pytest.raises(ValueError, match="lookahead"):
        auto_lr(
            optax.sgd,
            0.1,
            loss_fn=loss_fn,
            every=1,
            lookahead=bad,
            rule="seed",
            initial_search=False,
        )


def test_lookahead_needs_stacked_batches():
    tx = auto_lr(
        optax.sgd, 0.1, loss_fn=loss_fn, every=1, lookahead=K, rule="seed", initial_search=False
    )
    params = {"w": jnp.zeros((DIM,)), "b": jnp.zeros(())}
    one_batch = (jnp.ones((4, DIM)), jnp.ones((4,)))
    with pytest.raises(ValueError, match=r"lookahead=3.*leading"):
        tx.update(params, tx.init(params), params, batch=one_batch)


def test_rank_exp_score_matches_numpy():
    for losses in ([3.0, 1.0, 2.0], [1.0, 1.0, np.nan, 0.5, np.inf], [5.0]):
        x = np.array(losses)
        got = rank_exp_score(jnp.asarray(x, jnp.float32), jnp.isfinite(jnp.asarray(x)))
        np.testing.assert_allclose(got, np_rank_exp(x))


def test_zscore_exp_score_matches_numpy():
    cases = ([3.0, 1.0, 2.0], [1.0, 1.0, np.nan, 0.5, np.inf], [5.0], [2.0, 2.0], [1e30, 1.0, 2.0])
    for losses in cases:
        x = np.array(losses)
        got = zscore_exp_score(jnp.asarray(x, jnp.float32), jnp.isfinite(jnp.asarray(x)))
        np.testing.assert_allclose(got, np_zscore_exp(x), rtol=1e-5)


@pytest.mark.parametrize(
    "score, np_score", [("rank_exp", np_rank_exp), ("zscore_exp", np_zscore_exp)]
)
def test_score_in_auto_lr_matches_numpy(score, np_score):
    factors = (2.0, 1.0, 0.5)
    tx = auto_lr(
        optax.sgd,
        0.05,
        loss_fn=loss_fn,
        factors=factors,
        every=2,
        score=score,
        rule="seed",
        initial_search=False,
    )
    lrs, _, _, _ = jax_run(tx, 1)
    want, _, _ = np_run(0.05, factors, 2, 1, None, score=np_score)
    np.testing.assert_allclose(lrs, want, rtol=2e-4)
    other, _, _ = np_run(0.05, factors, 2, 1, None)  # the default score: another trajectory
    assert np.max(np.abs(other / want - 1)) > 1e-3
