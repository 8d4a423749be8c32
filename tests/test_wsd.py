"""``warmup_stable_decay`` against a float64 closed form written here from its definition.

The oracle below is the piecewise formula of the docstring evaluated in plain
Python floats (math.sqrt, math.cos), independent of the float32 weight
arithmetic of the implementation. It is checked at every count in
``[0, total_steps + 5]`` under ``jax.jit``, at every boundary, as a budget shape
in ``[0, 1]`` over random parameters, inside Optax optimizers, and at int32
counts up to ``2**31 - 1``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import autolr_jax
from autolr_jax import scale_by_lr_schedule, warmup_stable_decay

INT32_MAX = 2**31 - 1
SHAPES = ("linear", "sqrt", "cosine")


def oracle(t, init, total, warmup=0, frac=0.2, shape="linear", start=0.0, end=0.0):
    """The learning rate at update ``t``, in float64, straight from the definition."""
    decay = round(frac * total)
    begin = total - decay
    if t >= total:
        return end
    if t < warmup:
        return init * (start + (1.0 - start) * t / warmup)
    if t <= begin:
        return init
    x = (t - begin) / decay
    g = {
        "linear": 1.0 - x,
        "sqrt": 1.0 - math.sqrt(x),
        "cosine": 0.5 * (1.0 + math.cos(math.pi * x)),
    }[shape]
    return end + (init - end) * g


def evaluate(schedule, counts):
    counts = jnp.asarray(counts, dtype=jnp.int32)
    values = jax.jit(schedule)(counts)
    assert values.dtype == jnp.float32 and values.shape == counts.shape
    return np.asarray(values, dtype=np.float64)


def assert_close(actual, expected, scale):
    np.testing.assert_allclose(actual, expected, rtol=2e-6, atol=1e-12 * scale)


# (init, total_steps, warmup_steps, decay_fraction, warmup_start_factor, end_value)
PARAMS = [
    (1.0, 10, 2, 0.4, 0.0, 0.0),
    (0.1, 10, 0, 0.2, 0.0, 0.0),  # no warmup, the default cooldown
    (0.3, 17, 3, 0.0, 0.25, 0.0),  # no cooldown
    (0.3, 17, 17, 0.0, 0.5, 0.05),  # no cooldown, warmup over the whole budget
    (2.0, 13, 0, 1.0, 0.0, 0.0),  # decay over the whole budget
    (1.0, 23, 5, 0.3, 0.1, 0.2),  # end_value > 0; round(6.9) = 7 cooldown steps
    (1.0, 20, 16, 0.2, 1.0, 0.0),  # warmup ends where the cooldown starts
    (0.5, 1, 0, 0.2, 0.0, 0.0),  # a single step, no cooldown (round(0.2) = 0)
    (0.5, 1, 0, 1.0, 0.0, 0.1),  # a single step of cooldown
    (1.0, 5, 0, 0.5, 0.0, 0.0),  # round(2.5) = 2: halves round to even
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("params", PARAMS, ids=[f"p{i}" for i in range(len(PARAMS))])
def test_every_count_matches_closed_form(params, shape):
    init, total, warmup, frac, start, end = params
    schedule = warmup_stable_decay(
        init,
        total,
        warmup_steps=warmup,
        decay_fraction=frac,
        decay_shape=shape,
        warmup_start_factor=start,
        end_value=end,
    )
    counts = np.arange(total + 6)
    expected = [oracle(int(t), init, total, warmup, frac, shape, start, end) for t in counts]
    assert_close(evaluate(schedule, counts), expected, scale=init)


def test_boundary_values():
    # T = 10, W = 2, D = round(0.4 * 10) = 4, cooldown from S = 6.
    for shape in SHAPES:
        s = warmup_stable_decay(1.0, 10, warmup_steps=2, decay_fraction=0.4, decay_shape=shape)
        v = evaluate(s, [0, 1, 2, 6, 7, 9, 10, 11, 10**6, INT32_MAX])
        assert v[0] == 0.0  # warmup_start_factor * init_value
        assert v[1] == 0.5
        assert v[2] == 1.0  # end of warmup: the peak
        assert v[3] == 1.0  # t = S: still the peak (x = 0)
        assert 0.0 < v[4] < 1.0  # first lowered value at S + 1
        assert v[5] > 0.0  # the last update of the budget is not 0 ...
        assert np.all(v[6:] == 0.0)  # ... 0 exactly at T and clamped after
    lin = warmup_stable_decay(1.0, 10, decay_fraction=0.4)
    np.testing.assert_allclose(evaluate(lin, [9]), [1 / 4], rtol=1e-7)  # init / D at T - 1
    sqrt = warmup_stable_decay(1.0, 10, decay_fraction=0.4, decay_shape="sqrt")
    np.testing.assert_allclose(evaluate(sqrt, [9]), [1 - math.sqrt(3 / 4)], rtol=1e-6)
    # end_value > 0 is reached exactly at T and held.
    s = warmup_stable_decay(0.5, 8, decay_fraction=0.5, end_value=0.125, warmup_start_factor=0.3)
    assert list(evaluate(s, [0, 4, 8, 9, 1000])) == [0.5, 0.5, 0.125, 0.125, 0.125]
    # No cooldown: the peak up to T - 1, end_value from T on.
    s = warmup_stable_decay(1.0, 5, warmup_steps=5, decay_fraction=0.0, warmup_start_factor=0.2)
    np.testing.assert_allclose(evaluate(s, [0, 4, 5, 6]), [0.2, 0.84, 0.0, 0.0], rtol=1e-6)
    # Defaults: no warmup, a linear cooldown over round(0.2 * T) steps to 0.
    s = warmup_stable_decay(1.0, 100)
    np.testing.assert_allclose(evaluate(s, [0, 80, 81, 99, 100]), [1, 1, 0.95, 0.05, 0], rtol=1e-6)


@st.composite
def shape_params(draw):
    total = draw(st.one_of(st.integers(1, 60), st.integers(61, INT32_MAX)))
    frac = draw(st.one_of(st.sampled_from([0.0, 0.2, 0.5, 1.0]), st.floats(0.0, 1.0)))
    decay = round(frac * total)
    warmup = draw(st.integers(0, total - decay))
    start = draw(st.one_of(st.just(0.0), st.floats(0.0, 1.0)))
    shape = draw(st.sampled_from(SHAPES))
    return total, warmup, frac, shape, start


@settings(
    max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(shape_params())
def test_as_budget_shape_values_lie_in_unit_interval(params):
    total, warmup, frac, shape, start = params
    s = warmup_stable_decay(
        1.0,
        total,
        warmup_steps=warmup,
        decay_fraction=frac,
        decay_shape=shape,
        warmup_start_factor=start,
    )
    begin = total - round(frac * total)
    # A fixed number of counts (clipped into range, repeats allowed), so that the
    # eager operations compile once for every example.
    points = (0, 1, warmup - 1, warmup, warmup + 1, begin - 1, begin, begin + 1)
    points += ((begin + total) // 2, total - 2, total - 1, total, total + 1, INT32_MAX)
    counts = sorted(min(max(c, 0), INT32_MAX) for c in points)
    values = np.asarray(s(jnp.asarray(counts, jnp.int32)), np.float64)
    assert np.all(values >= 0.0) and np.all(values <= 1.0)
    expected = [oracle(c, 1.0, total, warmup, frac, shape, start) for c in counts]
    # Counts above 2**24 are inexact in float32: the fractions are relative to the scale.
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
    # Non-decreasing over the warmup, non-increasing after it.
    warm = [v for c, v in zip(counts, values, strict=True) if c <= warmup and c < total]
    rest = [v for c, v in zip(counts, values, strict=True) if c >= warmup]
    assert np.all(np.diff(warm) >= 0) and np.all(np.diff(rest) <= 0)
    assert values[-1] == 0.0


@pytest.mark.parametrize("shape", SHAPES)
def test_optax_sgd_applies_the_schedule_at_update_t(shape):
    schedule = warmup_stable_decay(
        0.1, 12, warmup_steps=3, decay_fraction=0.5, decay_shape=shape, warmup_start_factor=0.2
    )
    opt = optax.sgd(schedule)
    params = jnp.zeros(2)

    def step(carry, _):
        params, state = carry
        updates, state = opt.update(jnp.ones(2), state, params)
        return (optax.apply_updates(params, updates), state), updates[0]

    run = jax.jit(lambda carry: jax.lax.scan(step, carry, None, length=16))
    _, applied = run((params, opt.init(params)))
    expected = [-oracle(t, 0.1, 12, 3, 0.5, shape, 0.2) for t in range(16)]
    assert_close(np.asarray(applied, np.float64), expected, scale=0.1)


@pytest.mark.parametrize("shape", SHAPES)
def test_scale_by_lr_schedule_records_the_schedule_value(shape):
    schedule = warmup_stable_decay(0.5, 9, warmup_steps=2, decay_fraction=0.4, decay_shape=shape)
    tx = optax.chain(optax.scale_by_sign(), scale_by_lr_schedule(schedule))
    params = jnp.zeros(3)

    def step(state, _):
        updates, state = tx.update(jnp.ones(3), state, params)
        return state, (autolr_jax.current_lr(state), updates[0])

    _, (lrs, applied) = jax.jit(lambda s: jax.lax.scan(step, s, None, length=12))(tx.init(params))
    np.testing.assert_array_equal(np.asarray(lrs), evaluate(schedule, range(12)))
    np.testing.assert_array_equal(np.asarray(applied), -np.asarray(lrs))
    closed_form = [oracle(t, 0.5, 9, 2, 0.4, shape) for t in range(12)]
    assert_close(np.asarray(lrs, np.float64), closed_form, scale=0.5)


def test_huge_counts_saturate_and_match_closed_form():
    t_total, warmup = INT32_MAX, 2**30
    for shape in SHAPES:
        s = warmup_stable_decay(
            0.5, t_total, warmup_steps=warmup, decay_fraction=0.25, decay_shape=shape
        )
        begin = t_total - round(0.25 * t_total)
        counts = [0, 2**24 + 1, warmup - 1, warmup, begin, begin + 1, begin + 2**28]
        counts += [INT32_MAX - 1000, INT32_MAX - 2, INT32_MAX - 1, INT32_MAX]
        expected = [oracle(t, 0.5, t_total, warmup, 0.25, shape) for t in counts]
        np.testing.assert_allclose(evaluate(s, counts), expected, rtol=1e-5, atol=1e-7)
    # Precision near the end: one step before T, the linear value is init / D.
    s = warmup_stable_decay(1.0, INT32_MAX, decay_fraction=0.5)
    d = round(0.5 * INT32_MAX)
    np.testing.assert_allclose(evaluate(s, [INT32_MAX - 1]), [1 / d], rtol=1e-6)

    s = warmup_stable_decay(0.5, 100, warmup_steps=10, decay_fraction=0.3, end_value=0.01)
    with jax.enable_x64(True):
        counts64 = jnp.asarray([5, 99, 100, 2**31 + 5, INT32_MAX, 2**40], jnp.int64)
        values = jax.jit(s)(counts64)
        assert values.dtype == jnp.float32
        unsigned = jax.jit(s)(jnp.asarray([5, 2**32 - 1], jnp.uint32))
    v = np.asarray(values, np.float64)
    np.testing.assert_allclose(v[:3], [0.25, oracle(99, 0.5, 100, 10, 0.3, end=0.01), 0.01], 1e-6)
    assert np.all(v[2:] == np.float32(0.01))  # saturated, not wrapped around to the warmup
    assert float(unsigned[1]) == np.float32(0.01)
    # Negative counts are 0; float counts are rejected as for every schedule.
    np.testing.assert_array_equal(evaluate(s, [-7, 0]), evaluate(s, [0, 0]))
    with pytest.raises(TypeError, match="integer step count"):
        s(jnp.float32(3.0))


def test_jit_compiles_once_and_vmaps_over_init_value():
    s = warmup_stable_decay(1.0, 50, warmup_steps=5, decay_shape="sqrt")
    traces = []

    @jax.jit
    def lr_at(count):
        traces.append(None)
        return s(count)

    for count in (0, 3, 45, 49, 50, INT32_MAX):
        lr_at(jnp.int32(count))
    assert len(traces) == 1

    lrs = jnp.asarray([0.1, 0.2, 0.4])
    t = 46
    traced = jax.jit(
        jax.vmap(lambda lr: warmup_stable_decay(lr, 50, warmup_steps=5, decay_shape="cosine")(t))
    )(lrs)
    assert traced.dtype == jnp.float32
    expected = [oracle(t, lr, 50, 5, 0.2, "cosine") for lr in (0.1, 0.2, 0.4)]
    assert_close(np.asarray(traced, np.float64), expected, scale=0.4)


BAD = [
    (dict(init_value=0.0, total_steps=10), "init_value"),
    (dict(init_value=-0.1, total_steps=10), "init_value"),
    (dict(init_value=float("inf"), total_steps=10), "init_value"),
    (dict(init_value=float("nan"), total_steps=10), "init_value"),
    (dict(init_value="0.1", total_steps=10), "init_value"),
    (dict(init_value=True, total_steps=10), "init_value"),
    (dict(init_value=0.1, total_steps=0), "total_steps"),
    (dict(init_value=0.1, total_steps=2**31), "total_steps"),
    (dict(init_value=0.1, total_steps=10.5), "total_steps"),
    (dict(init_value=0.1, total_steps="10"), "total_steps"),
    (dict(init_value=0.1, total_steps=True), "total_steps"),
    (dict(init_value=0.1, total_steps=10, warmup_steps=-1), "warmup_steps"),
    (dict(init_value=0.1, total_steps=10, warmup_steps=9), "warmup_steps"),  # 9 + 2 > 10
    (dict(init_value=0.1, total_steps=10, warmup_steps=1, decay_fraction=1.0), "warmup_steps"),
    (dict(init_value=0.1, total_steps=10, warmup_steps=1.5), "warmup_steps"),
    (dict(init_value=0.1, total_steps=10, warmup_steps=False), "warmup_steps"),
    (dict(init_value=0.1, total_steps=10, decay_fraction=-0.1), "decay_fraction"),
    (dict(init_value=0.1, total_steps=10, decay_fraction=1.5), "decay_fraction"),
    (dict(init_value=0.1, total_steps=10, decay_fraction=float("nan")), "decay_fraction"),
    (dict(init_value=0.1, total_steps=10, decay_fraction="0.2"), "decay_fraction"),
    (dict(init_value=0.1, total_steps=10, decay_fraction=True), "decay_fraction"),
    (dict(init_value=0.1, total_steps=10, decay_fraction=[0.2, 0.3]), "decay_fraction"),
    (dict(init_value=0.1, total_steps=10, decay_shape="exp"), "decay_shape"),
    (dict(init_value=0.1, total_steps=10, decay_shape=None), "decay_shape"),
    (dict(init_value=0.1, total_steps=10, decay_shape=["sqrt"]), "decay_shape"),
    (dict(init_value=0.1, total_steps=10, warmup_start_factor=-0.1), "warmup_start_factor"),
    (dict(init_value=0.1, total_steps=10, warmup_start_factor=1.5), "warmup_start_factor"),
    (dict(init_value=0.1, total_steps=10, warmup_start_factor="0"), "warmup_start_factor"),
    (dict(init_value=0.1, total_steps=10, warmup_start_factor=True), "warmup_start_factor"),
    (dict(init_value=0.1, total_steps=10, end_value=-0.01), "end_value"),
    (dict(init_value=0.1, total_steps=10, end_value=0.2), "end_value"),
    (dict(init_value=0.1, total_steps=10, end_value=float("nan")), "end_value"),
    (dict(init_value=0.1, total_steps=10, end_value="0"), "end_value"),
    (dict(init_value=0.1, total_steps=10, end_value=False), "end_value"),
    (dict(init_value=np.asarray([0.1, 0.2]), total_steps=10, end_value=0.15), "end_value"),
]


@pytest.mark.parametrize("kwargs,name", BAD, ids=[f"{n}-{i}" for i, (_, n) in enumerate(BAD)])
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name) as info:
        warmup_stable_decay(**kwargs)
    assert repr(kwargs[name]) in str(info.value)


def test_warmup_steps_message_names_the_allowed_range():
    with pytest.raises(ValueError, match=r"warmup_steps must be an integer in \[0, 8\]"):
        warmup_stable_decay(0.1, 10, warmup_steps=9)
    with pytest.raises(ValueError, match="decay_fraction must be a concrete"):
        jax.jit(lambda f: warmup_stable_decay(0.1, 10, decay_fraction=f)(0))(0.2)


def test_exported_flat_and_from_schedules():
    assert autolr_jax.warmup_stable_decay is autolr_jax.schedules.warmup_stable_decay
    assert "warmup_stable_decay" in autolr_jax.__all__
    assert "warmup_stable_decay" in autolr_jax.schedules.__all__
