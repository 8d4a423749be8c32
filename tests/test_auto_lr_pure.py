"""The pure parts of auto_lr, tested without building an optimizer, against NumPy oracles.

The combination formula (scores -> multiplier, with its fallbacks and its exact
power-of-two normalisation), the level floor and ceiling, the scalar-loss check
and the look-ahead loss; then the two failures they prevent, end to end: a rate
that reached exactly 0, and custom scores that underflowed or overflowed.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from autolr_jax import (
    auto_lr,
    current_lr,
    minmax_exp_score,
    rank_exp_score,
    softmax_score,
    zscore_exp_score,
)
from autolr_jax._validation import F32_MAX, F32_TINY
from autolr_jax.auto._combine import (
    clamp_level,
    level_bounds,
    next_learning_rate,
    pow2_normalise,
    score_candidates,
    weighted_geometric_mean,
)
from autolr_jax.auto._probe import apply_scaled, as_scalar_loss, lookahead_loss

FACTOR_SETS = [(2.0, 1.0, 0.5), (4.0, 2.0, 1.0, 0.5, 0.125), (1.5, 0.3), (8.0, 1.0, 1e-3)]


def np_geometric_mean(scores, factors):
    """The oracle: float64, scores divided by their maximum, the smallest factor if none > 0.

    Float32 subnormal scores count as 0, as XLA (CPU, GPU) flushes them.
    """
    s = np.asarray(scores, np.float64)
    s = np.where(s < F32_TINY, 0.0, s)
    if not np.any(s > 0):
        return min(factors)
    w = s / s.max()
    return math.exp(np.sum(w * np.log(factors)) / np.sum(w))


def _old_formula(scores, factors):
    """auto_lr's multiplier before the normalisation, as it was computed (float32)."""
    total = jnp.sum(scores)
    ok = total > 0
    log_f = jnp.asarray(tuple(math.log(f) for f in factors), scores.dtype)
    mean_log = jnp.sum(scores * log_f) / jnp.where(ok, total, 1.0)
    return jnp.where(ok, jnp.exp(mean_log), min(factors)).astype(jnp.float32)


@pytest.mark.parametrize("factors", FACTOR_SETS)
def test_weighted_geometric_mean_matches_numpy(factors):
    rng = np.random.default_rng(len(factors))
    n = len(factors)
    combine = jax.jit(lambda s: weighted_geometric_mean(s, factors))
    cases = [rng.uniform(0, 1, n) for _ in range(20)]
    cases += [rng.uniform(0, 1, n) * scale for scale in (3e38 / n, 1e-30, 2.0**-120)]
    cases += [np.zeros(n), np.eye(n)[0], np.full(n, 3e38)]
    for scores in cases:
        scores = np.asarray(scores, np.float32)
        m, ok = combine(jnp.asarray(scores))
        assert np.isfinite(float(m))
        assert bool(ok) == bool(np.any(scores > 0))
        np.testing.assert_allclose(float(m), np_geometric_mean(scores, factors), rtol=2e-6)


def test_normalisation_is_exact_for_the_builtin_scores():
    # Power-of-two scaling rounds nothing: the multiplier is bit-identical to the
    # unnormalised formula for every built-in score, and invariant to 2**k scaling.
    factors = (4.0, 2.0, 1.0, 0.5, 0.125)
    rng = np.random.default_rng(1)
    scores_of = [minmax_exp_score, rank_exp_score, softmax_score(1.0), softmax_score(0.3)]
    scores_of.append(zscore_exp_score)

    @jax.jit
    def both(losses):
        finite = jnp.isfinite(losses)
        out = []
        for score in scores_of:
            s = jnp.where(finite, score(losses, finite), 0.0)
            new, _ = weighted_geometric_mean(s, factors)
            out.append((new, _old_formula(s, factors)))
        return out

    for _ in range(25):
        losses = rng.lognormal(0, 2, len(factors)).astype(np.float32)
        losses[rng.uniform(size=len(factors)) < 0.2] = np.nan
        for new, old in both(jnp.asarray(losses)):
            assert np.asarray(new).tobytes() == np.asarray(old).tobytes()

    s = jnp.asarray(rng.uniform(0.01, 1, len(factors)), jnp.float32)
    ref = weighted_geometric_mean(s, factors)[0]
    for k in (-100, -7, 1, 60, 100):
        scaled = s * jnp.float32(2.0**k)
        assert np.asarray(weighted_geometric_mean(scaled, factors)[0]).tobytes() == (
            np.asarray(ref).tobytes()
        )


