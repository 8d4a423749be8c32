"""The learning-rate range test (:func:`lr_find`) and its suggestion rules.

A short run with the learning rate rising exponentially from ``min_lr`` to
``max_lr``, one real update per rate on a fresh batch, recording the training
loss before each update (Smith, 2017). The loss falls, flattens and then rises
as the rate passes the edge of what trains; a suggestion rule reads a peak
rate off that curve. Nothing of the run is kept: the parameters passed in are
returned to no one, so the test can run before any training.

The suggestion rules are pure functions of the curve (NumPy arrays), tested on
their own: :func:`suggest_minimum`, :func:`suggest_steepest`,
:func:`suggest_valley`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from autolr_jax._state_utils import with_learning_rate
from autolr_jax._validation import check_choice, check_int, check_real
from autolr_jax.auto._probe import as_scalar_loss
from autolr_jax.auto._settings import _check_optimizer

__all__ = [
    "SUGGESTIONS",
    "LRFindResult",
    "lr_find",
    "plot_lr_find",
    "range_test_rates",
    "smooth_losses",
    "suggest_minimum",
    "suggest_steepest",
    "suggest_valley",
]


class LRFindResult(NamedTuple):
    """The curve of a learning-rate range test and the rate it suggests.

    Attributes:
      lrs: float64 ``(K,)``, the learning rate of each update, rising.
      losses: float64 ``(K,)``, the training loss on each update's batch at the
        parameters before that update (non-finite where the run blew up).
      smoothed: float64 ``(K,)``, ``losses`` smoothed by a bias-corrected
        exponential moving average (:func:`smooth_losses`).
      suggestion: the suggested peak learning rate (by the rule ``suggest``);
        ``nan`` when the curve is too short to read one.
      suggestions: ``{rule: rate}`` for every rule of :data:`SUGGESTIONS`.
      stopped_early: whether the test stopped before ``num_steps`` updates
        because the smoothed loss exceeded ``stop_factor`` times its best (or a
        loss was not finite).
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestion: float
    suggestions: dict[str, float]
    stopped_early: bool


def range_test_rates(min_lr: float, max_lr: float, num_steps: int) -> np.ndarray:
    """The rates of a range test: ``num_steps`` points from ``min_lr`` to ``max_lr``, log-spaced.

    Example:
      >>> from autolr_jax.auto._lr_find import range_test_rates
      >>> range_test_rates(1e-3, 1e-1, 3).round(6).tolist()
      [0.001, 0.01, 0.1]
    """
    return np.geomspace(min_lr, max_lr, num_steps)


def smooth_losses(losses: Any, smoothing: float) -> np.ndarray:
    """Bias-corrected exponential moving average: ``s_i = m_i / (1 - beta**(i + 1))``.

    ``m_i = beta * m_{i-1} + (1 - beta) * loss_i`` with ``m_{-1} = 0``, so
    ``s_0 = loss_0`` (Adam's bias correction). ``smoothing=0`` returns the losses.

    Example:
      >>> from autolr_jax.auto._lr_find import smooth_losses
      >>> smooth_losses([1.0, 3.0], 0.5).tolist()  # 1.75 / (1 - 0.5 ** 2)
      [1.0, 2.3333333333333335]
    """
    losses = np.asarray(losses, np.float64)
    out = np.empty_like(losses)
    m = 0.0
    for i, x in enumerate(losses):
        m = smoothing * m + (1.0 - smoothing) * x
        out[i] = m / (1.0 - smoothing ** (i + 1))
    return out


