"""How a probe's candidate losses become the next learning rate of :func:`autolr_jax.auto_lr`.

Pure functions of arrays, each usable (and tested) without building an optimizer:

1. :func:`score_candidates`: the score function's weights, with non-finite
   losses and unusable scores forced to 0;
2. :func:`weighted_geometric_mean`: the multiplier
   ``exp(sum(s_i * log f_i) / sum(s_i))``, or the smallest factor when no
   weight is positive;
3. :func:`level_bounds` and :func:`next_learning_rate`: the learning rate
   ``clip(lr * m, min_lr, max_lr)``, kept where every candidate's learning
   rate ``lr * f_i`` is a normal, finite float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from autolr_jax._validation import F32_MAX, F32_TINY
from autolr_jax.auto._scores import ScoreFn

__all__ = [
    "level_bounds",
    "next_learning_rate",
    "pow2_normalise",
    "score_candidates",
    "weighted_geometric_mean",
]


def _usable(score_fn: ScoreFn, losses: jax.Array, finite: jax.Array, name: Any) -> jax.Array:
    """``score_fn``'s scores in ``losses.dtype``, 0 where unusable (see score_candidates)."""
    n = losses.shape[0]
    try:
        scores = jnp.asarray(score_fn(losses, finite))
    except TypeError as e:
        raise TypeError(
            f"auto_lr: score {name!r} must be a function score(losses, finite) -> "
            f"nonnegative scores of shape ({n},): {e}"
        ) from e
    if scores.shape != (n,):
        raise ValueError(
            f"auto_lr: score {name!r} must return an array of shape ({n},), "
            f"got shape {scores.shape}"
        )
    scores = scores.astype(losses.dtype)
    usable = finite & jnp.isfinite(scores) & (scores > 0)
    return jnp.where(usable, scores, 0.0)


def score_candidates(score_fn: ScoreFn, losses: jax.Array, name: Any = None) -> jax.Array:
    """The weights of the candidates: ``score_fn(losses, isfinite(losses))``, cleaned.

    Every score that belongs to a non-finite loss, or is itself negative, NaN
    or infinite, is 0. If no finite loss gets a positive score although some
    loss is finite (a score that underflowed, such as ``exp(-L)`` for
    ``L > 104`` in float32), ``score_fn`` is evaluated once more on the losses
    shifted so that the smallest finite loss is 0: for a score of the form
    ``c(L) * g(L)`` whose ratios do not change with a shift of the losses, such
    as ``exp(-L / T)``, that gives the weights it meant, up to a common factor.

    Args:
      score_fn: ``score(losses, finite) -> scores``, see :mod:`autolr_jax.auto._scores`.
      losses: the candidate losses, float ``(N,)``.
      name: how to call ``score_fn`` in error messages (``auto_lr``'s ``score``).

    Returns:
      Nonnegative finite scores of shape ``(N,)``, in the dtype of ``losses``.

    Raises:
      TypeError, ValueError: at trace time, if ``score_fn`` cannot be called as
        a score function or returns the wrong shape.

    Example:
      >>> import jax.numpy as jnp
      >>> from autolr_jax.auto._combine import score_candidates
      >>> score = lambda l, ok: jnp.where(ok, jnp.exp(-l), 0.0)
      >>> [round(float(s), 4) for s in score_candidates(score, jnp.array([151.0, 150.0, jnp.nan]))]
      [0.3679, 1.0, 0.0]
    """
    name = score_fn if name is None else name
    finite = jnp.isfinite(losses)
    scores = _usable(score_fn, losses, finite, name)
    underflow = ~jnp.any(scores > 0) & jnp.any(finite)
    lowest = jnp.min(jnp.where(finite, losses, jnp.inf))
    shifted = losses - jnp.where(jnp.any(finite), lowest, 0.0).astype(losses.dtype)
    retried = _usable(score_fn, shifted, finite & jnp.isfinite(shifted), name)
    return jnp.where(underflow, retried, scores)


def _pow2(k: jax.Array) -> jax.Array:
    """``2.0 ** k`` in float32, exactly, for an int32 ``k`` in ``[-126, 127]``."""
    return lax.bitcast_convert_type((k + 127) << 23, jnp.float32)


def pow2_normalise(scores: jax.Array) -> jax.Array:
    """``scores`` times the power of two that brings their maximum into ``[1, 2)``.

    Only the ratios of the scores matter; scaling by a power of two changes none
    of them and rounds nothing (barring float32 subnormals), so sums and ratios
    of the scaled scores are bit-identical to the unscaled ones wherever those
    did not overflow or underflow. Scores whose maximum is already in ``[1, 2)``
    (the built-in scores whose best candidate scores 1) are unchanged.

    Args:
      scores: nonnegative finite float32 scores, shape ``(N,)``.

    Returns:
      The scaled scores (all zeros stay zeros).

    Example:
      >>> import jax.numpy as jnp
      >>> from autolr_jax.auto._combine import pow2_normalise
      >>> pow2_normalise(jnp.array([6.0, 3.0, 0.0])).tolist()
      [1.5, 0.75, 0.0]
      >>> pow2_normalise(jnp.array([3e38, 0.75e38])).tolist()  # no overflow in sums
      [1.7632415294647217, 0.4408103823661804]
    """
    _, exponent = jnp.frexp(jnp.max(scores))
    # max = m * 2**e with m in [0.5, 1): times 2**(1 - e) it is in [1, 2). Two factors
    # of 2**(k/2) keep each inside float32's normal exponents for every float32 max.
    k = jnp.clip(1 - exponent.astype(jnp.int32), -252, 252)
    half = k // 2
    return scores * _pow2(half) * _pow2(k - half)


