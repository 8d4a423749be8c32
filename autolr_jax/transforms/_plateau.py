"""Reduce the learning rate when a metric stops improving, exact to PyTorch's ReduceLROnPlateau."""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from autolr_jax._state_utils import map_states, register_lr_state
from autolr_jax._validation import check_choice, check_int, check_real

__all__ = [
    "ReduceOnPlateauHyperparams",
    "ReduceOnPlateauState",
    "reduce_on_plateau",
    "report_metric",
]

_INT32_MAX = int(np.iinfo(np.int32).max)


class ReduceOnPlateauHyperparams(NamedTuple):
    """Hyperparameters of :func:`reduce_on_plateau`, kept in its state.

    They live in the state (as PyTorch keeps them in the scheduler's
    ``state_dict``) so that :func:`report_metric` can step a state on its own,
    without the transformation that made it. Restoring a checkpoint restores
    them too, as ``ReduceLROnPlateau.load_state_dict`` does.

    Attributes:
      mode_max: ``True`` for ``mode='max'`` (bool scalar).
      threshold_abs: ``True`` for ``threshold_mode='abs'`` (bool scalar).
      factor: float32 scalar.
      patience: int32 scalar.
      threshold: float32 scalar.
      cooldown: int32 scalar.
      min_lr: float32 scalar.
      eps: float32 scalar.
      accumulation_size: int32 scalar.
    """

    mode_max: jax.Array
    threshold_abs: jax.Array
    factor: jax.Array
    patience: jax.Array
    threshold: jax.Array
    cooldown: jax.Array
    min_lr: jax.Array
    eps: jax.Array
    accumulation_size: jax.Array


@register_lr_state
class ReduceOnPlateauState(NamedTuple):
    """State of :func:`reduce_on_plateau`.

    Attributes:
      learning_rate: the learning rate the next update will apply (float32); it
        is the one the last update applied unless a metric since then cut it,
        exactly like ``optimizer.param_groups[i]['lr']`` after
        ``scheduler.step(metric)``.
      best: best metric seen so far (float32; ``+inf`` in min mode and
        ``-inf`` in max mode before the first metric), PyTorch's ``best``.
      num_bad_epochs: metrics since the last improvement (int32), PyTorch's
        ``num_bad_epochs``.
      cooldown_counter: metrics left in the cooldown period (int32).
      last_epoch: number of metrics seen (int32, saturating at 2**31 - 1).
      acc_sum: sum of the values passed to ``update(..., value=)`` since the
        last metric (float32).
      acc_count: how many values ``acc_sum`` holds (int32).
      hyperparams: the :class:`ReduceOnPlateauHyperparams`.
    """

    learning_rate: jax.Array
    best: jax.Array
    num_bad_epochs: jax.Array
    cooldown_counter: jax.Array
    last_epoch: jax.Array
    acc_sum: jax.Array
    acc_count: jax.Array
    hyperparams: ReduceOnPlateauHyperparams


def _is_plateau_state(node: Any) -> bool:
    return isinstance(node, ReduceOnPlateauState)


def _step(state: ReduceOnPlateauState, metric: jax.Array) -> ReduceOnPlateauState:
    """One ``ReduceLROnPlateau.step(metric)``, line for line, without Python branching."""
    h = state.hyperparams
    metric = jnp.asarray(metric, jnp.float32)
    best = state.best
    one = jnp.ones([], jnp.float32)
    # PyTorch's _is_better. NaN compares False everywhere, so a NaN metric is a
    # bad epoch and never becomes the best, as in PyTorch.
    better_min = jnp.where(
        h.threshold_abs, metric < best - h.threshold, metric < best * (one - h.threshold)
    )
    better_max = jnp.where(
        h.threshold_abs, metric > best + h.threshold, metric > best * (h.threshold + one)
    )
    better = jnp.where(h.mode_max, better_max, better_min)

    zero = jnp.zeros([], jnp.int32)
    best = jnp.where(better, metric, best)
    num_bad = jnp.where(better, zero, optax.safe_increment(state.num_bad_epochs))

    in_cooldown = state.cooldown_counter > 0
    cooldown_counter = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
    num_bad = jnp.where(in_cooldown, zero, num_bad)

    reduce = num_bad > h.patience
    old_lr = state.learning_rate
    new_lr = jnp.maximum(old_lr * h.factor, h.min_lr)
    # PyTorch skips cuts smaller than eps (and any "cut" up to a min_lr above the lr).
    lr = jnp.where(reduce & (old_lr - new_lr > h.eps), new_lr, old_lr)
    cooldown_counter = jnp.where(reduce, h.cooldown, cooldown_counter)
    num_bad = jnp.where(reduce, zero, num_bad)

    return state._replace(
        learning_rate=lr.astype(jnp.float32),
        best=best.astype(jnp.float32),
        num_bad_epochs=num_bad.astype(jnp.int32),
        cooldown_counter=cooldown_counter.astype(jnp.int32),
        last_epoch=optax.safe_increment(state.last_epoch),
    )


