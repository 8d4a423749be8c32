"""The automated learning-rate scheduler (:func:`auto_lr`), its score functions and state."""

from autolr_jax._candidates import default_probe_strategy, resolve_probe_strategy
from autolr_jax.auto._auto_lr import AutoLRControl, AutoLRState, AutoLRTelemetry, auto_lr
from autolr_jax.auto._lr_find import (
    SUGGESTIONS,
    LRFindResult,
    lr_find,
    plot_lr_find,
    suggest_minimum,
    suggest_steepest,
    suggest_valley,
)
from autolr_jax.auto._rules import DECISIONS, armijo_rule, parabola_rule
from autolr_jax.auto._scores import (
    minmax_exp_score,
    rank_exp_score,
    softmax_score,
    zscore_exp_score,
)
from autolr_jax.auto._settings import GUARD_SIGNALS
from autolr_jax.auto._twin import PROBE_OPTIMIZER_MODES, momentum_free_twin

__all__ = [
    "DECISIONS",
    "LRFindResult",
    "SUGGESTIONS",
    "lr_find",
    "plot_lr_find",
    "suggest_minimum",
    "suggest_steepest",
    "suggest_valley",
    "GUARD_SIGNALS",
    "PROBE_OPTIMIZER_MODES",
    "AutoLRControl",
    "AutoLRState",
    "AutoLRTelemetry",
    "armijo_rule",
    "auto_lr",
    "default_probe_strategy",
    "minmax_exp_score",
    "momentum_free_twin",
    "parabola_rule",
    "rank_exp_score",
    "resolve_probe_strategy",
    "softmax_score",
    "zscore_exp_score",
]