def weighted_geometric_mean(
    scores: jax.Array, factors: Sequence[float]
) -> tuple[jax.Array, jax.Array]:
    """The score-weighted geometric mean of the factors, ``exp(sum(s log f) / sum(s))``.

    The scores are first normalised by :func:`pow2_normalise` (exact), so
    neither a huge nor a tiny common scale overflows or underflows the sums. If
    no score is positive, or the mean is not finite, the multiplier is the
    smallest factor (the cautious choice: every candidate was unusable).

    Args:
      scores: nonnegative finite scores of shape ``(N,)`` (those of
        :func:`score_candidates`), float32 or wider.
      factors: the ``N`` factors, > 0.

    Returns:
      ``(multiplier, ok)``: the multiplier (float32 scalar) and whether it is the
      weighted mean (False: the smallest-factor fallback).

    Example:
      >>> import jax.numpy as jnp
      >>> from autolr_jax.auto._combine import weighted_geometric_mean
      >>> m, ok = weighted_geometric_mean(jnp.array([1.0, 0.0, 1.0]), (4.0, 1.0, 0.25))
      >>> float(m), bool(ok)
      (1.0, True)
      >>> m, ok = weighted_geometric_mean(jnp.zeros(3), (4.0, 1.0, 0.25))
      >>> float(m), bool(ok)
      (0.25, False)
    """
    weights = pow2_normalise(scores)
    total = jnp.sum(weights)
    ok = total > 0
    log_f = jnp.asarray(tuple(math.log(f) for f in factors), scores.dtype)
    mean_log = jnp.sum(weights * log_f) / jnp.where(ok, total, 1.0)
    mean = jnp.exp(mean_log)
    ok = ok & jnp.isfinite(mean)
    multiplier = jnp.where(ok, mean, min(float(f) for f in factors))
    return multiplier.astype(jnp.float32), ok


def level_bounds(factors: Sequence[float]) -> tuple[float, float]:
    """The range ``[floor, ceiling]`` that the learning rate a probe multiplies is kept in.

    ``floor`` is the smallest float32 ``lr`` with ``lr * f`` a normal float32
    (``>= 2**-126``, about ``1.18e-38``) for every factor ``f``, i.e. about
    ``1.18e-38 / min(1, min f)``; ``ceiling`` is the largest with ``lr * f``
    finite, about ``3.4e38 / max(1, max f)``. Below the floor the candidates'
    learning rates would be subnormal (flushed to 0 by XLA on CPU and GPU) and,
    after ~122 halvings of a rate, exactly 0, from which no multiplier recovers.

    Args:
      factors: the probe's factors, finite and > 0.

    Returns:
      ``(floor, ceiling)`` as Python floats that float32 represents exactly.

    Example:
      >>> import numpy as np
      >>> from autolr_jax.auto._combine import level_bounds
      >>> floor, ceiling = level_bounds((2.0, 1.0, 0.5))
      >>> floor == 2.0**-125, ceiling == float(np.finfo(np.float32).max) / 2
      (True, True)
    """
    lo = np.float32(min(1.0, min(factors)))
    hi = np.float32(max(1.0, max(factors)))
    tiny, big = np.float32(F32_TINY), np.float32(F32_MAX)
    floor = np.float32(F32_TINY / float(lo))
    ceiling = np.float32(F32_MAX / float(hi))
    with np.errstate(under="ignore", over="ignore"):
        # Round so that the products, taken in float32, are inside the range.
        while floor * lo < tiny:
            floor = np.nextafter(floor, np.float32(np.inf))
        while not np.isfinite(ceiling * hi) or ceiling * hi > big:
            ceiling = np.nextafter(ceiling, np.float32(0))
    return float(floor), float(ceiling)


def clamp_level(lr: jax.Array, floor: float, ceiling: float) -> jax.Array:
    """``lr`` clamped to ``[floor, ceiling]``; 0, negative and NaN rates become ``floor``."""
    lr = jnp.asarray(lr, jnp.float32)
    return jnp.where(lr >= np.float32(floor), jnp.minimum(lr, np.float32(ceiling)), floor).astype(
        jnp.float32
    )


def next_learning_rate(
    level: jax.Array,
    multiplier: jax.Array,
    min_lr: float,
    max_lr: float,
    floor: float,
    ceiling: float,
) -> tuple[jax.Array, jax.Array]:
    """``clip(level * multiplier, min_lr, max_lr)``, kept in ``[floor, ceiling]``.

    Args:
      level: the learning rate the probe multiplied (float32 scalar, already
        in ``[floor, ceiling]``, see :func:`clamp_level`).
      multiplier: the probe's multiplier (float32 scalar).
      min_lr: the user's lower bound, >= 0.
      max_lr: the user's upper bound (may be ``inf``).
      floor: see :func:`level_bounds`.
      ceiling: see :func:`level_bounds`.

    Returns:
      ``(new_lr, clamped)``: the float32 learning rate and whether the floor or
      the ceiling changed it.

    Example:
      >>> import jax.numpy as jnp
      >>> from autolr_jax.auto._combine import next_learning_rate
      >>> lr, clamped = next_learning_rate(jnp.float32(0.1), jnp.float32(0.5), 0.0, 1.0,
      ...                                  1e-30, 1e30)
      >>> round(float(lr), 6), bool(clamped)
      (0.05, False)
      >>> lr, clamped = next_learning_rate(jnp.float32(1e-30), jnp.float32(0.5), 0.0, 1.0,
      ...                                  1e-30, 1e30)
      >>> float(lr) == float(jnp.float32(1e-30)), bool(clamped)
      (True, True)
    """
    wanted = jnp.clip(level * multiplier, min_lr, max_lr).astype(jnp.float32)
    new_lr = clamp_level(wanted, floor, ceiling)
    return new_lr, new_lr != wanted