def _scalar_metric(name: str, metric: Any) -> jax.Array:
    """``metric`` as a float32 scalar; ValueError for non-scalars and non-reals.

    Only numbers and arrays are metrics: ``None``, strings and containers (a
    list is a pytree of tracers under ``jit``, whose shape NumPy cannot take)
    are refused here with a message naming ``name``, not by JAX.
    """
    allowed = "a real scalar (a Python number or a 0-d array)"
    if not isinstance(metric, (numbers.Number, np.ndarray, np.generic, jax.Array)):
        got = f"a {type(metric).__name__}" if metric is not None else "None"
        raise ValueError(f"{name} must be {allowed}, got {got}")
    shape = np.shape(metric)
    if shape != ():
        raise ValueError(
            f"{name} must be a scalar (the metric of one epoch), got an array of shape {shape}; "
            "reduce it first, e.g. with jnp.mean."
        )
    try:
        dtype = jnp.result_type(metric)
    except TypeError as e:
        raise ValueError(f"{name} must be {allowed}, got {metric!r}") from e
    if not (
        jnp.issubdtype(dtype, jnp.floating)
        or jnp.issubdtype(dtype, jnp.integer)
        or jnp.issubdtype(dtype, jnp.bool_)
    ):
        raise ValueError(f"{name} must be {allowed}, got {metric!r} of dtype {dtype}")
    return jnp.asarray(metric).astype(jnp.float32)