def test_pow2_normalise_brings_the_maximum_into_one_two():
    for peak in (3 * F32_TINY, 1e-30, 0.3, 1.0, 1.999, 2.0, 1e20, F32_MAX):
        s = jnp.asarray([peak, peak / 3, 0.0], jnp.float32)
        out = np.asarray(pow2_normalise(s))
        assert 1.0 <= out[0] < 2.0 and out[2] == 0.0
        assert out[0] / out[1] == pytest.approx(3.0, rel=1e-6)
    np.testing.assert_array_equal(pow2_normalise(jnp.zeros(3)), np.zeros(3))


def test_score_candidates_masks_and_retries_underflow():
    losses = jnp.asarray([1.0, jnp.nan, 2.0, jnp.inf], jnp.float32)
    # Scores of non-finite losses, and negative, NaN or infinite scores, are 0.
    bad = lambda x, ok: jnp.asarray([-1.0, 5.0, jnp.nan, 1.0])  # noqa: E731
    np.testing.assert_array_equal(score_candidates(bad, losses), [0.0, 0.0, 0.0, 0.0])
    # All non-finite: all 0 (no retry can help).
    nan = jnp.full(3, jnp.nan)
    np.testing.assert_array_equal(score_candidates(minmax_exp_score, nan), np.zeros(3))

    # exp(-L) underflows to 0 in float32 for L near 150; the retry on L - min L gives
    # the weights exp(-(L - min L)) it meant.
    exp_score = lambda x, ok: jnp.where(ok, jnp.exp(-x), 0.0)  # noqa: E731
    high = np.asarray([151.0, 150.0, 150.5, np.nan], np.float32)
    assert not np.any(np.asarray(exp_score(jnp.asarray(high), jnp.isfinite(high))) > 0)
    got = np.asarray(score_candidates(exp_score, jnp.asarray(high)))
    np.testing.assert_allclose(got, [math.exp(-1), 1.0, math.exp(-0.5), 0.0], rtol=1e-6)
    # Where the first evaluation gives a positive score, it is kept as it is.
    low = jnp.asarray([1.0, 0.0, 0.5], jnp.float32)
    np.testing.assert_array_equal(score_candidates(exp_score, low), jnp.exp(-low))


def test_score_candidates_reports_bad_score_functions():
    losses = jnp.ones(3)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        score_candidates(lambda x, ok: jnp.ones(2), losses, "mine")
    with pytest.raises(TypeError, match="score"):
        score_candidates(lambda x: x, losses, "mine")


@pytest.mark.parametrize("factors", FACTOR_SETS)
def test_level_bounds_are_tight(factors):
    floor, ceiling = level_bounds(factors)
    lo, hi = np.float32(min(factors)), np.float32(max(factors))
    f, c = np.float32(floor), np.float32(ceiling)
    assert float(f) == floor and float(c) == ceiling
    with np.errstate(over="ignore", under="ignore"):
        # Every candidate's learning rate is normal at the floor and finite at the ceiling ...
        assert f * lo >= np.float32(F32_TINY) and f * hi >= np.float32(F32_TINY)
        assert np.isfinite(c * hi) and np.isfinite(c * lo)
    # ... and the range is no narrower than that needs (to float32 rounding).
    assert floor <= F32_TINY / min(1.0, float(lo)) * (1 + 2**-22)
    assert ceiling >= F32_MAX / max(1.0, float(hi)) * (1 - 2**-22)


