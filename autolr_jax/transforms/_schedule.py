"""Any learning-rate schedule as an Optax ``GradientTransformation``."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from autolr_jax._state_utils import register_lr_state
from autolr_jax._validation import check_real

__all__ = ["ScaleByLRScheduleState", "scale_by_lr_schedule"]


@register_lr_state
class ScaleByLRScheduleState(NamedTuple):
    """State of :func:`scale_by_lr_schedule`.

    Attributes:
      count: number of updates applied so far (int32, saturating at 2**31 - 1).
      learning_rate: the learning rate applied by the last update (float32);
        before the first update, the one the first update will apply.
    """

    count: jax.Array
    learning_rate: jax.Array


def scale_by_lr_schedule(schedule: optax.Schedule | float) -> optax.GradientTransformation:
    """Scales updates by minus the learning rate of a schedule, recording it in the state.

    The schedule transformation form of every schedule in this package: update
    ``t`` (counting from 0) is multiplied by ``-schedule(t)``. Unlike
    ``optax.scale_by_schedule`` the state keeps the learning rate it applied, so
    :func:`autolr_jax.current_lr` can read it, and it flips the sign like
    ``optax.scale_by_learning_rate``, so it goes last in a chain, after a
    preconditioner such as ``optax.scale_by_adam()``. The learning rate is
    float32 whatever the dtype of the updates; updates keep their dtype.

    Args:
      schedule: an ``optax.Schedule`` (a function of the int32 step count), e.g.
        :func:`autolr_jax.cosine_annealing_lr`, or a constant float.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`ScaleByLRScheduleState`.

    Example:
      >>> import jax.numpy as jnp, optax, autolr_jax
      >>> tx = optax.chain(optax.scale_by_adam(),
      ...                  autolr_jax.scale_by_lr_schedule(autolr_jax.step_lr(1e-3, 30)))
      >>> params = jnp.ones(3)
      >>> state = tx.init(params)
      >>> updates, state = tx.update(jnp.ones(3), state, params)
      >>> round(float(autolr_jax.current_lr(state)), 6)
      0.001

    References:
      ``optax.scale_by_learning_rate``; ``torch.optim.lr_scheduler.LRScheduler``.
    """
    if not callable(schedule):
        check_real("schedule", schedule, lo=0.0, scalar=True)
        value = schedule
        schedule = lambda count: jnp.asarray(value, jnp.float32)  # noqa: E731

    def lr_at(count):
        return jnp.asarray(schedule(count), dtype=jnp.float32)

    def init_fn(params):
        del params
        count = jnp.zeros([], jnp.int32)
        return ScaleByLRScheduleState(count=count, learning_rate=lr_at(count))

    def update_fn(updates, state, params=None):
        del params
        lr = lr_at(state.count)
        updates = jax.tree.map(lambda u: None if u is None else (-lr).astype(u.dtype) * u, updates)
        return updates, ScaleByLRScheduleState(
            count=optax.safe_increment(state.count), learning_rate=lr
        )

    return optax.GradientTransformation(init_fn, update_fn)
