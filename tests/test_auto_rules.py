"""auto_lr's rules, first-probe search, guard and budget shape against NumPy oracles.

The oracle re-implements each probe in float64 NumPy on a least-squares problem
whose loss and gradient are NumPy too, for plain and momentum SGD, and follows
the learning-rate trajectory over 36 updates (12 probes).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import autolr_jax as al
from autolr_jax.auto._rules import (
    DECISION_NAMES,
    DECISIONS,
    armijo_rule,
    guard_level,
    parabola_rule,
    search_factor,
    search_grid,
)

_RNG = np.random.default_rng(3)
X = _RNG.normal(size=(48, 5)) * np.array([1.0, 0.7, 0.5, 0.3, 0.2])
Y = X @ np.array([1.0, -2.0, 0.5, 3.0, -1.0]) + 0.3 * _RNG.normal(size=48)
X32, Y32 = jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32)
STEPS, EVERY = 36, 3


def jloss(w, batch):
    x, y = batch
    return 0.5 * jnp.mean((x @ w - y) ** 2)


def np_loss(w):
    return 0.5 * np.mean((X @ w - Y) ** 2)


def np_grad(w):
    return X.T @ (X @ w - Y) / len(Y)


# --- NumPy rules -------------------------------------------------------------


def np_armijo(losses, factors, loss0, slope, c=0.5):
    if not (np.isfinite(slope) and slope < 0 and np.isfinite(loss0)):
        return min(factors), "backoff"
    ok = [
        f
        for f, v in zip(factors, losses, strict=True)
        if np.isfinite(v) and v <= loss0 - c * f * abs(slope)
    ]
    return (max(ok), "accept") if ok else (min(factors), "backoff")


def np_parabola(losses, factors, loss0, slope, min_gain=0.0, rtol=1e-3):
    x = np.log(np.asarray(factors))
    v = np.asarray(losses)
    ok = np.isfinite(v)
    if ok.sum() < 3:
        return (
            (factors[int(np.nanargmin(np.where(ok, v, np.inf)))], "move")
            if ok.any()
            else (
                min(factors),
                "backoff",
            )
        )
    a, b, c0 = np.polyfit(x[ok], v[ok], 2)
    q = np.poly1d([a, b, c0])
    lo, hi = x.min(), x.max()
    target = np.clip(-b / (2 * a), lo, hi) if a > 0 else (lo if q(lo) <= q(hi) else hi)
    gain = q(0.0) - q(target)
    resid = math.sqrt(np.mean((q(x[ok]) - v[ok]) ** 2))
    noise = max(min_gain, rtol * abs(q(0.0)), resid)
    return (math.exp(target), "move") if gain > noise else (1.0, "stay")


def np_search(losses, grid, loss0, safety):
    ok = [(v, f) for v, f in zip(losses, grid, strict=True) if np.isfinite(v) and v < loss0]
    if not ok:
        return 1.0, "search_none"
    best = min(ok)[1]
    return max(best / safety, min(grid)), "search"


def oracle(
    rule, lr0, factors, momentum=0.0, search=False, safety=4.0, shape=None, tol=0.05, memory=5,
    signal="probe", probe_scale=None,
):  # fmt: skip
    """The learning rate after every update and the decision of every probe.

    ``signal="value"``: the guard compares the mean training loss (the loss at each
    update's parameters) of the updates since the last probe, this one's included,
    with the same mean of the interval before. ``memory``: the guard's memory in probes
    (5, auto_lr's default where there is a guard; 0: none). ``probe_scale``: the probes scale the
    momentum-free step ``-level * probe_scale * g`` instead of the update."""
    w = np.zeros(5)
    m = np.zeros(5)
    level = lr0
    before, rose, last0, probes = lr0, False, 0.0, 0
    value_sum, value_count = 0.0, 0
    failed, left = math.inf, 0  # the guard's memory
    lrs, decisions = [], []
    grid = search_grid()
    for t in range(STEPS):
        g = np_grad(w)
        m_new = g + momentum * m
        value_sum, value_count = value_sum + np_loss(w), value_count + 1
        if t % EVERY == 0:
            u = -level * m_new if probe_scale is None else -level * probe_scale * g
            loss0, slope = np_loss(w), float(g @ u)
            if signal == "value":
                loss0, value_sum, value_count = value_sum / value_count, 0.0, 0
            first = probes == 0
            if search and first:
                mult, d = np_search([np_loss(w + f * u) for f in grid], grid, loss0, safety)
            else:
                mult, d = rule([np_loss(w + f * u) for f in factors], factors, loss0, slope)
            new = level * mult
            undone = not first and rose and loss0 > last0 + tol * abs(last0)
            if undone:
                new, d = min(before, new), "guard"
            if memory:
                remembered = failed if left > 0 else math.inf
                cap = max(math.sqrt(level * remembered), level)
                if not undone and new > level and new > cap:
                    new, d = cap, "capped"
                if undone:
                    failed, left = min(level, remembered), memory
                else:
                    left = max(left - 1, 0)
                    failed = remembered if left > 0 else math.inf
            rose = new > level
            before = level if rose else before
            level, last0, probes = new, loss0, probes + 1
            decisions.append(d)
        applied = level * (1.0 if shape is None else shape(t))
        w = w - applied * m_new
        m = m_new
        lrs.append(applied)
    return np.array(lrs), decisions


def run_jax(tx, value=False):
    @jax.jit
    def step(w, state):
        loss, g = jax.value_and_grad(jloss)(w, (X32, Y32))
        extra = {"value": loss} if value else {}
        u, state = tx.update(g, state, w, batch=(X32, Y32), **extra)
        return optax.apply_updates(w, u), state

    w = jnp.zeros(5, jnp.float32)
    state = tx.init(w)
    lrs, decisions = [], []
    for t in range(STEPS):
        w, state = step(w, state)
        lrs.append(float(al.current_lr(state)))
        if t % EVERY == 0:
            decisions.append(DECISION_NAMES[int(state.telemetry.decision)])
    return np.array(lrs), decisions, state


SHAPE = al.warmup_stable_decay(1.0, STEPS, decay_fraction=0.25)
CASES = [
    # (rule name, NumPy rule, factors, momentum, search, schedule, lr0)
    ("armijo", np_armijo, (2.0, 1.0, 0.5), 0.0, False, None, 0.05),
    ("armijo", np_armijo, (2.0, 1.0, 0.5), 0.9, False, None, 0.5),
    ("parabola", np_parabola, (4.0, 2.0, 1.0, 0.5, 0.25), 0.0, False, None, 0.05),
    ("parabola", np_parabola, (4.0, 2.0, 1.0, 0.5, 0.25), 0.9, False, None, 0.02),
    ("armijo", np_armijo, (2.0, 1.0, 0.5), 0.0, True, None, 1e-4),
    ("parabola", np_parabola, (2.0, 1.0, 0.5), 0.9, True, "wsd", 3.0),
]


@pytest.mark.parametrize("probe", ["auto", None])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-m{c[3]}-s{c[4]}-{c[5]}" for c in CASES])
def test_rule_trajectory_matches_numpy_oracle(case, probe):
    # probe="auto" (the default): with momentum the probes scale the momentum-free step,
    # SGD's at 1 / (1 - momentum) times the level; None: they scale the momentum update.
    name, np_rule, factors, momentum, search, sched, lr0 = case
    shape = SHAPE if sched else None
    tx = al.auto_lr(
        optax.sgd,
        lr0,
        loss_fn=jloss,
        factors=factors,
        every=EVERY,
        rule=name,
        initial_search=search,
        schedule=shape,
        probe_optimizer=probe,
        **({"momentum": momentum} if momentum else {}),
    )
    lrs, decisions, state = run_jax(tx)
    np_shape = (lambda t: float(shape(t))) if shape else None
    scale = 1.0 / (1.0 - momentum) if probe == "auto" and momentum else None
    want, want_d = oracle(
        np_rule, lr0, factors, momentum, search, shape=np_shape, probe_scale=scale
    )
    assert decisions == want_d
    np.testing.assert_allclose(lrs, want, rtol=2e-4)
    assert len(set(decisions)) > 1 or name == "armijo"  # the rule does move
    assert (state.probe_state is None) == (scale is None)


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_probe_optimizer_trajectory_matches_numpy_oracle(scale):
    # Momentum SGD whose probes scale a momentum-free SGD step (of `scale` times the level,
    # the steady-state step of heavy-ball momentum 0.9 for 10), with the search.
    tx = al.auto_lr(
        optax.sgd,
        0.05,
        loss_fn=jloss,
        every=EVERY,
        momentum=0.9,
        probe_optimizer=lambda learning_rate: optax.sgd(learning_rate * scale),
    )
    lrs, decisions, state = run_jax(tx)
    want, want_d = oracle(np_armijo, 0.05, (2.0, 1.0, 0.5), 0.9, True, probe_scale=scale)
    assert decisions == want_d
    np.testing.assert_allclose(lrs, want, rtol=2e-4)
    # The twin's state holds no learning rate: current_lr reads the wrapped optimizer's.
    assert float(al.current_lr(state)) == pytest.approx(want[-1], rel=2e-4)


def test_probe_optimizer_changes_the_level_only():
    # Same level choices as without the twin when the twin is the wrapped optimizer itself
    # (plain SGD): bit-identical trajectory; and the updates stay the wrapped optimizer's.
    kwargs = dict(loss_fn=jloss, every=EVERY)
    plain, _, _ = run_jax(al.auto_lr(optax.sgd, 0.05, **kwargs))
    twin, _, state = run_jax(al.auto_lr(optax.sgd, 0.05, probe_optimizer=optax.sgd, **kwargs))
    np.testing.assert_array_equal(plain, twin)
    assert state.probe_state is not None
    assert al.auto_lr(optax.sgd, 0.05, **kwargs).init(jnp.zeros(5)).probe_state is None


def np_up(losses, factors, loss0, slope):
    """The NumPy side of a rule that always doubles."""
    return 2.0, "custom"


def doubling(lr0, momentum, **kwargs):
    """auto_lr with a rule that always doubles: it drives the level into the guard."""
    return al.auto_lr(
        optax.sgd,
        lr0,
        loss_fn=jloss,
        every=EVERY,
        rule=lambda losses, factors, loss0, slope: jnp.float32(2.0),
        initial_search=False,
        **kwargs,
        **({"momentum": momentum} if momentum else {}),
    )


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_guard_memory_trajectory_matches_numpy_oracle(momentum):
    # With guard_memory the rises after an undo are capped halfway (in log) to the level
    # that failed.
    lr0 = 0.3 if momentum == 0.0 else 0.05
    lrs, decisions, state = run_jax(doubling(lr0, momentum, guard_memory=3))
    want, want_d = oracle(np_up, lr0, (2.0, 1.0, 0.5), momentum, memory=3)
    assert decisions == want_d
    np.testing.assert_allclose(lrs, want, rtol=2e-4)
    assert {"guard", "capped"} <= set(decisions)  # the memory does act
    # Without memory the same rule re-tries the failed level: no "capped" decision.
    _, plain_d = oracle(np_up, lr0, (2.0, 1.0, 0.5), momentum, memory=0)
    assert "capped" not in plain_d and plain_d != want_d


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_guard_on_value_trajectory_matches_numpy_oracle(momentum):
    # guard_on="value": the guard compares the mean of update's value= (here the exact
    # training loss) over the interval since the last probe with the interval before.
    lr0 = 0.05 if momentum == 0.0 else 0.3
    lrs, decisions, state = run_jax(doubling(lr0, momentum, guard_on="value"), value=True)
    want, want_d = oracle(np_up, lr0, (2.0, 1.0, 0.5), momentum, signal="value")
    assert decisions == want_d
    np.testing.assert_allclose(lrs, want, rtol=2e-4)
    assert "guard" in decisions  # the guard does act
    # On the probe's loss the same run undoes at other probes.
    _, probe_d = oracle(np_up, lr0, (2.0, 1.0, 0.5), momentum)
    assert probe_d != want_d
    assert int(state.control.value_count) == (STEPS - 1) % EVERY


def test_guard_on_value_keeps_good_rises_that_batch_noise_undoes():
    # Each batch shifts the loss by its own constant (as batches of different difficulty
    # do) without changing the gradient. Armijo, on the same batch, accepts x2 at every
    # probe, and every rise trains faster. The probe guard compares two batches' losses
    # and undoes rises on their difference; the mean over 100 updates does not.
    every, probes = 100, 9
    offsets = np.random.default_rng(0).uniform(-0.2, 0.2, size=every * probes)
    target = jnp.array([2.0, -2.0])

    def loss(w, c):
        return 0.5 * jnp.sum((w - target) ** 2) + 1.0 + c

    def run(guard_on, pass_value=True):
        kw = {} if guard_on == "default" else {"guard_on": guard_on}
        tx = al.auto_lr(optax.sgd, 1e-3, loss_fn=loss, every=every, initial_search=False, **kw)

        @jax.jit
        def step(w, state, c):
            value, g = jax.value_and_grad(loss)(w, c)
            extra = {"value": value} if pass_value else {}
            u, state = tx.update(g, state, w, batch=c, **extra)
            return optax.apply_updates(w, u), state

        w, state = jnp.zeros(2), tx.init(jnp.zeros(2))
        decisions = []
        for t, c in enumerate(offsets):
            w, state = step(w, state, jnp.float32(c))
            if t % every == 0:
                decisions.append(DECISION_NAMES[int(state.telemetry.decision)])
        return decisions, float(state.control.level)

    value_d, value_level = run("value")
    probe_d, probe_level = run("probe")
    assert value_d == ["accept"] * probes  # every rise kept: 1e-3 * 2**9
    np.testing.assert_allclose(value_level, 1e-3 * 2.0**probes, rtol=1e-6)
    assert "guard" in probe_d and probe_level < value_level / 2
    # The default (guard_on=None) compares value= where the update gets it, and the probe
    # batches' losses where it does not.
    assert run("default") == (value_d, value_level)
    assert run("default", pass_value=False) == (probe_d, probe_level)
    assert run("probe", pass_value=False) == (probe_d, probe_level)


def test_default_guard_switches_signal_without_undoing_a_good_rise():
    # guard_on=None: updates without value= use the probe guard, updates with it the interval
    # means. A switch midway has no interval mean to compare with yet (inf), so the first
    # probe after it keeps the rise (with a baseline of 0 it would undo every rise).
    every = 10
    target = jnp.array([2.0, -2.0])

    def loss(w, batch):
        return 0.5 * jnp.sum((w - target) ** 2) + 1.0

    tx = al.auto_lr(optax.sgd, 1e-3, loss_fn=loss, every=every, initial_search=False)

    def make_step(pass_value):
        @jax.jit
        def step(w, state):
            value, g = jax.value_and_grad(loss)(w, None)
            extra = {"value": value} if pass_value else {}
            u, state = tx.update(g, state, w, batch=None, **extra)
            return optax.apply_updates(w, u), state

        return step

    steps = {False: make_step(False), True: make_step(True)}
    w, state = jnp.zeros(2), tx.init(jnp.zeros(2))
    assert float(state.control.last_value) == np.inf
    decisions = []
    for t in range(6 * every):
        w, state = steps[t >= 3 * every](w, state)
        if t % every == 0:
            decisions.append(DECISION_NAMES[int(state.telemetry.decision)])
    assert decisions == ["accept"] * 6, decisions
    assert int(state.control.value_count) == every - 1
    assert np.isfinite(float(state.control.last_value))


def test_default_guard_leaves_a_value_it_cannot_use_alone():
    w = jnp.zeros(5, jnp.float32)
    g = jax.grad(jloss)(w, (X32, Y32))
    # rule="seed" has no guard: value= (whatever it is) is only forwarded; value=None is
    # no value.
    tx = al.auto_lr(optax.sgd, 0.05, loss_fn=jloss, every=EVERY, rule="seed")
    tx.update(g, tx.init(w), w, batch=(X32, Y32), value=jnp.ones(3))
    tx = al.auto_lr(optax.sgd, 0.05, loss_fn=jloss, every=EVERY)
    _, state = tx.update(g, tx.init(w), w, batch=(X32, Y32), value=None)
    assert int(state.control.value_count) == 0
    # With the guard on, a value= it would compare must be the scalar loss; the message says
    # how to leave it alone.
    with pytest.raises(TypeError, match="guard_on='probe' to leave value= to other"):
        tx.update(g, tx.init(w), w, batch=(X32, Y32), value=jnp.ones(3))
    tx = al.auto_lr(optax.sgd, 0.05, loss_fn=jloss, every=EVERY, guard_on="probe")
    _, state = tx.update(g, tx.init(w), w, batch=(X32, Y32), value=jnp.ones(3))
    assert int(state.control.value_count) == 0


def test_guard_on_value_needs_a_scalar_value():
    tx = al.auto_lr(optax.sgd, 0.05, loss_fn=jloss, every=EVERY, guard_on="value")
    w = jnp.zeros(5, jnp.float32)
    g, state = jax.grad(jloss)(w, (X32, Y32)), tx.init(w)
    with pytest.raises(TypeError, match="needs the training loss passed as a keyword"):
        tx.update(g, state, w, batch=(X32, Y32))
    with pytest.raises(TypeError, match="needs the training loss passed as a keyword"):
        tx.update(g, state, w, batch=(X32, Y32), value=None)
    with pytest.raises(TypeError, match="value= must be the scalar floating-point"):
        tx.update(g, state, w, batch=(X32, Y32), value=jnp.ones(3))
    with pytest.raises(TypeError, match="value= must be the scalar floating-point"):
        tx.update(g, state, w, batch=(X32, Y32), value=jnp.int32(1))


def test_search_reaches_four_decades_either_way():
    # 0.5 h w**2: one SGD step's loss is lowest at lr = 1 / h.
    def quad(h):
        return lambda w, batch: 0.5 * h * jnp.sum(w**2)

    for lr0, h in ((1e-4, 1.0), (1.0, 1e4)):
        tx = al.auto_lr(
            optax.sgd,
            lr0,
            loss_fn=quad(h),
            every=5,
            rule="armijo",
            initial_search=True,
            search_safety=1.0,
        )
        w = jnp.ones(3)
        state = tx.init(w)
        _, state = tx.update(jax.grad(quad(h))(w, None), state, w, batch=None)
        assert DECISION_NAMES[int(state.telemetry.decision)] == "search"
        np.testing.assert_allclose(float(al.current_lr(state)), 1.0 / h, rtol=1e-5)
        assert state.telemetry.search_losses.shape == (17,)


def test_budget_shape_composition_and_current_lr():
    shape = al.warmup_stable_decay(1.0, 20, warmup_steps=4, decay_fraction=0.5)
    tx = al.auto_lr(
        optax.sgd, 0.05, loss_fn=jloss, every=3, schedule=shape, rule="seed", initial_search=False
    )
    w = jnp.zeros(5, jnp.float32)
    state = tx.init(w)
    step = jax.jit(lambda g, s, w: tx.update(g, s, w, batch=(X32, Y32)))
    levels = []
    for t in range(24):
        g = jax.grad(jloss)(w, (X32, Y32))
        u, state = step(g, state, w)
        # level * shape(t) (the shape evaluated inside jit can differ by one ulp)
        applied = np.float32(state.control.level) * np.float32(shape(t))
        np.testing.assert_allclose(float(al.current_lr(state)), float(applied), rtol=2.5e-7)
        # plain SGD at the applied learning rate
        np.testing.assert_allclose(np.asarray(u), -float(applied) * np.asarray(g), rtol=1e-6)
        w = w + u
        levels.append(float(state.control.level))
    assert int(state.telemetry.num_probes) == 8
    assert len(set(levels)) > 1  # the level moves while the shape goes through 0 .. 1 .. 0


def test_probe_during_decay_false_stops_probing_in_the_cooldown():
    shape = al.warmup_stable_decay(1.0, 20, decay_fraction=0.5)  # cooldown from t = 11
    tx = al.auto_lr(
        optax.sgd,
        0.05,
        loss_fn=jloss,
        every=2,
        rule="parabola",
        schedule=shape,
        probe_during_decay=False,
        initial_search=False,
    )
    w = jnp.zeros(5, jnp.float32)
    state = tx.init(w)
    step = jax.jit(lambda g, s, w: tx.update(g, s, w, batch=(X32, Y32)))
    for _ in range(20):
        u, state = step(jax.grad(jloss)(w, (X32, Y32)), state, w)
        w = w + u
    assert int(state.telemetry.num_probes) == 6  # t = 0, 2, ..., 10


EDGE_H = 10.0  # 0.5 h w**2 with plain SGD diverges once lr > 2 / h


def edge_quad(w, batch):
    return 0.5 * EDGE_H * jnp.sum(w**2) + 0.0 * batch


def doubling_on_quadratic(steps, guard=True, memory=0):
    """A rule that always doubles, every 2 updates: the losses, the guard's undos, the state."""
    tx = al.auto_lr(
        optax.sgd,
        0.01,
        loss_fn=edge_quad,
        every=2,
        rule=lambda losses, factors, loss0, slope: jnp.float32(2.0),
        guard=guard,
        guard_memory=memory,
        initial_search=False,
    )
    w = jnp.ones(2)
    state = tx.init(w)
    step = jax.jit(lambda w, s: tx.update(jax.grad(edge_quad)(w, 0.0), s, w, batch=0.0))
    losses, guards = [], 0
    for t in range(steps):
        u, state = step(w, state)
        w = w + u
        losses.append(float(edge_quad(w, 0.0)))
        guards += t % 2 == 0 and int(state.telemetry.decision) == DECISIONS["guard"]
    return losses, guards, state


def test_guard_undoes_a_rise_that_diverges():
    # The guard undoes each rise that made the loss worse: a rule that keeps raising
    # then oscillates across the edge of stability with a bounded rate, and the loss
    # grows far slower than unguarded (it still grows: guard_memory, below, stops that).
    losses, guards, state = doubling_on_quadratic(60)
    assert guards > 0 and max(losses) < 1e4 and float(al.current_lr(state)) <= 4.0 / EDGE_H
    losses_off, guards_off, _ = doubling_on_quadratic(60, guard=False)
    assert guards_off == 0 and not max(losses_off) < 1e30  # unguarded: diverges


def test_guard_memory_stops_the_guarded_oscillation_from_diverging():
    # The plain guard alternates 0.16 (the loss contracts x0.36 per step) and 0.32
    # (grows x4.8): net growth, the loss climbs without bound. With memory the rises
    # bisect towards the edge 2 / h and the loss stays near its minimum.
    plain, _, _ = doubling_on_quadratic(80)
    remembered, _, state = doubling_on_quadratic(80, memory=1000)
    assert plain[-1] > 1e4  # the plain guard: bounded rate, unbounded loss
    assert max(remembered[20:]) < 1e-3
    lr = float(al.current_lr(state))
    assert 0.9 * 2.0 / EDGE_H < lr < 1.1 * 2.0 / EDGE_H  # at the edge of stability
    assert np.isfinite(float(state.control.failed)) and int(state.control.memory) > 0


def test_pure_rules_edge_cases():
    f = jnp.array([2.0, 1.0, 0.5])
    nan = jnp.float32(jnp.nan)
    # NaN/inf candidates are never acceptable; not a descent direction backs off.
    m, d = armijo_rule()(jnp.array([nan, jnp.inf, 0.5]), f, 1.0, -0.1)
    assert (float(m), DECISION_NAMES[int(d)]) == (0.5, "accept")
    m, d = armijo_rule()(jnp.array([0.1, 0.1, 0.1]), f, 1.0, 0.3)
    assert (float(m), DECISION_NAMES[int(d)]) == (0.5, "backoff")
    # All-equal losses: no gain, the parabola stays.
    m, d = parabola_rule()(jnp.full(3, 0.7), f, 1.0, -0.1)
    assert (float(m), DECISION_NAMES[int(d)]) == (1.0, "stay")
    m, d = parabola_rule()(jnp.array([nan, nan, nan]), f, 1.0, -0.1)
    assert (float(m), DECISION_NAMES[int(d)]) == (0.5, "backoff")
    m, d = search_factor(jnp.array([nan, jnp.inf, 2.0]), jnp.array([10.0, 1.0, 0.1]), 1.0, 4.0)
    assert (float(m), DECISION_NAMES[int(d)]) == (1.0, "search_none")
    lvl, g = guard_level(jnp.float32(1.0), jnp.float32(2.0), nan, 1.0, 0.5, False, 0.05, 0.5)
    assert (float(lvl), bool(g)) == (0.5, True)  # a non-finite loss always backs off
    lvl, g = guard_level(jnp.float32(1.0), jnp.float32(2.0), 1.01, 1.0, 0.5, True, 0.05, 0.5)
    assert (float(lvl), bool(g)) == (2.0, False)  # within tolerance: no guard


def test_seed_default_unchanged_by_the_new_code_paths():
    # rule="seed" without guard computes no loss0; with guard=False explicitly the same.
    a, _, sa = run_jax(
        al.auto_lr(optax.sgd, 0.05, loss_fn=jloss, every=EVERY, rule="seed", initial_search=False)
    )
    b, _, sb = run_jax(
        al.auto_lr(
            optax.sgd,
            0.05,
            loss_fn=jloss,
            every=EVERY,
            guard=False,
            rule="seed",
            initial_search=False,
        )
    )
    assert np.array_equal(a, b)
    assert float(sa.telemetry.loss0) == 0.0 and sa.telemetry.search_losses.shape == (1,)
    assert DECISION_NAMES[int(sb.telemetry.decision)] == "seed"


@pytest.mark.parametrize("lr0", [1e-4, 0.05, 1.0])
def test_default_is_armijo_after_the_first_probe_search(lr0):
    # The default (measured best on both development tasks): the wide first-probe search,
    # then Armijo's sufficient decrease with the guard; from any start (NumPy oracle).
    got, decisions, _ = run_jax(al.auto_lr(optax.sgd, lr0, loss_fn=jloss, every=EVERY))
    want, want_decisions = oracle(np_armijo, lr0, (2.0, 1.0, 0.5), search=True)
    np.testing.assert_allclose(got, want, rtol=2e-4)
    assert decisions == want_decisions and decisions[0] == "search"
    seed, _, _ = run_jax(
        al.auto_lr(optax.sgd, lr0, loss_fn=jloss, every=EVERY, rule="seed", initial_search=False)
    )
    assert np.max(np.abs(seed / got - 1)) > 1e-2


@pytest.mark.parametrize("lr0", [1e-3, 0.05, 0.3, 1.0])
def test_default_does_no_harm_against_constant_from_any_start(lr0):
    # An ill-conditioned quadratic (curvatures 0.1 .. 10; SGD diverges above lr 0.2): from
    # every start the default ends at least as low as a constant learning rate there, and
    # it never diverges where the constant one does.
    hs = jnp.asarray([0.1, 1.0, 10.0], jnp.float32)

    def quad(w, batch):
        return 0.5 * jnp.sum(hs * w**2) + 0.0 * batch

    def final_loss(tx):
        w = jnp.ones(3)
        state = tx.init(w)
        step = jax.jit(lambda w, s: tx.update(jax.grad(quad)(w, 0.0), s, w, batch=0.0))
        for _ in range(60):
            u, state = step(w, state)
            w = w + u
        return float(quad(w, 0.0))

    auto = final_loss(al.auto_lr(optax.sgd, lr0, loss_fn=quad, every=5))
    constant = final_loss(optax.sgd(lr0))
    assert np.isfinite(auto) and auto < 0.5 * float(jnp.sum(hs))  # it trained
    assert auto <= constant * 1.05 or not np.isfinite(constant)
