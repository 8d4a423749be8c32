"""Finding learning-rate-bearing states inside arbitrarily nested optimizer states.

Optax states are pytrees of tuples, ``NamedTuple``s, lists and dicts
(``optax.chain`` gives a tuple, ``optax.multi_transform`` a dict, Flax NNX wraps
array leaves in ``Variable`` objects). ``jax.tree_util`` walks them with an
``is_leaf`` predicate that stops at the states we look for, so a state's own
type tells us what it is.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["current_lr", "find_states", "map_states", "register_lr_state", "with_learning_rate"]

# State classes (NamedTuples) whose ``learning_rate`` field holds the learning
# rate applied by the last update. Modules register their own state classes.
_LR_STATE_TYPES: list[type] = []

_INJECT_TYPES = tuple(
    t
    for t in (
        getattr(optax, "InjectHyperparamsState", None),
        getattr(optax, "InjectStatefulHyperparamsState", None),
    )
    if t is not None
)


def register_lr_state(cls: type) -> type:
    """Marks ``cls`` (a NamedTuple with a ``learning_rate`` field) as LR-bearing."""
    if "learning_rate" not in getattr(cls, "_fields", ()):
        raise TypeError(f"{cls.__name__} has no 'learning_rate' field")
    _LR_STATE_TYPES.append(cls)
    return cls


def with_learning_rate(inject_state: Any, lr: Any) -> Any:
    """An ``optax.inject_hyperparams`` state with its learning rate replaced by float32 ``lr``.

    Only the state's own ``hyperparams['learning_rate']``: unlike
    ``optax.tree_utils.tree_set(state, learning_rate=lr)``, which replaces every
    ``learning_rate`` key at any depth, the wrapped optimizer's inner state
    (which may hold learning rates of its own) is left alone.

    Example:
      >>> import optax, jax.numpy as jnp
      >>> from autolr_jax._state_utils import with_learning_rate
      >>> state = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1).init(jnp.zeros(2))
      >>> with_learning_rate(state, 0.5).hyperparams["learning_rate"]
      Array(0.5, dtype=float32)
    """
    hyperparams = dict(inject_state.hyperparams)
    hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
    return inject_state._replace(hyperparams=hyperparams)


def _unwrap(x: Any) -> Any:
    """Returns the array behind a Flax NNX Variable (or ``x`` itself)."""
    if isinstance(x, (jax.Array, np.ndarray, numbers.Number, jax.core.Tracer)):
        return x
    for attr in ("get_value", "value"):
        if hasattr(x, attr):
            v = getattr(x, attr)
            return v() if callable(v) else v
    return x


def _lr_of(node: Any) -> tuple[bool, Any]:
    """(True, lr) if ``node`` is an LR-bearing state, else (False, None)."""
    if _LR_STATE_TYPES and isinstance(node, tuple(_LR_STATE_TYPES)):
        return True, _unwrap(node.learning_rate)
    if _INJECT_TYPES and isinstance(node, _INJECT_TYPES):
        hp = node.hyperparams
        if isinstance(hp, Mapping) and "learning_rate" in hp:
            return True, _unwrap(hp["learning_rate"])
    return False, None


def _is_scalar_number(x: Any) -> bool:
    x = _unwrap(x)
    if isinstance(x, (bool, np.bool_)):
        return False
    if isinstance(x, numbers.Real):
        return True
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    return shape == () and dtype is not None and np.issubdtype(dtype, np.floating)


def _restored_lr_of(node: Any) -> tuple[bool, Any]:
    """(True, lr) for a dict with a scalar ``learning_rate``: a state restored without a target.

    Orbax (``StandardCheckpointer().restore(path)``) and other checkpointers
    that restore without the state's structure give NamedTuples back as dicts
    of their fields: a schedule's or plateau state as ``{'learning_rate': ...,
    ...}``, an injected one as ``{'hyperparams': {'learning_rate': ...}, ...}``.
    """
    if isinstance(node, Mapping) and "learning_rate" in node:
        lr = node["learning_rate"]
        if _is_scalar_number(lr):
            return True, _unwrap(lr)
    return False, None


def find_states(tree: Any, predicate: Callable[[Any], bool]) -> list[tuple[tuple, Any]]:
    """All (key path, node) with ``predicate(node)``, in tree order; not inside matches."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=predicate)
    return [(path, node) for path, node in leaves if predicate(node)]


