"""Finding learning-rate-bearing states inside arbitrarily nested optimizer states.

Optax states are nested tuples, ``NamedTuple``s, lists and dicts (``optax.chain``
gives a tuple, ``optax.multi_transform`` a dict, Flax NNX wraps array leaves in
``Variable`` objects). The walker here visits that structure without flattening
it, so a state's own type tells us what it is.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["current_lr", "map_states", "find_states", "register_lr_state"]

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


def _children(node: Any):
    """Yields (key, child) for container nodes; nothing for leaves."""
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        yield from ((f, getattr(node, f)) for f in node._fields)
    elif isinstance(node, (tuple, list)):
        yield from enumerate(node)
    elif isinstance(node, Mapping):
        yield from node.items()
    elif hasattr(node, "__dict__") and type(node).__module__.startswith("optax"):
        # A few optax states are plain classes (e.g. chex dataclasses).
        yield from vars(node).items()


def find_states(
    tree: Any, predicate: Callable[[Any], bool], _path: tuple = ()
) -> list[tuple[tuple, Any]]:
    """All (path, node) with ``predicate(node)``; does not descend into matches."""
    if predicate(tree):
        return [(_path, tree)]
    found = []
    for key, child in _children(tree):
        found.extend(find_states(child, predicate, _path + (key,)))
    return found


def map_states(tree: Any, predicate: Callable[[Any], bool], fn: Callable[[Any], Any]) -> Any:
    """Rebuilds ``tree`` with every node matching ``predicate`` replaced by ``fn(node)``."""
    if predicate(tree):
        return fn(tree)
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(map_states(getattr(tree, f), predicate, fn) for f in tree._fields))
    if isinstance(tree, (tuple, list)):
        return type(tree)(map_states(c, predicate, fn) for c in tree)
    if isinstance(tree, Mapping):
        try:
            return type(tree)({k: map_states(v, predicate, fn) for k, v in tree.items()})
        except TypeError:
            return {k: map_states(v, predicate, fn) for k, v in tree.items()}
    return tree


def _format_path(path: tuple) -> str:
    return "state" + "".join(f"[{k!r}]" if not isinstance(k, str) else f".{k}" for k in path)


def current_lr(opt_state: Any) -> jax.Array:
    """Returns the learning rate used by the last update of an optimizer state.

    Works on the state of any transformation of this package that carries a
    learning rate (a schedule transform, ``reduce_on_plateau``, ``auto_lr``)
    and on ``optax.inject_hyperparams`` states with a ``learning_rate``
    hyperparameter, nested at any depth inside ``optax.chain``,
    ``optax.multi_transform``, ``optax.MultiSteps`` or a Flax NNX optimizer's
    ``opt_state``. Before the first update it returns the learning rate the
    first update will use.

    Args:
      opt_state: an optimizer state.

    Returns:
      The learning rate, a float32 scalar array (traceable: usable inside jit).

    Raises:
      ValueError: if the state holds no learning rate, or more than one
        (the message lists where each was found).

    Example:
      >>> import optax, jax.numpy as jnp, autolr_jax
      >>> tx = optax.chain(optax.clip_by_global_norm(1.0),
      ...                  autolr_jax.scale_by_lr_schedule(autolr_jax.step_lr(0.1, 10)))
      >>> state = tx.init(jnp.zeros(3))
      >>> round(float(autolr_jax.current_lr(state)), 6)
      0.1
    """
    found = find_states(opt_state, lambda n: _lr_of(n)[0])
    if not found:
        raise ValueError(
            "current_lr: this optimizer state holds no learning rate. It works on states "
            "built with autolr_jax transformations (scale_by_lr_schedule, reduce_on_plateau, "
            "auto_lr) or optax.inject_hyperparams(...)(learning_rate=...); plain optax "
            "schedules (optax.scale_by_schedule, optax.sgd(schedule)) do not store it."
        )
    if len(found) > 1:
        where = ", ".join(_format_path(p) for p, _ in found)
        raise ValueError(
            f"current_lr: the state holds {len(found)} learning rates ({where}); "
            "it is ambiguous which one to return. Pass the sub-state you mean, "
            "e.g. current_lr(state[1])."
        )
    lr = _lr_of(found[0][1])[1]
    return jnp.asarray(lr, dtype=jnp.float32)
