"""Property tests (hypothesis) over the public schedule constructors and transformations.

* Any valid arguments, drawn from their documented ranges, give a schedule that is
  float32, finite, non-negative and no larger than its largest learning-rate argument
  at every drawn count (up to ``2**31 - 1``), and ``jax.jit(schedule)`` gives the
  eager values (to a few float32 ulps: XLA fuses the jitted computation).
* Any argument drawn outside its documented range (out of range, NaN, infinite, beyond
  float32, not a number, not an integer, not a choice) makes construction raise a
  ``ValueError`` whose message names that argument: not a NaN schedule, not a
  ``TypeError`` from inside JAX.
* A growing schedule (``gamma > 1``) may overflow to ``inf``, never to NaN.
* ``reduce_on_plateau`` with valid drawn arguments runs jitted updates with finite
  output.

Small example counts: each valid schedule costs one jit compilation.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import autolr_jax as al

INT32_MAX = 2**31 - 1
F32_TINY = float(np.finfo(np.float32).tiny)
F32_MAX = float(np.finfo(np.float32).max)

# ------------------------------------------------------------------ valid arguments

LR = st.floats(0.0, 10.0)  # a learning rate, >= 0
POS_LR = st.floats(1e-6, 10.0)  # > 0
DECAY = st.floats(1e-6, 1.0)  # a decay factor in (0, 1]: the schedule cannot grow
UNIT = st.floats(0.0, 1.0)
STEPS = st.integers(1, 60)
BIG_STEPS = st.integers(1, INT32_MAX)


def _step(draw):
    init = draw(LR)
    return al.step_lr(init, draw(st.one_of(STEPS, BIG_STEPS)), draw(DECAY)), init


def _multistep(draw):
    init = draw(LR)
    ms = sorted(draw(st.lists(st.integers(0, 100), min_size=1, max_size=4)))
    return al.multistep_lr(init, ms, draw(DECAY)), init


def _exponential(draw):
    init = draw(LR)
    return al.exponential_lr(init, draw(DECAY)), init


def _constant(draw):
    init = draw(LR)
    return al.constant_lr(init, draw(UNIT), draw(STEPS)), init


def _linear(draw):
    init = draw(LR)
    return al.linear_lr(init, draw(st.floats(1e-6, 1.0)), draw(UNIT), draw(STEPS)), init


def _polynomial(draw):
    init = draw(LR)
    return al.polynomial_lr(init, draw(STEPS), draw(st.floats(0.0, 10.0))), init


def _cosine(draw):
    init, eta_min = draw(LR), draw(LR)
    return al.cosine_annealing_lr(init, draw(STEPS), eta_min), max(init, eta_min)


def _warm_restarts(draw):
    init, eta_min = draw(LR), draw(LR)
    schedule = al.cosine_annealing_warm_restarts(
        init, draw(STEPS), draw(st.integers(1, 4)), eta_min
    )
    return schedule, max(init, eta_min)


def _warmup_cosine(draw):
    init, eta_min = draw(LR), draw(LR)
    total = draw(st.integers(1, 60))
    warmup = draw(st.integers(0, total - 1))
    wsf = draw(st.floats(1e-6, 1.0))
    return al.warmup_cosine(init, warmup, total, wsf, eta_min), max(init, eta_min)


def _cyclic(draw):
    base, peak = draw(LR), draw(LR)
    schedule = al.cyclic_lr(
        base,
        peak,
        draw(STEPS),
        draw(st.one_of(st.none(), st.integers(0, 60))),
        draw(st.sampled_from(["triangular", "triangular2", "exp_range"])),
        draw(DECAY),
    )
    return schedule, max(base, peak)


def _one_cycle(draw):
    peak = draw(LR)
    div, final = draw(st.floats(1e-3, 1e4)), draw(st.floats(1e-3, 1e4))
    total, pct, three = draw(st.integers(1, 100)), draw(st.floats(0.01, 0.99)), draw(st.booleans())
    # Refused where PyTorch divides by zero (an empty warmup, or an empty last phase).
    assume(float(pct * total) != 1)
    assume(not three or float(2 * pct * total) - 2 != total - 1)
    anneal = draw(st.sampled_from(["cos", "linear"]))
    schedule = al.one_cycle_lr(peak, total, pct, anneal, div, final, three)
    # At count total_steps PyTorch extrapolates one step past the minimum (documented; with
    # "linear" it can be negative): no bound there.
    return schedule, max(peak, peak / div, peak / div / final), total


def _wsd(draw):
    init = draw(POS_LR)
    total = draw(st.integers(1, 100))
    fraction = draw(UNIT)
    decay_start = total - round(fraction * total)
    schedule = al.warmup_stable_decay(
        init,
        total,
        warmup_steps=draw(st.integers(0, decay_start)),
        decay_fraction=fraction,
        decay_shape=draw(st.sampled_from(["linear", "cosine", "sqrt"])),
        warmup_start_factor=draw(UNIT),
        end_value=draw(st.floats(0.0, init)),
    )
    return schedule, init


def _composed(draw):
    (a, bound_a), (b, bound_b) = _step(draw), _exponential(draw)
    how = draw(st.sampled_from(["chained", "sequential", "per_epoch"]))
    if how == "chained":  # one base learning rate
        return al.chained(a, al.exponential_lr(bound_a, draw(DECAY))), bound_a
    if how == "sequential":
        return al.sequential([a, b], [draw(STEPS)]), max(bound_a, bound_b)
    return al.per_epoch(a, draw(st.one_of(STEPS, BIG_STEPS))), bound_a


VALID = {
    "step_lr": _step,
    "multistep_lr": _multistep,
    "exponential_lr": _exponential,
    "constant_lr": _constant,
    "linear_lr": _linear,
    "polynomial_lr": _polynomial,
    "cosine_annealing_lr": _cosine,
    "cosine_annealing_warm_restarts": _warm_restarts,
    "warmup_cosine": _warmup_cosine,
    "cyclic_lr": _cyclic,
    "one_cycle_lr": _one_cycle,
    "warmup_stable_decay": _wsd,
    "composed": _composed,
}


@st.composite
def schedules(draw):
    name = draw(st.sampled_from(sorted(VALID)))
    schedule, bound, *exempt = VALID[name](draw)
    return name, schedule, bound, exempt


# Counts near the start, around the drawn periods and milestones, and anywhere in int32.
COUNTS = st.lists(
    st.one_of(st.integers(0, 130), st.integers(0, INT32_MAX)), min_size=6, max_size=6
).map(lambda c: np.asarray([0, INT32_MAX, *c], np.int32))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules(), COUNTS)
def test_valid_schedules_are_finite_bounded_and_jit_exact(case, counts):
    name, schedule, bound, exempt = case
    eager = np.asarray(schedule(counts))
    jitted = np.asarray(jax.jit(schedule)(counts))
    assert eager.dtype == np.float32, name
    assert np.all(np.isfinite(eager)), (name, counts, eager)
    bounded = eager[~np.isin(counts, exempt)]
    assert np.all(bounded >= 0.0), (name, counts, eager)
    # Above the largest learning rate only by float32 rounding.
    assert np.all(bounded <= np.float32(bound) * (1 + 1e-6)), (name, bound, counts, eager)
    # jit may round differently from op-by-op dispatch (a fused sin, say): a few float32
    # ulps of the largest learning rate, no more.
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6 * bound, err_msg=name)


@settings(max_examples=15, deadline=None)
@given(
    kind=st.sampled_from(["step_lr", "multistep_lr", "exponential_lr"]),
    init=st.one_of(st.just(0.0), LR),
    gamma=st.floats(1.5, 10.0),
    counts=COUNTS,
)
def test_growing_schedules_overflow_to_inf_never_to_nan(kind, init, gamma, counts):
    # gamma > 1 is in range (> 0): the learning rate grows, and may overflow float32 (as
    # PyTorch's does), but a zero learning rate stays zero instead of 0 * inf = NaN.
    schedule = {
        "step_lr": lambda: al.step_lr(init, 1, gamma),
        "multistep_lr": lambda: al.multistep_lr(init, list(range(200)), gamma),
        "exponential_lr": lambda: al.exponential_lr(init, gamma),
    }[kind]()
    counts = np.sort(counts)
    values = np.asarray(schedule(counts))
    assert not np.any(np.isnan(values)), (kind, counts, values)
    assert np.all(values >= 0.0) and np.all(values[1:] >= values[:-1]), (kind, counts, values)
    if init == 0.0:
        assert np.all(values == 0.0), values


@settings(max_examples=15, deadline=None)
@given(base=LR, peak=LR, up=STEPS, gamma=st.floats(1.5, 10.0), counts=COUNTS)
def test_exp_range_gives_base_lr_where_its_height_is_zero_when_gamma_overflows(
    base, peak, up, gamma, counts
):
    # base_lr + height * gamma ** t with gamma ** t overflowed to inf: where the height is 0
    # (base_lr == max_lr, or a cycle's first step) PyTorch gives base_lr, never 0 * inf = NaN.
    flat = np.asarray(al.cyclic_lr(base, base, up, mode="exp_range", gamma=gamma)(counts))
    np.testing.assert_array_equal(flat, np.float32(base))
    values = np.asarray(al.cyclic_lr(base, peak, up, mode="exp_range", gamma=gamma)(counts))
    assert not np.any(np.isnan(values)), (counts, values)
    np.testing.assert_array_equal(values[counts % (2 * up) == 0], np.float32(base))


@settings(max_examples=15, deadline=None)
@given(init=LR, total=STEPS, gamma=st.floats(1.5, 10.0), counts=COUNTS)
def test_chained_factor_at_zero_stays_zero_when_another_overflows(init, total, gamma, counts):
    # linear_lr's factor is 0 from total_iters on; exponential_lr's gamma ** t overflows to
    # inf: the product stays 0 (PyTorch's recursive form keeps a zero learning rate), in
    # either order.
    to_zero, growing = al.linear_lr(init, 1.0, 0.0, total), al.exponential_lr(init, gamma)
    for schedule in (al.chained(to_zero, growing), al.chained(growing, to_zero)):
        values = np.asarray(schedule(counts))
        assert not np.any(np.isnan(values)), (counts, values)
        np.testing.assert_array_equal(values[counts >= total], 0.0)


# ------------------------------------------------------------------ invalid arguments

NOT_NUMBERS = st.sampled_from(["0.1", None, True, False, np.bool_(True), b"1", np.asarray("1")])
NON_FINITE = st.sampled_from([float("nan"), float("inf"), float("-inf"), np.float32("nan")])
NEGATIVE = st.floats(max_value=0.0, exclude_max=True, allow_nan=False, allow_infinity=False)
BEYOND_F32 = st.floats(min_value=F32_MAX * 1.0001, max_value=1e308)  # inf in float32
BELOW_TINY = st.floats(min_value=0.0, max_value=F32_TINY, exclude_max=True)  # 0 in float32
ABOVE_ONE = st.floats(min_value=1.0, exclude_min=True, allow_nan=False)


def _bad_real(lo_open=False, hi=None, hi_open=False):
    """Values outside ``[0, hi]`` (``lo_open``: ``(0, ...``; ``hi_open``: ``..., hi)``)."""
    parts = [NOT_NUMBERS, NON_FINITE, NEGATIVE, BEYOND_F32]
    if lo_open:
        parts.append(BELOW_TINY)
    if hi is not None:
        parts.append(st.floats(min_value=hi, exclude_min=not hi_open, allow_nan=False))
    return st.one_of(*parts)


def _bad_int(lo, hi=INT32_MAX):
    parts = [
        NOT_NUMBERS,
        NON_FINITE,
        st.integers(max_value=lo - 1),
        st.floats(-1e6, 1e6).filter(lambda x: not float(x).is_integer()),
    ]
    if hi is not None:
        parts.append(st.integers(min_value=hi + 1, max_value=2**70))
    return st.one_of(*parts)


def _bad_choice(choices):
    return st.one_of(
        st.text(max_size=12).filter(lambda s: s not in choices),
        st.sampled_from([None, 0, 1.0, True, (choices[0],)]),
    )


NONNEG = _bad_real()
POSITIVE = _bad_real(lo_open=True)
UNIT_CLOSED = _bad_real(hi=1.0)
UNIT_OPEN_LO = _bad_real(lo_open=True, hi=1.0)


def _loss(params, batch):
    return jnp.mean((batch @ params) ** 2)


def _auto_lr(optimizer=optax.sgd, **kwargs):
    return al.auto_lr(optimizer, **kwargs)


# (constructor, a valid call, {argument: invalid values}); each argument's range as its
# docstring gives it.
INVALID = [
    (
        al.step_lr,
        dict(init_value=0.1, step_size=3, gamma=0.5),
        dict(init_value=NONNEG, step_size=_bad_int(1), gamma=POSITIVE),
    ),
    (
        al.multistep_lr,
        dict(init_value=0.1, milestones=[2, 4], gamma=0.5),
        dict(
            init_value=NONNEG,
            gamma=POSITIVE,
            milestones=st.one_of(
                _bad_int(0, None).map(lambda m: [2, m]), st.sampled_from([[], "12", None, 3])
            ),
        ),
    ),
    (al.exponential_lr, dict(init_value=0.1, gamma=0.9), dict(init_value=NONNEG, gamma=POSITIVE)),
    (
        al.constant_lr,
        dict(init_value=0.1, factor=0.5, total_iters=3),
        dict(init_value=NONNEG, factor=UNIT_CLOSED, total_iters=_bad_int(1)),
    ),
    (
        al.linear_lr,
        dict(init_value=0.1, start_factor=0.5, end_factor=1.0, total_iters=4),
        dict(
            init_value=NONNEG,
            start_factor=UNIT_OPEN_LO,
            end_factor=UNIT_CLOSED,
            total_iters=_bad_int(1),
        ),
    ),
    (
        al.polynomial_lr,
        dict(init_value=0.1, total_iters=6, power=2.0),
        dict(init_value=NONNEG, total_iters=_bad_int(1), power=NONNEG),
    ),
    (
        al.cosine_annealing_lr,
        dict(init_value=0.1, t_max=5, eta_min=0.01),
        dict(init_value=NONNEG, t_max=_bad_int(1), eta_min=NONNEG),
    ),
    (
        al.cosine_annealing_warm_restarts,
        dict(init_value=0.1, t_0=3, t_mult=2, eta_min=0.01),
        dict(init_value=NONNEG, t_0=_bad_int(1), t_mult=_bad_int(1, None), eta_min=NONNEG),
    ),
    (
        al.warmup_cosine,
        dict(init_value=0.1, warmup_steps=2, total_steps=9, warmup_start_factor=0.5, eta_min=0.0),
        dict(
            init_value=NONNEG,
            warmup_steps=_bad_int(0, 8),
            total_steps=_bad_int(1),
            warmup_start_factor=UNIT_OPEN_LO,
            eta_min=NONNEG,
        ),
    ),
    (
        al.cyclic_lr,
        dict(base_lr=0.01, max_lr=0.1, step_size_up=2, step_size_down=3, mode="exp_range"),
        dict(
            base_lr=NONNEG,
            max_lr=NONNEG,
            step_size_up=_bad_int(1),
            step_size_down=_bad_int(0).filter(lambda v: v is not None),  # None: step_size_up
            mode=_bad_choice(("triangular", "triangular2", "exp_range")),
            gamma=POSITIVE,
        ),
    ),
    (
        al.one_cycle_lr,
        dict(max_lr=0.1, total_steps=10, pct_start=0.3, div_factor=5.0, final_div_factor=10.0),
        dict(
            max_lr=NONNEG,
            total_steps=_bad_int(1),
            pct_start=st.one_of(_bad_real(lo_open=True, hi=1.0, hi_open=True)),
            anneal_strategy=_bad_choice(("cos", "linear")),
            div_factor=POSITIVE,
            final_div_factor=POSITIVE,
            three_phase=st.sampled_from([0, 1, "True", None, 1.0]),
        ),
    ),
    (
        al.warmup_stable_decay,
        dict(init_value=1.0, total_steps=100, warmup_steps=5, decay_fraction=0.2),
        dict(
            init_value=POSITIVE,
            total_steps=_bad_int(1),
            warmup_steps=_bad_int(0, 80),
            decay_fraction=UNIT_CLOSED,
            decay_shape=_bad_choice(("linear", "cosine", "sqrt")),
            warmup_start_factor=UNIT_CLOSED,
            end_value=_bad_real(hi=1.0),  # [0, init_value]
        ),
    ),
    (
        al.per_epoch,
        dict(schedule=al.step_lr(0.1, 1), steps_per_epoch=2),
        dict(steps_per_epoch=_bad_int(1)),
    ),
    (
        al.reduce_on_plateau,
        dict(learning_rate=0.1),
        dict(
            learning_rate=POSITIVE,
            mode=_bad_choice(("min", "max")),
            factor=_bad_real(lo_open=True, hi=1.0, hi_open=True),
            patience=_bad_int(0, None),  # larger than int32: never (saturated)
            threshold=NONNEG,
            threshold_mode=_bad_choice(("rel", "abs")),
            cooldown=_bad_int(0, None),
            min_lr=NONNEG,
            eps=NONNEG,
            accumulation_size=_bad_int(1),
        ),
    ),
    (al.scale_by_lr_schedule, dict(schedule=0.1), dict(schedule=NONNEG)),
    (al.softmax_score, dict(temperature=1.0), dict(temperature=POSITIVE)),
    (
        _auto_lr,
        dict(learning_rate=0.1, loss_fn=_loss, every=2),
        dict(
            learning_rate=POSITIVE,
            every=_bad_int(1),
            min_lr=NONNEG,
            lookahead=_bad_int(1, 10_000),
            search_safety=st.one_of(
                NOT_NUMBERS, NON_FINITE, st.floats(-1e9, 1.0, exclude_max=True)
            ),
            guard_tolerance=NONNEG,
            guard_memory=_bad_int(0),
            strategy=_bad_choice(("auto", "vmap", "map")),
            chunk_size=_bad_int(1, None).filter(lambda v: v is not None),
            factors=st.one_of(
                st.sampled_from([(), "2.0", 2.0, (2.0, 2.0), ((2.0, 1.0),)]),
                _bad_real(lo_open=True).map(lambda f: (2.0, f)),
            ),
        ),
    ),
]
NAMES = {spec[0]: spec[0].__name__ for spec in INVALID}
NAMES[_auto_lr] = "auto_lr"


@st.composite
def invalid_calls(draw):
    constructor, valid, bad_args = draw(st.sampled_from(INVALID))
    arg = draw(st.sampled_from(sorted(bad_args)))
    return constructor, valid, arg, draw(bad_args[arg])


def test_the_valid_calls_of_the_invalid_table_work():
    for constructor, valid, _ in INVALID:
        constructor(**valid)


@settings(max_examples=400, deadline=None)
@given(invalid_calls())
def test_an_argument_out_of_its_range_is_a_value_error_naming_it(call):
    constructor, valid, arg, bad = call
    try:
        constructor(**{**valid, arg: bad})
    except ValueError as e:
        message = str(e)
    except Exception as e:  # noqa: BLE001 - a TypeError from inside JAX is the failure
        raise AssertionError(f"{NAMES[constructor]}({arg}={bad!r}) raised {e!r}") from e
    else:
        raise AssertionError(f"{NAMES[constructor]}({arg}={bad!r}) was accepted")
    assert re.search(rf"(?<![A-Za-z_]){re.escape(arg)}(?![A-Za-z_])", message), (arg, message)


# ------------------------------------------------------------------ a transformation runs


@settings(max_examples=6, deadline=None)
@given(
    learning_rate=POS_LR,
    factor=st.floats(0.01, 0.99),
    patience=st.integers(0, 3),
    threshold=st.floats(0.0, 1.0),
    threshold_mode=st.sampled_from(["rel", "abs"]),
    min_lr=st.floats(0.0, 1e-3),
    values=st.lists(st.floats(-1e30, 1e30), min_size=4, max_size=4),
)
def test_reduce_on_plateau_runs_jitted_with_finite_output(
    learning_rate, factor, patience, threshold, threshold_mode, min_lr, values
):
    tx = al.reduce_on_plateau(
        learning_rate,
        factor=factor,
        patience=patience,
        threshold=threshold,
        threshold_mode=threshold_mode,
        min_lr=min_lr,
    )
    params = jnp.ones(3)
    state = tx.init(params)
    update = jax.jit(lambda s, v: tx.update(jnp.ones(3), s, value=v))
    lrs = []
    for v in values:
        updates, state = update(state, jnp.float32(v))
        lrs.append(float(al.current_lr(state)))
        assert np.all(np.isfinite(np.asarray(updates)))
    # The learning rate only falls, and never below min_lr (or the start, if that is lower).
    start = float(np.float32(learning_rate))
    assert all(b <= a for a, b in zip([start, *lrs], lrs, strict=False)), lrs
    assert min(lrs) >= float(np.float32(min(min_lr, learning_rate))) * (1 - 1e-6), lrs
