"""Learning-rate schedules exact to PyTorch's ``torch.optim.lr_scheduler``.

Every function returns an ``optax.Schedule``: a pure, ``jit``- and ``vmap``-safe
function of the int32 step count ``t`` to a float32 learning rate equal to the one
the PyTorch scheduler holds after ``t`` calls of ``scheduler.step()``. Use one as
the learning rate of any Optax optimizer, or with
:func:`autolr_jax.scale_by_lr_schedule`.
"""

from autolr_jax.schedules._base import MultiplicativeSchedule
from autolr_jax.schedules._compose import chained, lambda_lr, per_epoch, sequential
from autolr_jax.schedules._cosine import (
    cosine_annealing_lr,
    cosine_annealing_warm_restarts,
    warmup_cosine,
)
from autolr_jax.schedules._cyclic import cyclic_lr, one_cycle_lr
from autolr_jax.schedules._exponential import exponential_lr
from autolr_jax.schedules._factor import constant_lr, linear_lr, polynomial_lr
from autolr_jax.schedules._step import multistep_lr, step_lr
from autolr_jax.schedules._wsd import warmup_stable_decay

__all__ = [
    "MultiplicativeSchedule",
    "chained",
    "constant_lr",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "cyclic_lr",
    "exponential_lr",
    "lambda_lr",
    "linear_lr",
    "multistep_lr",
    "one_cycle_lr",
    "per_epoch",
    "polynomial_lr",
    "sequential",
    "step_lr",
    "warmup_cosine",
    "warmup_stable_decay",
]
