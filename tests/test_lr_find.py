"""lr_find: the range test against a NumPy oracle, its suggestion rules, its refusals."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import autolr_jax as al
from autolr_jax.auto._lr_find import (
    range_test_rates,
    smooth_losses,
    suggest_minimum,
    suggest_steepest,
    suggest_valley,
)

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 16, 3)).astype(np.float32)  # 40 batches of 16 examples
W_TRUE = np.array([1.0, -2.0, 0.5], np.float32)
Y = X @ W_TRUE + 0.1 * RNG.normal(size=(40, 16)).astype(np.float32)


def loss_fn(w, batch):
    x, y = batch
    return jnp.mean((x @ w - y) ** 2)


def batches():
    return ((X[i], Y[i]) for i in range(len(X)))


def numpy_range_test(min_lr, max_lr, num_steps, smoothing, stop_factor, momentum=0.0):
    """The range test written out in NumPy: heavy-ball SGD (optax's form), float64."""
    rates = min_lr * (max_lr / min_lr) ** (np.arange(num_steps) / (num_steps - 1))
    w, trace = np.zeros(3), np.zeros(3)
    losses, m, best = [], 0.0, np.inf
    for i in range(num_steps):
        x, y = X[i].astype(np.float64), Y[i].astype(np.float64)
        r = x @ w - y
        losses.append(np.mean(r**2))
        g = 2.0 * x.T @ r / len(y)
        trace = g + momentum * trace
        w = w - rates[i] * trace
        m = smoothing * m + (1 - smoothing) * losses[-1]
        s = m / (1 - smoothing ** (i + 1))
        if not np.isfinite(s) or (i > 0 and s > stop_factor * best):
            return rates[: i + 1], np.array(losses), True
        best = min(best, s)
    return rates, np.array(losses), False


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_trajectory_matches_numpy_oracle(momentum):
    # 40 updates from 1e-4 to 10: the loss falls, then blows up and the test stops early.
    kwargs = {"momentum": momentum} if momentum else {}
    res = al.lr_find(
        optax.sgd, jnp.zeros(3), loss_fn, batches(), min_lr=1e-4, max_lr=10.0, num_steps=40,
        smoothing=0.5, stop_factor=4.0, **kwargs,
    )  # fmt: skip
    rates, losses, stopped = numpy_range_test(1e-4, 10.0, 40, 0.5, 4.0, momentum)
    assert res.stopped_early and stopped
    assert len(res.lrs) == len(rates) > 20
    np.testing.assert_allclose(res.lrs, rates, rtol=1e-12)
    finite = np.isfinite(losses) & (losses < 1e6)
    np.testing.assert_allclose(res.losses[finite], losses[finite], rtol=2e-3, atol=1e-5)
    np.testing.assert_allclose(res.smoothed, smooth_losses(res.losses, 0.5), rtol=1e-12)


def test_runs_all_steps_without_a_blow_up_and_compiles_once():
    traces = []

    def counted(w, batch):
        traces.append(1)
        return loss_fn(w, batch)

    w0 = jnp.zeros(3)
    res = al.lr_find(optax.sgd, w0, counted, batches(), min_lr=1e-3, max_lr=1e-1, num_steps=30)
    assert not res.stopped_early and len(res.lrs) == 30
    assert len(traces) == 1  # one compilation for every rate
    assert float(jnp.sum(jnp.abs(w0))) == 0.0  # the parameters passed in are untouched
    assert res.losses[-5:].mean() < 0.5 * res.losses[:5].mean()  # it trained
    assert set(res.suggestions) == set(al.auto.SUGGESTIONS)


def test_smooth_losses_is_the_bias_corrected_average():
    x = RNG.normal(size=25)
    beta = 0.9
    want = [
        sum((1 - beta) * beta ** (i - j) * x[j] for j in range(i + 1)) / (1 - beta ** (i + 1))
        for i in range(25)
    ]
    np.testing.assert_allclose(smooth_losses(x, beta), want, rtol=1e-12)
    np.testing.assert_allclose(smooth_losses(x, 0.0), x)


def test_rates_are_log_spaced_end_to_end():
    r = range_test_rates(1e-6, 1.0, 7)
    np.testing.assert_allclose(r, 10.0 ** np.arange(-6, 1), rtol=1e-12)


# A curve: flat, a descent from index 3 to 12 (lowest at 12), then a rise and a blow-up.
LRS = np.geomspace(1e-6, 1.0, 20)
CURVE = np.array(
    [3.0, 3.0, 3.0, 2.9, 2.7, 2.4, 2.0, 1.6, 1.3, 1.1, 1.0, 0.95, 0.9, 1.2, 2.0, 5.0, 9.0,
     np.inf, np.nan, np.nan]
)  # fmt: skip


def test_suggest_minimum_is_a_decade_below_the_lowest_point():
    assert suggest_minimum(LRS, CURVE) == pytest.approx(LRS[12] / 10)
    assert suggest_minimum(LRS, CURVE, divisor=1.0) == pytest.approx(LRS[12])


def test_suggest_steepest_is_the_largest_drop_per_decade_before_the_minimum():
    slope = np.gradient(CURVE[:13], np.log(LRS[:13]))
    assert suggest_steepest(LRS, CURVE) == pytest.approx(LRS[int(np.argmin(slope))])
    assert suggest_steepest(LRS, CURVE) == pytest.approx(LRS[6])  # 2.4 -> 1.6 around it


def test_suggest_valley_is_two_thirds_along_the_longest_descent():
    # The descent runs over indices 2..12 (3.0 at 2 is the last flat point, 11 points).
    assert suggest_valley(LRS, CURVE) == pytest.approx(LRS[2 + int(2 / 3 * 10)])
    # A noisy bump splits the descent; the longer half wins.
    bumped = CURVE.copy()
    bumped[5] = 3.5
    assert suggest_valley(LRS, bumped) == pytest.approx(LRS[5 + int(2 / 3 * 7)])


def test_suggestions_read_nothing_after_a_blow_up():
    early_nan = np.array([2.0, np.nan, 0.1, 0.05])
    lrs = np.geomspace(1e-3, 1.0, 4)
    assert suggest_minimum(lrs, early_nan) == pytest.approx(lrs[0] / 10)
    assert np.isnan(suggest_valley(lrs, early_nan))
    assert np.isnan(suggest_steepest(lrs, early_nan))


def test_suggest_picks_the_rule():
    res = al.lr_find(optax.sgd, jnp.zeros(3), loss_fn, batches(), min_lr=1e-4, max_lr=10.0,
                     num_steps=40, suggest="minimum")  # fmt: skip
    assert res.suggestion == res.suggestions["minimum"]


def test_plot_draws_the_curve():
    import matplotlib

    matplotlib.use("Agg")
    res = al.lr_find(optax.sgd, jnp.zeros(3), loss_fn, batches(), min_lr=1e-4, max_lr=10.0,
                     num_steps=40)  # fmt: skip
    ax = al.plot_lr_find(res)
    assert ax.get_xscale() == "log"
    assert len(ax.lines) >= 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"min_lr": 0.0}, "min_lr"),
        ({"min_lr": -1.0}, "min_lr"),
        ({"max_lr": 1e-8}, "max_lr"),
        ({"max_lr": float("inf")}, "max_lr"),
        ({"num_steps": 1}, "num_steps"),
        ({"num_steps": 2.5}, "num_steps"),
        ({"smoothing": 1.0}, "smoothing"),
        ({"smoothing": float("nan")}, "smoothing"),
        ({"stop_factor": 1.0}, "stop_factor"),
        ({"suggest": "fastest"}, "suggest"),
        ({"nesterov_typo": True}, "does not accept"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        al.lr_find(optax.sgd, jnp.zeros(3), loss_fn, batches(), **kwargs)


def test_bad_optimizer_batches_and_loss():
    with pytest.raises(ValueError, match="optimizer"):
        al.lr_find(optax.sgd(0.1), jnp.zeros(3), loss_fn, batches())
    with pytest.raises(ValueError, match="batches must be an iterable"):
        al.lr_find(optax.sgd, jnp.zeros(3), loss_fn, 3)
    with pytest.raises(ValueError, match="at least 2 batches"):
        al.lr_find(optax.sgd, jnp.zeros(3), loss_fn, [(X[0], Y[0])])
    with pytest.raises(ValueError, match="loss_fn"):
        al.lr_find(optax.sgd, jnp.zeros(3), None, batches())
    with pytest.raises(ValueError, match="scalar"):
        al.lr_find(optax.sgd, jnp.zeros(3), lambda w, b: w, batches())


def test_one_repeated_batch():
    res = al.lr_find(optax.sgd, jnp.zeros(3), loss_fn, itertools.repeat((X[0], Y[0])),
                     min_lr=1e-4, max_lr=10.0, num_steps=50)  # fmt: skip
    assert res.stopped_early
    # On one batch the edge is 2 / (the largest eigenvalue of 2 X^T X / n): the suggestion
    # sits below it.
    lam = np.linalg.eigvalsh(2 * X[0].T.astype(np.float64) @ X[0] / 16).max()
    assert res.suggestion < 2 / lam
