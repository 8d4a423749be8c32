"""Schedules from functions and schedules: ``LambdaLR``, ``SequentialLR``, ``ChainedScheduler``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from autolr_jax._validation import check_int, check_milestones, check_real, is_concrete
from autolr_jax.schedules._base import (
    INT32_MAX,
    MultiplicativeSchedule,
    as_count,
    f32,
    zero_safe_mul,
)

__all__ = ["chained", "lambda_lr", "per_epoch", "sequential"]

_MULTIPLICATIVE = (
    "step_lr, multistep_lr, exponential_lr, constant_lr, linear_lr, polynomial_lr, "
    "lambda_lr, chained, or per_epoch of one of these"
)


def lambda_lr(init_value: Any, lr_lambda: Callable[[jax.Array], Any]) -> MultiplicativeSchedule:
    """The learning rate ``init_value * lr_lambda(t)``.

    As PyTorch's ``LambdaLR``, except that ``lr_lambda`` receives the int32 step
    count as a JAX array and must be traceable: write it with ``jnp`` operations
    (``jnp.where`` rather than ``if``).

    Args:
      init_value: the learning rate the factor multiplies (>= 0); may be a JAX array.
      lr_lambda: a pure function of the int32 step count to a multiplicative factor.

    Returns:
      An ``optax.Schedule`` (a :class:`MultiplicativeSchedule`, usable in
      :func:`chained`) from the int32 step count to a float32 learning rate.

    Example:
      >>> import jax.numpy as jnp, autolr_jax
      >>> schedule = autolr_jax.lambda_lr(1.0, lambda t: jnp.where(t < 2, 0.5, 1.0))
      >>> [float(schedule(t)) for t in range(4)]
      [0.5, 0.5, 1.0, 1.0]

    References:
      ``torch.optim.lr_scheduler.LambdaLR``.
    """
    check_real("init_value", init_value, lo=0.0)
    if not callable(lr_lambda):
        raise ValueError(f"lr_lambda must be a callable of the step count, got {lr_lambda!r}")

    def factor(count):
        return f32(lr_lambda(count))

    return MultiplicativeSchedule(init_value, factor, "lambda_lr")


def _same_value(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if not (is_concrete(a) and is_concrete(b)):
        return False
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.all(a == b))


def chained(*schedules: MultiplicativeSchedule) -> MultiplicativeSchedule:
    """Multiplies the factors of several multiplicative schedules.

    ``schedule(t) = init_value * prod_i factor_i(t)``: the learning rate of
    PyTorch's ``ChainedScheduler`` over ``StepLR``, ``MultiStepLR``,
    ``ExponentialLR``, ``ConstantLR``, ``LinearLR`` and ``PolynomialLR``, which each
    multiply the optimizer's learning rate by their own factor. A
    :func:`lambda_lr` contributes its factor ``lr_lambda(t)`` the same way
    (PyTorch's ``LambdaLR`` is not chainable: inside a ``ChainedScheduler`` it
    overwrites the learning rate with ``base_lr * lr_lambda(t)``, discarding the
    factors of the schedulers before it). Non-multiplicative schedules (cosine,
    cyclic, one-cycle, sequential) have no factor to multiply and are rejected.

    Args:
      *schedules: multiplicative schedules with the same ``init_value`` (they share
        PyTorch's optimizer), made by step_lr, multistep_lr, exponential_lr,
        constant_lr, linear_lr, polynomial_lr, lambda_lr, chained or per_epoch of
        one of these. A single list or tuple of them is also accepted.

    Returns:
      A :class:`MultiplicativeSchedule` (itself chainable).

    Example:
      >>> import autolr_jax
      >>> schedule = autolr_jax.chained(
      ...     autolr_jax.constant_lr(1.0, factor=0.5, total_iters=2),
      ...     autolr_jax.exponential_lr(1.0, gamma=0.5))
      >>> [float(schedule(t)) for t in range(4)]
      [0.5, 0.25, 0.25, 0.125]

    References:
      ``torch.optim.lr_scheduler.ChainedScheduler``.
    """
    if len(schedules) == 1 and isinstance(schedules[0], (list, tuple)):
        schedules = tuple(schedules[0])
    if not schedules:
        raise ValueError("schedules must contain at least one schedule, got none")
    for i, s in enumerate(schedules):
        if not isinstance(s, MultiplicativeSchedule):
            raise ValueError(
                f"schedules[{i}] must be a multiplicative schedule ({_MULTIPLICATIVE}), got {s!r}"
            )
    init_value = schedules[0].init_value
    for i, s in enumerate(schedules[1:], start=1):
        if not _same_value(s.init_value, init_value):
            raise ValueError(
                f"schedules[{i}].init_value must equal schedules[0].init_value "
                f"({init_value!r}): chained schedules share one base learning rate, "
                f"got {s.init_value!r}"
            )
    factors = tuple(s.factor for s in schedules)

    def factor(count):
        result = factors[0](count)
        for f in factors[1:]:
            # A factor that reached 0 keeps the product 0 when another overflowed to inf.
            result = zero_safe_mul(result, f(count))
        return result

    return MultiplicativeSchedule(init_value, factor, "chained")


def sequential(schedules: Sequence[optax.Schedule], milestones: Sequence[int]) -> optax.Schedule:
    """Runs schedules one after another, each restarted from its own step 0.

    With ``milestones = [m_1, ..., m_{n-1}]``, ``schedule(t) = schedules[0](t)`` for
    ``t < m_1`` and ``schedules[i](t - m_i)`` for ``m_i <= t < m_{i+1}``, as PyTorch's
    ``SequentialLR``: at a milestone it sets the next scheduler to its epoch 0 and
    evaluates its closed form from ``base_lr`` (the optimizer's initial learning
    rate), so each scheduler restarts from scratch whatever the learning rate was.
    The schedules here carry their own ``init_value``, which is PyTorch's when
    they all use the same one.

    Args:
      schedules: a non-empty sequence of ``optax.Schedule``.
      milestones: ``len(schedules) - 1`` strictly increasing step counts (ints >= 1)
        at which to switch to the next schedule. (PyTorch also accepts repeated or
        zero milestones, which only make a schedule unreachable.)

    Returns:
      An ``optax.Schedule`` from the int32 step count to a float32 learning rate.

    Example:
      >>> import autolr_jax
      >>> schedule = autolr_jax.sequential(
      ...     [autolr_jax.constant_lr(1.0, factor=0.5, total_iters=10),
      ...      autolr_jax.exponential_lr(1.0, gamma=0.5)],
      ...     milestones=[2])
      >>> [float(schedule(t)) for t in range(5)]
      [0.5, 0.5, 1.0, 0.5, 0.25]

    References:
      ``torch.optim.lr_scheduler.SequentialLR``.
    """
    if isinstance(schedules, (str, bytes)) or not isinstance(schedules, Sequence):
        raise ValueError(f"schedules must be a sequence of schedules, got {schedules!r}")
    schedules = tuple(schedules)
    if not schedules:
        raise ValueError("schedules must contain at least one schedule, got none")
    for i, s in enumerate(schedules):
        if not callable(s):
            raise ValueError(f"schedules[{i}] must be a schedule (a callable), got {s!r}")
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, (Sequence, np.ndarray)):
        raise ValueError(f"milestones must be a sequence of integers, got {milestones!r}")
    if len(milestones) != len(schedules) - 1:
        raise ValueError(
            f"milestones must have len(schedules) - 1 = {len(schedules) - 1} entries, "
            f"got {len(milestones)}: {list(milestones)!r}"
        )
    if len(schedules) == 1:
        only = schedules[0]
        return lambda count: f32(only(as_count(count)))
    ms = check_milestones("milestones", milestones, lo=1)
    for i in range(1, len(ms)):
        if ms[i] <= ms[i - 1]:
            raise ValueError(f"milestones must be strictly increasing, got {list(ms)!r}")
    # Schedules after the last reachable milestone never run.
    reachable = [m for m in ms if m <= INT32_MAX]
    parts = [_restarted(s) for s in schedules[: len(reachable) + 1]]
    # optax.join_schedules gives schedules[i](t - m_i) for m_i <= t < m_{i+1}; our parts
    # clamp the negative counts it passes to the schedules not selected.
    joined = optax.join_schedules(parts, reachable)

    def schedule(count):
        return joined(as_count(count))

    return schedule


def _restarted(schedule: optax.Schedule) -> optax.Schedule:
    """``schedule`` of a count clamped at 0, as float32."""
    return lambda count: f32(schedule(jnp.maximum(count, 0)))


def per_epoch(schedule: optax.Schedule, steps_per_epoch: int) -> optax.Schedule:
    """Counts a schedule in epochs while the optimizer counts steps.

    ``per_epoch(schedule, steps_per_epoch)(s) = schedule(s // steps_per_epoch)``: the
    learning rate of a PyTorch scheduler stepped once per epoch of
    ``steps_per_epoch`` optimizer steps.

    Args:
      schedule: an ``optax.Schedule`` of the epoch count.
      steps_per_epoch: the optimizer steps per epoch, an int >= 1.

    Returns:
      An ``optax.Schedule`` of the step count; a :class:`MultiplicativeSchedule`
      (usable in :func:`chained`) when ``schedule`` is one.

    Example:
      >>> import autolr_jax
      >>> schedule = autolr_jax.per_epoch(autolr_jax.exponential_lr(1.0, 0.5), 100)
      >>> [float(schedule(s)) for s in (0, 99, 100, 250)]
      [1.0, 1.0, 0.5, 0.25]

    References:
      ``torch.optim.lr_scheduler.LRScheduler.step`` (called once per epoch).
    """
    if not callable(schedule):
        raise ValueError(f"schedule must be a schedule (a callable), got {schedule!r}")
    steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, lo=1, hi=INT32_MAX)
    if isinstance(schedule, MultiplicativeSchedule):
        inner = schedule.factor
        return MultiplicativeSchedule(
            schedule.init_value,
            lambda count: inner(count // steps_per_epoch),
            f"per_epoch({schedule.name})",
        )

    def epoch_schedule(count):
        return f32(schedule(as_count(count) // steps_per_epoch))

    return epoch_schedule
