"""Tests of autolr_jax.auto_lr against an independent float64 NumPy implementation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from autolr_jax._state_utils import current_lr
from autolr_jax.auto import (
    AutoLRState,
    AutoLRTelemetry,
    auto_lr,
    default_probe_strategy,
    minmax_exp_score,
    resolve_probe_strategy,
    softmax_score,
)

# --------------------------------------------------------------------------------------------
# A small linear-regression problem: params {"w": (3,), "b": ()}, mean squared error.
# Training batches of 8 and (different) probe batches of 4, one of each per step.

STEPS = 36
DIM = 3
_rng = np.random.default_rng(0)
_W_TRUE = np.array([1.5, -2.0, 0.7])
TRAIN_X = _rng.normal(size=(STEPS, 8, DIM))
TRAIN_Y = TRAIN_X @ _W_TRUE + 0.5 + 0.3 * _rng.normal(size=(STEPS, 8))
PROBE_X = _rng.normal(size=(STEPS, 4, DIM))
PROBE_Y = PROBE_X @ _W_TRUE + 0.5 + 0.3 * _rng.normal(size=(STEPS, 4))


def loss_fn(params, batch):
    x, y = batch
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def init_params(dtype=jnp.float32):
    return {"w": jnp.zeros((DIM,), dtype), "b": jnp.zeros((), dtype)}


def batches(t):
    train = (jnp.asarray(TRAIN_X[t], jnp.float32), jnp.asarray(TRAIN_Y[t], jnp.float32))
    probe = (jnp.asarray(PROBE_X[t], jnp.float32), jnp.asarray(PROBE_Y[t], jnp.float32))
    return train, probe


def make_step(tx, loss=loss_fn):
    @jax.jit
    def step(params, state, train, probe):
        grads = jax.grad(loss)(params, train)
        updates, state = tx.update(grads, state, params, batch=probe)
        return optax.apply_updates(params, updates), state, updates

    return step


def run(tx, steps=STEPS, params=None, loss=loss_fn):
    """Runs ``steps`` jitted updates; returns lr per update, final params and the states."""
    step = make_step(tx, loss)
    params = init_params() if params is None else params
    state = tx.init(params)
    lrs, states = [], []
    for t in range(steps):
        params, state, _ = step(params, state, *batches(t))
        lrs.append(float(current_lr(state)))
        states.append(state)
    return np.array(lrs), params, states


# --------------------------------------------------------------------------------------------
# The NumPy oracle: steps 1-5 written out by hand, float64, SGD (optionally with momentum
# as optax.trace: m <- g + mu * m, u = -lr * m; nesterov: u = -lr * (g + mu * m)).


def np_loss(w, b, x, y):
    return float(np.mean((x @ w + b - y) ** 2))


def np_grad(w, b, x, y):
    r = x @ w + b - y
    return 2.0 * x.T @ r / len(r), 2.0 * np.sum(r) / len(r)


def np_minmax_exp(losses):
    finite = np.isfinite(losses)
    s = np.zeros(len(losses))
    if not finite.any():
        return s
    lo, hi = losses[finite].min(), losses[finite].max()
    x = (losses[finite] - lo) / (hi - lo) if hi > lo else np.zeros(finite.sum())
    s[finite] = np.exp(-x)
    return s


def np_softmax(temperature):
    def score(losses):
        finite = np.isfinite(losses)
        s = np.zeros(len(losses))
        v = losses[finite]
        std = v.std()
        z = (v - v.mean()) / std if std > 0 else np.zeros(len(v))
        e = np.exp(-z / temperature - np.max(-z / temperature))
        s[finite] = e / e.sum()
        return s

    return score


def np_multiplier(losses, factors, score=np_minmax_exp):
    s = score(np.asarray(losses, np.float64))
    if s.sum() <= 0:
        return min(factors), s
    return math.exp(np.sum(s * np.log(factors)) / s.sum()), s


def np_sgd(lr, gw, gb, mw, mb, momentum, nesterov):
    """One SGD step: (update_w, update_b, new trace_w, new trace_b)."""
    if momentum is None:
        return -lr * gw, -lr * gb, mw, mb
    nmw, nmb = gw + momentum * mw, gb + momentum * mb
    dw, db = (gw + momentum * nmw, gb + momentum * nmb) if nesterov else (nmw, nmb)
    return -lr * dw, -lr * db, nmw, nmb


def np_auto_lr_sgd(
    lr,
    factors,
    every,
    steps=STEPS,
    momentum=None,
    nesterov=False,
    min_lr=0.0,
    max_lr=np.inf,
    score=np_minmax_exp,
    clip_norm=None,
):
    w, b = np.zeros(DIM), 0.0
    mw, mb = np.zeros(DIM), 0.0
    lrs, probes = [], []
    for t in range(steps):
        gw, gb = np_grad(w, b, TRAIN_X[t], TRAIN_Y[t])
        if clip_norm is not None:
            norm = math.sqrt(np.sum(gw**2) + gb**2)
            if norm > clip_norm:
                gw, gb = gw * clip_norm / norm, gb * clip_norm / norm

        def sgd(lr_value, gw=gw, gb=gb, mw=mw, mb=mb):
            return np_sgd(lr_value, gw, gb, mw, mb, momentum, nesterov)

        if t % every == 0:
            uw, ub, _, _ = sgd(lr)
            losses = [np_loss(w + f * uw, b + f * ub, PROBE_X[t], PROBE_Y[t]) for f in factors]
            m, s = np_multiplier(losses, factors, score)
            lr = min(max(lr * m, min_lr), max_lr)
            probes.append((np.array(losses), s, m))
        uw, ub, mw, mb = sgd(lr)
        w, b = w + uw, b + ub
        lrs.append(lr)
    return np.array(lrs), (w, b), probes


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inner_kwargs, every",
    [
        ({}, 1),
        ({}, 4),
        ({"momentum": 0.9}, 1),
        ({"momentum": 0.9}, 3),
        ({"momentum": 0.8, "nesterov": True}, 2),
    ],
)
def test_lr_trajectory_matches_numpy_oracle(inner_kwargs, every):
    factors = (2.0, 1.0, 0.5)
    tx = auto_lr(
        optax.sgd, 0.02, loss_fn=loss_fn, factors=factors, every=every, rule="seed",
        initial_search=False, **inner_kwargs,
    )  # fmt: skip
    lrs, params, states = run(tx)
    want_lrs, (w, b), probes = np_auto_lr_sgd(
        0.02,
        factors,
        every,
        momentum=inner_kwargs.get("momentum"),
        nesterov=inner_kwargs.get("nesterov", False),
    )
    # The test must be able to fail: the learning rate really moves, up and down.
    assert len(set(np.round(want_lrs, 8))) > 3
    assert want_lrs.max() > 0.02 * 1.5
    np.testing.assert_allclose(lrs, want_lrs, rtol=1e-4)
    np.testing.assert_allclose(params["w"], w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(params["b"], b, rtol=1e-4, atol=1e-5)
    # Telemetry of the last probe.
    last = states[-1].telemetry
    want_losses, want_scores, want_m = probes[-1]
    np.testing.assert_allclose(last.losses, want_losses, rtol=1e-4)
    np.testing.assert_allclose(last.scores, want_scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(last.multiplier, want_m, rtol=1e-5)
    assert int(last.num_probes) == len(probes) == math.ceil(STEPS / every)


def test_every_probes_only_at_multiples():
    tx = auto_lr(optax.sgd, 0.02, loss_fn=loss_fn, every=5, rule="seed", initial_search=False)
    lrs, _, states = run(tx, steps=12)
    num_probes = [int(s.telemetry.num_probes) for s in states]
    assert num_probes == [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3]
    # The learning rate changes only at probes (the oracle confirms the values above).
    for t in range(1, 12):
        if t % 5:
            assert lrs[t] == lrs[t - 1]


def test_update_uses_new_lr_and_state_agrees():
    tx = auto_lr(optax.sgd, 0.02, loss_fn=loss_fn, every=3, rule="seed", initial_search=False)
    step = make_step(tx)
    params = init_params()
    state = tx.init(params)
    assert float(current_lr(state)) == np.float32(0.02)
    for t in range(7):
        grads = jax.grad(loss_fn)(params, batches(t)[0])
        params, state, updates = step(params, state, *batches(t))
        lr = current_lr(state)
        assert lr.dtype == jnp.float32
        assert float(state.hyperparams["learning_rate"]) == float(lr)
        # Plain SGD: the returned update is -lr * g with the lr now in the state,
        # also at a probe (step 5 of the algorithm).
        np.testing.assert_allclose(updates["w"], -float(lr) * grads["w"], rtol=1e-6)
    assert isinstance(state, AutoLRState)
    assert isinstance(state.telemetry, AutoLRTelemetry)
    assert list(state.hyperparams) == ["learning_rate"]


def test_strategies_give_identical_lrs():
    results = {}
    for strategy, chunk in [("vmap", None), ("map", None), ("map", 2), ("auto", None)]:
        tx = auto_lr(
            optax.sgd,
            0.02,
            loss_fn=loss_fn,
            factors=(4.0, 2.0, 1.0, 0.5, 0.125),
            every=2,
            strategy=strategy,
            chunk_size=chunk,
            momentum=0.9,
            rule="seed",
            initial_search=False,
        )
        results[(strategy, chunk)], _, _ = run(tx, steps=16)
    ref = results[("map", None)]
    assert len(set(ref)) > 2
    for key, lrs in results.items():
        np.testing.assert_allclose(lrs, ref, rtol=1e-6, err_msg=str(key))


def test_strategy_choice():
    assert default_probe_strategy("cpu") == "map"
    assert default_probe_strategy("gpu") == "vmap"
    assert default_probe_strategy("tpu") == "vmap"
    assert default_probe_strategy("something-new") == "map"
    assert default_probe_strategy() == default_probe_strategy(jax.default_backend())
    assert resolve_probe_strategy("auto", None, "gpu") == "vmap"
    assert resolve_probe_strategy("auto", 2, "gpu") == "map"
    assert resolve_probe_strategy("vmap", None, "cpu") == "vmap"


# --------------------------------------------------------------------------------------------
# One probe on a scalar problem: params p = 0, gradient -1, lr = 1, so the candidate for factor f
# is p = f and loss(f) is whatever the loss function says.


def one_probe(loss, factors, lr=1.0, **kwargs):
    tx = auto_lr(
        optax.sgd, lr, loss_fn=loss, factors=factors, every=1,
        **{"rule": "seed", "initial_search": False, **kwargs},
    )  # fmt: skip
    params = jnp.zeros(())
    state = tx.init(params)
    updates, state = jax.jit(lambda g, s, p: tx.update(g, s, p, batch=None))(
        -jnp.ones(()), state, params
    )
    return updates, state


def test_nan_candidates_score_zero():
    # Steps larger than 1.5 blow up to NaN (and inf): those candidates must score 0.
    def loss(p, batch):
        return jnp.where(p > 3.0, jnp.inf, jnp.where(p > 1.5, jnp.nan, (p - 0.8) ** 2))

    factors = (4.0, 2.0, 1.0, 0.5)
    _, state = one_probe(loss, factors)
    tel = state.telemetry
    assert np.isinf(tel.losses[0]) and np.isnan(tel.losses[1])
    np.testing.assert_array_equal(tel.scores[:2], [0.0, 0.0])
    want_losses = [np.inf, np.nan, 0.2**2, 0.3**2]
    want_m, want_s = np_multiplier(want_losses, factors)
    np.testing.assert_allclose(tel.scores, want_s, rtol=1e-6)
    np.testing.assert_allclose(tel.multiplier, want_m, rtol=1e-6)
    assert want_m < 1.0  # only the finite candidates (1 and 0.5) count
    np.testing.assert_allclose(current_lr(state), want_m, rtol=1e-6)


def test_all_non_finite_backs_off_to_smallest_factor():
    def loss(p, batch):
        return jnp.nan * p

    updates, state = one_probe(loss, (2.0, 1.0, 0.25), lr=0.1)
    assert float(state.telemetry.multiplier) == 0.25
    np.testing.assert_allclose(current_lr(state), 0.025, rtol=1e-7)
    np.testing.assert_allclose(updates, 0.025, rtol=1e-7)  # -lr_new * g
    np.testing.assert_array_equal(state.telemetry.scores, [0.0, 0.0, 0.0])


def test_all_equal_losses_give_geometric_mean():
    def loss(p, batch):
        return jnp.ones(()) + 0.0 * p

    _, state = one_probe(loss, (4.0, 1.0, 0.5))
    np.testing.assert_allclose(state.telemetry.multiplier, 2.0 ** (1.0 / 3.0), rtol=1e-6)
    np.testing.assert_array_equal(state.telemetry.scores, [1.0, 1.0, 1.0])


@pytest.mark.parametrize("best, kwargs", [(4.0, {"max_lr": 1.1}), (0.1, {"min_lr": 0.9})])
def test_bounds_clip(best, kwargs):
    def loss(p, batch):
        return (p - best) ** 2

    factors = (2.0, 1.0, 0.5)
    unclipped, _ = np_multiplier([(f - best) ** 2 for f in factors], factors)
    want = min(max(unclipped, kwargs.get("min_lr", 0.0)), kwargs.get("max_lr", np.inf))
    assert abs(want - unclipped) > 0.05  # the bound is active
    _, state = one_probe(loss, factors, **kwargs)
    np.testing.assert_allclose(current_lr(state), want, rtol=1e-7)
    # The telemetry keeps the unclipped multiplier.
    np.testing.assert_allclose(state.telemetry.multiplier, unclipped, rtol=1e-6)


def test_has_aux():
    def loss_aux(params, batch):
        value = loss_fn(params, batch)
        return value, {"residual": value * 2.0}

    tx_aux = auto_lr(
        optax.sgd, 0.02, loss_fn=loss_aux, has_aux=True, every=2, rule="seed", initial_search=False
    )
    tx = auto_lr(optax.sgd, 0.02, loss_fn=loss_fn, every=2, rule="seed", initial_search=False)
    lrs_aux, _, _ = run(tx_aux, steps=8, loss=lambda p, b: loss_aux(p, b)[0])
    lrs, _, _ = run(tx, steps=8)
    np.testing.assert_array_equal(lrs_aux, lrs)


def test_softmax_score_matches_oracle():
    tx = auto_lr(
        optax.sgd,
        0.02,
        loss_fn=loss_fn,
        every=2,
        score=softmax_score(0.5),
        rule="seed",
        initial_search=False,
    )
    lrs, _, states = run(tx)
    want, _, probes = np_auto_lr_sgd(0.02, (2.0, 1.0, 0.5), 2, score=np_softmax(0.5))
    np.testing.assert_allclose(lrs, want, rtol=1e-4)
    np.testing.assert_allclose(states[-1].telemetry.scores, probes[-1][1], rtol=1e-4)
    # score="softmax" is temperature 1, different from 0.5 on this problem.
    lrs_t1, _, _ = run(
        auto_lr(
            optax.sgd,
            0.02,
            loss_fn=loss_fn,
            every=2,
            score="softmax",
            rule="seed",
            initial_search=False,
        )
    )
    want_t1, _, _ = np_auto_lr_sgd(0.02, (2.0, 1.0, 0.5), 2, score=np_softmax(1.0))
    np.testing.assert_allclose(lrs_t1, want_t1, rtol=1e-4)
    assert np.max(np.abs(want_t1 / want - 1)) > 1e-3


def test_user_score_callable():
    # "Pick the best": all weight on the lowest finite loss.
    def best_only(losses, finite):
        best = jnp.min(jnp.where(finite, losses, jnp.inf))
        return (finite & (losses == best)).astype(losses.dtype)

    def np_best_only(losses):
        return (losses == np.nanmin(losses)).astype(float)

    tx = auto_lr(
        optax.sgd,
        0.02,
        loss_fn=loss_fn,
        every=3,
        score=best_only,
        rule="seed",
        initial_search=False,
    )
    lrs, _, _ = run(tx)
    want, _, _ = np_auto_lr_sgd(0.02, (2.0, 1.0, 0.5), 3, score=np_best_only)
    np.testing.assert_allclose(lrs, want, rtol=1e-4)
    # Every lr is the initial one times a power of two.
    np.testing.assert_allclose(np.log2(want / 0.02), np.round(np.log2(want / 0.02)), atol=1e-9)


def test_score_functions_directly():
    losses = jnp.array([3.0, 1.0, jnp.nan, 2.0])
    finite = jnp.isfinite(losses)
    np.testing.assert_allclose(
        minmax_exp_score(losses, finite), [math.exp(-1), 1.0, 0.0, math.exp(-0.5)], rtol=1e-6
    )
    s = softmax_score(2.0)(losses, finite)
    np.testing.assert_allclose(s, np_softmax(2.0)(np.array([3.0, 1.0, np.nan, 2.0])), rtol=1e-6)
    same = jnp.array([5.0, 5.0])
    np.testing.assert_allclose(softmax_score()(same, jnp.isfinite(same)), [0.5, 0.5])


def test_bad_score_output_is_reported():
    tx = auto_lr(
        optax.sgd,
        0.1,
        loss_fn=loss_fn,
        every=1,
        score=lambda losses, finite: losses[:2],
        rule="seed",
        initial_search=False,
    )
    params = init_params()
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        tx.update(init_params(), tx.init(params), params, batch=batches(0)[1])


# --------------------------------------------------------------------------------------------


def test_inside_chain_after_clipping():
    # A large initial loss makes clipping active in the first steps.
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        auto_lr(
            optax.sgd,
            0.05,
            loss_fn=loss_fn,
            every=2,
            momentum=0.5,
            rule="seed",
            initial_search=False,
        ),
    )
    lrs, params, states = run(tx)
    want, (w, b), probes = np_auto_lr_sgd(0.05, (2.0, 1.0, 0.5), 2, momentum=0.5, clip_norm=1.0)
    np.testing.assert_allclose(lrs, want, rtol=1e-4)
    np.testing.assert_allclose(params["w"], w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(states[-1][1].telemetry.losses, probes[-1][0], rtol=1e-4)
    # Without clipping the trajectory is different: the test sees the chain's effect.
    unclipped, _, _ = np_auto_lr_sgd(0.05, (2.0, 1.0, 0.5), 2, momentum=0.5)
    assert np.max(np.abs(unclipped / want - 1)) > 1e-3
    assert float(states[-1][1].hyperparams["learning_rate"]) == lrs[-1]


def test_no_recompilation_across_probes_and_lr_changes():
    traces = {"step": 0, "loss": 0}

    def counting_loss(params, batch):
        traces["loss"] += 1
        return loss_fn(params, batch)

    tx = auto_lr(
        optax.sgd,
        0.02,
        loss_fn=counting_loss,
        every=3,
        momentum=0.9,
        rule="seed",
        initial_search=False,
    )

    @jax.jit
    def step(params, state, train, probe):
        traces["step"] += 1
        grads = jax.grad(loss_fn)(params, train)
        updates, state = tx.update(grads, state, params, batch=probe)
        return optax.apply_updates(params, updates), state

    params = init_params()
    state = tx.init(params)
    lrs = []
    for t in range(10):
        params, state = step(params, state, *batches(t))
        lrs.append(float(current_lr(state)))
    assert len(set(lrs)) > 2
    assert traces["step"] == 1
    assert traces["loss"] == 1  # traced once, inside the probe branch (lax.map body)
    assert step._cache_size() == 1


# --------------------------------------------------------------------------------------------
# Other optimizers: the lr trajectory replayed through optax.inject_hyperparams gives the same
# parameters (the returned update is the optimizer's own update at the new lr, and the inner
# state advances once per call), and each probe's losses are those of params + f * u(lr_old).


@pytest.mark.parametrize(
    "factory, kwargs",
    [
        (optax.adam, {}),
        (optax.adamw, {"weight_decay": 1e-2}),
        (optax.lion, {"b1": 0.9}),
        (optax.rmsprop, {"decay": 0.9, "momentum": 0.5}),
        (optax.sgd, {"momentum": 0.9, "nesterov": True}),
    ],
)
def test_other_optimizers_replay_exactly(factory, kwargs):
    factors = (2.0, 1.0, 0.5)
    lr0 = 3e-3 if factory is optax.lion else 0.02
    tx = auto_lr(
        factory,
        lr0,
        loss_fn=loss_fn,
        factors=factors,
        every=2,
        rule="seed",
        initial_search=False,
        **kwargs,
    )
    lrs, params, states = run(tx, steps=10)
    assert len(set(lrs)) > 2

    ref = optax.inject_hyperparams(factory, hyperparam_dtype=jnp.float32)(
        learning_rate=lr0, **kwargs
    )

    @jax.jit
    def ref_step(p, s, lr, train, probe):
        g = jax.grad(loss_fn)(p, train)
        u_old, _ = ref.update(g, s, p)  # at the lr before this call
        cand = jax.vmap(lambda f: loss_fn(jax.tree.map(lambda a, b: a + f * b, p, u_old), probe))(
            jnp.asarray(factors)
        )
        s = s._replace(hyperparams={**s.hyperparams, "learning_rate": lr})
        u, s = ref.update(g, s, p)
        return optax.apply_updates(p, u), s, cand

    p = init_params()
    s = ref.init(p)
    for t in range(10):
        p, s, cand = ref_step(p, s, jnp.float32(lrs[t]), *batches(t))
        if t % 2 == 0:
            np.testing.assert_allclose(states[t].telemetry.losses, cand, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params, p)


def test_bf16_params_keep_float32_lr():
    tx = auto_lr(optax.adam, 0.02, loss_fn=loss_fn, every=2, rule="seed", initial_search=False)
    params = init_params(jnp.bfloat16)
    state = tx.init(params)
    assert state.hyperparams["learning_rate"].dtype == jnp.float32
    step = make_step(tx)
    for t in range(4):
        params, state, _ = step(params, state, *batches(t))
    assert params["w"].dtype == jnp.bfloat16
    assert current_lr(state).dtype == jnp.float32
    assert state.telemetry.losses.dtype == jnp.float32
    assert np.isfinite(float(current_lr(state)))


def test_x64_keeps_float32_lr():
    with jax.enable_x64(True):
        tx = auto_lr(optax.sgd, 0.02, loss_fn=loss_fn, every=2, rule="seed", initial_search=False)
        params = init_params(jnp.float64)
        state = tx.init(params)
        step = make_step(tx)
        for t in range(3):
            params, state, _ = step(params, state, *batches(t))
        assert params["w"].dtype == jnp.float64
        assert current_lr(state).dtype == jnp.float32
        assert state.hyperparams["learning_rate"].dtype == jnp.float32


# --------------------------------------------------------------------------------------------


def _sgd_no_lr(momentum=0.0):
    return optax.trace(decay=momentum)


GOOD = dict(loss_fn=loss_fn, every=2)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((optax.sgd, 0.1), dict(GOOD, factors=()), "factors must be a non-empty 1-D sequence"),
        ((optax.sgd, 0.1), dict(GOOD, factors=(2.0, 0.0)), r"factors\[1\]"),
        ((optax.sgd, 0.1), dict(GOOD, factors=(2.0, -1.0)), r"factors\[1\]"),
        ((optax.sgd, 0.1), dict(GOOD, factors=(2.0, float("inf"))), r"factors\[1\]"),
        ((optax.sgd, 0.1), dict(GOOD, factors=(2.0, float("nan"))), r"factors\[1\]"),
        ((optax.sgd, 0.1), dict(GOOD, factors=(2.0, 1.0, 2.0)), "distinct"),
        ((optax.sgd, 0.1), dict(GOOD, factors=2.0), "sequence"),
        ((optax.sgd, 0.1), dict(GOOD, factors=("a", 1.0)), r"factors\[0\]"),
        ((optax.sgd, 0.1), dict(GOOD, every=0), "every"),
        ((optax.sgd, 0.1), dict(GOOD, every=2.5), "every"),
        ((optax.sgd, 0.1), dict(loss_fn=loss_fn), "every is required"),
        ((optax.sgd, 0.1), dict(every=2), "loss_fn is required"),
        ((optax.sgd, 0.1), dict(GOOD, loss_fn=3.0), "loss_fn must be callable"),
        ((optax.sgd, 0.0), GOOD, "learning_rate"),
        ((optax.sgd, -0.1), GOOD, "learning_rate"),
        ((optax.sgd, float("nan")), GOOD, "learning_rate"),
        ((optax.sgd, optax.constant_schedule(0.1)), GOOD, "learning_rate"),
        ((optax.sgd, 0.1), dict(GOOD, min_lr=-1.0), "min_lr"),
        ((optax.sgd, 0.1), dict(GOOD, min_lr=0.5, max_lr=0.5), "max_lr"),
        ((optax.sgd, 0.1), dict(GOOD, max_lr=0.0), "max_lr"),
        ((optax.sgd, 0.1), dict(GOOD, strategy="pmap"), "strategy"),
        ((optax.sgd, 0.1), dict(GOOD, strategy=None), "strategy"),
        ((optax.sgd, 0.1), dict(GOOD, score="exp"), "score"),
        ((optax.sgd, 0.1), dict(GOOD, score=3), "score"),
        ((optax.sgd, 0.1), dict(GOOD, score=softmax_score), "softmax_score"),
        ((optax.sgd, 0.1), dict(GOOD, strategy="map", chunk_size=0), "chunk_size"),
        ((optax.sgd, 0.1), dict(GOOD, strategy="vmap", chunk_size=2), "chunk_size"),
        ((optax.sgd, 0.1), dict(GOOD, has_aux="yes"), "has_aux"),
        ((optax.sgd, 0.1), dict(GOOD, axis_name=["batch"]), "axis_name"),
        ((_sgd_no_lr, 0.1), GOOD, "learning_rate argument"),
        ((optax.sgd(0.1), 0.1), GOOD, "factory"),
        ((3, 0.1), GOOD, "factory"),
        ((optax.sgd, 0.1), dict(GOOD, momentun=0.9), "momentun"),
        ((optax.sgd, 0.1), dict(GOOD, softmax_temperature=0.9), "softmax_temperature"),
    ],
)
def test_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        auto_lr(*args, **kwargs)


def test_own_keywords_do_not_shadow_optax_arguments():
    import inspect

    own = {
        name
        for name, p in inspect.signature(auto_lr).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    checked = 0
    for name in dir(optax):
        factory = getattr(optax, name)
        if isinstance(factory, type) or not callable(factory):
            continue
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            continue
        if "learning_rate" in params:
            checked += 1
            assert not own & set(params), (name, own & set(params))
    assert checked > 15


def test_softmax_temperature_validated():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            softmax_score(bad)


def test_missing_batch_is_a_clear_error():
    tx = auto_lr(optax.sgd, 0.1, loss_fn=loss_fn, every=1, rule="seed", initial_search=False)
    params = init_params()
    state = tx.init(params)
    with pytest.raises(TypeError, match="batch="):
        jax.jit(lambda g, s, p: tx.update(g, s, p))(params, state, params)
    chained = optax.chain(optax.clip_by_global_norm(1.0), tx)
    with pytest.raises(TypeError, match="batch="):
        chained.update(params, chained.init(params), params)
    with pytest.raises(TypeError, match="params"):
        tx.update(params, state, batch=batches(0)[1])


def test_bad_loss_output_is_reported():
    tx = auto_lr(
        optax.sgd,
        0.1,
        loss_fn=lambda p, b: (loss_fn(p, b), 1.0),
        every=1,
        rule="seed",
        initial_search=False,
    )
    params = init_params()
    with pytest.raises(ValueError, match="has_aux=True"):
        tx.update(params, tx.init(params), params, batch=batches(0)[1])
    tx = auto_lr(
        optax.sgd, 0.1, loss_fn=lambda p, b: p["w"], every=1, rule="seed", initial_search=False
    )
    with pytest.raises(ValueError, match="scalar"):
        tx.update(params, tx.init(params), params, batch=batches(0)[1])
