"""Bad input never gets through: every public constructor and function, checked as used.

Numbers are checked as the float32 values they become (``1e300`` is inf there,
``1e-300`` is 0), strings and bools are not numbers, counts saturate instead of
wrapping, ``current_lr`` reads states restored without a target, and a bad
metric is our ValueError, not JAX's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import autolr_jax as al
from autolr_jax._validation import check_positive_sequence, check_real, check_strategy


def _loss(params, batch):
    return jnp.mean((batch @ params) ** 2)


# Every constructor with a valid call, and the real-valued arguments to spoil in it.
CONSTRUCTORS = [
    (al.step_lr, dict(init_value=0.1, step_size=3, gamma=0.5), ["init_value", "gamma"]),
    (al.multistep_lr, dict(init_value=0.1, milestones=[2], gamma=0.5), ["init_value", "gamma"]),
    (al.exponential_lr, dict(init_value=0.1, gamma=0.9), ["init_value", "gamma"]),
    (al.constant_lr, dict(init_value=0.1, factor=0.5), ["init_value", "factor"]),
    (
        al.linear_lr,
        dict(init_value=0.1, start_factor=0.5, end_factor=1.0),
        ["init_value", "start_factor", "end_factor"],
    ),
    (al.polynomial_lr, dict(init_value=0.1, power=2.0), ["init_value", "power"]),
    (
        al.cosine_annealing_lr,
        dict(init_value=0.1, t_max=5, eta_min=0.01),
        ["init_value", "eta_min"],
    ),
    (
        al.cosine_annealing_warm_restarts,
        dict(init_value=0.1, t_0=3, eta_min=0.01),
        ["init_value", "eta_min"],
    ),
    (
        al.warmup_cosine,
        dict(init_value=0.1, warmup_steps=2, total_steps=9, warmup_start_factor=0.5, eta_min=0.0),
        ["init_value", "warmup_start_factor", "eta_min"],
    ),
    (
        al.cyclic_lr,
        dict(base_lr=0.01, max_lr=0.1, mode="exp_range", gamma=0.99),
        ["base_lr", "max_lr", "gamma"],
    ),
    (
        al.one_cycle_lr,
        dict(max_lr=0.1, total_steps=10, div_factor=5.0, final_div_factor=10.0),
        ["max_lr", "div_factor", "final_div_factor"],
    ),
    (al.lambda_lr, dict(init_value=0.1, lr_lambda=lambda t: 1.0), ["init_value"]),
    (
        al.reduce_on_plateau,
        dict(learning_rate=0.1, factor=0.5, threshold=1e-4, min_lr=0.0, eps=1e-8),
        ["learning_rate", "factor", "threshold", "min_lr", "eps"],
    ),
    (al.scale_by_lr_schedule, dict(schedule=0.1), ["schedule"]),
    (
        al.auto_lr,
        dict(optimizer=optax.sgd, learning_rate=0.1, loss_fn=_loss, every=2, min_lr=0.0),
        ["learning_rate", "min_lr", "max_lr"],
    ),
    (al.softmax_score, dict(temperature=1.0), ["temperature"]),
    (al.lr_find, dict(min_lr=1e-3, max_lr=1.0, num_steps=3), ["min_lr", "max_lr"]),
]
SPOILED = [(c, kw, arg) for c, kw, args in CONSTRUCTORS for arg in args]
IDS = [f"{c.__name__}-{arg}" for c, _, arg in SPOILED]


def _call(constructor, kwargs):
    if constructor is al.auto_lr:
        kwargs = dict(kwargs)
        return constructor(kwargs.pop("optimizer"), **kwargs)
    if constructor is al.lr_find:
        batches = [jnp.ones((4, 2))] * 3
        return constructor(optax.sgd, jnp.zeros(2), _loss, batches, **kwargs)
    return constructor(**kwargs)


# Arguments that must be > 0 (1e-300 is 0 in float32), and those that may be arrays.
POSITIVE = {"gamma", "start_factor", "div_factor", "final_div_factor", "temperature"}
POSITIVE_IN = {
    al.reduce_on_plateau: {"learning_rate", "factor"},
    al.auto_lr: {"learning_rate"},
    al.lr_find: {"min_lr"},
}
SCALAR_ONLY = (
    al.reduce_on_plateau, al.scale_by_lr_schedule, al.auto_lr, al.softmax_score, al.lr_find
)  # fmt: skip


@pytest.mark.parametrize("constructor, kwargs, arg", SPOILED, ids=IDS)
def test_numbers_are_checked_as_float32_and_strings_bools_lists_refused(constructor, kwargs, arg):
    _call(constructor, kwargs)  # the valid call works
    bad_values = ["0.1", True, np.bool_(True), None, np.asarray("0.1")]
    if arg != "max_lr":  # max_lr may be inf, and 1e300 is inf in float32
        bad_values += [1e300, np.float64(-1e300), np.asarray([0.1, 1e300])]
    if arg in POSITIVE or arg in POSITIVE_IN.get(constructor, ()):
        bad_values.append(1e-300)  # > 0, but 0 in float32
    if constructor in SCALAR_ONLY:
        bad_values.append([0.1, 0.2])  # elsewhere arrays of hyperparameters are allowed
    for bad in bad_values:
        with pytest.raises(ValueError, match=arg):
            _call(constructor, {**kwargs, arg: bad})


def test_the_examples_of_the_issue():
    with pytest.raises(ValueError, match=r"init_value must be >= 0.0 and finite in float32"):
        al.step_lr(1e300, 10)
    with pytest.raises(ValueError, match="learning_rate"):
        al.auto_lr(optax.sgd, 1e300, loss_fn=_loss, every=1, rule="seed", initial_search=False)
    with pytest.raises(ValueError, match=r"factors\[1\] must be > 0.0 and at least"):
        al.auto_lr(
            optax.sgd,
            0.1,
            loss_fn=_loss,
            every=1,
            factors=(1.0, 1e-300),
            rule="seed",
            initial_search=False,
        )
    with pytest.raises(ValueError, match="init_value must be a real number"):
        al.step_lr("0.1", 2)
    with pytest.raises(ValueError, match="schedule must be a real number"):
        al.scale_by_lr_schedule("0.1")
    with pytest.raises(ValueError, match="learning_rate must be a real number"):
        al.auto_lr(
            optax.sgd,
            learning_rate="0.1",
            loss_fn=_loss,
            every=1,
            rule="seed",
            initial_search=False,
        )
    with pytest.raises(ValueError, match=r"learning_rate must be a real number \(a scalar\)"):
        al.auto_lr(
            optax.sgd,
            learning_rate=[0.1, 0.2],
            loss_fn=_loss,
            every=1,
            rule="seed",
            initial_search=False,
        )
    with pytest.raises(ValueError, match="factors must be a non-empty 1-D sequence"):
        al.auto_lr(
            optax.sgd,
            0.1,
            loss_fn=_loss,
            every=1,
            factors=[[2.0, 1.0], [0.5, 0.25]],
            rule="seed",
            initial_search=False,
        )


def test_products_of_learning_rate_and_factors_must_fit_float32():
    # learning_rate * factor below the smallest normal float32, or above its maximum.
    with pytest.raises(ValueError, match=r"learning_rate must be in \["):
        al.auto_lr(optax.sgd, 2e-38, loss_fn=_loss, every=1, rule="seed", initial_search=False)
    with pytest.raises(ValueError, match=r"learning_rate must be in \["):
        al.auto_lr(
            optax.sgd,
            3e38,
            loss_fn=_loss,
            every=1,
            factors=(2.0, 1.0),
            rule="seed",
            initial_search=False,
        )
    with pytest.raises(ValueError, match="max_lr must be >="):
        al.auto_lr(
            optax.sgd, 0.1, loss_fn=_loss, every=1, max_lr=2e-38, rule="seed", initial_search=False
        )
    with pytest.raises(ValueError, match="min_lr must be in"):
        al.auto_lr(
            optax.sgd, 0.1, loss_fn=_loss, every=1, min_lr=3e38, rule="seed", initial_search=False
        )
    tree = al.alr_tree(_loss, optax.sgd, factors=(4.0, 1.0))
    with pytest.raises(ValueError, match=r"learning_rates\[1\] times every factor"):
        tree.init(jnp.zeros(2), learning_rates=(0.1, 1e38))
    with pytest.raises(ValueError, match=r"factors\[1\]"):
        al.alr_tree(_loss, optax.sgd, factors=(1.0, 1e-300))
    with pytest.raises(ValueError, match=r"factors\[0\] must be a real number"):
        al.alr_tree(_loss, optax.sgd, factors=("2.0", 1.0))
    with pytest.raises(ValueError, match=r"factors\[0\] must be a real number"):
        al.auto_lr(
            optax.sgd,
            0.1,
            loss_fn=_loss,
            every=1,
            factors=(True, 0.5),
            rule="seed",
            initial_search=False,
        )


def test_validation_helpers():
    assert check_positive_sequence("f", np.asarray([2.0, 0.5])) == (2.0, 0.5)
    assert check_positive_sequence("f", (jnp.float32(2.0), 1)) == (2.0, 1.0)
    for bad in ((), 2.0, "ab", np.ones((2, 2)), [[1.0]], {1.0, 2.0}, None):
        with pytest.raises(ValueError, match="f must be a non-empty 1-D sequence"):
            check_positive_sequence("f", bad)
    with pytest.raises(ValueError, match="distinct"):
        check_positive_sequence("f", (1.0, 1.0), distinct=True)
    assert check_positive_sequence("f", (1.0, 1.0)) == (1.0, 1.0)

    assert check_strategy("map", 2, choices=("auto", "vmap", "map"), candidates="c") == 2
    assert check_strategy("vmap", None, choices=("auto", "vmap", "map"), candidates="c") is None
    with pytest.raises(ValueError, match="chunk_size must be None with strategy='vmap'"):
        check_strategy("vmap", 2, choices=("auto", "vmap", "map"), candidates="c")
    with pytest.raises(ValueError, match="strategy must be one of"):
        check_strategy(np.asarray(["map"]), None, choices=("auto", "vmap", "map"), candidates="c")

    # Concrete arrays are checked element by element; tracers pass through.
    check_real("x", np.asarray([0.1, 0.2]), lo=0.0)
    with pytest.raises(ValueError, match="x must be"):
        check_real("x", np.asarray([0.1, 1e300]), lo=0.0)
    with pytest.raises(ValueError, match="dtype"):
        check_real("x", np.asarray([True]), lo=0.0)
    jax.jit(lambda v: check_real("x", v, lo=0.0, scalar=True))(jnp.ones(3))
    # A value that float32 rounds outside an open range is refused: 1 - 1e-9 is 1.0.
    with pytest.raises(ValueError, match="in float32"):
        al.reduce_on_plateau(0.1, factor=1 - 1e-9)


# -------------------------------------------------------------------- counts saturate


def _schedules():
    out = [
        al.step_lr(1.0, 1, 0.5),
        al.multistep_lr(1.0, [3, 2**31 - 1], 0.5),
        al.exponential_lr(1.0, 0.999),
        al.constant_lr(1.0, 0.5, 7),
        al.linear_lr(1.0, 0.5, 1.0, 7),
        al.polynomial_lr(1.0, 7, 2.0),
        al.cosine_annealing_lr(1.0, 7),
        al.cosine_annealing_warm_restarts(1.0, 7),
        al.cosine_annealing_warm_restarts(1.0, 7, 2),
        al.warmup_cosine(1.0, 2, 9),
        al.cyclic_lr(0.1, 1.0, 3),
        al.one_cycle_lr(1.0, 10),
        al.lambda_lr(1.0, lambda t: 1.0 / (1.0 + t.astype(jnp.float32))),
        al.sequential([al.constant_lr(1.0, 0.5, 2), al.exponential_lr(1.0, 0.9)], [3]),
        al.chained(al.step_lr(1.0, 5, 0.5), al.exponential_lr(1.0, 0.95)),
        al.per_epoch(al.step_lr(1.0, 1, 0.5), 3),
    ]
    if hasattr(al, "warmup_stable_decay"):
        out.append(al.warmup_stable_decay(1.0, 100, warmup_steps=5))
    return out


def test_large_counts_saturate_instead_of_wrapping():
    # Without jax_enable_x64, jnp.asarray(np.int64(2**32 + 3)) is int32 3: the schedule
    # gave its value at count 3. Every schedule saturates at 2**31 - 1 instead.
    wide = np.asarray([3, 2**32 + 3, -(2**40)], np.int64)
    fits = np.asarray([3, 2**31 - 1, 0], np.int32)
    for schedule in _schedules():
        np.testing.assert_array_equal(np.asarray(schedule(wide)), np.asarray(schedule(fits)))
    step = al.step_lr(1.0, 1, 0.5)
    assert float(step(np.int64(2**32 + 3))) == 0.0  # not 0.125
    for count in (2**32 + 3, 2**70, np.uint64(2**63), np.uint32(2**31)):
        assert float(step(count)) == float(step(np.int32(2**31 - 1))) == 0.0
    assert float(step(-(2**70))) == 1.0
    # Counts that fit are unchanged, and float counts are still refused.
    assert float(step(np.int64(3))) == 0.125
    with pytest.raises(TypeError, match="integer step count"):
        step(np.float64(3.0))


# --------------------------------------------------- current_lr on restored (dict) states


def _states():
    p = jnp.zeros(3)
    sched = optax.chain(optax.clip(1.0), al.scale_by_lr_schedule(al.step_lr(0.1, 1, 0.5)))
    plateau = optax.chain(optax.scale_by_adam(), al.reduce_on_plateau(0.2))
    auto = al.auto_lr(
        optax.sgd, 0.3, loss_fn=_loss, every=1, momentum=0.9, rule="seed", initial_search=False
    )
    states = {}
    # (optax.inject_hyperparams states restore as auto_lr's inject_state does.)
    for name, tx in [("sched", sched), ("plateau", plateau), ("auto", auto)]:
        state = tx.init(p)
        if name == "auto":
            _, state = tx.update(jnp.ones(3), state, p, batch=jnp.ones((2, 3)))
        elif name == "plateau":
            state = al.report_metric(state, 1.0)
        else:
            _, state = tx.update(jnp.ones(3), state, p)
        states[name] = state
    return states


def test_current_lr_reads_states_restored_by_orbax_without_a_target(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    states = _states()
    with ocp.StandardCheckpointer() as ckpt:
        for name, state in states.items():
            ckpt.save(tmp_path / name, state)
    with ocp.StandardCheckpointer() as ckpt:
        for name, state in states.items():
            restored = ckpt.restore(tmp_path / name)
            assert type(restored) in (list, dict)  # the NamedTuples are gone
            assert float(al.current_lr(restored)) == float(al.current_lr(state)), name


def test_current_lr_says_where_it_looked():
    with pytest.raises(ValueError) as info:
        al.current_lr([{"count": jnp.zeros(())}, {"mu": jnp.zeros(2)}])
    message = str(info.value)
    for where in ("state[0]['count']", "state[1]['mu']", "restore(path, target=", "dicts"):
        assert where in message, message
    # A dict entry that is not a scalar learning rate is not one (an injected schedule's
    # hyperparams_states, say), and two are ambiguous with their paths.
    with pytest.raises(ValueError, match="holds no learning rate"):
        al.current_lr({"learning_rate": {"count": jnp.zeros((), jnp.int32)}})
    two = [{"learning_rate": jnp.float32(0.1)}, {"learning_rate": jnp.float32(0.2)}]
    with pytest.raises(ValueError, match=r"\(state\[0\], state\[1\]\); it is ambiguous"):
        al.current_lr(two)


# --------------------------------------------------------------------- report_metric


def test_report_metric_refuses_non_scalars_with_our_error():
    state = optax.chain(optax.sgd(0.1), al.reduce_on_plateau(0.1)).init(jnp.zeros(2))
    report = jax.jit(al.report_metric)
    for bad, fn in [(None, al.report_metric), ([1.0], report), ((1.0,), report), (None, report)]:
        with pytest.raises(ValueError, match=r"metric must be a real scalar"):
            fn(state, bad)
    tx = al.reduce_on_plateau(0.1)
    with pytest.raises(ValueError, match=r"value must be a real scalar"):
        jax.jit(lambda s, v: tx.update(jnp.ones(1), s, value=v))(tx.init(jnp.zeros(1)), [1.0])
    assert float(al.current_lr(report(state, jnp.float32(1.0)))) == pytest.approx(0.1)
