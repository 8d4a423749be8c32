"""Piecewise-constant decay: ``StepLR`` and ``MultiStepLR``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from autolr_jax._validation import check_int, check_milestones, check_real
from autolr_jax.schedules._base import INT32_MAX, MultiplicativeSchedule, int_pow

__all__ = ["multistep_lr", "step_lr"]


def step_lr(init_value: Any, step_size: int, gamma: Any = 0.1) -> MultiplicativeSchedule:
    """Decays the learning rate by ``gamma`` every ``step_size`` steps.

    ``schedule(t) = init_value * gamma ** (t // step_size)``, the learning rate
    PyTorch's ``StepLR`` holds after ``t`` calls of ``scheduler.step()``.

    Args:
      init_value: the initial learning rate (>= 0); may be a JAX array.
      step_size: the period of the decay, an int >= 1.
      gamma: the multiplicative decay (> 0); may be a JAX array.

    Returns:
      An ``optax.Schedule`` (a :class:`MultiplicativeSchedule`, usable in
      :func:`chained`) from the int32 step count to a float32 learning rate.

    Example:
      >>> import autolr_jax
      >>> schedule = autolr_jax.step_lr(1.0, step_size=30, gamma=0.5)
      >>> [float(schedule(t)) for t in (0, 29, 30, 60)]
      [1.0, 1.0, 0.5, 0.25]

    References:
      ``torch.optim.lr_scheduler.StepLR``.
    """
    check_real("init_value", init_value, lo=0.0)
    step_size = check_int("step_size", step_size, lo=1, hi=INT32_MAX)
    check_real("gamma", gamma, lo=0.0, lo_open=True)

    def factor(count):
        return int_pow(gamma, count // step_size)

    return MultiplicativeSchedule(init_value, factor, "step_lr")


def multistep_lr(
    init_value: Any, milestones: Sequence[int], gamma: Any = 0.1
) -> MultiplicativeSchedule:
    """Decays the learning rate by ``gamma`` at each milestone.

    ``schedule(t) = init_value * gamma ** n(t)`` where ``n(t)`` counts the
    milestones ``<= t``, as PyTorch's ``MultiStepLR``: a milestone listed ``k``
    times applies ``gamma ** k``, the order of the list does not matter and a
    milestone at 0 already applies at step 0.

    Args:
      init_value: the initial learning rate (>= 0); may be a JAX array.
      milestones: a non-empty sequence of step counts (ints >= 0), in any order,
        repeats allowed.
      gamma: the multiplicative decay (> 0); may be a JAX array.

    Returns:
      An ``optax.Schedule`` (a :class:`MultiplicativeSchedule`, usable in
      :func:`chained`) from the int32 step count to a float32 learning rate.

    Example:
      >>> import autolr_jax
      >>> schedule = autolr_jax.multistep_lr(1.0, milestones=[10, 20, 20], gamma=0.5)
      >>> [float(schedule(t)) for t in (0, 10, 19, 20)]
      [1.0, 0.5, 0.5, 0.125]

    References:
      ``torch.optim.lr_scheduler.MultiStepLR``.
    """
    check_real("init_value", init_value, lo=0.0)
    milestones = check_milestones("milestones", milestones, lo=0)
    check_real("gamma", gamma, lo=0.0, lo_open=True)
    # Milestones past the largest int32 count are never reached.
    ms = np.asarray(sorted(m for m in milestones if m <= INT32_MAX), dtype=np.int32)

    def factor(count):
        if ms.size == 0:
            return jnp.ones(count.shape, jnp.float32)
        passed = jnp.searchsorted(jnp.asarray(ms), count, side="right").astype(jnp.int32)
        return int_pow(gamma, passed)

    return MultiplicativeSchedule(init_value, factor, "multistep_lr")
