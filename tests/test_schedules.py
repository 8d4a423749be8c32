"""Every schedule against the learning rate PyTorch's scheduler really holds.

The oracle is ``optimizer.param_groups[0]['lr']`` after ``t`` calls of
``scheduler.step()`` (``tests/_torch_oracle.py``), over random hyperparameters
(hypothesis) and hand-picked edge cases whose ranges of counts cover every
boundary (t = 0, step multiples, milestones, total_iters, t_max, 2 * t_max,
restarts, the end of warmup) and well beyond. Counts PyTorch cannot reach (up to
2**31 - 1) are checked against float64 closed forms written here in plain Python.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _torch_oracle import torch_lrs
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from autolr_jax.schedules import (
    MultiplicativeSchedule,
    chained,
    constant_lr,
    cosine_annealing_lr,
    cosine_annealing_warm_restarts,
    cyclic_lr,
    exponential_lr,
    lambda_lr,
    linear_lr,
    multistep_lr,
    one_cycle_lr,
    per_epoch,
    polynomial_lr,
    sequential,
    step_lr,
    warmup_cosine,
)
from autolr_jax.transforms._schedule import scale_by_lr_schedule

INT32_MAX = 2**31 - 1
RTOL = 1e-5
# Absolute tolerance, as a fraction of the schedule's scale (its largest learning
# rate), only matters where the exact value is (nearly) 0: PyTorch's recursive
# float64 products leave residues like 1e-17 * lr where the value is exactly 0
# (LinearLR with end_factor=0, CosineAnnealingLR at its minimum), and float32
# flushes values below ~1e-38 to 0 (ExponentialLR after many steps), so relative
# error means nothing there. 1e-12 of the scale is far below any step that matters.
ATOL_FRACTION = 1e-12

HYPOTHESIS = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow],
)


def evaluate(schedule, counts) -> np.ndarray:
    """The schedule jitted and vmapped over a vector of counts."""
    counts = jnp.asarray(counts, dtype=jnp.int32)
    values = jax.jit(jax.vmap(schedule))(counts)
    assert values.dtype == jnp.float32
    assert values.shape == counts.shape
    return np.asarray(values, dtype=np.float64)


def assert_lr_close(actual, expected, scale=None, rtol=RTOL):
    expected = np.asarray(expected, dtype=np.float64)
    if scale is None:
        scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=ATOL_FRACTION * scale)


def assert_matches_torch(torch, schedule, build, n, lr=1.0):
    expected = torch_lrs(torch, build, n, lr=lr)
    assert_lr_close(evaluate(schedule, np.arange(n)), expected)


# --------------------------------------------------------------------------- kinds
# One row per schedule: how to draw its hyperparameters, and how to build it in
# JAX and in PyTorch from the same values.

L = None  # torch.optim.lr_scheduler, bound by the `lr_sched` fixture


@pytest.fixture(scope="module")
def lr_sched(torch):
    global L
    L = torch.optim.lr_scheduler
    return L


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def _rates(hi):
    # 0 or a learning rate float32 represents well (not 1e-300).
    return st.one_of(st.just(0.0), _floats(1e-3, hi))


@dataclass(frozen=True)
class Kind:
    params: st.SearchStrategy
    jax: Callable[[float, dict], Any]
    torch: Callable[[Any, dict], Any]
    multiplicative: bool = True
    steps: Callable[[dict], int] = lambda p: 240


KINDS = {
    "step": Kind(
        st.fixed_dictionaries({"step_size": st.integers(1, 40), "gamma": _floats(0.05, 1.5)}),
        lambda lr, p: step_lr(lr, p["step_size"], p["gamma"]),
        lambda o, p: L.StepLR(o, p["step_size"], p["gamma"]),
    ),
    "multistep": Kind(
        st.fixed_dictionaries(
            {
                "milestones": st.lists(st.integers(0, 150), min_size=1, max_size=6),
                "gamma": _floats(0.05, 1.5),
            }
        ),
        lambda lr, p: multistep_lr(lr, p["milestones"], p["gamma"]),
        lambda o, p: L.MultiStepLR(o, p["milestones"], p["gamma"]),
    ),
    "exponential": Kind(
        st.fixed_dictionaries({"gamma": _floats(0.5, 1.05)}),
        lambda lr, p: exponential_lr(lr, p["gamma"]),
        lambda o, p: L.ExponentialLR(o, p["gamma"]),
    ),
    "constant": Kind(
        # factor=0 is valid but PyTorch divides by zero at total_iters (tested apart).
        st.fixed_dictionaries({"factor": _floats(0.01, 1.0), "total_iters": st.integers(1, 100)}),
        lambda lr, p: constant_lr(lr, p["factor"], p["total_iters"]),
        lambda o, p: L.ConstantLR(o, p["factor"], p["total_iters"]),
    ),
    "linear": Kind(
        st.fixed_dictionaries(
            {
                "start_factor": _floats(1e-3, 1.0),
                "end_factor": _floats(0.0, 1.0),
                "total_iters": st.integers(1, 100),
            }
        ),
        lambda lr, p: linear_lr(lr, p["start_factor"], p["end_factor"], p["total_iters"]),
        lambda o, p: L.LinearLR(o, p["start_factor"], p["end_factor"], p["total_iters"]),
    ),
    "polynomial": Kind(
        st.fixed_dictionaries({"total_iters": st.integers(1, 100), "power": _floats(0.0, 4.0)}),
        lambda lr, p: polynomial_lr(lr, p["total_iters"], p["power"]),
        lambda o, p: L.PolynomialLR(o, p["total_iters"], p["power"]),
    ),
    "lambda": Kind(
        st.fixed_dictionaries({"b": _floats(0.0, 0.2), "power": _floats(0.0, 2.0)}),
        # Works on Python ints (PyTorch) and int32 arrays (JAX) alike.
        lambda lr, p: lambda_lr(lr, lambda t: (1.0 + p["b"] * t) ** -p["power"]),
        lambda o, p: L.LambdaLR(o, lambda t: (1.0 + p["b"] * t) ** -p["power"]),
    ),
    "cosine": Kind(
        st.fixed_dictionaries({"t_max": st.integers(1, 60), "eta_min": _floats(0.0, 1.0)}),
        lambda lr, p: cosine_annealing_lr(lr, p["t_max"], p["eta_min"]),
        lambda o, p: L.CosineAnnealingLR(o, p["t_max"], p["eta_min"]),
        multiplicative=False,
    ),
    "warm_restarts": Kind(
        st.fixed_dictionaries(
            {"t_0": st.integers(1, 30), "t_mult": st.integers(1, 3), "eta_min": _floats(0.0, 1.0)}
        ),
        lambda lr, p: cosine_annealing_warm_restarts(lr, p["t_0"], p["t_mult"], p["eta_min"]),
        lambda o, p: L.CosineAnnealingWarmRestarts(o, p["t_0"], p["t_mult"], p["eta_min"]),
        multiplicative=False,
    ),
    "cyclic": Kind(
        st.fixed_dictionaries(
            {
                "base_lr": _rates(1.0),
                "max_lr": _rates(2.0),
                "up": st.integers(1, 30),
                "down": st.one_of(st.none(), st.integers(0, 30)),
                "mode": st.sampled_from(["triangular", "triangular2", "exp_range"]),
                "gamma": _floats(0.9, 1.0),
            }
        ),
        lambda lr, p: cyclic_lr(
            p["base_lr"], p["max_lr"], p["up"], p["down"], p["mode"], p["gamma"]
        ),
        lambda o, p: L.CyclicLR(
            o, p["base_lr"], p["max_lr"], p["up"], p["down"], p["mode"], p["gamma"]
        ),
        multiplicative=False,
    ),
    "one_cycle": Kind(
        st.fixed_dictionaries(
            {
                "max_lr": _floats(1e-3, 2.0),
                "total_steps": st.integers(1, 200),
                "pct_start": _floats(0.01, 0.99),
                "anneal_strategy": st.sampled_from(["cos", "linear"]),
                "div_factor": _floats(1.0, 50.0),
                "final_div_factor": _floats(1.0, 1e4),
                "three_phase": st.booleans(),
            }
        ),
        lambda lr, p: one_cycle_lr(**p),
        lambda o, p: L.OneCycleLR(o, **p),
        multiplicative=False,
        # PyTorch raises past total_steps steps.
        steps=lambda p: p["total_steps"] + 1,
    ),
}
MULTIPLICATIVE_KINDS = sorted(k for k, v in KINDS.items() if v.multiplicative)
# CyclicLR and OneCycleLR overwrite the optimizer's learning rate (OneCycleLR even
# its initial_lr) when constructed, so inside SequentialLR PyTorch only agrees with
# "each schedule from scratch" when no other scheduler depends on that: keep
# CyclicLR out of first place and OneCycleLR out of sequences.
SEQUENCE_KINDS = sorted(k for k in KINDS if k != "one_cycle")


def _draw_kind(data, name):
    kind = KINDS[name]
    params = data.draw(kind.params, label=name)
    if name == "one_cycle":
        end_warmup = float(params["pct_start"] * params["total_steps"]) - 1
        end_down = float(2 * params["pct_start"] * params["total_steps"]) - 2
        # Configurations where PyTorch divides by zero (rejected by one_cycle_lr).
        assume(end_warmup != 0)
        assume(not (params["three_phase"] and end_down == params["total_steps"] - 1))
    return kind, params


# --------------------------------------------------------------- random parity


@pytest.mark.parametrize("name", sorted(KINDS))
@HYPOTHESIS
@given(data=st.data(), lr=_floats(1e-4, 10.0))
def test_random_parity_with_torch(torch, lr_sched, name, data, lr):
    kind, params = _draw_kind(data, name)
    assert_matches_torch(
        torch, kind.jax(lr, params), lambda o: kind.torch(o, params), kind.steps(params), lr
    )


@HYPOTHESIS
@given(
    data=st.data(),
    lr=_floats(1e-4, 10.0),
    warmup_steps=st.integers(0, 30),
    cosine_steps=st.integers(1, 80),
    start_factor=_floats(1e-3, 1.0),
    eta_min=_floats(0.0, 1.0),
)
def test_random_warmup_cosine_parity(
    torch, lr_sched, data, lr, warmup_steps, cosine_steps, start_factor, eta_min
):
    total = warmup_steps + cosine_steps

    def build(o):
        return L.SequentialLR(
            o,
            [
                L.LinearLR(o, start_factor, 1.0, warmup_steps),
                L.CosineAnnealingLR(o, total - warmup_steps, eta_min),
            ],
            [warmup_steps],
        )

    schedule = warmup_cosine(lr, warmup_steps, total, start_factor, eta_min)
    assert_matches_torch(torch, schedule, build, 3 * total + 5, lr)


@HYPOTHESIS
@given(data=st.data(), lr=_floats(1e-4, 10.0))
def test_random_sequential_parity(torch, lr_sched, data, lr):
    n_schedules = data.draw(st.integers(2, 4), label="n_schedules")
    names = [
        data.draw(st.sampled_from([k for k in SEQUENCE_KINDS if i > 0 or k != "cyclic"]))
        for i in range(n_schedules)
    ]
    drawn = [_draw_kind(data, name) for name in names]
    milestones = sorted(
        data.draw(
            st.sets(st.integers(1, 150), min_size=n_schedules - 1, max_size=n_schedules - 1),
            label="milestones",
        )
    )
    schedule = sequential([kind.jax(lr, p) for kind, p in drawn], milestones)

    def build(o):
        return L.SequentialLR(o, [kind.torch(o, p) for kind, p in drawn], milestones)

    assert_matches_torch(torch, schedule, build, 260, lr)


@HYPOTHESIS
@given(data=st.data(), lr=_floats(1e-4, 10.0))
def test_random_chained_parity(torch, lr_sched, data, lr):
    names = data.draw(
        st.lists(
            st.sampled_from([k for k in MULTIPLICATIVE_KINDS if k != "lambda"]),
            min_size=1,
            max_size=4,
        )
    )
    drawn = [_draw_kind(data, name) for name in names]
    schedule = chained(*[kind.jax(lr, p) for kind, p in drawn])
    assert isinstance(schedule, MultiplicativeSchedule)

    def build(o):
        return L.ChainedScheduler([kind.torch(o, p) for kind, p in drawn])

    assert_matches_torch(torch, schedule, build, 200, lr)


@HYPOTHESIS
@given(data=st.data(), lr=_floats(1e-4, 10.0), steps_per_epoch=st.integers(1, 6))
def test_random_per_epoch_parity(torch, lr_sched, data, lr, steps_per_epoch):
    name = data.draw(st.sampled_from(SEQUENCE_KINDS), label="kind")
    kind, params = _draw_kind(data, name)
    epochs = 60
    by_epoch = torch_lrs(torch, lambda o: kind.torch(o, params), epochs, lr=lr)
    steps = np.arange(epochs * steps_per_epoch)
    schedule = per_epoch(kind.jax(lr, params), steps_per_epoch)
    assert isinstance(schedule, MultiplicativeSchedule) == kind.multiplicative
    assert_lr_close(evaluate(schedule, steps), by_epoch[steps // steps_per_epoch])


# ------------------------------------------------------------ hand-picked cases


def _seq_case():
    return (
        lambda: sequential(
            [
                constant_lr(0.5, 0.1, 100),  # cut off by the milestone before total_iters
                multistep_lr(0.5, [0, 0, 4, 4], 0.5),  # milestone 0 applies at the restart
                cosine_annealing_lr(0.5, 5, 0.05),  # runs past 2 * t_max
                cosine_annealing_warm_restarts(0.5, 2, 2),
                exponential_lr(0.5, 0.8),
            ],
            [3, 10, 27, 40],
        ),
        lambda o: L.SequentialLR(
            o,
            [
                L.ConstantLR(o, 0.1, 100),
                L.MultiStepLR(o, [0, 0, 4, 4], 0.5),
                L.CosineAnnealingLR(o, 5, 0.05),
                L.CosineAnnealingWarmRestarts(o, 2, 2),
                L.ExponentialLR(o, 0.8),
            ],
            [3, 10, 27, 40],
        ),
        120,
        0.5,
    )


EDGE_CASES = {
    "step_size_1": (lambda: step_lr(1.0, 1, 0.5), lambda o: L.StepLR(o, 1, 0.5), 80, 1.0),
    "step_growing": (lambda: step_lr(0.1, 7, 1.5), lambda o: L.StepLR(o, 7, 1.5), 100, 0.1),
    "multistep_repeats_unsorted": (
        lambda: multistep_lr(0.1, [7, 0, 0, 3, 3, 3, 7, 2], 0.5),
        lambda o: L.MultiStepLR(o, [7, 0, 0, 3, 3, 3, 7, 2], 0.5),
        20,
        0.1,
    ),
    "exponential_to_underflow": (
        lambda: exponential_lr(1.0, 0.8),
        lambda o: L.ExponentialLR(o, 0.8),
        500,
        1.0,
    ),
    "exponential_growing": (
        lambda: exponential_lr(1e-3, 1.02),
        lambda o: L.ExponentialLR(o, 1.02),
        300,
        1e-3,
    ),
    "constant_one_step": (
        lambda: constant_lr(1.0, 0.25, 1),
        lambda o: L.ConstantLR(o, 0.25, 1),
        5,
        1.0,
    ),
    "constant_factor_1": (
        lambda: constant_lr(1.0, 1.0, 3),
        lambda o: L.ConstantLR(o, 1.0, 3),
        6,
        1.0,
    ),
    "linear_to_zero": (
        lambda: linear_lr(1.0, 1.0, 0.0, 1),
        lambda o: L.LinearLR(o, 1.0, 0.0, 1),
        5,
        1.0,
    ),
    "linear_long_warmup": (
        lambda: linear_lr(2.0, 1e-3, 1.0, 150),
        lambda o: L.LinearLR(o, 1e-3, 1.0, 150),
        200,
        2.0,
    ),
    "linear_down_to_zero": (
        lambda: linear_lr(1.0, 0.7, 0.0, 20),
        lambda o: L.LinearLR(o, 0.7, 0.0, 20),
        40,
        1.0,
    ),
    "polynomial_one_step": (
        lambda: polynomial_lr(1.0, 1, 1.0),
        lambda o: L.PolynomialLR(o, 1, 1.0),
        5,
        1.0,
    ),
    "polynomial_power_0": (
        lambda: polynomial_lr(1.0, 10, 0.0),
        lambda o: L.PolynomialLR(o, 10, 0.0),
        20,
        1.0,
    ),
    "polynomial_sqrt": (
        lambda: polynomial_lr(0.3, 50, 0.5),
        lambda o: L.PolynomialLR(o, 50, 0.5),
        60,
        0.3,
    ),
    "cosine_t_max_1": (
        lambda: cosine_annealing_lr(1.0, 1, 0.1),
        lambda o: L.CosineAnnealingLR(o, 1, 0.1),
        9,
        1.0,
    ),
    "cosine_t_max_2": (
        lambda: cosine_annealing_lr(1.0, 2),
        lambda o: L.CosineAnnealingLR(o, 2),
        13,
        1.0,
    ),
    "cosine_periodic": (
        lambda: cosine_annealing_lr(0.5, 100),
        lambda o: L.CosineAnnealingLR(o, 100),
        650,
        0.5,
    ),
    "cosine_eta_min_above_init": (
        lambda: cosine_annealing_lr(0.1, 5, 0.3),
        lambda o: L.CosineAnnealingLR(o, 5, 0.3),
        25,
        0.1,
    ),
    "restarts_t_0_1": (
        lambda: cosine_annealing_warm_restarts(1.0, 1, 1, 0.2),
        lambda o: L.CosineAnnealingWarmRestarts(o, 1, 1, 0.2),
        5,
        1.0,
    ),
    "restarts_t_0_1_mult_2": (
        lambda: cosine_annealing_warm_restarts(1.0, 1, 2),
        lambda o: L.CosineAnnealingWarmRestarts(o, 1, 2),
        70,
        1.0,
    ),
    "restarts_mult_3": (
        lambda: cosine_annealing_warm_restarts(1.0, 5, 3, 0.01),
        lambda o: L.CosineAnnealingWarmRestarts(o, 5, 3, 0.01),
        200,
        1.0,
    ),
    "cyclic_unit_steps": (
        lambda: cyclic_lr(0.1, 1.0, 1, 1),
        lambda o: L.CyclicLR(o, 0.1, 1.0, 1, 1),
        10,
        1.0,
    ),
    "cyclic_sawtooth_triangular2": (
        lambda: cyclic_lr(0.1, 1.0, 1, 0, "triangular2"),
        lambda o: L.CyclicLR(o, 0.1, 1.0, 1, 0, "triangular2"),
        200,
        1.0,
    ),
    "cyclic_inverted_exp_range": (
        lambda: cyclic_lr(1.0, 0.1, 5, 3, "exp_range", 0.98),
        lambda o: L.CyclicLR(o, 1.0, 0.1, 5, 3, "exp_range", 0.98),
        100,
        1.0,
    ),
    "one_cycle_1_step": (
        lambda: one_cycle_lr(1.0, 1),
        lambda o: L.OneCycleLR(o, 1.0, 1),
        2,
        1.0,
    ),
    "one_cycle_2_steps": (
        lambda: one_cycle_lr(1.0, 2, 0.3),
        lambda o: L.OneCycleLR(o, 1.0, 2, pct_start=0.3),
        3,
        1.0,
    ),
    "one_cycle_warmup_below_1_step": (
        lambda: one_cycle_lr(1.0, 10, 0.05),
        lambda o: L.OneCycleLR(o, 1.0, 10, pct_start=0.05),
        11,
        1.0,
    ),
    "one_cycle_three_phase_linear": (
        lambda: one_cycle_lr(1.0, 100, 0.3, "linear", 25.0, 1e4, True),
        lambda o: L.OneCycleLR(
            o, 1.0, 100, pct_start=0.3, anneal_strategy="linear", three_phase=True
        ),
        101,
        1.0,
    ),
    "one_cycle_three_phase_late_peak": (
        lambda: one_cycle_lr(1.0, 10, 0.6, three_phase=True),
        lambda o: L.OneCycleLR(o, 1.0, 10, pct_start=0.6, three_phase=True),
        11,
        1.0,
    ),
    "lambda_zero_then_one": (
        lambda: lambda_lr(1.0, lambda t: jnp.where(t < 5, 0.0, 1.0)),
        lambda o: L.LambdaLR(o, lambda t: 0.0 if t < 5 else 1.0),
        10,
        1.0,
    ),
    "lambda_integer_valued": (
        lambda: lambda_lr(0.1, lambda t: t // 3),
        lambda o: L.LambdaLR(o, lambda t: t // 3),
        20,
        0.1,
    ),
    "warmup_cosine_no_warmup": (
        lambda: warmup_cosine(1.0, 0, 10),
        lambda o: L.SequentialLR(
            o, [L.LinearLR(o, 1 / 3, 1.0, 0), L.CosineAnnealingLR(o, 10)], [0]
        ),
        45,
        1.0,
    ),
    "warmup_cosine_defaults": (
        lambda: warmup_cosine(1.0, 5, 25),
        lambda o: L.SequentialLR(
            o, [L.LinearLR(o, total_iters=5), L.CosineAnnealingLR(o, 20)], [5]
        ),
        100,
        1.0,
    ),
    "warmup_cosine_one_step_each": (
        lambda: warmup_cosine(1.0, 1, 2, 0.5, 0.25),
        lambda o: L.SequentialLR(
            o, [L.LinearLR(o, 0.5, 1.0, 1), L.CosineAnnealingLR(o, 1, 0.25)], [1]
        ),
        10,
        1.0,
    ),
    "sequential_five": _seq_case(),
    "sequential_cyclic_lambda": (
        lambda: sequential(
            [
                linear_lr(0.3, 0.2, 1.0, 7),
                lambda_lr(0.3, lambda t: 0.5 + 0.0 * t),
                cyclic_lr(0.01, 0.3, 3, 4),
            ],
            [5, 9],
        ),
        lambda o: L.SequentialLR(
            o,
            [
                L.LinearLR(o, 0.2, 1.0, 7),
                L.LambdaLR(o, lambda t: 0.5),
                L.CyclicLR(o, 0.01, 0.3, 3, 4),
            ],
            [5, 9],
        ),
        40,
        0.3,
    ),
    "chained_all_multiplicative": (
        lambda: chained(
            constant_lr(0.3, 0.5, 10),
            exponential_lr(0.3, 0.98),
            step_lr(0.3, 5, 0.7),
            linear_lr(0.3, 0.2, 0.9, 20),
            polynomial_lr(0.3, 150, 1.5),
            multistep_lr(0.3, [0, 3, 3, 50]),
        ),
        lambda o: L.ChainedScheduler(
            [
                L.ConstantLR(o, 0.5, 10),
                L.ExponentialLR(o, 0.98),
                L.StepLR(o, 5, 0.7),
                L.LinearLR(o, 0.2, 0.9, 20),
                L.PolynomialLR(o, 150, 1.5),
                L.MultiStepLR(o, [0, 3, 3, 50]),
            ]
        ),
        200,
        0.3,
    ),
    "chained_through_zero": (
        lambda: chained(linear_lr(1.0, 0.5, 0.0, 4), exponential_lr(1.0, 0.9)),
        lambda o: L.ChainedScheduler([L.LinearLR(o, 0.5, 0.0, 4), L.ExponentialLR(o, 0.9)]),
        10,
        1.0,
    ),
    # A factor at 0 while another (gamma 1.5) overflows float32 past step 219: PyTorch's
    # recursive product stays 0 (float32's 0 * inf would be NaN).
    "chained_zero_and_overflow": (
        lambda: chained(linear_lr(1.0, 1.0, 0.0, 4), exponential_lr(1.0, 1.5)),
        lambda o: L.ChainedScheduler([L.LinearLR(o, 1.0, 0.0, 4), L.ExponentialLR(o, 1.5)]),
        300,
        1.0,
    ),
    # base_lr == max_lr: PyTorch's base_lr + 0 * gamma ** t is base_lr, also where gamma ** t
    # overflows float32 (past step 219; float64 only past 1750).
    "cyclic_exp_range_flat_and_overflow": (
        lambda: cyclic_lr(0.1, 0.1, 3, mode="exp_range", gamma=1.5),
        lambda o: L.CyclicLR(o, 0.1, 0.1, 3, mode="exp_range", gamma=1.5),
        300,
        0.1,
    ),
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_case_parity(torch, lr_sched, case):
    make, build, n, lr = EDGE_CASES[case]
    assert_matches_torch(torch, make(), build, n, lr)


def test_constant_lr_factor_zero_returns_to_init_value():
    # PyTorch's ConstantLR accepts factor=0, then divides by zero at total_iters.
    values = evaluate(constant_lr(0.5, 0.0, 3), np.arange(6))
    np.testing.assert_array_equal(values, [0, 0, 0, 0.5, 0.5, 0.5])


def test_one_cycle_holds_its_final_value_past_total_steps(torch, lr_sched):
    total = 30
    schedule = one_cycle_lr(0.4, total, 0.25, "linear")
    torch_values = torch_lrs(
        torch,
        lambda o: L.OneCycleLR(o, 0.4, total, pct_start=0.25, anneal_strategy="linear"),
        total + 1,
    )
    values = evaluate(schedule, [total - 1, total, total + 1, total + 100, INT32_MAX])
    # Up to total_steps: PyTorch (which at total_steps extrapolates past the minimum).
    assert_lr_close(values[:2], torch_values[total - 1 :], scale=0.4)
    min_lr = 0.4 / 25.0 / 1e4
    assert_lr_close(values[2:], [min_lr] * 3, scale=min_lr)


def test_chained_lambda_multiplies_its_factor():
    # PyTorch's LambdaLR is not chainable (it overwrites the learning rate); here its
    # factor multiplies the others', which is ChainedScheduler's contract.
    t = np.arange(40)
    schedule = chained(
        lambda_lr(2.0, lambda c: 1.0 / (1.0 + 0.1 * c)),
        step_lr(2.0, 7, 0.5),
        constant_lr(2.0, 0.25, 3),
    )
    expected = 2.0 / (1.0 + 0.1 * t) * 0.5 ** (t // 7) * np.where(t < 3, 0.25, 1.0)
    assert_lr_close(evaluate(schedule, t), expected)


def test_per_epoch_of_a_chained_schedule_stays_chainable():
    base = chained(exponential_lr(1.0, 0.5), constant_lr(1.0, 0.5, 2))
    schedule = chained(per_epoch(base, 3), step_lr(1.0, 4, 0.5))
    t = np.arange(30)
    expected = 0.5 ** (t // 3) * np.where(t // 3 < 2, 0.5, 1.0) * 0.5 ** (t // 4)
    assert_lr_close(evaluate(schedule, t), expected)


# ------------------------------------------------------------------ huge counts


def _cos_anneal(hi, lo, t_cur, period):
    return lo + (hi - lo) * (1 + math.cos(math.pi * t_cur / period)) / 2


def _restarts_ref(init, t_0, t_mult, eta_min, t):
    start, length = 0, t_0
    while t >= start + length:
        start, length = start + length, length * t_mult
    return _cos_anneal(init, eta_min, t - start, length)


def _cyclic_ref(base, top, up, down, mode, gamma, t):
    total = up + down
    cycle, pos = divmod(t, total)
    scale = pos / up if pos <= up else (total - pos) / down
    amplitude = {"triangular": 1.0, "triangular2": 0.5**cycle, "exp_range": gamma**t}[mode]
    return base + (top - base) * scale * amplitude


def _one_cycle_ref(max_lr, total, pct, div, final_div, t):
    # Two-phase cosine; past total_steps, the value at total_steps - 1.
    initial, low = max_lr / div, max_lr / div / final_div
    t = total - 1 if t > total else t
    end_warmup = float(pct * total) - 1
    if t <= end_warmup:
        return _cos_anneal(max_lr, initial, end_warmup - t, end_warmup)
    return _cos_anneal(max_lr, low, t - end_warmup, total - 1 - end_warmup)


HUGE = [0, 1, 2**24 + 1, 2**30 + 7, INT32_MAX - 2, INT32_MAX - 1, INT32_MAX]
BIG_T = 2**30 + 3

HUGE_CASES = {
    "step": (lambda: step_lr(0.5, 7, 1 - 1e-8), lambda t: 0.5 * (1 - 1e-8) ** (t // 7)),
    "multistep": (
        lambda: multistep_lr(0.5, [INT32_MAX, 5, INT32_MAX - 1, 2**40], 0.5),
        lambda t: 0.5 * 0.5 ** sum(m <= t for m in [INT32_MAX, 5, INT32_MAX - 1, 2**40]),
    ),
    # float32 cannot represent 1 - 1e-9 (it rounds to 1): the power must not use it.
    "exponential": (lambda: exponential_lr(0.5, 1 - 1e-9), lambda t: 0.5 * (1 - 1e-9) ** t),
    "constant": (
        lambda: constant_lr(0.5, 0.1, INT32_MAX - 1),
        lambda t: 0.5 * (0.1 if t < INT32_MAX - 1 else 1.0),
    ),
    "linear": (
        lambda: linear_lr(0.5, 0.1, 0.9, INT32_MAX - 1),
        lambda t: 0.5 * (0.1 + 0.8 * min(t, INT32_MAX - 1) / (INT32_MAX - 1)),
    ),
    "polynomial": (
        lambda: polynomial_lr(0.5, INT32_MAX - 1, 2.0),
        lambda t: 0.5 * (1 - min(t, INT32_MAX - 1) / (INT32_MAX - 1)) ** 2,
    ),
    "cosine_small_t_max": (
        lambda: cosine_annealing_lr(0.5, 1000, 0.01),
        lambda t: _cos_anneal(0.5, 0.01, t % 2000, 1000),
    ),
    "cosine_big_t_max": (
        lambda: cosine_annealing_lr(0.5, BIG_T),
        lambda t: _cos_anneal(0.5, 0.0, t % (2 * BIG_T), BIG_T),
    ),
    "cosine_t_max_int32_max": (
        lambda: cosine_annealing_lr(0.5, INT32_MAX, 0.01),
        lambda t: _cos_anneal(0.5, 0.01, t, INT32_MAX),
    ),
    "restarts_mult_1": (
        lambda: cosine_annealing_warm_restarts(0.5, 997, 1, 0.01),
        lambda t: _cos_anneal(0.5, 0.01, t % 997, 997),
    ),
    "restarts_mult_2": (
        lambda: cosine_annealing_warm_restarts(0.5, 3, 2),
        lambda t: _restarts_ref(0.5, 3, 2, 0.0, t),
    ),
    "restarts_mult_3_last_cycle_past_int32": (
        lambda: cosine_annealing_warm_restarts(0.5, 1000, 3, 0.01),
        lambda t: _restarts_ref(0.5, 1000, 3, 0.01, t),
    ),
    "cyclic_triangular2": (
        lambda: cyclic_lr(0.01, 0.5, 1000, 7, "triangular2"),
        lambda t: _cyclic_ref(0.01, 0.5, 1000, 7, "triangular2", 1.0, t),
    ),
    "cyclic_exp_range": (
        lambda: cyclic_lr(0.01, 0.5, 1000, 7, "exp_range", 1 - 1e-9),
        lambda t: _cyclic_ref(0.01, 0.5, 1000, 7, "exp_range", 1 - 1e-9, t),
    ),
    "cyclic_period_past_int32": (
        lambda: cyclic_lr(0.01, 0.5, 2**30, 2**30 + 5),
        lambda t: _cyclic_ref(0.01, 0.5, 2**30, 2**30 + 5, "triangular", 1.0, t),
    ),
    "one_cycle_int32_max_steps": (
        lambda: one_cycle_lr(0.5, INT32_MAX, 0.3),
        lambda t: _one_cycle_ref(0.5, INT32_MAX, 0.3, 25.0, 1e4, t),
    ),
    "one_cycle_held": (
        lambda: one_cycle_lr(0.5, 1000, 0.3),
        lambda t: _one_cycle_ref(0.5, 1000, 0.3, 25.0, 1e4, t),
    ),
    "warmup_cosine": (
        lambda: warmup_cosine(0.5, 2**30, INT32_MAX, 0.1),
        lambda t: (
            0.5 * (0.1 + 0.9 * t / 2**30)
            if t < 2**30
            else _cos_anneal(0.5, 0.0, t - 2**30, INT32_MAX - 2**30)
        ),
    ),
    "per_epoch": (
        lambda: per_epoch(cosine_annealing_lr(0.5, 1000), 3),
        lambda t: _cos_anneal(0.5, 0.0, (t // 3) % 2000, 1000),
    ),
    "sequential": (
        lambda: sequential([step_lr(0.5, 10), cosine_annealing_lr(0.5, 999)], [INT32_MAX - 1]),
        lambda t: 0.5 * 0.1 ** (t // 10) if t < INT32_MAX - 1 else 0.5,
    ),
}


@pytest.mark.parametrize("case", sorted(HUGE_CASES))
def test_huge_counts_against_float64_closed_form(case):
    make, reference = HUGE_CASES[case]
    counts = HUGE + [2**31 - 1000, 3 * 2**29 + 1]
    expected = [reference(t) for t in counts]
    assert_lr_close(evaluate(make(), counts), expected, scale=0.5)


def test_huge_counts_near_every_boundary():
    t_max = 2**29 + 11
    counts = [k * t_max + d for k in (1, 2, 3) for d in (-1, 0, 1)]
    expected = [_cos_anneal(0.5, 0.0, t % (2 * t_max), t_max) for t in counts]
    assert_lr_close(evaluate(cosine_annealing_lr(0.5, t_max), counts), expected, scale=0.5)

    starts = [0, 3, 9, 21]  # t_0 = 3, t_mult = 2: cycles of 3, 6, 12, ...
    while starts[-1] <= INT32_MAX:
        starts.append(2 * starts[-1] + 3)
    counts = [s + d for s in starts[20:-1] for d in (-1, 0, 1) if s + d <= INT32_MAX]
    expected = [_restarts_ref(0.5, 3, 2, 0.0, t) for t in counts]
    schedule = cosine_annealing_warm_restarts(0.5, 3, 2)
    assert_lr_close(evaluate(schedule, counts), expected, scale=0.5)


# ------------------------------------------------- jit, vmap, dtypes, counts

REPRESENTATIVE = {
    "step": lambda: step_lr(0.1, 3),
    "multistep": lambda: multistep_lr(0.1, [2, 5, 5]),
    "exponential": lambda: exponential_lr(0.1, 0.9),
    "constant": lambda: constant_lr(0.1),
    "linear": lambda: linear_lr(0.1),
    "polynomial": lambda: polynomial_lr(0.1, 7, 2.0),
    "cosine": lambda: cosine_annealing_lr(0.1, 5, 0.01),
    "warm_restarts": lambda: cosine_annealing_warm_restarts(0.1, 2, 2),
    "cyclic": lambda: cyclic_lr(0.01, 0.1, 3, mode="exp_range", gamma=0.99),
    "one_cycle": lambda: one_cycle_lr(0.1, 12),
    "lambda": lambda: lambda_lr(0.1, lambda t: 1.0 / (1.0 + t)),
    "warmup_cosine": lambda: warmup_cosine(0.1, 3, 10),
    "sequential": lambda: sequential([constant_lr(0.1), exponential_lr(0.1, 0.5)], [4]),
    "chained": lambda: chained(constant_lr(0.1), step_lr(0.1, 2)),
    "per_epoch": lambda: per_epoch(cosine_annealing_lr(0.1, 3), 2),
}


@pytest.mark.parametrize("name", sorted(REPRESENTATIVE))
def test_float32_with_and_without_x64(name):
    counts = np.arange(20)
    reference = evaluate(REPRESENTATIVE[name](), counts)
    scalar = REPRESENTATIVE[name]()(7)
    assert scalar.dtype == jnp.float32 and scalar.shape == ()
    np.testing.assert_allclose(float(scalar), reference[7], rtol=1e-6)
    with jax.enable_x64(True):
        schedule = REPRESENTATIVE[name]()
        # int64 counts (the default under x64); past int32 they saturate, not wrap.
        counts64 = jnp.asarray(np.concatenate([counts, [2**31 + 5, INT32_MAX]]), jnp.int64)
        counts32 = jnp.asarray(counts, jnp.int32)
        values, values32 = jax.jit(lambda a, b: (schedule(a), schedule(b)))(counts64, counts32)
        assert values.dtype == jnp.float32 and values32.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(values[:-2]), reference, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(values32), reference, rtol=1e-6)
        assert values[-2] == values[-1]


def test_negative_counts_clamp_to_zero_and_float_counts_are_rejected():
    schedule = cosine_annealing_lr(0.1, 5)
    np.testing.assert_array_equal(evaluate(schedule, [-3, 0]), evaluate(schedule, [0, 0]))
    with pytest.raises(TypeError, match="integer step count"):
        schedule(jnp.float32(3.0))


def test_vmap_over_hyperparameter_arrays():
    lrs = jnp.asarray([0.1, 0.2, 0.4])
    gammas = jnp.asarray([0.5, 0.9, 0.99])
    etas = jnp.asarray([0.0, 0.01, 0.02])
    t = 37

    traced = jax.jit(jax.vmap(lambda lr, g: exponential_lr(lr, g)(t)))(lrs, gammas)
    assert traced.dtype == jnp.float32
    expected = np.asarray([0.1, 0.2, 0.4]) * np.asarray([0.5, 0.9, 0.99]) ** t
    assert_lr_close(np.asarray(traced), expected)

    cos = jax.jit(jax.vmap(lambda lr, eta: cosine_annealing_lr(lr, 20, eta)(t)))(lrs, etas)
    pairs = zip([0.1, 0.2, 0.4], [0.0, 0.01, 0.02], strict=True)
    expected = [_cos_anneal(lr, eta, t % 40, 20) for lr, eta in pairs]
    assert_lr_close(np.asarray(cos), expected)

    step = jax.jit(jax.vmap(lambda lr, g: step_lr(lr, 10, g)(t)))(lrs, gammas)
    expected = np.asarray([0.1, 0.2, 0.4]) * np.asarray([0.5, 0.9, 0.99]) ** (t // 10)
    assert_lr_close(np.asarray(step), expected)

    # Concrete array hyperparameters broadcast against the counts.
    grid = jax.jit(exponential_lr(1.0, np.asarray([0.5, 0.9])))(jnp.asarray([[0], [3]]))
    np.testing.assert_allclose(np.asarray(grid), [[1.0, 1.0], [0.125, 0.729]], rtol=1e-6)


def test_schedules_compile_once_for_any_count():
    schedule = cosine_annealing_warm_restarts(0.1, 4, 2)
    traces = []

    @jax.jit
    def lr_at(count):
        traces.append(None)
        return schedule(count)

    for count in (0, 5, 100, INT32_MAX):
        lr_at(jnp.int32(count))
    assert len(traces) == 1


@pytest.mark.parametrize(
    "schedule",
    [step_lr(0.5, 2, 0.5), cosine_annealing_lr(0.5, 3, 0.1), one_cycle_lr(0.5, 5)],
    ids=["step_lr", "cosine_annealing_lr", "one_cycle_lr"],
)
def test_scale_by_lr_schedule_applies_minus_schedule_at_update_t(schedule):
    tx = scale_by_lr_schedule(schedule)
    params = jnp.zeros(3)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for t in range(8):
        updates, state = update(jnp.ones(3), state, params)
        expected = -float(schedule(t))
        np.testing.assert_allclose(np.asarray(updates), [expected] * 3, rtol=1e-7)
        np.testing.assert_allclose(float(state.learning_rate), -expected, rtol=1e-7)


def test_schedules_work_as_optax_learning_rates():
    opt = optax.sgd(warmup_cosine(0.1, 2, 6))
    params = jnp.ones(2)
    state = opt.init(params)
    updates, _ = jax.jit(opt.update)(jnp.ones(2), state, params)
    np.testing.assert_allclose(np.asarray(updates), -0.1 / 3 * np.ones(2), rtol=1e-6)


# ------------------------------------------------------------------- bad input

_cos = cosine_annealing_lr(0.1, 5)
_exp = exponential_lr(0.1, 0.9)

BAD_INPUT = [
    (step_lr, dict(init_value=-0.1, step_size=3), "init_value"),
    (step_lr, dict(init_value=float("nan"), step_size=3), "init_value"),
    (step_lr, dict(init_value=0.1, step_size=0), "step_size"),
    (step_lr, dict(init_value=0.1, step_size=2.5), "step_size"),
    (step_lr, dict(init_value=0.1, step_size=3, gamma=0.0), "gamma"),
    (step_lr, dict(init_value=0.1, step_size=3, gamma=-0.5), "gamma"),
    (multistep_lr, dict(init_value=0.1, milestones=[]), "milestones"),
    (multistep_lr, dict(init_value=0.1, milestones=[3, -1]), "milestones[1]"),
    (multistep_lr, dict(init_value=0.1, milestones=[3, 1.5]), "milestones[1]"),
    (multistep_lr, dict(init_value=0.1, milestones=5), "milestones"),
    (multistep_lr, dict(init_value=0.1, milestones=[3], gamma=0.0), "gamma"),
    (exponential_lr, dict(init_value=0.1, gamma=0.0), "gamma"),
    (exponential_lr, dict(init_value=0.1, gamma=float("inf")), "gamma"),
    (constant_lr, dict(init_value=0.1, factor=1.5), "factor"),
    (constant_lr, dict(init_value=0.1, factor=-0.1), "factor"),
    (constant_lr, dict(init_value=0.1, total_iters=0), "total_iters"),
    (linear_lr, dict(init_value=0.1, start_factor=0.0), "start_factor"),
    (linear_lr, dict(init_value=0.1, start_factor=1.5), "start_factor"),
    (linear_lr, dict(init_value=0.1, end_factor=1.5), "end_factor"),
    (linear_lr, dict(init_value=0.1, end_factor=-0.5), "end_factor"),
    (linear_lr, dict(init_value=0.1, total_iters=0), "total_iters"),
    (polynomial_lr, dict(init_value=0.1, total_iters=0), "total_iters"),
    (polynomial_lr, dict(init_value=0.1, power=-1.0), "power"),
    (cosine_annealing_lr, dict(init_value=0.1, t_max=0), "t_max"),
    (cosine_annealing_lr, dict(init_value=0.1, t_max=2**31), "t_max"),
    (cosine_annealing_lr, dict(init_value=0.1, t_max=5, eta_min=-0.1), "eta_min"),
    (cosine_annealing_warm_restarts, dict(init_value=0.1, t_0=0), "t_0"),
    (cosine_annealing_warm_restarts, dict(init_value=0.1, t_0=5, t_mult=0), "t_mult"),
    (cosine_annealing_warm_restarts, dict(init_value=0.1, t_0=5, t_mult=1.5), "t_mult"),
    (cosine_annealing_warm_restarts, dict(init_value=0.1, t_0=5, eta_min=-1.0), "eta_min"),
    (warmup_cosine, dict(init_value=0.1, warmup_steps=10, total_steps=10), "warmup_steps"),
    (warmup_cosine, dict(init_value=0.1, warmup_steps=-1, total_steps=10), "warmup_steps"),
    (warmup_cosine, dict(init_value=0.1, warmup_steps=0, total_steps=0), "total_steps"),
    (
        warmup_cosine,
        dict(init_value=0.1, warmup_steps=2, total_steps=10, warmup_start_factor=0.0),
        "warmup_start_factor",
    ),
    (
        warmup_cosine,
        dict(init_value=0.1, warmup_steps=2, total_steps=10, eta_min=-0.1),
        "eta_min",
    ),
    (cyclic_lr, dict(base_lr=-0.1, max_lr=0.1), "base_lr"),
    (cyclic_lr, dict(base_lr=0.1, max_lr=float("inf")), "max_lr"),
    (cyclic_lr, dict(base_lr=0.1, max_lr=1.0, step_size_up=0), "step_size_up"),
    (cyclic_lr, dict(base_lr=0.1, max_lr=1.0, step_size_down=-1), "step_size_down"),
    (cyclic_lr, dict(base_lr=0.1, max_lr=1.0, mode="cosine"), "mode"),
    (cyclic_lr, dict(base_lr=0.1, max_lr=1.0, mode="exp_range", gamma=0.0), "gamma"),
    (one_cycle_lr, dict(max_lr=-1.0, total_steps=10), "max_lr"),
    (one_cycle_lr, dict(max_lr=1.0, total_steps=0), "total_steps"),
    (one_cycle_lr, dict(max_lr=1.0, total_steps=10, pct_start=0.0), "pct_start"),
    (one_cycle_lr, dict(max_lr=1.0, total_steps=10, pct_start=1.0), "pct_start"),
    (one_cycle_lr, dict(max_lr=1.0, total_steps=10, pct_start=0.1), "pct_start * total_steps"),
    (
        one_cycle_lr,
        dict(max_lr=1.0, total_steps=3, pct_start=2 / 3, three_phase=True),
        "last phase",
    ),
    (one_cycle_lr, dict(max_lr=1.0, total_steps=10, anneal_strategy="cosine"), "anneal_strategy"),
    (one_cycle_lr, dict(max_lr=1.0, total_steps=10, div_factor=0.0), "div_factor"),
    (one_cycle_lr, dict(max_lr=1.0, total_steps=10, final_div_factor=-1.0), "final_div_factor"),
    (one_cycle_lr, dict(max_lr=1.0, total_steps=10, three_phase="yes"), "three_phase"),
    (lambda_lr, dict(init_value=0.1, lr_lambda=0.5), "lr_lambda"),
    (lambda_lr, dict(init_value=-0.1, lr_lambda=lambda t: 1.0), "init_value"),
    (sequential, dict(schedules=[], milestones=[]), "schedules"),
    (sequential, dict(schedules=[_cos, 0.1], milestones=[3]), "schedules[1]"),
    (sequential, dict(schedules=[_cos, _exp], milestones=[]), "milestones"),
    (sequential, dict(schedules=[_cos, _exp], milestones=[3, 5]), "milestones"),
    (sequential, dict(schedules=[_cos, _exp, _cos], milestones=[5, 5]), "strictly increasing"),
    (sequential, dict(schedules=[_cos, _exp, _cos], milestones=[5, 3]), "strictly increasing"),
    (sequential, dict(schedules=[_cos, _exp], milestones=[0]), "milestones[0]"),
    (sequential, dict(schedules=_cos, milestones=[3]), "schedules"),
    (per_epoch, dict(schedule=_cos, steps_per_epoch=0), "steps_per_epoch"),
    (per_epoch, dict(schedule=0.1, steps_per_epoch=3), "schedule"),
]


@pytest.mark.parametrize(
    "constructor, kwargs, message",
    BAD_INPUT,
    ids=[f"{c.__name__}-{m}-{i}" for i, (c, _, m) in enumerate(BAD_INPUT)],
)
def test_bad_input_raises_value_error_naming_the_argument(constructor, kwargs, message):
    with pytest.raises(ValueError) as info:
        constructor(**kwargs)
    assert message in str(info.value)


def test_bad_input_message_gives_value_and_range():
    with pytest.raises(
        ValueError, match=r"step_size must be an integer in \[1, 2147483647\], got 0"
    ):
        step_lr(0.1, 0)
    with pytest.raises(ValueError, match=r"factor must be in \[0.0, 1.0\], got 1.5"):
        constant_lr(0.1, 1.5)


@pytest.mark.parametrize(
    "schedules, message",
    [
        ((), "at least one"),
        ((step_lr(0.1, 3), _cos), "schedules[1] must be a multiplicative schedule"),
        ((step_lr(0.1, 3), warmup_cosine(0.1, 1, 5)), "schedules[1]"),
        ((step_lr(0.1, 3), exponential_lr(0.2, 0.9)), "init_value"),
    ],
)
def test_chained_rejects_non_multiplicative_or_mismatched(schedules, message):
    with pytest.raises(ValueError) as info:
        chained(*schedules)
    assert message in str(info.value)


def test_chained_accepts_a_list_and_traced_shared_init_value():
    assert isinstance(chained([step_lr(0.1, 3), exponential_lr(0.1, 0.9)]), MultiplicativeSchedule)

    def lr_at(lr):
        return chained(step_lr(lr, 3), exponential_lr(lr, 0.5))(4)

    values = jax.jit(jax.vmap(lr_at))(jnp.asarray([0.1, 0.2]))
    np.testing.assert_allclose(
        np.asarray(values), [0.1 * 0.1 * 0.5**4, 0.2 * 0.1 * 0.5**4], rtol=1e-6
    )
