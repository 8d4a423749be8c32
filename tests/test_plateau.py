"""reduce_on_plateau / report_metric against torch.optim.lr_scheduler.ReduceLROnPlateau.

Exactness of ties: PyTorch decides ``metric < best * (1 - threshold)`` (and the
three other comparisons) in float64, we in float32. The random sequences below
therefore live on a dyadic grid (multiples of 1/1024, small magnitudes) and the
thresholds used for tie-hunting are dyadic too (0.25, 1/16, 0), so every
product and difference involved is exact in both precisions: a metric placed
exactly on the dynamic threshold is then a tie for both implementations, and
the test checks that both call it "not better". With the default threshold
1e-4 (not dyadic) ties cannot be constructed exactly, and grid metrics stay far
(> 1e-5 relative) from the dynamic threshold.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from autolr_jax import current_lr
from autolr_jax.transforms._plateau import (
    ReduceOnPlateauState,
    reduce_on_plateau,
    report_metric,
)

GRID = 1.0 / 1024
N_EPOCHS = 40

# (name, kwargs) of configurations beyond mode/threshold_mode. ``exact`` marks the
# ones whose threshold makes exact ties constructible.
VARIANTS = {
    "patience2": dict(learning_rate=1.0, factor=0.5, patience=2, exact=True),
    "patience0_cooldown_minlr_thr0": dict(
        learning_rate=1.0,
        factor=0.5,
        patience=0,
        cooldown=2,
        min_lr=0.3,
        threshold=0.0,
        exact=True,
    ),
    "eps_tie_cooldown": dict(
        learning_rate=1.0, factor=0.5, patience=1, cooldown=1, eps=0.25, exact=True
    ),
    "default_threshold_minlr": dict(
        learning_rate=1e-3, factor=0.1, patience=3, min_lr=1e-6, exact=False
    ),
}
MODES = [("min", "rel"), ("min", "abs"), ("max", "rel"), ("max", "abs")]


def _kwargs(mode, threshold_mode, variant):
    kw = dict(VARIANTS[variant])
    exact = kw.pop("exact")
    kw.update(mode=mode, threshold_mode=threshold_mode)
    if exact and "threshold" not in kw:
        kw["threshold"] = 0.25 if threshold_mode == "rel" else 1.0 / 16
    return kw


def _torch_scheduler(torch, kw):
    kw = dict(kw)
    lr = kw.pop("learning_rate")
    kw.pop("accumulation_size", None)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    return opt, torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)


def _dynamic_threshold(kw, best):
    thr = kw.get("threshold", 1e-4)
    if kw["mode"] == "min":
        return best * (1 - thr) if kw["threshold_mode"] == "rel" else best - thr
    return best * (thr + 1) if kw["threshold_mode"] == "rel" else best + thr


def _on_fine_grid(x):
    # Small and a multiple of 2**-16: sums of a few of them are exact in float32.
    return math.isfinite(x) and abs(x) <= 16 and (x * 65536).is_integer()


def _torch_trajectory(torch, kw, seed, sign=1.0, n=N_EPOCHS):
    """Draws a metric sequence while stepping torch, aiming at torch's own ties.

    Returns the metrics (float64, each exactly a float32) and, per epoch, torch's
    lr before and after the step and its best / num_bad_epochs / cooldown_counter.
    """
    rng = np.random.default_rng(seed)
    opt, sched = _torch_scheduler(torch, kw)
    # Start on the side of zero given by sign; the walk may cross it.
    prev = sign * float(rng.integers(0, 4097)) * GRID
    rows = []
    for _ in range(n):
        r = rng.random()
        metric = None
        if r < 0.08:
            metric = math.nan
        elif r < 0.35 and math.isfinite(sched.best):
            cut = _dynamic_threshold(kw, sched.best)
            cand = cut + float(rng.choice([-GRID, 0.0, 0.0, GRID]))
            if _on_fine_grid(cut) and _on_fine_grid(cand):
                metric = cand
        elif r < 0.55:
            metric = prev  # exact repeat: a plateau
        if metric is None:
            metric = prev + float(rng.integers(-96, 97)) * GRID
            metric = min(max(metric, -8.0), 8.0)
        assert math.isnan(metric) or float(np.float32(metric)) == metric
        lr_before = opt.param_groups[0]["lr"]
        sched.step(metric)
        rows.append(
            (
                metric,
                lr_before,
                opt.param_groups[0]["lr"],
                sched.best,
                sched.num_bad_epochs,
                sched.cooldown_counter,
                sched.last_epoch,
            )
        )
        if math.isfinite(metric):
            prev = metric
    cols = list(zip(*rows, strict=True))
    return {
        "metric": np.array(cols[0]),
        "lr_before": np.array(cols[1]),
        "lr": np.array(cols[2]),
        "best": np.array(cols[3]),
        "num_bad_epochs": np.array(cols[4]),
        "cooldown_counter": np.array(cols[5]),
        "last_epoch": np.array(cols[6]),
    }


@jax.jit
def _run_report(state, metrics):
    # The hyperparameters live in the state, so this one compiled function serves
    # every configuration.
    def body(s, m):
        s = report_metric(s, m)
        return s, (current_lr(s), s.best, s.num_bad_epochs, s.cooldown_counter, s.last_epoch)

    return jax.lax.scan(body, state, metrics)[1]


@functools.cache
def _values_runner(tx):
    """A jitted scan feeding values (epochs, k) through tx.update(..., value=)."""

    @jax.jit
    def run(state, values):
        def call(s, v):
            u, s = tx.update(jnp.ones(1, jnp.float32), s, None, value=v)
            return s, (u[0], current_lr(s), s.acc_count)

        def epoch(s, vs):
            return jax.lax.scan(call, s, vs)

        return jax.lax.scan(epoch, state, values)[1]

    return run


def _epoch_values(rng, metrics, k):
    """k float32 values per epoch whose mean is exactly the epoch's metric."""
    out = np.empty((len(metrics), k))
    for e, m in enumerate(metrics):
        if math.isnan(m):
            out[e] = rng.integers(-4096, 4097, size=k) * GRID
            out[e, rng.integers(k)] = math.nan  # one NaN makes the mean NaN
            continue
        offs = rng.integers(-512, 513, size=k // 2) * GRID
        out[e] = m
        out[e, 0 : 2 * (k // 2) : 2] += offs
        out[e, 1 : 2 * (k // 2) : 2] -= offs
    assert np.array_equal(out.astype(np.float32), out, equal_nan=True)
    return out


def _assert_lr(ours, theirs, what):
    np.testing.assert_allclose(np.asarray(ours, np.float64), theirs, rtol=1e-6, err_msg=what)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("mode,threshold_mode", MODES)
def test_parity_with_torch(torch, mode, threshold_mode, variant):
    kw = _kwargs(mode, threshold_mode, variant)
    tx1 = reduce_on_plateau(**kw)
    tx4 = reduce_on_plateau(**kw, accumulation_size=4)
    n_cuts = 0
    for seed in range(2):
        ref = _torch_trajectory(
            torch, kw, seed=1000 * seed + MODES.index((mode, threshold_mode)), sign=(1, -1)[seed]
        )
        n_cuts += int(np.sum(ref["lr"] != ref["lr_before"]))

        # (a) report_metric once per epoch.
        lr, best, bad, cool, last = _run_report(
            tx1.init(jnp.zeros(1)), jnp.asarray(ref["metric"], jnp.float32)
        )
        _assert_lr(lr, ref["lr"], "report_metric lr")
        np.testing.assert_array_equal(np.asarray(best, np.float64), ref["best"])
        np.testing.assert_array_equal(bad, ref["num_bad_epochs"])
        np.testing.assert_array_equal(cool, ref["cooldown_counter"])
        np.testing.assert_array_equal(last, ref["last_epoch"])

        # (b) update(..., value=), one value per metric and the mean of four.
        rng = np.random.default_rng(seed)
        for tx, k in ((tx1, 1), (tx4, 4)):
            values = _epoch_values(rng, ref["metric"], k)
            values = jnp.asarray(values, jnp.float32)
            upd, lr, acc = _values_runner(tx)(tx.init(jnp.zeros(1)), values)
            # PyTorch order: every update of an epoch, including the one that
            # completes the metric, uses the lr from before scheduler.step.
            _assert_lr(-np.asarray(upd), np.repeat(ref["lr_before"][:, None], k, 1), f"upd k={k}")
            _assert_lr(lr[:, -1], ref["lr"], f"lr after the metric, k={k}")
            _assert_lr(lr[:, :-1], np.repeat(ref["lr_before"][:, None], k - 1, 1), f"k={k}")
            np.testing.assert_array_equal(acc, np.tile((np.arange(1, k + 1) % k), (N_EPOCHS, 1)))
    # The sequences must exercise the scheduler, or parity would be vacuous.
    assert n_cuts >= 2, n_cuts


def test_sequences_hit_exact_ties(torch):
    """The tie-hunting generator really produces metrics on the dynamic threshold."""
    ties = 0
    for mode, threshold_mode in MODES:
        kw = _kwargs(mode, threshold_mode, "patience2")
        ref = _torch_trajectory(torch, kw, seed=0)
        best = np.concatenate([[np.inf if mode == "min" else -np.inf], ref["best"][:-1]])
        pairs = zip(ref["metric"], best, strict=True)
        ties += sum(m == _dynamic_threshold(kw, b) for m, b in pairs if np.isfinite(b))
    assert ties >= 4, ties


def _lrs(metrics, **kw):
    tx = reduce_on_plateau(**kw)
    return np.asarray(_run_report(tx.init(jnp.zeros(1)), jnp.asarray(metrics, jnp.float32))[0])


def _torch_lrs(torch, metrics, **kw):
    opt, sched = _torch_scheduler(torch, kw)
    out = []
    for m in metrics:
        sched.step(float(m))
        out.append(opt.param_groups[0]["lr"])
    return np.array(out)


# The four known defects of optax.contrib.reduce_on_plateau (0.2.x). Each case
# pins the torch behaviour ours must have; the literal is the torch result worked
# out by hand, and torch itself is checked too.


def test_no_cut_one_evaluation_early(torch):
    # patience=2: torch cuts after the 3rd bad epoch (num_bad_epochs > patience);
    # optax cuts after the 2nd (plateau_count == patience).
    metrics = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    expected = [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    kw = dict(learning_rate=1.0, factor=0.5, patience=2)
    np.testing.assert_allclose(_torch_lrs(torch, metrics, **kw), expected)
    np.testing.assert_allclose(_lrs(metrics, **kw), expected)


def test_patience_zero_does_not_cut_on_improvement(torch):
    # optax with patience=0 cuts on every improving step; torch never does.
    metrics = [5.0, 4.0, 3.0, 2.0, 1.0, 2.0, 0.5, 0.5]
    expected = [1, 1, 1, 1, 1, 0.5, 0.5, 0.25]
    kw = dict(learning_rate=1.0, factor=0.5, patience=0)
    np.testing.assert_allclose(_torch_lrs(torch, metrics, **kw), expected)
    np.testing.assert_allclose(_lrs(metrics, **kw), expected)


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("threshold_mode", ["rel", "abs"])
def test_negative_metrics(torch, mode, threshold_mode):
    # Worsening negative metrics must be cut. With rel thresholds torch compares
    # against best * (1 - threshold) (min) or best * (1 + threshold) (max), which
    # for a negative best lies on the worse side of best, so a constant negative
    # metric counts as improving and is never cut: reproduced, not "fixed".
    worsening = [-4.0, -3.0, -3.0, -2.0, -2.0, -2.0, -1.0, -1.0]
    if mode == "max":
        worsening = [-5.0 - v for v in worsening]  # -1, -2, -2, -3, ...: falling
    constant = [-2.0] * 8
    kw = dict(learning_rate=1.0, factor=0.5, patience=1, mode=mode, threshold_mode=threshold_mode)
    for metrics in (worsening, constant):
        ref = _torch_lrs(torch, metrics, **kw)
        np.testing.assert_allclose(_lrs(metrics, **kw), ref)
    assert _lrs(worsening, **kw)[-1] < 1.0
    assert (_lrs(constant, **kw)[-1] < 1.0) == (threshold_mode == "abs")


def test_max_mode(torch):
    # optax has no max mode; an accuracy that rises then stalls must be cut.
    metrics = [0.5, 0.625, 0.75, 0.75, 0.75, 0.75, 0.875, 0.875, 0.875, 0.875]
    expected = [1, 1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01]
    kw = dict(learning_rate=1.0, mode="max", patience=2)
    np.testing.assert_allclose(_torch_lrs(torch, metrics, **kw), expected, rtol=1e-12)
    np.testing.assert_allclose(_lrs(metrics, **kw), expected, rtol=1e-6)


def test_nan_metrics(torch):
    # NaN is never better: a bad epoch, best unchanged; even as the first metric.
    metrics = [math.nan, 2.0, math.nan, math.nan, 2.0, 1.0, math.nan]
    for mode in ("min", "max"):
        kw = dict(learning_rate=1.0, factor=0.5, patience=1, mode=mode)
        ref = _torch_lrs(torch, metrics, **kw)
        assert ref[-1] < 1.0
        np.testing.assert_allclose(_lrs(metrics, **kw), ref)


def test_infinite_metrics_and_rel_threshold_one(torch):
    # Python-float semantics carried over to float32: inf * 0 is NaN (threshold=1,
    # rel: nothing is ever better), -inf as best blocks every later improvement.
    cases = [
        ([1.0, -math.inf, -5.0, -5.0, -5.0], dict(threshold_mode="abs")),
        ([math.inf, 1.0, 1.0, 1.0], {}),
        ([1.0, 0.5, 0.25, 0.125], dict(threshold=1.0)),
    ]
    for metrics, extra in cases:
        kw = dict(learning_rate=1.0, factor=0.5, patience=1, **extra)
        np.testing.assert_allclose(_lrs(metrics, **kw), _torch_lrs(torch, metrics, **kw))


# A small least-squares problem: loss = mean((X w - y)^2) / 2.
_RNG = np.random.default_rng(0)
_X = jnp.asarray(_RNG.normal(size=(32, 4)), jnp.float32)
_Y = jnp.asarray(_X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.3 * _RNG.normal(size=32), jnp.float32)


def _loss(w):
    return 0.5 * jnp.mean((_X @ w.astype(jnp.float32) - _Y) ** 2)


def _train(tx, n_epochs, steps_per_epoch=5, state=None, w=None, with_value=False):
    """Momentum training; the epoch's last loss is the reported metric."""
    w = jnp.zeros(4) if w is None else w
    state = tx.init(w) if state is None else state
    compiles = []

    @jax.jit
    def step(w, state):
        compiles.append(1)
        loss, g = jax.value_and_grad(_loss)(w)
        extra = {"value": loss} if with_value else {}
        u, state = tx.update(g, state, w, **extra)
        return optax.apply_updates(w, u), state, loss

    # A fresh function: jit caches are shared by every jax.jit of the same function object.
    report = jax.jit(lambda s, m: report_metric(s, m))
    losses, lrs = [], []
    for _ in range(n_epochs):
        for _ in range(steps_per_epoch):
            w, state, loss = step(w, state)
        if not with_value:
            state = report(state, _loss(w))
        losses.append(float(_loss(w)))
        lrs.append(float(current_lr(state)))
    return w, state, np.array(losses), np.array(lrs), len(compiles), step, report


def test_in_chain_least_squares(torch):
    tx = optax.chain(
        optax.clip_by_global_norm(10.0),
        optax.trace(0.9),
        reduce_on_plateau(0.05, factor=0.5, patience=1, threshold=1e-3),
    )
    w, state, losses, lrs, n_compiles, step, report = _train(tx, 30)
    assert losses[-1] < 0.1 * float(_loss(jnp.zeros(4)))
    assert lrs[-1] < 0.05  # the loss plateaued at the noise floor: cut
    # The same losses drive torch to the same learning rates.
    np.testing.assert_allclose(
        lrs,
        _torch_lrs(
            torch,
            losses.astype(np.float32),
            learning_rate=0.05,
            factor=0.5,
            patience=1,
            threshold=1e-3,
        ),
        rtol=1e-6,
    )
    # No recompilation while the learning rate moved.
    assert n_compiles == 1
    assert step._cache_size() == 1 and report._cache_size() == 1
    # current_lr and report_metric find the state nested in the chain.
    assert isinstance(state[2], ReduceOnPlateauState)
    assert float(current_lr(state)) == float(state[2].learning_rate)


def test_update_uses_lr_for_every_leaf_and_dtype():
    params = {"a": jnp.ones(3, jnp.bfloat16), "b": jnp.ones((), jnp.float32)}
    tx = optax.chain(optax.scale_by_adam(), reduce_on_plateau(1e-2, patience=0))
    state = tx.init(params)
    step = jax.jit(lambda g, s, p, v: tx.update(g, s, p, value=v))
    u, state = step(params, state, params, 1.0)
    u, state = step(params, state, params, 2.0)  # bad: cut for the next call
    assert u["a"].dtype == jnp.bfloat16 and u["b"].dtype == jnp.float32
    assert state[1].learning_rate.dtype == jnp.float32
    np.testing.assert_allclose(float(current_lr(state)), 1e-3, rtol=1e-6)
    assert all(x.dtype in (jnp.float32, jnp.int32, jnp.bool_) for x in jax.tree.leaves(state[1]))
    # Adam's first step is sign(g) = 1, scaled by -lr (still the old lr here).
    adam_only = optax.scale_by_adam()
    d, _ = adam_only.update(params, adam_only.init(params), params)
    u0, _ = tx.update(params, tx.init(params), params, value=1.0)
    np.testing.assert_allclose(np.asarray(u0["b"]), -1e-2 * np.asarray(d["b"]), rtol=1e-6)


def test_x64_keeps_float32_state():
    with jax.enable_x64(True):
        tx = reduce_on_plateau(0.1, patience=0)
        params = jnp.ones(2, jnp.float64)
        state = tx.init(params)
        u, state = jax.jit(lambda s: tx.update(params, s, params, value=jnp.float64(1.0)))(state)
        state = jax.jit(report_metric)(state, 2.0)
        assert u.dtype == jnp.float64
        for x in jax.tree.leaves(state):
            assert x.dtype in (jnp.float32, jnp.int32, jnp.bool_), x.dtype
        np.testing.assert_allclose(float(state.learning_rate), 0.01, rtol=1e-6)


def test_value_none_does_not_accumulate():
    tx = reduce_on_plateau(1.0, factor=0.5, patience=0, accumulation_size=2)
    state = tx.init(jnp.zeros(1))
    step_v = jax.jit(lambda s, v: tx.update(jnp.ones(1), s, value=v))
    step_n = jax.jit(lambda s: tx.update(jnp.ones(1), s))
    _, state = step_v(state, 1.0)
    _, s2 = step_n(state)
    for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(s2), strict=True):
        np.testing.assert_array_equal(x, y)
    _, state = step_v(s2, 3.0)  # completes mean 2.0: the first metric
    assert int(state.last_epoch) == 1 and float(state.best) == 2.0
    _, state = step_n(state)
    _, state = step_v(state, 3.0)
    _, state = step_n(state)
    _, state = step_v(state, 3.0)  # mean 3.0 > 2.0: cut
    assert float(state.learning_rate) == 0.5 and int(state.last_epoch) == 2


def test_report_metric_steps_every_nested_state():
    tx = optax.multi_transform(
        {"x": reduce_on_plateau(1.0, factor=0.5, patience=0), "y": optax.sgd(0.1)},
        {"p": "x", "q": "y"},
    )
    inner = optax.chain(optax.identity(), reduce_on_plateau(2.0, factor=0.5, patience=0))
    state = (tx.init({"p": jnp.zeros(1), "q": jnp.zeros(1)}), inner.init(jnp.zeros(1)))
    report = jax.jit(report_metric)
    state = report(report(state, 1.0), 2.0)
    lrs = [float(current_lr(s)) for s in (state[0], state[1])]
    assert lrs == [0.5, 1.0]


def test_counters_saturate_without_overflow():
    tx = reduce_on_plateau(1.0, patience=2**40, cooldown=2**40)
    state = tx.init(None)
    big = jnp.asarray(2**31 - 1, jnp.int32)
    state = state._replace(num_bad_epochs=big, last_epoch=big, best=jnp.float32(0.0))
    state = jax.jit(report_metric)(state, 1.0)
    assert int(state.num_bad_epochs) == 2**31 - 1 and int(state.last_epoch) == 2**31 - 1
    assert float(state.learning_rate) == 1.0


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(learning_rate=math.nan), "learning_rate"),
        (dict(mode="minimum"), "mode"),
        (dict(threshold_mode="relative"), "threshold_mode"),
        (dict(factor=1.0), "factor"),
        (dict(factor=1.5), "factor"),
        (dict(factor=0.0), "factor"),
        (dict(factor=-0.5), "factor"),
        (dict(patience=-1), "patience"),
        (dict(patience=1.5), "patience"),
        (dict(patience="3"), "patience"),
        (dict(cooldown=-1), "cooldown"),
        (dict(cooldown=0.5), "cooldown"),
        (dict(min_lr=-1e-3), "min_lr"),
        (dict(eps=-1e-9), "eps"),
        (dict(threshold=-1e-4), "threshold"),
        (dict(threshold=math.inf), "threshold"),
        (dict(accumulation_size=0), "accumulation_size"),
        (dict(accumulation_size=2.5), "accumulation_size"),
    ],
)
def test_bad_arguments(kwargs, name):
    kwargs = {"learning_rate": 0.1, **kwargs}
    with pytest.raises(ValueError, match=name):
        reduce_on_plateau(**kwargs)


def test_bad_metrics():
    state = reduce_on_plateau(0.1).init(jnp.zeros(1))
    for bad in (jnp.ones(2), [1.0], np.ones((1, 1)), "low", 1 + 2j):
        with pytest.raises(ValueError, match="metric"):
            report_metric(state, bad)
    with pytest.raises(ValueError, match="no ReduceOnPlateauState"):
        report_metric(optax.sgd(0.1).init(jnp.zeros(1)), 1.0)
    tx = reduce_on_plateau(0.1)
    with pytest.raises(ValueError, match="value"):
        jax.jit(lambda s: tx.update(jnp.ones(1), s, value=jnp.ones(3)))(state)
