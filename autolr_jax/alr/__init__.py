"""The ALR tree (beam search over learning rates), the baseline auto_lr replaces.

Private modules; the public API is re-exported by ``autolr_jax``.
"""

from autolr_jax.alr._tree import (
    ALREpochInfo,
    ALRState,
    ALRTree,
    alr_tree,
    best_lr,
    best_model_state,
    best_opt_state,
    best_params,
)

__all__ = [
    "ALREpochInfo",
    "ALRState",
    "ALRTree",
    "alr_tree",
    "best_lr",
    "best_model_state",
    "best_opt_state",
    "best_params",
]