def test_clamp_level_and_next_learning_rate():
    floor, ceiling = level_bounds((2.0, 1.0, 0.5))
    for lr in (0.0, -1.0, np.nan, floor / 4):
        assert float(clamp_level(jnp.float32(lr), floor, ceiling)) == floor
    assert float(clamp_level(jnp.float32(np.inf), floor, ceiling)) == ceiling
    assert float(clamp_level(jnp.float32(0.1), floor, ceiling)) == float(np.float32(0.1))

    def step(level, m, min_lr=0.0, max_lr=np.inf):
        lr, clamped = next_learning_rate(
            jnp.float32(level), jnp.float32(m), min_lr, max_lr, floor, ceiling
        )
        return float(lr), bool(clamped)

    assert step(0.1, 0.5) == (float(np.float32(0.1) * np.float32(0.5)), False)
    assert step(0.1, 4.0, max_lr=0.3) == (float(np.float32(0.3)), False)  # the user's bound
    assert step(floor, 0.5) == (floor, True)
    assert step(ceiling, 2.0) == (ceiling, True)


# ------------------------------------------------------------------ scalar loss, look-ahead


def test_as_scalar_loss():
    assert as_scalar_loss(jnp.bfloat16(1.5), False).dtype == jnp.float32
    assert float(as_scalar_loss((2.0, {"aux": 1}), True)) == 2.0
    with pytest.raises(ValueError, match=r"scalar floating-point loss \(if it returns"):
        as_scalar_loss(jnp.ones(3), False)
    with pytest.raises(ValueError, match="scalar"):
        as_scalar_loss(jnp.int32(1), False)
    with pytest.raises(ValueError, match="has_aux=True"):
        as_scalar_loss(1.0, True)
    with pytest.raises(ValueError, match="scalar"):
        as_scalar_loss("loss", False)


def test_apply_scaled_keeps_dtypes_and_none():
    params = {"a": jnp.ones(2, jnp.bfloat16), "b": None}
    out = apply_scaled(params, {"a": jnp.ones(2), "b": None}, jnp.float32(-0.5))
    assert out["a"].dtype == jnp.bfloat16 and out["b"] is None
    np.testing.assert_array_equal(np.asarray(out["a"], np.float32), [0.5, 0.5])


