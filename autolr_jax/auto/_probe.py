"""The candidates of an :func:`autolr_jax.auto_lr` probe: their parameters and losses.

Pure functions, usable (and tested) without building an optimizer: the
candidate ``params + f * u`` (:func:`apply_scaled`), the check that ``loss_fn``
returned a real scalar (:func:`as_scalar_loss`), and the loss of a candidate
after ``k`` look-ahead updates (:func:`lookahead_loss`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "apply_scaled",
    "as_scalar_loss",
    "check_not_varying",
    "check_stacked",
    "lookahead_loss",
]


def apply_scaled(params: Any, updates: Any, factor: jax.Array) -> Any:
    """``optax.apply_updates(params, factor * updates)``, leaf by leaf, in the params' dtypes.

    Example:
      >>> import jax.numpy as jnp
      >>> from autolr_jax.auto._probe import apply_scaled
      >>> apply_scaled({"w": jnp.ones(2)}, {"w": jnp.full(2, -0.5)}, jnp.float32(2.0))
      {'w': Array([0., 0.], dtype=float32)}
    """

    def leaf(p, u):
        if p is None or u is None:
            return p
        return jnp.asarray(p + factor * u).astype(jnp.asarray(p).dtype)

    return jax.tree.map(leaf, params, updates, is_leaf=lambda x: x is None)


def as_scalar_loss(out: Any, has_aux: bool) -> jax.Array:
    """What ``loss_fn`` returned, checked to be a real scalar loss, as at least float32.

    Args:
      out: the output of ``loss_fn(params, batch)``: a scalar, or ``(scalar, aux)``
        with ``has_aux``.
      has_aux: whether ``out`` is ``(loss, aux)``; ``aux`` is dropped.

    Returns:
      The loss, a 0-d array of ``promote_types(dtype, float32)`` (bfloat16 and
      float16 losses are compared in float32).

    Raises:
      ValueError: at trace time, if ``out`` is not a floating-point scalar (or,
        with ``has_aux``, not a pair); the message hints at ``has_aux``.

    Example:
      >>> import jax.numpy as jnp
      >>> from autolr_jax.auto._probe import as_scalar_loss
      >>> as_scalar_loss((jnp.bfloat16(1.5), {"acc": 0.9}), has_aux=True)
      Array(1.5, dtype=float32)
    """
    if has_aux:
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise ValueError(
                f"auto_lr(has_aux=True): loss_fn must return (loss, aux), got {type(out).__name__}"
            )
        out = out[0]
    try:
        loss = jnp.asarray(out)
    except TypeError:
        loss = None
    if loss is None or loss.shape != () or not jnp.issubdtype(loss.dtype, jnp.floating):
        hint = "" if has_aux else " (if it returns (loss, aux), pass has_aux=True)"
        what = f"shape {loss.shape} dtype {loss.dtype}" if loss is not None else type(out)
        raise ValueError(
            f"auto_lr: loss_fn must return a scalar floating-point loss{hint}, got {what}"
        )
    return loss.astype(jnp.promote_types(loss.dtype, jnp.float32))


def check_stacked(batch: Any, lookahead: int) -> None:
    """Checks that every leaf of ``batch`` stacks ``lookahead`` batches on its leading axis."""
    sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree.leaves(batch)}
    if sizes != {lookahead}:
        raise ValueError(
            f"auto_lr(lookahead={lookahead}): batch must stack {lookahead} batches on a "
            f"leading axis (every leaf of leading dimension {lookahead}: the look-ahead "
            f"batches, then the scoring batch), got leading dimensions "
            f"{sorted(sizes, key=str)}"
        )


def lookahead_loss(
    loss: Callable[[Any, Any], jax.Array],
    update: Callable[[Any, Any, Any], tuple[Any, Any]],
    params: Any,
    updates: Any,
    opt_state: Any,
    batch: Any,
    steps: int,
    axis_name: Hashable | None = None,
) -> jax.Array:
    """The loss of a candidate after ``steps`` updates, the first of them ``updates``.

    The candidate starts at ``params + updates`` with optimizer state
    ``opt_state`` (the state after computing ``updates``), takes ``steps - 1``
    more updates ``update(grads, opt_state, params)`` with the gradients of
    ``loss`` on ``batch[0], ..., batch[steps - 2]`` (averaged over ``axis_name``
    when given), and is scored by ``loss`` on ``batch[steps - 1]``.

    Args:
      loss: ``loss(params, batch) -> scalar``, differentiable.
      update: an optimizer's update, ``(grads, state, params) -> (updates, state)``.
      params: the parameters before the first update.
      updates: the first update (already scaled by the learning rate).
      opt_state: the optimizer state after the first update.
      batch: ``steps`` batches stacked on the leading axis of every leaf.
      steps: the number of updates, >= 1 (1: the loss at ``params + updates``
        on ``batch[0]``).
      axis_name: a ``shard_map``/``pmap`` axis to average the gradients over.

    Returns:
      The scalar loss.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from autolr_jax.auto._probe import lookahead_loss
      >>> loss = lambda w, b: 0.5 * (w - b) ** 2
      >>> sgd = optax.sgd(0.5)
      >>> w0 = jnp.float32(0.0)
      >>> u, s = sgd.update(jnp.float32(-2.0), sgd.init(w0), w0)   # w: 0 -> 1
      >>> float(lookahead_loss(loss, sgd.update, w0, u, s, jnp.full(3, 2.0), 3))
      0.03125
    """
    # Unit factor: the first update is applied as it is.
    p = apply_scaled(params, updates, jnp.ones((), jnp.float32))
    # steps is small and static: unrolled, so no gradient runs inside a while loop
    # (XLA:CPU convolution gradients are many times slower there).
    for j in range(steps - 1):
        step_batch = jax.tree.map(lambda x, j=j: x[j], batch)
        g = jax.grad(loss)(p, step_batch)
        if axis_name is not None:
            g = lax.pmean(g, axis_name)
        u, opt_state = update(g, opt_state, p)
        p = apply_scaled(p, u, jnp.ones((), jnp.float32))
    return loss(p, jax.tree.map(lambda x: x[steps - 1], batch))


def _varying_axes(x: jax.Array) -> frozenset:
    """The shard_map axes over which ``x`` varies (empty outside shard_map or unknown)."""
    typeof = getattr(jax, "typeof", None)
    if typeof is None:
        return frozenset()
    aval = typeof(x)
    # jax >= 0.9 keeps them in aval.manual_axis_type.varying; 0.6-0.8 in aval.vma.
    manual = getattr(aval, "manual_axis_type", None)
    if manual is not None:
        return frozenset(getattr(manual, "varying", ()))
    return frozenset(getattr(aval, "vma", ()))


def check_not_varying(losses: jax.Array, axis_name: Hashable | None) -> None:
    """Rejects candidate losses that still differ across shard_map devices."""
    varying = _varying_axes(losses)
    if varying:
        axes = tuple(sorted(map(str, varying)))
        given = "" if axis_name is None else f" (axis_name={axis_name!r} does not cover them)"
        raise ValueError(
            f"auto_lr: the candidate losses differ across the shard_map axes {axes}{given}, "
            "so each device would pick its own learning rate. Pass auto_lr(..., "
            f"axis_name={axes[0] if len(axes) == 1 else axes!r}) to average them, or use "
            "shard_map(..., check_vma=False) if per-device learning rates are intended."
        )
