"""Exponential decay every step: ``ExponentialLR``."""

from __future__ import annotations

from typing import Any

from autolr_jax._validation import check_real
from autolr_jax.schedules._base import MultiplicativeSchedule, int_pow

__all__ = ["exponential_lr"]


def exponential_lr(init_value: Any, gamma: Any) -> MultiplicativeSchedule:
    """Decays the learning rate by ``gamma`` every step.

    ``schedule(t) = init_value * gamma ** t``, as PyTorch's ``ExponentialLR``.
    Unlike ``jnp.power`` in float32, the power stays accurate to a few float32
    ulps for every count up to ``2**31 - 1`` (e.g. ``gamma = 1 - 1e-9``, which
    float32 cannot represent, still decays).

    Args:
      init_value: the initial learning rate (>= 0); may be a JAX array.
      gamma: the multiplicative decay per step (> 0); may be a JAX array.

    Returns:
      An ``optax.Schedule`` (a :class:`MultiplicativeSchedule`, usable in
      :func:`chained`) from the int32 step count to a float32 learning rate.

    Example:
      >>> import autolr_jax
      >>> schedule = autolr_jax.exponential_lr(1.0, gamma=0.5)
      >>> [float(schedule(t)) for t in (0, 1, 3)]
      [1.0, 0.5, 0.125]

    References:
      ``torch.optim.lr_scheduler.ExponentialLR``.
    """
    check_real("init_value", init_value, lo=0.0)
    check_real("gamma", gamma, lo=0.0, lo_open=True)

    def factor(count):
        return int_pow(gamma, count)

    return MultiplicativeSchedule(init_value, factor, "exponential_lr")
