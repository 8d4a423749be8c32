"""The contract every public transformation of autolr_jax honours.

Each row of ``CASES`` builds one transformation; every test below runs on every
row: inside ``optax.chain`` on a small least-squares problem, jitted, with the
parameters' dtype kept, no recompilation while the learning rate moves, the
state surviving a plain-pytree checkpoint round-trip, and ``current_lr``
finding the learning rate at any depth.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import autolr_jax as al

# A small, well-conditioned least-squares problem: loss = mean((X w - y)^2) / 2.
_RNG = np.random.default_rng(0)
_X = jnp.asarray(_RNG.normal(size=(32, 4)), jnp.float32)
_Y = jnp.asarray(_X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1 * _RNG.normal(size=32), jnp.float32)
BATCH = (_X, _Y)


def loss_fn(params, batch):
    x, y = batch
    pred = x @ params["w"].astype(jnp.float32) + params["b"].astype(jnp.float32)
    return 0.5 * jnp.mean((pred - y) ** 2)


def init_params(dtype=jnp.float32):
    return {"w": jnp.zeros(4, dtype), "b": jnp.zeros((), dtype)}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], optax.GradientTransformation]
    # extra keyword arguments update() needs (besides params)
    extra: Callable[[int, float], dict] = lambda step, loss: {}
    # after the jitted update, outside jit (e.g. a once-per-epoch metric)
    after: Callable | None = None


def _plateau_after(state, step, loss):
    # Feed a metric that never improves so the learning rate is cut during the run.
    return al.report_metric(state, jnp.float32(1.0))


CASES = [
    Case("step_lr", lambda: al.scale_by_lr_schedule(al.step_lr(0.1, step_size=2, gamma=0.5))),
    Case("multistep_lr", lambda: al.scale_by_lr_schedule(al.multistep_lr(0.1, [1, 3, 3]))),
    Case("exponential_lr", lambda: al.scale_by_lr_schedule(al.exponential_lr(0.1, 0.9))),
    Case("constant_lr", lambda: al.scale_by_lr_schedule(al.constant_lr(0.1, 0.5, 2))),
    Case("linear_lr", lambda: al.scale_by_lr_schedule(al.linear_lr(0.1, 0.25, 1.0, 4))),
    Case("polynomial_lr", lambda: al.scale_by_lr_schedule(al.polynomial_lr(0.1, 6, 2.0))),
    Case("cosine_annealing_lr", lambda: al.scale_by_lr_schedule(al.cosine_annealing_lr(0.1, 4))),
    Case(
        "cosine_annealing_warm_restarts",
        lambda: al.scale_by_lr_schedule(al.cosine_annealing_warm_restarts(0.1, 2, 2)),
    ),
    Case("cyclic_lr", lambda: al.scale_by_lr_schedule(al.cyclic_lr(0.01, 0.1, 2))),
    Case("one_cycle_lr", lambda: al.scale_by_lr_schedule(al.one_cycle_lr(0.1, 10))),
    Case("lambda_lr", lambda: al.scale_by_lr_schedule(al.lambda_lr(0.1, lambda t: 1.0 / (1 + t)))),
    Case("warmup_cosine", lambda: al.scale_by_lr_schedule(al.warmup_cosine(0.1, 2, 10))),
    Case(
        "sequential",
        lambda: al.scale_by_lr_schedule(
            al.sequential([al.constant_lr(0.1, 0.5, 2), al.exponential_lr(0.1, 0.8)], [3])
        ),
    ),
    Case(
        "chained",
        lambda: al.scale_by_lr_schedule(
            al.chained(al.step_lr(0.1, 2, 0.5), al.exponential_lr(0.1, 0.95))
        ),
    ),
    Case("per_epoch", lambda: al.scale_by_lr_schedule(al.per_epoch(al.step_lr(0.1, 1, 0.5), 2))),
    Case(
        "reduce_on_plateau_value",
        lambda: al.reduce_on_plateau(0.1, patience=0),
        extra=lambda step, loss: {"value": jnp.float32(1.0)},
    ),
    Case(
        "reduce_on_plateau_report",
        lambda: al.reduce_on_plateau(0.1, patience=1),
        after=_plateau_after,
    ),
    Case(
        "auto_lr_sgd",
        lambda: al.auto_lr(
            optax.sgd, learning_rate=0.05, loss_fn=loss_fn, factors=(2.0, 1.0, 0.5), every=2
        ),
        extra=lambda step, loss: {"batch": BATCH},
    ),
    Case(
        "auto_lr_adam",
        lambda: al.auto_lr(optax.adam, learning_rate=0.05, loss_fn=loss_fn, every=3, b1=0.8),
        extra=lambda step, loss: {"batch": BATCH},
    ),
    Case(
        "auto_lr_zscore",
        lambda: al.auto_lr(
            optax.sgd, learning_rate=0.05, loss_fn=loss_fn, every=2, score="zscore_exp"
        ),
        extra=lambda step, loss: {"batch": BATCH},
    ),
    Case(
        "auto_lr_lookahead_rank",
        lambda: al.auto_lr(
            optax.sgd,
            learning_rate=0.05,
            loss_fn=loss_fn,
            every=2,
            lookahead=3,
            score="rank_exp",
            rule="seed",
            momentum=0.9,
        ),
        extra=lambda step, loss: {"batch": jax.tree.map(lambda x: jnp.stack([x] * 3), BATCH)},
    ),
    Case(
        "auto_lr_armijo_search_wsd",
        lambda: al.auto_lr(
            optax.sgd,
            learning_rate=1e-3,
            loss_fn=loss_fn,
            every=2,
            rule="armijo",
            initial_search=True,
            schedule=al.warmup_stable_decay(1.0, 8, decay_fraction=0.25),
            momentum=0.9,
        ),
        extra=lambda step, loss: {"batch": BATCH},
    ),
    Case(
        "auto_lr_parabola_adam",
        lambda: al.auto_lr(
            optax.adam,
            learning_rate=0.05,
            loss_fn=loss_fn,
            every=2,
            rule="parabola",
            factors=(4.0, 2.0, 1.0, 0.5, 0.25),
        ),
        extra=lambda step, loss: {"batch": BATCH},
    ),
    Case(
        "auto_lr_guard_memory",
        lambda: al.auto_lr(
            optax.sgd,
            learning_rate=0.05,
            loss_fn=loss_fn,
            every=2,
            guard_memory=4,
            momentum=0.9,
        ),
        extra=lambda step, loss: {"batch": BATCH},
    ),
    Case(
        "auto_lr_guard_on_value",
        lambda: al.auto_lr(
            optax.sgd,
            learning_rate=0.05,
            loss_fn=loss_fn,
            every=2,
            guard_on="value",
            momentum=0.9,
        ),
        # A training loss that falls, then jumps: the guard compares interval means.
        extra=lambda step, loss: {
            "batch": BATCH,
            "value": jnp.float32(1.0 / (1 + step) if step < 5 else 4.0),
        },
    ),
    Case(
        # The default guard_on=None with value= given: the guard compares interval means.
        "auto_lr_default_guard_given_value",
        lambda: al.auto_lr(optax.sgd, learning_rate=0.05, loss_fn=loss_fn, every=2),
        # The same falling-then-jumping training loss as the guard_on="value" row.
        extra=lambda step, loss: {
            "batch": BATCH,
            "value": jnp.float32(1.0 / (1 + step) if step < 5 else 4.0),
        },
    ),
    Case(
        # Adam whose probes scale the momentum-free step (b1=0); the twin keeps its state.
        "auto_lr_probe_optimizer",
        lambda: al.auto_lr(
            optax.adam,
            learning_rate=0.05,
            loss_fn=loss_fn,
            every=2,
            probe_optimizer=functools.partial(optax.adam, b1=0.0),
        ),
        extra=lambda step, loss: {"batch": BATCH},
    ),
    Case(
        # The default probe_optimizer="auto" around Adam: the twin built from optax.adam's b1.
        "auto_lr_adam_auto_twin",
        lambda: al.auto_lr(optax.adam, learning_rate=0.05, loss_fn=loss_fn, every=2),
        extra=lambda step, loss: {"batch": BATCH},
    ),
    Case(
        # Momentum SGD whose probes scale SGD's step at 1 / (1 - momentum) times the level.
        "auto_lr_sgd_momentum_free",
        lambda: al.auto_lr(
            optax.sgd,
            learning_rate=0.05,
            loss_fn=loss_fn,
            every=2,
            momentum=0.9,
            probe_optimizer="momentum_free",
        ),
        extra=lambda step, loss: {"batch": BATCH},
    ),
    Case(
        "auto_lr_custom_rule_guard",
        lambda: al.auto_lr(
            optax.sgd,
            learning_rate=0.05,
            loss_fn=loss_fn,
            every=2,
            rule=lambda losses, factors, loss0, slope: factors[jnp.argmin(losses)],
            guard=True,
        ),
        extra=lambda step, loss: {"batch": BATCH},
    ),
]
IDS = [c.name for c in CASES]


def _chain(case: Case):
    # Clipping first, as users do: the transformation must forward extra args and
    # work on already transformed updates.
    return optax.chain(optax.clip_by_global_norm(10.0), case.make())


def _make_step(tx, counter=None):
    def step(params, state, extra):
        if counter is not None:
            counter.append(1)  # runs once per trace, i.e. once per compilation
        loss, grads = jax.value_and_grad(loss_fn)(params, BATCH)
        updates, state = tx.update(grads, state, params, **extra)
        return optax.apply_updates(params, updates), state, loss

    return jax.jit(step)


def _run(case: Case, tx, params, state, steps, start=0, step_fn=None):
    step_fn = step_fn or _make_step(tx)
    lrs, losses = [], []
    for i in range(start, start + steps):
        params, state, loss = step_fn(params, state, case.extra(i, None))
        if case.after is not None:
            state = case.after(state, i, loss)
        lrs.append(float(al.current_lr(state)))
        losses.append(float(loss))
    return params, state, lrs, losses


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_trains_in_chain_and_reports_lr(case):
    tx = _chain(case)
    params = init_params()
    state = tx.init(params)
    params, state, lrs, losses = _run(case, tx, params, state, 8)
    assert all(np.isfinite(lrs)) and all(lr >= 0 for lr in lrs) and lrs[0] > 0
    assert losses[-1] < losses[0], f"{case.name} did not reduce the loss: {losses}"
    assert al.current_lr(state).dtype == jnp.float32


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_no_recompilation_while_lr_changes(case):
    tx = _chain(case)
    params = init_params()
    state = tx.init(params)
    traces = []
    step_fn = _make_step(tx, traces)
    _, _, lrs, _ = _run(case, tx, params, state, 6, step_fn=step_fn)
    assert len(traces) == 1, f"{case.name} compiled {len(traces)} times over lrs {lrs}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_dtype_kept_and_lr_float32(case):
    tx = _chain(case)
    params = init_params(jnp.bfloat16)
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = jax.jit(lambda g, s, p: tx.update(g, s, p, **case.extra(0, None)))(
        grads, state, params
    )
    for leaf in jax.tree.leaves(updates):
        assert leaf.dtype == jnp.bfloat16
    assert al.current_lr(state).dtype == jnp.float32


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_checkpoint_round_trip_continues_identically(case):
    tx = _chain(case)
    params = init_params()
    state = tx.init(params)
    step_fn = _make_step(tx)
    params, state, _, _ = _run(case, tx, params, state, 3, step_fn=step_fn)
    # A plain-pytree checkpoint: host NumPy arrays, then back to device arrays.
    leaves, treedef = jax.tree.flatten(state)
    saved = [np.array(x) for x in leaves]
    restored = jax.tree.unflatten(treedef, [jnp.asarray(x) for x in saved])
    p1, s1, lrs1, _ = _run(case, tx, params, state, 4, start=3, step_fn=step_fn)
    p2, s2, lrs2, _ = _run(case, tx, params, restored, 4, start=3, step_fn=step_fn)
    assert lrs1 == lrs2
    chex_equal = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), p1, p2)
    assert all(jax.tree.leaves(chex_equal))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_current_lr_found_at_depth(case):
    tx = optax.chain(
        optax.identity(),
        optax.chain(optax.clip_by_global_norm(10.0), optax.chain(case.make())),
    )
    state = tx.init(init_params())
    lr = al.current_lr(state)
    assert lr.shape == () and np.isfinite(float(lr))
    # Two learning rates in one state are ambiguous and say so.
    both = optax.chain(case.make(), al.scale_by_lr_schedule(0.1)).init(init_params())
    with pytest.raises(ValueError, match="ambiguous"):
        al.current_lr(both)


def test_current_lr_on_plain_state_explains():
    with pytest.raises(ValueError, match="holds no learning rate"):
        al.current_lr(optax.sgd(0.1).init(init_params()))


def test_current_lr_reads_inject_hyperparams():
    tx = optax.chain(optax.clip(1.0), optax.inject_hyperparams(optax.adam)(learning_rate=0.25))
    assert float(al.current_lr(tx.init(init_params()))) == 0.25


def _as_restored(tree):
    """``tree`` as a checkpointer restores it without a target: NamedTuples as dicts of
    their fields, tuples as lists, arrays as NumPy arrays (what orbax's
    ``StandardCheckpointer().restore(path)`` gives; tests/test_bad_input.py does the
    real round trip)."""
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return {f: _as_restored(getattr(tree, f)) for f in tree._fields}
    if isinstance(tree, (tuple, list)):
        return [_as_restored(x) for x in tree]
    if isinstance(tree, dict):
        return {k: _as_restored(v) for k, v in tree.items()}
    return tree if tree is None else np.asarray(tree)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_current_lr_reads_a_state_restored_without_target(case):
    state = _chain(case).init(init_params())
    restored = _as_restored(state)
    assert float(al.current_lr(restored)) == float(al.current_lr(state))


# --- the options of auto_lr's rules: rule, initial_search, schedule, guard -----------

RULE_ROWS = {
    "armijo": dict(rule="armijo"),
    "parabola": dict(rule="parabola", factors=(4.0, 2.0, 1.0, 0.5, 0.25)),
    "seed_search_wsd": dict(
        initial_search=True, guard=True, schedule=al.warmup_stable_decay(1.0, 6)
    ),
    "armijo_search": dict(rule="armijo", initial_search=True),
    "armijo_memory": dict(rule="armijo", guard_memory=3),
    "armijo_guard_on_value": dict(rule="armijo", guard_on="value"),
    "armijo_probe_optimizer": dict(
        rule="armijo", probe_optimizer=lambda learning_rate: optax.sgd(learning_rate * 10.0)
    ),
}


def _run_rule(loss, kwargs, lr=0.05, steps=6, **extra_kwargs):
    tx = al.auto_lr(optax.sgd, lr, loss_fn=loss, every=2, **kwargs, **extra_kwargs)
    params = init_params()
    state = tx.init(params)

    value = kwargs.get("guard_on") == "value"

    @jax.jit
    def step(params, state):
        loss_value, grads = jax.value_and_grad(loss)(params, BATCH)
        grads = jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), grads)
        extra = {"value": loss_value} if value else {}
        updates, state = tx.update(grads, state, params, batch=BATCH, **extra)
        return optax.apply_updates(params, updates), state

    lrs = []
    for _ in range(steps):
        params, state = step(params, state)
        lrs.append(float(al.current_lr(state)))
    return lrs, state


@pytest.mark.parametrize("name", RULE_ROWS)
def test_rules_survive_nan_and_inf_candidates(name):
    # Any step longer than a small one gives NaN (or inf): those candidates are excluded.
    def loss(params, batch):
        base = loss_fn(params, batch)
        size = jnp.sum(jnp.abs(params["w"]))
        return jnp.where(size > 0.5, jnp.where(size > 1.0, jnp.inf, jnp.nan), base)

    lrs, state = _run_rule(loss, RULE_ROWS[name])
    assert all(np.isfinite(lrs)) and all(lr > 0 for lr in lrs)
    assert int(state.telemetry.decision) != 0


@pytest.mark.parametrize("name", RULE_ROWS)
def test_rules_on_all_equal_losses_do_not_drift_up(name):
    def flat(params, batch):
        return 0.0 * loss_fn(params, batch) + 1.0

    lrs, state = _run_rule(flat, RULE_ROWS[name])
    assert all(np.isfinite(lrs)) and max(lrs) <= float(np.float32(0.05))
    decision = al.auto.DECISIONS
    assert int(state.telemetry.decision) in (
        decision["stay"],
        decision["backoff"],
        decision["seed"],
        decision["search_none"],
    )


@pytest.mark.parametrize("name", RULE_ROWS)
def test_rules_keep_min_lr_and_max_lr(name):
    kwargs = {k: v for k, v in RULE_ROWS[name].items() if k != "schedule"}
    lrs, _ = _run_rule(loss_fn, kwargs, lr=1e-3, min_lr=1e-4, max_lr=2e-3)
    assert all(1e-4 <= lr <= 2e-3 * (1 + 1e-6) for lr in lrs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rule="greedy"), "rule must be 'seed', 'armijo', 'parabola' or a callable"),
        (dict(rule="armijo", lookahead=2), "rule='armijo'.*lookahead=1"),
        (dict(schedule=0.5), "schedule must be None or an Optax schedule"),
        (dict(schedule=lambda t: 2.0), r"schedule must return a scalar in \[0, 1\]"),
        (dict(schedule=lambda t: jnp.ones(3)), r"schedule must return a scalar"),
        (dict(initial_search="yes"), "initial_search must be True or False"),
        (dict(probe_during_decay=1), "probe_during_decay must be True or False"),
        (dict(guard="on"), "guard must be True, False or None"),
        (dict(search_safety=0.5), "search_safety must be in"),
        (dict(guard_tolerance=-1.0), "guard_tolerance must be >= 0"),
        (dict(guard_memory=-1), "guard_memory must be"),
        (dict(guard_memory=2.5), "guard_memory must be"),
        (dict(guard_memory=3, guard=False), "guard_memory=3 .* needs the guard on"),
        (dict(guard_memory=3, rule="seed"), "guard_memory=3 .* needs the guard on"),
        (dict(guard_on="loss"), "guard_on must be None or one of"),
        (dict(guard_on=1), "guard_on must be None or one of"),
        (dict(guard_on="value", guard=False), "guard_on='value' .* needs the guard on"),
        (dict(guard_on="value", rule="seed"), "guard_on='value' .* needs the guard on"),
        (dict(initial_search=True, learning_rate=1e36), "learning_rate must be in.*initial_search"),
        (dict(probe_optimizer="sgd"), r"probe_optimizer must be None, one of \('auto'"),
        (dict(probe_optimizer=optax.sgd(0.1)), "probe_optimizer must be None, one of"),
        (dict(probe_optimizer="momentum_free"), "probe_optimizer='momentum_free' needs"),
        (dict(momentum=1.0), r"momentum must be in \[0, 1\)"),
        (
            dict(probe_optimizer=lambda lr: optax.sgd(lr)),
            "probe_optimizer must be an Optax optimizer factory with a learning_rate argument",
        ),
        (
            dict(probe_optimizer=optax.sgd, rule="seed", lookahead=2),
            "probe_optimizer needs lookahead=1",
        ),
    ],
)
def test_rule_options_refuse_bad_arguments(kwargs, match):
    kwargs = {"learning_rate": 0.05, **kwargs}
    with pytest.raises(ValueError, match=match):
        al.auto_lr(optax.sgd, loss_fn=loss_fn, every=2, **kwargs)


def test_rule_parameters_refuse_bad_arguments():
    with pytest.raises(ValueError, match="c must be in"):
        al.armijo_rule(c=1.0)
    with pytest.raises(ValueError, match="min_gain must be >= 0"):
        al.parabola_rule(min_gain=-1.0)
