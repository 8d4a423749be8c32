"""autolr_jax: learning-rate scheduling for JAX and Optax.

Schedules exact to PyTorch's ``torch.optim.lr_scheduler``, reduce-on-plateau,
an automated learning-rate scheduler, and ``current_lr`` to read the learning
rate from any optimizer state.
"""

from autolr_jax._state_utils import current_lr
from autolr_jax.transforms._schedule import ScaleByLRScheduleState, scale_by_lr_schedule

__version__ = "0.1.0"

__all__ = [
    "ScaleByLRScheduleState",
    "current_lr",
    "scale_by_lr_schedule",
]
