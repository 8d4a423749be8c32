"""Cyclical policies: ``CyclicLR`` and ``OneCycleLR`` (learning rate only)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from autolr_jax._validation import check_choice, check_int, check_real
from autolr_jax.schedules._base import (
    INT32_MAX,
    as_count,
    cosine_mix,
    f32,
    int_floordiv_mod,
    int_pow,
    zero_safe_mul,
)

__all__ = ["cyclic_lr", "one_cycle_lr"]


def cyclic_lr(
    base_lr: Any,
    max_lr: Any,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: Any = 1.0,
) -> optax.Schedule:
    """Cycles the learning rate between ``base_lr`` and ``max_lr`` along triangles.

    Each cycle rises linearly from ``base_lr`` for ``step_size_up`` steps, then falls
    back for ``step_size_down`` steps. The amplitude ``max_lr - base_lr`` is scaled
    by 1 (``'triangular'``), by ``1 / 2 ** cycle`` for the cycle counted from 0
    (``'triangular2'``), or by ``gamma ** t`` (``'exp_range'``). This is the
    learning rate of PyTorch's ``CyclicLR``; its momentum cycling (``cycle_momentum``)
    acts on the optimizer, not on the learning rate, and is not reproduced.

    Args:
      base_lr: the lower learning rate, held at the start of each cycle (>= 0); may
        be a JAX array.
      max_lr: the upper learning rate (>= 0); may be a JAX array. As in PyTorch it
        need not exceed ``base_lr``.
      step_size_up: the steps of the rising half-cycle, an int >= 1.
      step_size_down: the steps of the falling half-cycle, an int >= 0 (0 gives a
        saw-tooth); ``None`` (default) for ``step_size_up``.
      mode: one of ``'triangular'``, ``'triangular2'``, ``'exp_range'``.
      gamma: the per-step amplitude decay of ``'exp_range'`` (> 0); may be a JAX array.

    Returns:
      An ``optax.Schedule`` from the int32 step count to a float32 learning rate.

    Example:
      >>> import autolr_jax
      >>> schedule = autolr_jax.cyclic_lr(1.0, 3.0, step_size_up=2, mode="triangular2")
      >>> [float(schedule(t)) for t in range(9)]
      [1.0, 2.0, 3.0, 2.0, 1.0, 1.5, 2.0, 1.5, 1.0]

    References:
      ``torch.optim.lr_scheduler.CyclicLR``; Smith, `Cyclical Learning Rates for
      Training Neural Networks <https://arxiv.org/abs/1506.01186>`_.
    """
    check_real("base_lr", base_lr, lo=0.0)
    check_real("max_lr", max_lr, lo=0.0)
    up = check_int("step_size_up", step_size_up, lo=1, hi=INT32_MAX)
    if step_size_down is None:
        down = up
    else:
        down = check_int("step_size_down", step_size_down, lo=0, hi=INT32_MAX)
    check_choice("mode", mode, ("triangular", "triangular2", "exp_range"))
    check_real("gamma", gamma, lo=0.0, lo_open=True)
    total = up + down

    def schedule(count):
        count = as_count(count)
        cycle, pos = int_floordiv_mod(count, total)
        rising = pos.astype(jnp.float32) / f32(up)
        # pos - up <= down, so down - (pos - up) cannot overflow even when up + down does.
        falling = (down - jnp.maximum(pos - up, 0)).astype(jnp.float32) / f32(max(down, 1))
        scale_factor = jnp.where(pos <= up, rising, falling)
        if mode == "triangular":
            amplitude = jnp.ones((), jnp.float32)
        elif mode == "triangular2":
            amplitude = jnp.ldexp(jnp.ones((), jnp.float32), -cycle)
        else:
            amplitude = int_pow(gamma, count)
        height = (f32(max_lr) - f32(base_lr)) * scale_factor
        # A zero height (base_lr == max_lr, or the start of a cycle) gives base_lr, as in
        # PyTorch, also once exp_range's gamma ** t (gamma > 1) has overflowed to inf.
        return f32(base_lr) + zero_safe_mul(height, amplitude)

    return schedule


def _distance(count: jax.Array, x: float) -> jax.Array:
    """``count - x`` in float32 for a host float ``x``, exact up to one rounding near 0."""
    whole = math.floor(x)
    if 0 <= whole <= INT32_MAX:
        return (count - whole).astype(jnp.float32) - np.float32(x - whole)
    return count.astype(jnp.float32) - np.float32(x)


def one_cycle_lr(
    max_lr: Any,
    total_steps: int,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> optax.Schedule:
    """The 1cycle policy: warm up to ``max_lr``, then anneal far below the start.

    The learning rate anneals (cosine or linear) from ``max_lr / div_factor`` up to
    ``max_lr`` over the first ``pct_start * total_steps - 1`` steps, then down to
    ``max_lr / (div_factor * final_div_factor)`` at step ``total_steps - 1``. With
    ``three_phase`` it first comes back down to ``max_lr / div_factor``
    symmetrically, then anneals to the minimum. Values equal the learning rate of
    PyTorch's ``OneCycleLR`` for every count ``0 <= t <= total_steps`` (at
    ``total_steps`` PyTorch extrapolates one step past the minimum).

    PyTorch raises for more than ``total_steps`` steps; this schedule instead holds
    its final learning rate, the value at ``total_steps - 1`` (the minimum
    ``max_lr / (div_factor * final_div_factor)``), for every count
    ``> total_steps``. Unlike ``optax.cosine_onecycle_schedule`` the peak is at
    PyTorch's step, not one step later.

    Args:
      max_lr: the peak learning rate (>= 0); may be a JAX array.
      total_steps: the length of the cycle, an int >= 1.
      pct_start: the fraction of the cycle spent warming up, in ``(0, 1)``.
      anneal_strategy: ``'cos'`` or ``'linear'``.
      div_factor: the initial learning rate is ``max_lr / div_factor`` (> 0).
      final_div_factor: the minimal learning rate is ``max_lr / (div_factor *
        final_div_factor)`` (> 0).
      three_phase: whether to use the three phases of the original paper instead
        of fastai's two.

    Returns:
      An ``optax.Schedule`` from the int32 step count to a float32 learning rate.

    Raises:
      ValueError: for out-of-range arguments, and where PyTorch would divide by zero
        while stepping: ``pct_start * total_steps == 1`` (an empty warmup at step
        0), or with ``three_phase`` an empty last phase.

    Example:
      >>> import autolr_jax
      >>> schedule = autolr_jax.one_cycle_lr(1.0, total_steps=10, pct_start=0.5,
      ...                                    anneal_strategy="linear", div_factor=5.0,
      ...                                    final_div_factor=2.0)
      >>> [round(float(schedule(t)), 6) for t in (0, 2, 4, 9, 20)]
      [0.2, 0.6, 1.0, 0.1, 0.1]

    References:
      ``torch.optim.lr_scheduler.OneCycleLR``; Smith & Topin, `Super-Convergence
      <https://arxiv.org/abs/1708.07120>`_.
    """
    check_real("max_lr", max_lr, lo=0.0)
    total_steps = check_int("total_steps", total_steps, lo=1, hi=INT32_MAX)
    check_real("pct_start", pct_start, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    check_choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
    check_real("div_factor", div_factor, lo=0.0, lo_open=True)
    check_real("final_div_factor", final_div_factor, lo=0.0, lo_open=True)
    if not isinstance(three_phase, (bool, np.bool_)):
        raise ValueError(f"three_phase must be a bool, got {three_phase!r}")
    pct_start = float(pct_start)

    initial_lr = max_lr / div_factor
    min_lr = initial_lr / final_div_factor
    # Phase ends in PyTorch's own float arithmetic, so boundaries land on the same steps.
    end_warmup = float(pct_start * total_steps) - 1
    if three_phase:
        end_down = float(2 * pct_start * total_steps) - 2
        phases = [
            (end_warmup, initial_lr, max_lr),
            (end_down, max_lr, initial_lr),
            (total_steps - 1, initial_lr, min_lr),
        ]
    else:
        phases = [(end_warmup, initial_lr, max_lr), (total_steps - 1, max_lr, min_lr)]

    if end_warmup == 0:
        raise ValueError(
            f"pct_start * total_steps must not be 1 (got pct_start={pct_start!r}, "
            f"total_steps={total_steps!r}): the warmup phase would be empty and PyTorch's "
            "OneCycleLR divides by zero at step 0"
        )
    if three_phase and phases[-1][0] - phases[-2][0] == 0:
        raise ValueError(
            f"with three_phase=True, 2 * pct_start * total_steps must not be total_steps + 1 "
            f"(got pct_start={pct_start!r}, total_steps={total_steps!r}): the last phase "
            "would be empty and PyTorch's OneCycleLR divides by zero at step total_steps"
        )

    def schedule(count):
        count = as_count(count)
        step = jnp.where(count > total_steps, total_steps - 1, count)
        # PyTorch takes the first phase whose end_step is >= step (the last one otherwise).
        values, in_phase = [], []
        start = 0.0
        for end, start_lr, end_lr in phases:
            length = end - start
            # A zero-length phase that can be selected was rejected above; one that
            # cannot be selected only needs a finite, discarded value.
            length = length if length != 0 else 1.0
            from_start = _distance(step, start)
            to_end = -_distance(step, end)
            if anneal_strategy == "cos":
                value = cosine_mix(start_lr, end_lr, to_end, from_start, length)
            else:
                inv = np.float32(1.0 / length)
                value = f32(start_lr) * (to_end * inv) + f32(end_lr) * (from_start * inv)
            values.append(value)
            in_phase.append(step <= min(math.floor(end), INT32_MAX))
            start = end
        result = values[-1]
        for cond, value in zip(reversed(in_phase[:-1]), reversed(values[:-1]), strict=True):
            result = jnp.where(cond, value, result)
        return result.astype(jnp.float32)

    return schedule
