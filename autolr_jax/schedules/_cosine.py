"""Cosine annealing: ``CosineAnnealingLR``, ``CosineAnnealingWarmRestarts``, warmup + cosine."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from autolr_jax._validation import check_int, check_real
from autolr_jax.schedules._base import INT32_MAX, as_count, cosine_mix, int_floordiv_mod
from autolr_jax.schedules._factor import linear_lr

__all__ = ["cosine_annealing_lr", "cosine_annealing_warm_restarts", "warmup_cosine"]


def cosine_annealing_lr(init_value: Any, t_max: int, eta_min: Any = 0.0) -> optax.Schedule:
    """Anneals the learning rate from ``init_value`` to ``eta_min`` along a half cosine.

    ``schedule(t) = eta_min + (init_value - eta_min) * (1 + cos(pi * t / t_max)) / 2``
    for every ``t``: past ``t_max`` the learning rate rises back to ``init_value`` at
    ``2 * t_max`` and keeps oscillating with period ``2 * t_max``, which is what
    PyTorch's ``CosineAnnealingLR`` holds when stepped past ``T_max`` (its
    recursive form has the same periodic values). ``optax.cosine_decay_schedule``
    instead stays at the minimum after ``t_max``; to stop at ``eta_min``, stop
    training at ``t_max`` or append ``optax.constant_schedule(eta_min)`` with
    :func:`sequential`.

    Args:
      init_value: the maximal (initial) learning rate (>= 0); may be a JAX array.
      t_max: the number of steps from ``init_value`` down to ``eta_min``, an int >= 1.
      eta_min: the minimal learning rate (>= 0); may be a JAX array.

    Returns:
      An ``optax.Schedule`` from the int32 step count to a float32 learning rate.

    Example:
      >>> import autolr_jax
      >>> schedule = autolr_jax.cosine_annealing_lr(1.0, t_max=4)
      >>> [round(float(schedule(t)), 6) for t in (0, 2, 4, 6, 8)]
      [1.0, 0.5, 0.0, 0.5, 1.0]

    References:
      ``torch.optim.lr_scheduler.CosineAnnealingLR``; Loshchilov & Hutter, `SGDR:
      Stochastic Gradient Descent with Warm Restarts <https://arxiv.org/abs/1608.03983>`_.
    """
    check_real("init_value", init_value, lo=0.0)
    t_max = check_int("t_max", t_max, lo=1, hi=INT32_MAX)
    check_real("eta_min", eta_min, lo=0.0)

    def schedule(count):
        count = as_count(count)
        _, phase = int_floordiv_mod(count, 2 * t_max)
        # Distance to the nearest minimum (at odd multiples of t_max), exact in int32.
        to_min = jnp.abs(t_max - phase)
        from_max = t_max - to_min
        return cosine_mix(
            init_value,
            eta_min,
            to_min.astype(jnp.float32),
            from_max.astype(jnp.float32),
            t_max,
        )

    return schedule


def cosine_annealing_warm_restarts(
    init_value: Any, t_0: int, t_mult: int = 1, eta_min: Any = 0.0
) -> optax.Schedule:
    """Cosine annealing from ``init_value`` towards ``eta_min``, restarted at growing periods.

    The ``i``-th cycle (from 0) lasts ``t_0 * t_mult ** i`` steps; within it, at
    ``t_cur`` steps since its start, ``schedule = eta_min + (init_value - eta_min) *
    (1 + cos(pi * t_cur / t_i)) / 2``. The learning rate jumps back to
    ``init_value`` at each restart and never quite reaches ``eta_min``, as PyTorch's
    ``CosineAnnealingWarmRestarts`` stepped without an epoch argument.

    Args:
      init_value: the learning rate at each restart (>= 0); may be a JAX array.
      t_0: the length of the first cycle, an int >= 1.
      t_mult: the growth factor of the cycle length, an int >= 1.
      eta_min: the minimal learning rate (>= 0); may be a JAX array.

    Returns:
      An ``optax.Schedule`` from the int32 step count to a float32 learning rate.

    Example:
      >>> import autolr_jax
      >>> schedule = autolr_jax.cosine_annealing_warm_restarts(1.0, t_0=2, t_mult=2)
      >>> [round(float(schedule(t)), 6) for t in range(8)]
      [1.0, 0.5, 1.0, 0.853553, 0.5, 0.146447, 1.0, 0.96194]

    References:
      ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``; Loshchilov & Hutter,
      `SGDR: Stochastic Gradient Descent with Warm Restarts
      <https://arxiv.org/abs/1608.03983>`_.
    """
    check_real("init_value", init_value, lo=0.0)
    t_0 = check_int("t_0", t_0, lo=1, hi=INT32_MAX)
    t_mult = check_int("t_mult", t_mult, lo=1)
    check_real("eta_min", eta_min, lo=0.0)

    if t_mult == 1:

        def schedule(count):
            count = as_count(count)
            _, t_cur = int_floordiv_mod(count, t_0)
            return cosine_mix(
                init_value,
                eta_min,
                (t_0 - t_cur).astype(jnp.float32),
                t_cur.astype(jnp.float32),
                t_0,
            )

        return schedule

    # Cycle i spans [starts[i], starts[i + 1]); tabulate every cycle that starts
    # within int32 counts, on the host in Python ints (no overflow).
    starts = [0]
    while starts[-1] <= INT32_MAX:
        starts.append(starts[-1] + t_0 * t_mult ** (len(starts) - 1))
    ends = starts[1:]
    starts = starts[:-1]
    starts_i32 = np.asarray(starts, dtype=np.int32)
    # The end of the last cycle may not fit in int32: split it as an int32 part
    # (clipped) plus a non-negative float excess, so end - count stays accurate.
    ends_i32 = np.asarray([min(e, INT32_MAX) for e in ends], dtype=np.int32)
    ends_excess = np.asarray([max(e - INT32_MAX, 0) for e in ends], dtype=np.float32)
    lengths = np.asarray([e - s for s, e in zip(starts, ends, strict=True)], dtype=np.float32)

    def schedule(count):
        count = as_count(count)
        cycle = jnp.searchsorted(jnp.asarray(starts_i32), count, side="right") - 1
        t_cur = count - jnp.asarray(starts_i32)[cycle]
        to_end = (jnp.asarray(ends_i32)[cycle] - count).astype(jnp.float32) + jnp.asarray(
            ends_excess
        )[cycle]
        return cosine_mix(
            init_value, eta_min, to_end, t_cur.astype(jnp.float32), jnp.asarray(lengths)[cycle]
        )

    return schedule


def warmup_cosine(
    init_value: Any,
    warmup_steps: int,
    total_steps: int,
    warmup_start_factor: Any = 1.0 / 3,
    eta_min: Any = 0.0,
) -> optax.Schedule:
    """Linear warmup to ``init_value``, then cosine annealing to ``eta_min`` at ``total_steps``.

    For ``t < warmup_steps``: ``init_value * (warmup_start_factor + (1 -
    warmup_start_factor) * t / warmup_steps)``; from ``warmup_steps`` on:
    :func:`cosine_annealing_lr` with ``t_max = total_steps - warmup_steps``
    counted from ``warmup_steps``. This is exactly PyTorch's
    ``SequentialLR(opt, [LinearLR(opt, warmup_start_factor, 1.0, warmup_steps),
    CosineAnnealingLR(opt, total_steps - warmup_steps, eta_min)], [warmup_steps])``,
    including past ``total_steps``, where the cosine rises again with period
    ``2 * (total_steps - warmup_steps)``.

    Args:
      init_value: the peak learning rate (>= 0); may be a JAX array.
      warmup_steps: the length of the warmup, an int in ``[0, total_steps - 1]``
        (0: no warmup).
      total_steps: the step at which the learning rate reaches ``eta_min``, an int >= 1.
      warmup_start_factor: the fraction of ``init_value`` at step 0, in ``(0, 1]``.
        The default ``1/3`` is that of PyTorch's ``LinearLR``.
      eta_min: the minimal learning rate (>= 0); may be a JAX array.

    Returns:
      An ``optax.Schedule`` from the int32 step count to a float32 learning rate.

    Example:
      >>> import autolr_jax
      >>> schedule = autolr_jax.warmup_cosine(1.0, warmup_steps=2, total_steps=6,
      ...                                     warmup_start_factor=0.5)
      >>> [round(float(schedule(t)), 6) for t in range(7)]
      [0.5, 0.75, 1.0, 0.853553, 0.5, 0.146447, 0.0]

    References:
      ``torch.optim.lr_scheduler.SequentialLR``, ``LinearLR``, ``CosineAnnealingLR``;
      Goyal et al., `Accurate, Large Minibatch SGD <https://arxiv.org/abs/1706.02677>`_.
    """
    check_real("init_value", init_value, lo=0.0)
    total_steps = check_int("total_steps", total_steps, lo=1, hi=INT32_MAX)
    warmup_steps = check_int("warmup_steps", warmup_steps, lo=0, hi=total_steps - 1)
    check_real("warmup_start_factor", warmup_start_factor, lo=0.0, hi=1.0, lo_open=True)
    check_real("eta_min", eta_min, lo=0.0)

    cosine = cosine_annealing_lr(init_value, total_steps - warmup_steps, eta_min)
    if warmup_steps == 0:
        return cosine

    warmup = linear_lr(init_value, warmup_start_factor, 1.0, warmup_steps)

    def schedule(count):
        count = as_count(count)
        return jnp.where(
            count < warmup_steps, warmup(count), cosine(jnp.maximum(count - warmup_steps, 0))
        )

    return schedule
