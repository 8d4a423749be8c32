"""momentum_free_twin and auto_lr's probe_optimizer modes ("auto", "momentum_free")."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import autolr_jax as al

G1 = jnp.array([0.3, -1.2, 2.0, 1e-3], jnp.float32)
G2 = jnp.array([-0.7, 0.4, 1.5, -2.0], jnp.float32)
P = jnp.array([1.0, -1.0, 0.5, 2.0], jnp.float32)

EMA = ["adam", "adamw", "nadam", "nadamw", "amsgrad", "adamax", "adamaxw", "radam", "lamb"]
EMA += ["lion", "yogi"]


def two_updates(tx):
    """The updates of two steps from P with gradients G1 then G2, jitted."""

    @jax.jit
    def run(p):
        state = tx.init(p)
        u1, state = tx.update(G1, state, p)
        u2, _ = tx.update(G2, state, p + u1)
        return u1, u2

    return [np.asarray(u, np.float64) for u in run(P)]


def test_adam_twin_matches_numpy_rmsprop_with_bias_correction():
    # Adam with b1=0, written out: nu_t = b2 nu + (1 - b2) g^2, step -lr g / (sqrt(nu_t /
    # (1 - b2^t)) + eps).
    lr, b2, eps = 0.01, 0.99, 1e-8
    twin = al.momentum_free_twin(optax.adam, b1=0.9, b2=b2, eps=eps)
    u1, u2 = two_updates(twin(lr))
    g1, g2 = np.asarray(G1, np.float64), np.asarray(G2, np.float64)
    nu1 = (1 - b2) * g1**2
    nu2 = b2 * nu1 + (1 - b2) * g2**2
    np.testing.assert_allclose(u1, -lr * g1 / (np.sqrt(nu1 / (1 - b2)) + eps), rtol=1e-5)
    np.testing.assert_allclose(u2, -lr * g2 / (np.sqrt(nu2 / (1 - b2**2)) + eps), rtol=1e-5)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_twin_is_the_steady_step_of_heavy_ball_momentum(nesterov):
    # Heavy-ball momentum m sums the gradients: the steady step is lr / (1 - m) times g.
    twin = al.momentum_free_twin(optax.sgd, momentum=0.8, nesterov=nesterov)
    u1, u2 = two_updates(twin(0.1))
    np.testing.assert_allclose(u1, -0.1 / 0.2 * np.asarray(G1), rtol=1e-6)
    np.testing.assert_allclose(u2, -0.1 / 0.2 * np.asarray(G2), rtol=1e-6)


def test_rmsprop_twin_drops_the_momentum_and_keeps_the_rest():
    kwargs = dict(decay=0.95, eps=1e-6, centered=True)
    twin = al.momentum_free_twin(optax.rmsprop, momentum=0.5, nesterov=True, **kwargs)
    got = two_updates(twin(0.01))
    want = two_updates(optax.rmsprop(0.01 / 0.5, **kwargs))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6)


@pytest.mark.parametrize("name", EMA)
def test_ema_twins_are_the_factory_with_b1_zero(name):
    factory = getattr(optax, name)
    # b2=0.5: a short memory, so that even lion's sign step differs with and without b1.
    twin = al.momentum_free_twin(factory, b1=0.95, b2=0.5)
    got = two_updates(twin(0.01))
    want = two_updates(factory(0.01, b1=0.0, b2=0.5))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6)
    # ... which is not the momentum update: the twin does change the step.
    assert not np.allclose(two_updates(factory(0.01, b1=0.95, b2=0.5))[1], want[1])


def test_partial_keywords_are_looked_through_and_the_callers_win():
    twin = al.momentum_free_twin(functools.partial(optax.adam, b1=0.5, b2=0.9), b2=0.99)
    got = two_updates(twin(0.01))
    want = two_updates(optax.adam(0.01, b1=0.0, b2=0.99))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6)


@pytest.mark.parametrize(
    "optimizer, kwargs",
    [
        (optax.sgd, {}),
        (optax.sgd, {"momentum": 0.0}),
        (optax.sgd, {"momentum": None, "nesterov": True}),
        (optax.rmsprop, {"decay": 0.9}),
        (optax.adam, {"b1": 0.0}),
        (functools.partial(optax.adam, b1=0.0), {}),
        (functools.partial(optax.sgd, 0.1), {"momentum": 0.9}),  # positional: unknown
        (optax.adabelief, {}),  # its second moment follows g - m: b1=0 changes it
        (lambda learning_rate: optax.adam(learning_rate), {}),
    ],
)
def test_no_twin_without_known_momentum(optimizer, kwargs):
    assert al.momentum_free_twin(optimizer, **kwargs) is None


@pytest.mark.parametrize("momentum", [1.0, -0.1, 1.5])
def test_bad_heavy_ball_momentum_is_refused(momentum):
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        al.momentum_free_twin(optax.sgd, momentum=momentum)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        al.auto_lr(optax.sgd, 0.1, loss_fn=lambda w, b: jnp.sum(w**2), every=2, momentum=momentum)


# --- auto_lr's modes -------------------------------------------------------------------

_RNG = np.random.default_rng(0)
X = jnp.asarray(_RNG.normal(size=(64, 6)), jnp.float32)
Y = X @ jnp.arange(1.0, 7.0) + 0.1 * jnp.asarray(_RNG.normal(size=64), jnp.float32)


def loss_fn(w, batch):
    x, y = batch
    return 0.5 * jnp.mean((x @ w - y) ** 2)


def trajectory(tx, steps=30):
    @jax.jit
    def step(w, state):
        g = jax.grad(loss_fn)(w, (X, Y))
        u, state = tx.update(g, state, w, batch=(X, Y))
        return optax.apply_updates(w, u), state

    w, state = jnp.zeros(6), tx.init(jnp.zeros(6))
    lrs = []
    for _ in range(steps):
        w, state = step(w, state)
        lrs.append(float(al.current_lr(state)))
    return np.array(lrs), state


def test_auto_is_the_explicit_twin_for_adam():
    kwargs = dict(learning_rate=1e-3, loss_fn=loss_fn, every=3)
    auto, state = trajectory(al.auto_lr(optax.adam, **kwargs))
    explicit, explicit_state = trajectory(
        al.auto_lr(optax.adam, probe_optimizer=functools.partial(optax.adam, b1=0.0), **kwargs)
    )
    update, update_state = trajectory(al.auto_lr(optax.adam, probe_optimizer=None, **kwargs))
    np.testing.assert_array_equal(auto, explicit)
    # the built-in twin reads Adam's own state; a factory keeps one of its own
    assert state.probe_state is None and explicit_state.probe_state is not None
    assert update_state.probe_state is None
    assert not np.allclose(auto, update)  # the twin changes the levels chosen


@pytest.mark.parametrize("name", EMA)
def test_the_shared_state_twin_is_the_twin_with_its_own_state(name):
    # The oracle keeps the twin's statistics apart (a factory, so they are not shared):
    # the same levels and the same candidate losses, bit for bit, over 30 updates.
    factory = getattr(optax, name)
    kwargs = dict(learning_rate=1e-3, loss_fn=loss_fn, every=3, factors=(2.0, 1.0, 0.5))
    shared = al.auto_lr(factory, **kwargs)
    apart = al.auto_lr(factory, probe_optimizer=functools.partial(factory, b1=0.0), **kwargs)
    (lr_shared, s_shared), (lr_apart, s_apart) = trajectory(shared), trajectory(apart)
    np.testing.assert_array_equal(lr_shared, lr_apart)
    np.testing.assert_array_equal(s_shared.telemetry.losses, s_apart.telemetry.losses)
    assert s_shared.probe_state is None and s_apart.probe_state is not None


def test_auto_is_the_explicit_twin_for_momentum_sgd():
    kwargs = dict(learning_rate=0.01, loss_fn=loss_fn, every=3, momentum=0.9)
    mode, _ = trajectory(al.auto_lr(optax.sgd, probe_optimizer="momentum_free", **kwargs))
    auto, _ = trajectory(al.auto_lr(optax.sgd, **kwargs))
    explicit, _ = trajectory(
        al.auto_lr(
            optax.sgd, probe_optimizer=lambda learning_rate: optax.sgd(learning_rate * 10), **kwargs
        )
    )
    np.testing.assert_allclose(auto, explicit, rtol=1e-6)
    np.testing.assert_array_equal(auto, mode)


@pytest.mark.parametrize(
    "optimizer, kwargs",
    [
        (optax.sgd, {}),  # no momentum
        (optax.sgd, {"momentum": 0.9, "rule": "seed", "initial_search": False}),  # Algorithm 1
        (optax.adam, {"rule": "seed"}),
    ],
)
def test_auto_leaves_the_update_probes_where_no_twin_applies(optimizer, kwargs):
    common = dict(learning_rate=0.01, loss_fn=loss_fn, every=3, **kwargs)
    auto, state = trajectory(al.auto_lr(optimizer, **common))
    none, _ = trajectory(al.auto_lr(optimizer, probe_optimizer=None, **common))
    np.testing.assert_array_equal(auto, none)
    assert state.probe_state is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), "probe_optimizer='momentum_free' needs an optimizer whose momentum"),
        (dict(momentum=0.9, lookahead=2, rule="seed"), "probe_optimizer needs lookahead=1"),
    ],
)
def test_momentum_free_mode_refuses_what_it_cannot_build(kwargs, match):
    with pytest.raises(ValueError, match=match):
        al.auto_lr(
            optax.sgd, 0.1, loss_fn=loss_fn, every=2, probe_optimizer="momentum_free", **kwargs
        )


def test_matched_mode_probes_the_twin_direction_at_the_applied_length():
    # NumPy oracle at the second probe of heavy-ball SGD (updates 0..3, probes at 0 and 3):
    # the twin's step -level / (1 - m) * g, rescaled to the length of the applied update
    # -level * (g + m * trace); the candidate losses are L(w + f * u) on the batch.
    m, every = 0.9, 3
    tx = al.auto_lr(
        optax.sgd, 0.01, loss_fn=loss_fn, every=every, momentum=m, initial_search=False,
        probe_optimizer="matched", factors=(0.5, 1.0, 2.0),
    )  # fmt: skip
    step = jax.jit(lambda w, s: tx.update(jax.grad(loss_fn)(w, (X, Y)), s, w, batch=(X, Y)))
    w, state = jnp.zeros(6), tx.init(jnp.zeros(6))
    for _ in range(every):
        u, state = step(w, state)
        w = optax.apply_updates(w, u)
    trace = [x for x in jax.tree.leaves(state.inject_state) if np.shape(x) == (6,)]
    assert len(trace) == 1
    level = float(state.control.level)
    _, after = step(w, state)

    x, y, w64 = (np.asarray(a, np.float64) for a in (X, Y, w))
    g = x.T @ (x @ w64 - y) / len(y)
    applied = -level * (g + m * np.asarray(trace[0], np.float64))
    twin = -level / (1 - m) * g
    direction = twin * np.linalg.norm(applied) / np.linalg.norm(twin)
    factors = (0.5, 1.0, 2.0)
    expected = [0.5 * np.mean((x @ (w64 + f * direction) - y) ** 2) for f in factors]
    np.testing.assert_allclose(np.asarray(after.telemetry.losses), expected, rtol=2e-5)
    # and it is neither the twin's probe nor the update's
    matched = trajectory(tx)[0]
    for other in ("momentum_free", None):
        base = al.auto_lr(
            optax.sgd, 0.01, loss_fn=loss_fn, every=every, momentum=m, initial_search=False,
            probe_optimizer=other,
        )  # fmt: skip
        assert not np.allclose(trajectory(base)[0], matched)
