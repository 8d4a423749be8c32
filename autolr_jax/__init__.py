"""autolr_jax: learning-rate scheduling for JAX and Optax.

Schedules exact to PyTorch's ``torch.optim.lr_scheduler``, reduce-on-plateau,
an automated learning-rate scheduler, the ALR tree baseline, and
``current_lr`` to read the learning rate from any optimizer state.
"""

from autolr_jax._state_utils import current_lr
from autolr_jax.alr import (
    ALREpochInfo,
    ALRState,
    ALRTree,
    alr_tree,
    best_lr,
    best_model_state,
    best_opt_state,
    best_params,
)
from autolr_jax.auto import (
    DECISIONS,
    AutoLRControl,
    AutoLRState,
    AutoLRTelemetry,
    LRFindResult,
    armijo_rule,
    auto_lr,
    default_probe_strategy,
    lr_find,
    minmax_exp_score,
    momentum_free_twin,
    parabola_rule,
    plot_lr_find,
    rank_exp_score,
    resolve_probe_strategy,
    softmax_score,
    suggest_minimum,
    suggest_steepest,
    suggest_valley,
    zscore_exp_score,
)
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
    warmup_stable_decay,
)
from autolr_jax.transforms._plateau import (
    ReduceOnPlateauHyperparams,
    ReduceOnPlateauState,
    reduce_on_plateau,
    report_metric,
)
from autolr_jax.transforms._schedule import ScaleByLRScheduleState, scale_by_lr_schedule

__version__ = "0.1.0"

__all__ = [
    # schedules
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
    # transformations
    "ReduceOnPlateauHyperparams",
    "ReduceOnPlateauState",
    "ScaleByLRScheduleState",
    "reduce_on_plateau",
    "report_metric",
    "scale_by_lr_schedule",
    "current_lr",
    # automated scheduler
    "DECISIONS",
    "AutoLRControl",
    "AutoLRState",
    "AutoLRTelemetry",
    "LRFindResult",
    "armijo_rule",
    "auto_lr",
    "default_probe_strategy",
    "lr_find",
    "minmax_exp_score",
    "momentum_free_twin",
    "parabola_rule",
    "plot_lr_find",
    "rank_exp_score",
    "resolve_probe_strategy",
    "softmax_score",
    "suggest_minimum",
    "suggest_steepest",
    "suggest_valley",
    "zscore_exp_score",
    # ALR tree baseline
    "ALREpochInfo",
    "ALRState",
    "ALRTree",
    "alr_tree",
    "best_lr",
    "best_model_state",
    "best_opt_state",
    "best_params",
]