def reduce_on_plateau(
    learning_rate: float,
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float = 0.0,
    eps: float = 1e-8,
    accumulation_size: int = 1,
) -> optax.GradientTransformationExtraArgs:
    """Scales updates by minus a learning rate that is cut when a metric stops improving.

    The Optax form of ``torch.optim.lr_scheduler.ReduceLROnPlateau``, with the
    same arguments and the same decisions: a metric is an improvement when it
    beats ``best * (1 - threshold)`` (min, rel), ``best - threshold`` (min,
    abs), ``best * (1 + threshold)`` (max, rel) or ``best + threshold`` (max,
    abs); after more than ``patience`` metrics without improvement the learning
    rate becomes ``max(lr * factor, min_lr)``, unless that changes it by no more
    than ``eps``; then ``cooldown`` metrics are ignored. NaN metrics count as
    bad epochs, as in PyTorch; with ``threshold_mode='rel'`` a negative metric
    compares against a dynamic threshold *above* ``best`` in min mode (below in
    max mode), so a constant negative metric counts as improving and never
    causes a cut -- PyTorch does the same.

    It goes last in a chain, like ``optax.scale_by_learning_rate``:
    ``optax.chain(optax.scale_by_adam(), reduce_on_plateau(1e-3))`` is Adam,
    ``optax.chain(optax.trace(0.9), reduce_on_plateau(0.1))`` momentum SGD.
    Updates keep their dtype; the learning rate is float32.

    The metric reaches the state in one of two ways:

    (a) once per epoch, outside the jitted train step (e.g. a validation loss):
        ``opt_state = autolr_jax.report_metric(opt_state, val_loss)`` applies one
        ``scheduler.step(val_loss)`` to the state, wherever it is nested;
    (b) inside the jitted train step: ``tx.update(grads, opt_state, params,
        value=loss)`` (``optax.chain`` forwards ``value=``). Every
        ``accumulation_size`` calls that pass a value, the mean of those values
        is one metric, one ``scheduler.step(mean)``. As in PyTorch, where
        ``optimizer.step()`` comes before ``scheduler.step(metric)``, the update
        of the call that completes a metric still uses the old learning rate;
        the new one applies from the next call. Calls without ``value=``
        accumulate nothing.

    :func:`autolr_jax.current_lr` reads the learning rate the next update will
    use, which is PyTorch's ``optimizer.param_groups[0]['lr']`` after the step.

    Numerics: PyTorch compares and multiplies in float64; this works in float32
    (the state must stay float32 with or without ``jax_enable_x64``). Decisions
    agree except for a metric within about one float32 ulp of the dynamic
    threshold (exact ties in float32 arithmetic, e.g. dyadic metrics and
    thresholds, are decided like PyTorch), and the learning rate after ``n``
    cuts agrees to about ``n`` float32 ulps.

    Args:
      learning_rate: the initial learning rate, > 0.
      mode: ``'min'`` (cut when the metric stops decreasing) or ``'max'``.
      factor: multiplies the learning rate at a cut, in (0, 1).
      patience: metrics without improvement tolerated before a cut, an int >= 0.
      threshold: minimal improvement, relative or absolute, >= 0.
      threshold_mode: ``'rel'`` or ``'abs'``.
      cooldown: metrics ignored after a cut, an int >= 0.
      min_lr: lower bound of the learning rate, >= 0.
      eps: cuts changing the learning rate by no more than this are skipped, >= 0.
      accumulation_size: values passed with ``update(..., value=)`` averaged
        into one metric, an int >= 1.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`ReduceOnPlateauState`.

    Raises:
      ValueError: for an argument out of its range, naming it.

    Example:
      >>> import jax, jax.numpy as jnp, optax, autolr_jax
      >>> tx = optax.chain(optax.scale_by_adam(),
      ...                  autolr_jax.reduce_on_plateau(1e-3, factor=0.5, patience=1))
      >>> params = jnp.ones(3)
      >>> state = tx.init(params)
      >>> report = jax.jit(autolr_jax.report_metric)
      >>> for val_loss in [1.0, 0.5, 0.5, 0.5]:  # (a) once per epoch
      ...     state = report(state, val_loss)
      >>> round(float(autolr_jax.current_lr(state)), 8)
      0.0005
      >>> tx = optax.chain(optax.scale_by_adam(),  # (b) the mean of 2 losses per metric
      ...                  autolr_jax.reduce_on_plateau(1e-3, patience=0, accumulation_size=2))
      >>> state = tx.init(params)
      >>> step = jax.jit(lambda g, s, p, loss: tx.update(g, s, p, value=loss))
      >>> for loss in [1.0, 1.0, 2.0, 2.0]:
      ...     updates, state = step(jnp.ones(3), state, params, loss)
      >>> round(float(autolr_jax.current_lr(state)), 8)
      0.0001

    References:
      ``torch.optim.lr_scheduler.ReduceLROnPlateau``.
    """
    check_real("learning_rate", learning_rate, lo=0.0, lo_open=True, scalar=True)
    check_choice("mode", mode, ("min", "max"))
    check_real("factor", factor, lo=0.0, hi=1.0, lo_open=True, hi_open=True, scalar=True)
    patience = check_int("patience", patience, lo=0)
    check_real("threshold", threshold, lo=0.0, scalar=True)
    check_choice("threshold_mode", threshold_mode, ("rel", "abs"))
    cooldown = check_int("cooldown", cooldown, lo=0)
    check_real("min_lr", min_lr, lo=0.0, scalar=True)
    check_real("eps", eps, lo=0.0, scalar=True)
    accumulation_size = check_int("accumulation_size", accumulation_size, lo=1, hi=_INT32_MAX)
    # Counters saturate at 2**31 - 1, so larger patience/cooldown mean "never".
    patience = min(patience, _INT32_MAX)
    cooldown = min(cooldown, _INT32_MAX)

    def init_fn(params):
        del params
        hp = ReduceOnPlateauHyperparams(
            mode_max=jnp.asarray(mode == "max"),
            threshold_abs=jnp.asarray(threshold_mode == "abs"),
            factor=jnp.asarray(factor, jnp.float32),
            patience=jnp.asarray(patience, jnp.int32),
            threshold=jnp.asarray(threshold, jnp.float32),
            cooldown=jnp.asarray(cooldown, jnp.int32),
            min_lr=jnp.asarray(min_lr, jnp.float32),
            eps=jnp.asarray(eps, jnp.float32),
            accumulation_size=jnp.asarray(accumulation_size, jnp.int32),
        )
        zero = jnp.zeros([], jnp.int32)
        return ReduceOnPlateauState(
            learning_rate=jnp.asarray(learning_rate, jnp.float32),
            best=jnp.asarray(np.inf if mode == "min" else -np.inf, jnp.float32),
            num_bad_epochs=zero,
            cooldown_counter=zero,
            last_epoch=zero,
            acc_sum=jnp.zeros([], jnp.float32),
            acc_count=zero,
            hyperparams=hp,
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        lr = state.learning_rate
        updates = jax.tree.map(lambda u: None if u is None else (-lr).astype(u.dtype) * u, updates)
        if value is None:
            return updates, state
        value = _scalar_metric("value", value)
        acc_sum = state.acc_sum + value
        acc_count = state.acc_count + 1
        complete = acc_count >= state.hyperparams.accumulation_size
        mean = acc_sum / acc_count.astype(jnp.float32)
        stepped = _step(
            state._replace(acc_sum=jnp.zeros_like(acc_sum), acc_count=jnp.zeros_like(acc_count)),
            mean,
        )
        waiting = state._replace(acc_sum=acc_sum, acc_count=acc_count)
        new_state = optax.tree_utils.tree_where(complete, stepped, waiting)
        return updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def report_metric(opt_state: Any, metric: Any) -> Any:
    """Applies one ``ReduceLROnPlateau.step(metric)`` to every plateau state in ``opt_state``.

    Use it once per epoch with a metric computed outside the train step, e.g.
    a validation loss. It is pure and jittable; the next update applies the new
    learning rate. Values accumulated by ``update(..., value=)`` are left as
    they are.

    Args:
      opt_state: an optimizer state holding at least one
        :class:`ReduceOnPlateauState`, nested at any depth (``optax.chain``,
        ``optax.multi_transform``, ``optax.MultiSteps``, ...).
      metric: the epoch's metric, a real scalar (Python number or 0-d array).

    Returns:
      ``opt_state`` with every :class:`ReduceOnPlateauState` stepped.

    Raises:
      ValueError: if ``metric`` is not a real scalar, or ``opt_state`` holds no
        :class:`ReduceOnPlateauState`.

    Example:
      >>> import jax.numpy as jnp, optax, autolr_jax
      >>> tx = optax.chain(optax.trace(0.9),
      ...                  autolr_jax.reduce_on_plateau(0.1, patience=0))
      >>> state = tx.init(jnp.zeros(2))
      >>> state = autolr_jax.report_metric(state, 1.0)
      >>> state = autolr_jax.report_metric(state, 2.0)  # worse: cut at once
      >>> round(float(autolr_jax.current_lr(state)), 6)
      0.01

    References:
      ``torch.optim.lr_scheduler.ReduceLROnPlateau.step``.
    """
    metric = _scalar_metric("metric", metric)
    found = []

    def step(node):
        found.append(node)
        return _step(node, metric)

    new_state = map_states(opt_state, _is_plateau_state, step)
    if not found:
        raise ValueError(
            "report_metric: this optimizer state holds no ReduceOnPlateauState; build the "
            "optimizer with autolr_jax.reduce_on_plateau(...), e.g. "
            "optax.chain(optax.scale_by_adam(), autolr_jax.reduce_on_plateau(1e-3)). A state "
            "restored from a checkpoint without a target holds dicts instead: restore with "
            "restore(path, target=tx.init(params))."
        )
    return new_state