def map_states(tree: Any, predicate: Callable[[Any], bool], fn: Callable[[Any], Any]) -> Any:
    """``tree`` with every node matching ``predicate`` replaced by ``fn(node)``."""
    return jax.tree.map(lambda n: fn(n) if predicate(n) else n, tree, is_leaf=predicate)


def _format_path(path: tuple) -> str:
    return "state" + jax.tree_util.keystr(path)


def _describe_top(opt_state: Any) -> str:
    """What the state is made of at the top, for the error message."""
    kind = type(opt_state).__name__
    leaves = jax.tree_util.tree_flatten_with_path(opt_state)[0]
    paths = ", ".join(_format_path(p) for p, _ in leaves[:8])
    more = f" and {len(leaves) - 8} more" if len(leaves) > 8 else ""
    return f"a {kind} with {len(leaves)} array leaves ({paths}{more})" if leaves else f"a {kind}"


def current_lr(opt_state: Any) -> jax.Array:
    """Returns the learning rate used by the last update of an optimizer state.

    Works on the state of any transformation of this package that carries a
    learning rate (a schedule transform, ``reduce_on_plateau``, ``auto_lr``)
    and on ``optax.inject_hyperparams`` states with a ``learning_rate``
    hyperparameter, nested at any depth inside ``optax.chain``,
    ``optax.multi_transform``, ``optax.MultiSteps`` or a Flax NNX optimizer's
    ``opt_state``. Before the first update it returns the learning rate the
    first update will use.

    A state restored from a checkpoint without a target (e.g.
    ``orbax.checkpoint.StandardCheckpointer().restore(path)``), whose
    NamedTuples came back as dicts, works too: if none of the states above is
    found, a dict with a scalar ``learning_rate`` entry is the state (for an
    injected optimizer, its ``hyperparams`` dict). Restore with a target,
    ``restore(path, target=tx.init(params))``, to continue training.

    Args:
      opt_state: an optimizer state.

    Returns:
      The learning rate, a float32 scalar array (traceable: usable inside jit).

    Raises:
      ValueError: if the state holds no learning rate (the message says what
        was looked for and what the state is made of), or more than one (the
        message lists where each was found).

    Example:
      >>> import optax, jax.numpy as jnp, autolr_jax
      >>> tx = optax.chain(optax.clip_by_global_norm(1.0),
      ...                  autolr_jax.scale_by_lr_schedule(autolr_jax.step_lr(0.1, 10)))
      >>> state = tx.init(jnp.zeros(3))
      >>> round(float(autolr_jax.current_lr(state)), 6)
      0.1
      >>> restored = [None, {"count": 0, "learning_rate": jnp.float32(0.1)}]  # a dict-shaped state
      >>> round(float(autolr_jax.current_lr(restored)), 6)
      0.1
    """
    lr_of = _lr_of
    found = find_states(opt_state, lambda n: _lr_of(n)[0])
    if not found:
        # Live states never hold such dicts, so this fallback cannot shadow a typed match.
        lr_of = _restored_lr_of
        found = find_states(opt_state, lambda n: _restored_lr_of(n)[0])
    if not found:
        raise ValueError(
            "current_lr: this optimizer state holds no learning rate. It looked, at every "
            "depth, for the states of autolr_jax transformations (scale_by_lr_schedule, "
            "reduce_on_plateau, auto_lr), optax.inject_hyperparams(...)(learning_rate=...) "
            "states and dicts with a scalar 'learning_rate' entry (a state restored without "
            f"a target), in {_describe_top(opt_state)}. Plain optax schedules "
            "(optax.scale_by_schedule, optax.sgd(schedule)) do not store the learning rate; "
            "a checkpoint restored without a target may have lost it: restore with "
            "restore(path, target=tx.init(params))."
        )
    if len(found) > 1:
        where = ", ".join(_format_path(p) for p, _ in found)
        raise ValueError(
            f"current_lr: the state holds {len(found)} learning rates ({where}); "
            "it is ambiguous which one to return. Pass the sub-state you mean, "
            "e.g. current_lr(state[1])."
        )
    lr = lr_of(found[0][1])[1]
    return jnp.asarray(lr, dtype=jnp.float32)