def _finite_prefix(lrs: np.ndarray, smoothed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The curve up to its first non-finite point (nothing after a blow-up is read)."""
    bad = ~np.isfinite(smoothed)
    end = int(np.argmax(bad)) if bad.any() else len(smoothed)
    return np.asarray(lrs[:end], np.float64), np.asarray(smoothed[:end], np.float64)


def suggest_minimum(lrs: Any, smoothed: Any, divisor: float = 10.0) -> float:
    """The rate at the lowest smoothed loss, over ``divisor`` (one decade below, by default).

    The lowest point of a range test sits just before the loss rises, near the
    edge of divergence; a peak rate is a margin below it.

    Example:
      >>> from autolr_jax.auto._lr_find import suggest_minimum
      >>> suggest_minimum([0.01, 0.1, 1.0], [2.0, 1.0, 5.0])
      0.01
    """
    lrs, s = _finite_prefix(np.asarray(lrs), np.asarray(smoothed))
    if len(s) == 0:
        return float("nan")
    return float(lrs[int(np.argmin(s))] / divisor)


def suggest_steepest(lrs: Any, smoothed: Any) -> float:
    """The rate where the smoothed loss falls fastest per decade of learning rate.

    The slope is ``d smoothed / d log(lr)`` by central differences
    (``np.gradient``), read only up to the lowest point (past it the loss rises).

    Example:
      >>> from autolr_jax.auto._lr_find import suggest_steepest
      >>> suggest_steepest([1e-3, 1e-2, 1e-1, 1.0, 10.0], [2.0, 1.9, 1.0, 0.9, 9.0])
      0.01
    """
    lrs, s = _finite_prefix(np.asarray(lrs), np.asarray(smoothed))
    end = int(np.argmin(s)) + 1 if len(s) else 0
    if end < 2:
        return float("nan")
    slope = np.gradient(s[:end], np.log(lrs[:end]))
    return float(lrs[int(np.argmin(slope))])


def suggest_valley(lrs: Any, smoothed: Any, position: float = 2.0 / 3.0) -> float:
    """The rate ``position`` of the way along the longest descent of the smoothed loss.

    The longest run of consecutive points whose smoothed loss keeps falling is
    the test's valley; a point two thirds of the way down it is well past the
    flat start and short of the minimum, where the rise begins.

    Example:
      >>> from autolr_jax.auto._lr_find import suggest_valley
      >>> suggest_valley([1e-4, 1e-3, 1e-2, 1e-1, 1.0], [3.0, 2.0, 1.0, 0.5, 4.0])
      0.01
    """
    lrs, s = _finite_prefix(np.asarray(lrs), np.asarray(smoothed))
    if len(s) < 2:
        return float("nan")
    best_start, best_len, start = 0, 1, 0
    for i in range(1, len(s)):
        if s[i] >= s[i - 1]:
            start = i
        if i - start + 1 > best_len:
            best_start, best_len = start, i - start + 1
    return float(lrs[best_start + int(position * (best_len - 1))])


# The rules lr_find can suggest by, each a pure function of (lrs, smoothed).
SUGGESTIONS: dict[str, Callable[[Any, Any], float]] = {
    "minimum": suggest_minimum,
    "steepest": suggest_steepest,
    "valley": suggest_valley,
}


def lr_find(
    optimizer: Callable[..., optax.GradientTransformation],
    /,
    params: Any,
    loss_fn: Callable[..., Any],
    batches: Iterable[Any],
    *,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    num_steps: int = 100,
    smoothing: float = 0.98,
    stop_factor: float = 4.0,
    suggest: str = "valley",
    has_aux: bool = False,
    **inner_kwargs: Any,
) -> LRFindResult:
    """The learning-rate range test: the loss against an exponentially rising rate.

    Runs ``num_steps`` updates of ``optimizer`` from ``params``, the ``i``-th at
    the rate ``min_lr * (max_lr / min_lr) ** (i / (num_steps - 1))`` with the
    gradient of ``loss_fn`` on the ``i``-th batch of ``batches``, and records
    that batch's loss before the update. It stops early once the smoothed loss
    exceeds ``stop_factor`` times its lowest value or a loss is not finite. The
    step is one jitted function with the rate as an argument: one compilation.
    The trained parameters are discarded; ``params`` are unchanged (JAX arrays
    are immutable), so the test can run before the real training starts, e.g.
    to pick a fixed schedule's peak rate.

    Args:
      optimizer: an Optax optimizer *factory* with a ``learning_rate`` argument,
        e.g. ``optax.sgd``; a ``lambda learning_rate: optax.chain(...)`` brings
        clipping or weight decay in. Positional only.
      params: the initial parameters (a pytree).
      loss_fn: ``loss_fn(params, batch) -> scalar`` (or ``(scalar, aux)`` with
        ``has_aux``), differentiable.
      batches: an iterable of training batches (a data loader, a generator, a
        list); at least 2 are used and at most ``num_steps``. For one batch use
        ``itertools.repeat(batch)``.
      min_lr: the first rate, > 0.
      max_lr: the last rate, > ``min_lr``, finite.
      num_steps: the number of updates (rates), >= 2.
      smoothing: the moving average's ``beta`` in ``[0, 1)`` (0: no smoothing).
      stop_factor: stop once the smoothed loss exceeds this times its lowest
        value, > 1 (``inf``: never).
      suggest: the rule of ``suggestion``: ``"valley"`` (:func:`suggest_valley`),
        ``"minimum"`` (:func:`suggest_minimum`, a decade below the lowest point)
        or ``"steepest"`` (:func:`suggest_steepest`).
      has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
      **inner_kwargs: passed to ``optimizer``, e.g. ``momentum=0.9``.

    Returns:
      An :class:`LRFindResult`: the rates, raw and smoothed losses, the
      suggestion and every rule's suggestion.

    Raises:
      ValueError: for an invalid argument (the message names it), or fewer than
        2 batches.

    Example:
      >>> import itertools, jax.numpy as jnp, optax
      >>> import autolr_jax as al
      >>> x = jnp.linspace(-1.0, 1.0, 32)
      >>> def loss_fn(w, batch):
      ...     return jnp.mean((w * batch[0] - batch[1]) ** 2)
      >>> res = al.lr_find(optax.sgd, jnp.zeros(()), loss_fn, itertools.repeat((x, 3 * x)),
      ...                  min_lr=1e-3, max_lr=1e2, num_steps=50)
      >>> res.stopped_early, 0.1 < res.suggestion < 3.0
      (True, True)

    References:
      L. N. Smith, "Cyclical Learning Rates for Training Neural Networks", WACV
      2017 (the range test); the same test as PyTorch Lightning's
      ``Tuner.lr_find`` and fastai's ``Learner.lr_find``.
    """
    _check_optimizer(optimizer, min_lr, inner_kwargs)
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {loss_fn!r}")
    check_real("min_lr", min_lr, lo=0.0, lo_open=True, scalar=True)
    check_real("max_lr", max_lr, lo=float(min_lr), lo_open=True, scalar=True)
    num_steps = check_int("num_steps", num_steps, lo=2)
    check_real("smoothing", smoothing, lo=0.0, hi=1.0, hi_open=True, scalar=True, float32=False)
    check_real("stop_factor", stop_factor, lo=1.0, lo_open=True, allow_inf=True, scalar=True)
    check_choice("suggest", suggest, tuple(SUGGESTIONS))
    try:
        iterator = iter(batches)
    except TypeError:
        raise ValueError(
            f"batches must be an iterable of batches (a data loader, a generator, a list; "
            f"itertools.repeat(batch) for one batch), got {type(batches).__name__}"
        ) from None

    tx = optax.inject_hyperparams(
        lambda learning_rate: optimizer(learning_rate=learning_rate, **inner_kwargs),
        hyperparam_dtype=jnp.float32,
    )(learning_rate=float(min_lr))

    def scalar_loss(p, batch):
        return as_scalar_loss(loss_fn(p, batch), has_aux)

    @jax.jit
    def step(p, opt_state, lr, batch):
        loss, grads = jax.value_and_grad(scalar_loss)(p, batch)
        opt_state = with_learning_rate(opt_state, lr)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    rates = range_test_rates(float(min_lr), float(max_lr), num_steps)
    p, opt_state = params, tx.init(params)
    losses: list[float] = []
    m, best, stopped = 0.0, math.inf, False
    for i, batch in enumerate(itertools.islice(iterator, num_steps)):
        p, opt_state, loss = step(p, opt_state, jnp.float32(rates[i]), batch)
        loss = float(loss)
        losses.append(loss)
        m = smoothing * m + (1.0 - smoothing) * loss
        s = m / (1.0 - smoothing ** (i + 1))
        if not math.isfinite(s) or (i > 0 and s > stop_factor * best):
            stopped = True
            break
        best = min(best, s)
    if len(losses) < 2:
        raise ValueError(
            f"batches must yield at least 2 batches for a range test, got {len(losses)}"
        )
    lrs = rates[: len(losses)]
    smoothed = smooth_losses(losses, float(smoothing))
    suggestions = {name: rule(lrs, smoothed) for name, rule in SUGGESTIONS.items()}
    return LRFindResult(
        lrs=lrs,
        losses=np.asarray(losses, np.float64),
        smoothed=smoothed,
        suggestion=suggestions[suggest],
        suggestions=suggestions,
        stopped_early=stopped,
    )


def plot_lr_find(result: LRFindResult, ax: Any = None, *, raw: bool = True) -> Any:
    """Plots a range test: smoothed (and raw) loss against the rate, the suggestion marked.

    Args:
      result: what :func:`lr_find` returned.
      ax: a matplotlib ``Axes`` to draw on; ``None`` makes a new figure.
      raw: whether to draw the raw losses too (faint).

    Returns:
      The ``Axes``.

    Example:
      >>> import matplotlib
      >>> matplotlib.use("Agg")
      >>> import numpy as np
      >>> from autolr_jax.auto._lr_find import LRFindResult, plot_lr_find
      >>> res = LRFindResult(np.geomspace(1e-3, 1, 4), np.array([2., 1., .5, 3.]),
      ...                    np.array([2., 1., .5, 3.]), 0.1, {"valley": 0.1}, True)
      >>> plot_lr_find(res).get_xscale()
      'log'
    """
    import matplotlib.pyplot as plt  # optional: only the plot needs it

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    if raw:
        ax.plot(result.lrs, result.losses, color="0.75", lw=0.8, label="loss")
    ax.plot(result.lrs, result.smoothed, lw=1.5, label="smoothed")
    if np.isfinite(result.suggestion):
        ax.axvline(result.suggestion, color="C3", ls="--", lw=1, label="suggestion")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    finite = result.smoothed[np.isfinite(result.smoothed)]
    if finite.size:
        lo = float(finite.min())
        ax.set_ylim(lo - 0.05 * abs(lo), float(finite[0]) * 1.5 + 1e-12)
    ax.legend(frameon=False)
    return ax