def test_lookahead_loss_matches_numpy_momentum_sgd():
    # Linear least squares, SGD with momentum 0.9 (optax.trace), 4 updates in all.
    rng = np.random.default_rng(3)
    k, lr, mu = 4, 0.05, 0.9
    x = rng.normal(size=(k, 6, 3))
    y = rng.normal(size=(k, 6))

    def np_loss(w, j):
        return np.mean((x[j] @ w - y[j]) ** 2)

    def np_grad(w, j):
        return 2 * x[j].T @ (x[j] @ w - y[j]) / len(y[j])

    w0 = rng.normal(size=3)
    g0 = rng.normal(size=3)
    m = g0.copy()  # the first update's trace, m = g0 + mu * 0
    w = w0 - lr * m
    for j in range(k - 1):
        m = np_grad(w, j) + mu * m
        w = w - lr * m
    expected = np_loss(w, k - 1)

    sgd = optax.sgd(lr, momentum=mu)
    p0 = jnp.asarray(w0, jnp.float32)
    u, s = sgd.update(jnp.asarray(g0, jnp.float32), sgd.init(p0), p0)

    def loss(p, batch):
        bx, by = batch
        return jnp.mean((bx @ p - by) ** 2)

    batch = (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    got = jax.jit(lambda p, u, s: lookahead_loss(loss, sgd.update, p, u, s, batch, k))(p0, u, s)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    # steps=1: the loss at params + updates on batch[0].
    one = lookahead_loss(loss, sgd.update, p0, u, s, batch, 1)
    np.testing.assert_allclose(float(one), np_loss(w0 - lr * g0, 0), rtol=1e-5)


# --------------------------------------------------------------------- end to end: the floor


def _loss(params, batch):
    x, y, poisoned = batch
    loss = jnp.mean((x @ params - y) ** 2)
    return jnp.where(poisoned, jnp.nan, loss)


_X = jnp.asarray(np.random.default_rng(0).normal(size=(8, 2)), jnp.float32)
_Y = _X @ jnp.asarray([1.0, -1.0])


_STEPS = {}


def _run(tx, params, state, steps, poisoned):
    """``steps`` jitted SGD updates through ``tx`` (compiled once per ``tx``)."""
    if tx not in _STEPS:

        @jax.jit
        def step(params, state, poisoned):
            grads = jax.grad(lambda p: jnp.mean((_X @ p - _Y) ** 2))(params)
            updates, state = tx.update(grads, state, params, batch=(_X, _Y, poisoned))
            return optax.apply_updates(params, updates), state

        _STEPS[tx] = step
    lrs = []
    for _ in range(steps):
        params, state = _STEPS[tx](params, state, jnp.asarray(poisoned))
        lrs.append(current_lr(state))
    return params, state, np.asarray(lrs)


def test_nan_losses_stop_at_the_floor_and_the_run_can_restart():
    tx = auto_lr(optax.sgd, 0.1, loss_fn=_loss, every=1, rule="seed", initial_search=False)
    params = jnp.zeros(2)
    state = tx.init(params)
    floor, _ = level_bounds((2.0, 1.0, 0.5))
    # Every candidate loss is NaN: the rate halves at each probe. Without the floor it
    # reaches exactly 0.0 after ~122 probes (float32 underflow) and stays there.
    params, state, lrs = _run(tx, params, state, 140, True)
    assert np.all(lrs > 0), lrs[-5:]
    assert lrs[-1] == np.float32(floor) and lrs.min() == np.float32(floor)
    np.testing.assert_allclose(lrs[:20], 0.1 * 0.5 ** np.arange(1, 21), rtol=1e-6)
    assert bool(state.telemetry.clamped)
    # Not clamped on the way down: only the probes that hit the floor say so.
    _, early, _ = _run(tx, jnp.zeros(2), tx.init(jnp.zeros(2)), 3, True)
    assert not bool(early.telemetry.clamped)

    # The telemetry tells; setting the learning rate restarts the run.
    state.hyperparams["learning_rate"] = jnp.float32(0.1)
    params, state, lrs = _run(tx, params, state, 5, False)
    assert not bool(state.telemetry.clamped) and lrs[-1] > 1e-3
    # A learning rate set to 0 is multiplied from the floor (and reported clamped).
    state.hyperparams["learning_rate"] = jnp.float32(0.0)
    _, state, lrs = _run(tx, params, state, 1, False)
    assert lrs[0] >= np.float32(floor) and bool(state.telemetry.clamped)


# --------------------------------------------------------- end to end: scale-free custom scores


def test_custom_score_that_underflows_keeps_its_ratios():
    exp_score = lambda x, ok: jnp.where(ok, jnp.exp(-x), 0.0)  # noqa: E731
    offset = lambda p, b: 150.0 + _loss(p, b)  # noqa: E731
    tx = auto_lr(
        optax.sgd, 0.02, loss_fn=offset, every=1, score=exp_score, rule="seed", initial_search=False
    )
    _, state, lrs = _run(tx, jnp.zeros(2), tx.init(jnp.zeros(2)), 6, False)
    # Before: every score was 0, so every probe halved the rate.
    assert not np.allclose(lrs, 0.02 * 0.5 ** np.arange(1, 7))
    losses = np.asarray(state.telemetry.losses, np.float64)
    expected = np_geometric_mean(np.exp(-(losses - losses.min())), (2.0, 1.0, 0.5))
    np.testing.assert_allclose(float(state.telemetry.multiplier), expected, rtol=1e-5)


def test_huge_constant_score_does_not_overflow():
    huge = lambda x, ok: jnp.where(ok, 3e38, 0.0)  # noqa: E731
    tx = auto_lr(
        optax.sgd,
        0.02,
        loss_fn=_loss,
        every=1,
        factors=(4.0, 1.0, 0.25),
        score=huge,
        rule="seed",
        initial_search=False,
    )
    _, state, lrs = _run(tx, jnp.zeros(2), tx.init(jnp.zeros(2)), 3, False)
    # Before: 3 * 3e38 overflowed to inf and the rate became NaN. Equal weights give
    # the geometric mean of the factors, 1.
    assert np.all(np.isfinite(lrs))
    np.testing.assert_allclose(lrs, 0.02, rtol=1e-6)
    assert float(state.telemetry.multiplier) == pytest.approx(1.0, rel=1e-6)
