"""Factor ramps over ``total_iters`` steps: ``ConstantLR``, ``LinearLR``, ``PolynomialLR``."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from autolr_jax._validation import check_int, check_real, is_concrete
from autolr_jax.schedules._base import INT32_MAX, MultiplicativeSchedule, f32

__all__ = ["constant_lr", "linear_lr", "polynomial_lr"]

# PyTorch accepts total_iters=0 but then holds degenerate values (ConstantLR keeps
# the factor forever, LinearLR keeps start_factor, its closed form divides by
# zero): a ramp over no steps is a configuration error here.
_TOTAL_ITERS_LO = 1


def constant_lr(
    init_value: Any, factor: Any = 1.0 / 3, total_iters: int = 5
) -> MultiplicativeSchedule:
    """Multiplies the learning rate by ``factor`` for the first ``total_iters`` steps.

    ``schedule(t) = init_value * (factor if t < total_iters else 1)``, as PyTorch's
    ``ConstantLR``. (With ``factor=0`` PyTorch divides by zero at step
    ``total_iters``; here the learning rate returns to ``init_value`` as designed.)

    Args:
      init_value: the learning rate after ``total_iters`` steps (>= 0); may be a JAX array.
      factor: the factor before ``total_iters``, in ``[0, 1]`` as PyTorch requires.
      total_iters: the number of steps the factor applies, an int >= 1.

    Returns:
      An ``optax.Schedule`` (a :class:`MultiplicativeSchedule`, usable in
      :func:`chained`) from the int32 step count to a float32 learning rate.

    Example:
      >>> import autolr_jax
      >>> schedule = autolr_jax.constant_lr(1.0, factor=0.5, total_iters=4)
      >>> [float(schedule(t)) for t in (0, 3, 4)]
      [0.5, 0.5, 1.0]

    References:
      ``torch.optim.lr_scheduler.ConstantLR``.
    """
    check_real("init_value", init_value, lo=0.0)
    check_real("factor", factor, lo=0.0, hi=1.0)
    total_iters = check_int("total_iters", total_iters, lo=_TOTAL_ITERS_LO, hi=INT32_MAX)

    def factor_fn(count):
        return jnp.where(count < total_iters, f32(factor), jnp.ones((), jnp.float32))

    return MultiplicativeSchedule(init_value, factor_fn, "constant_lr")


def linear_lr(
    init_value: Any,
    start_factor: Any = 1.0 / 3,
    end_factor: Any = 1.0,
    total_iters: int = 5,
) -> MultiplicativeSchedule:
    """Ramps the factor linearly from ``start_factor`` to ``end_factor`` over ``total_iters`` steps.

    ``schedule(t) = init_value * (start_factor + (end_factor - start_factor) *
    min(t, total_iters) / total_iters)``, the closed form of PyTorch's ``LinearLR``
    (which steps it as a product of ratios), constant after ``total_iters``.

    Args:
      init_value: the learning rate the factors multiply (>= 0); may be a JAX array.
      start_factor: the factor at step 0, in ``(0, 1]`` as PyTorch requires.
      end_factor: the factor from step ``total_iters`` on, in ``[0, 1]``.
      total_iters: the length of the ramp, an int >= 1.

    Returns:
      An ``optax.Schedule`` (a :class:`MultiplicativeSchedule`, usable in
      :func:`chained`) from the int32 step count to a float32 learning rate.

    Example:
      >>> import autolr_jax
      >>> schedule = autolr_jax.linear_lr(1.0, start_factor=0.25, end_factor=1.0, total_iters=3)
      >>> [float(schedule(t)) for t in (0, 1, 2, 3, 100)]
      [0.25, 0.5, 0.75, 1.0, 1.0]

    References:
      ``torch.optim.lr_scheduler.LinearLR``.
    """
    check_real("init_value", init_value, lo=0.0)
    check_real("start_factor", start_factor, lo=0.0, hi=1.0, lo_open=True)
    check_real("end_factor", end_factor, lo=0.0, hi=1.0)
    total_iters = check_int("total_iters", total_iters, lo=_TOTAL_ITERS_LO, hi=INT32_MAX)

    def factor_fn(count):
        done = jnp.minimum(count, total_iters)
        # Both weights are >= 0: no cancellation when end_factor is 0 and t nears total_iters.
        w_end = done.astype(jnp.float32) / f32(total_iters)
        w_start = (total_iters - done).astype(jnp.float32) / f32(total_iters)
        return f32(start_factor) * w_start + f32(end_factor) * w_end

    return MultiplicativeSchedule(init_value, factor_fn, "linear_lr")


def polynomial_lr(
    init_value: Any, total_iters: int = 5, power: Any = 1.0
) -> MultiplicativeSchedule:
    """Decays the learning rate polynomially to 0 over ``total_iters`` steps.

    ``schedule(t) = init_value * (1 - min(t, total_iters) / total_iters) ** power``,
    the closed form of PyTorch's ``PolynomialLR``; 0 from ``total_iters`` on
    (``init_value`` for all ``t`` when ``power == 0``).

    Args:
      init_value: the initial learning rate (>= 0); may be a JAX array.
      total_iters: the number of decay steps, an int >= 1.
      power: the power of the polynomial (>= 0; PyTorch divides by zero at
        ``total_iters`` for a negative power).

    Returns:
      An ``optax.Schedule`` (a :class:`MultiplicativeSchedule`, usable in
      :func:`chained`) from the int32 step count to a float32 learning rate.

    Example:
      >>> import autolr_jax
      >>> schedule = autolr_jax.polynomial_lr(1.0, total_iters=4, power=2.0)
      >>> [float(schedule(t)) for t in (0, 2, 4, 5)]
      [1.0, 0.25, 0.0, 0.0]

    References:
      ``torch.optim.lr_scheduler.PolynomialLR``.
    """
    check_real("init_value", init_value, lo=0.0)
    total_iters = check_int("total_iters", total_iters, lo=_TOTAL_ITERS_LO, hi=INT32_MAX)
    check_real("power", power, lo=0.0)

    # 0 ** power is 0 for any power > 0, even one that float32 rounds to 0.
    positive = np.asarray(power) > 0 if is_concrete(power) else jnp.asarray(power) > 0

    def factor_fn(count):
        left = total_iters - jnp.minimum(count, total_iters)
        ratio = left.astype(jnp.float32) / f32(total_iters)
        at_end = jnp.where(positive, np.float32(0.0), np.float32(1.0))
        return jnp.where(left == 0, at_end, jnp.power(ratio, f32(power)))

    return MultiplicativeSchedule(init_value, factor_fn, "polynomial_lr")
