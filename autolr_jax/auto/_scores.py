"""Score functions for :func:`autolr_jax.auto_lr`: candidate losses to nonnegative weights.

A score function has the signature ``score(losses, finite) -> scores``:

* ``losses``: float array of shape ``(N,)``, the candidate losses in the order of
  ``factors`` (at least float32; entries where ``finite`` is False are NaN or
  infinite and must not influence the others).
* ``finite``: bool array of shape ``(N,)``, ``jnp.isfinite(losses)``.
* returns: an array of shape ``(N,)`` of nonnegative weights, larger for better
  candidates. Only their ratios matter: ``auto_lr`` scales them by the power of
  two that brings their maximum into ``[1, 2)`` (exact), so a common scale, huge
  or tiny, neither overflows nor underflows the weighted mean. It forces to 0
  every score that belongs to a non-finite loss or is itself negative, NaN or
  infinite. If that leaves no positive score although some loss is finite (a
  score that underflowed, e.g. ``exp(-L)`` with ``L > 104`` in float32), the
  score is evaluated once more on the losses shifted so that the best finite
  loss is 0; when still no positive score is left, the multiplier is the
  smallest factor.

It runs inside ``jit`` (and under ``lax.cond``), so it must be written with
``jax.numpy`` and be traceable. ``auto_lr`` then sets the learning-rate
multiplier to the score-weighted geometric mean of the factors,
``exp(sum(s * log(f)) / sum(s))``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from autolr_jax._validation import check_real

__all__ = [
    "ScoreFn",
    "SCORES",
    "minmax_exp_score",
    "rank_exp_score",
    "resolve_score",
    "softmax_score",
    "zscore_exp_score",
]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def minmax_exp_score(losses: jax.Array, finite: jax.Array) -> jax.Array:
    """Min-max normalised losses through ``exp(-x)``: the seed's score (the default).

    ``x_i = (L_i - min L) / (max L - min L)`` with min and max over the finite
    losses, ``x_i = 0`` for all ``i`` when they are equal; ``s_i = exp(-x_i)``,
    so the best candidate scores 1 and the worst ``exp(-1)``. Non-finite losses
    score 0.

    Args:
      losses: candidate losses, shape ``(N,)``.
      finite: ``jnp.isfinite(losses)``.

    Returns:
      Scores of shape ``(N,)`` in ``[exp(-1), 1]`` (0 for non-finite losses).

    Example:
      >>> import jax.numpy as jnp
      >>> from autolr_jax.auto import minmax_exp_score
      >>> losses = jnp.array([3.0, 1.0, 2.0])
      >>> [round(float(s), 4) for s in minmax_exp_score(losses, jnp.isfinite(losses))]
      [0.3679, 1.0, 0.6065]

    References:
      Kim and Yu, "Automated learning rate scheduling with in-training
      information", Algorithm 1.
    """
    hi = jnp.max(jnp.where(finite, losses, -jnp.inf))
    lo = jnp.min(jnp.where(finite, losses, jnp.inf))
    span = hi - lo
    spread = jnp.isfinite(span) & (span > 0)
    x = jnp.where(spread, (losses - lo) / jnp.where(spread, span, 1.0), 0.0)
    return jnp.where(finite, jnp.exp(-x), 0.0)


def softmax_score(temperature: float = 1.0) -> ScoreFn:
    """A score function: softmax of minus the standardised losses over a temperature.

    ``z_i = (L_i - mean L) / std L`` with the mean and the population standard
    deviation (``ddof=0``) over the finite losses, and ``s_i = softmax(-z / T)_i``
    over the finite candidates. When the finite losses are all equal (std 0) every
    finite candidate scores the same. Non-finite losses score 0. A small
    ``temperature`` approaches picking the best factor; a large one approaches
    the plain geometric mean of the factors.

    Args:
      temperature: ``T > 0``, finite.

    Returns:
      A score function ``score(losses, finite) -> scores`` for ``auto_lr(score=...)``.

    Raises:
      ValueError: if ``temperature`` is not a finite number > 0.

    Example:
      >>> import jax.numpy as jnp
      >>> from autolr_jax.auto import softmax_score
      >>> losses = jnp.array([1.0, 1.0, jnp.nan])
      >>> [float(s) for s in softmax_score(0.5)(losses, jnp.isfinite(losses))]
      [0.5, 0.5, 0.0]
    """
    check_real("temperature", temperature, lo=0.0, lo_open=True, scalar=True)
    t = float(temperature)

    def score(losses: jax.Array, finite: jax.Array) -> jax.Array:
        count = jnp.maximum(jnp.sum(finite), 1).astype(losses.dtype)
        safe = jnp.where(finite, losses, 0.0)
        mean = jnp.sum(safe) / count
        var = jnp.sum(jnp.where(finite, (safe - mean) ** 2, 0.0)) / count
        std = jnp.sqrt(var)
        spread = jnp.isfinite(std) & (std > 0)
        z = jnp.where(spread, (safe - mean) / jnp.where(spread, std, 1.0), 0.0)
        logits = jnp.where(finite, -z / t, -jnp.inf)
        logits = logits - jnp.max(jnp.where(finite, logits, -jnp.inf), initial=-jnp.inf)
        weights = jnp.where(finite, jnp.exp(jnp.where(finite, logits, 0.0)), 0.0)
        return weights / jnp.maximum(jnp.sum(weights), jnp.finfo(losses.dtype).tiny)

    score.__name__ = score.__qualname__ = f"softmax_score(temperature={t!r})"
    return score


def rank_exp_score(losses: jax.Array, finite: jax.Array) -> jax.Array:
    """Scores by rank: the candidate with ``k`` strictly better finite losses scores ``2**-k``.

    Only the order of the losses matters, not their gaps: unlike min-max
    normalisation, one far-off candidate (a near-divergent large factor) does not
    squeeze the others together, and the weights do not change with the scale of
    the loss. Equal losses share a rank. Non-finite losses score 0.

    Args:
      losses: candidate losses, shape ``(N,)``.
      finite: ``jnp.isfinite(losses)``.

    Returns:
      Scores of shape ``(N,)`` in ``(0, 1]`` (0 for non-finite losses); the best
      candidate scores 1.

    Example:
      >>> import jax.numpy as jnp
      >>> from autolr_jax.auto import rank_exp_score
      >>> losses = jnp.array([3.0, 1.0, 1e6, 1.0, jnp.inf])
      >>> [float(s) for s in rank_exp_score(losses, jnp.isfinite(losses))]
      [0.25, 1.0, 0.125, 1.0, 0.0]

    References:
      An alternative to the score of Kim and Yu, "Automated learning rate
      scheduling with in-training information", whose Algorithm 1 leaves the
      score function as an open problem.
    """
    keyed = jnp.where(finite, losses, jnp.inf)
    better = jnp.sum(keyed[None, :] < keyed[:, None], axis=1)
    return jnp.where(finite, jnp.exp2(-better.astype(losses.dtype)), 0.0)


def zscore_exp_score(losses: jax.Array, finite: jax.Array) -> jax.Array:
    """Standardised losses through ``exp(-z)``: the score of the seed's published code.

    ``z_i = (L_i - mean L) / std L`` with the mean and the *sample* standard
    deviation (``ddof=1``, ``torch.std``'s default) over the finite losses, and
    ``s_i = exp(-z_i)``. Where the published code divides by a zero standard
    deviation (equal losses, or one finite loss) and gets NaN, every finite
    candidate scores 1 here. Non-finite losses score 0. Unlike the min-max
    score, the ratio of the best to the worst weight grows with the number of
    candidates and with how far the worst one lies from the rest.

    Args:
      losses: candidate losses, shape ``(N,)``.
      finite: ``jnp.isfinite(losses)``.

    Returns:
      Scores of shape ``(N,)``, positive for finite losses (0 for non-finite ones).

    Example:
      >>> import jax.numpy as jnp
      >>> from autolr_jax.auto import zscore_exp_score
      >>> losses = jnp.array([3.0, 1.0, 2.0])
      >>> [round(float(s), 4) for s in zscore_exp_score(losses, jnp.isfinite(losses))]
      [0.3679, 2.7183, 1.0]

    References:
      colin31472/CSED538-POSTECH-2024S, ``code/new_scheduler.py``
      (``loss_informed_scheduler.get_lr``), the code published with Kim and Yu,
      "Automated learning rate scheduling with in-training information".
    """
    count = jnp.sum(finite).astype(losses.dtype)
    safe = jnp.where(finite, losses, 0.0)
    # The mean of the losses scaled by their largest magnitude, so that neither the sum
    # nor the squares overflow (losses of 1e30 are finite in float32, their squares not).
    big = jnp.max(jnp.abs(safe))
    unit = jnp.where(big > 0, big, 1.0)
    x = safe / unit
    mean = jnp.sum(x) / jnp.maximum(count, 1.0)
    dev = jnp.where(finite, x - mean, 0.0)
    std = jnp.sqrt(jnp.sum(dev**2) / jnp.maximum(count - 1.0, 1.0))
    spread = (count > 1) & jnp.isfinite(std) & (std > 0)
    z = jnp.where(spread, dev / jnp.where(spread, std, 1.0), 0.0)
    return jnp.where(finite, jnp.exp(-z), 0.0)


SCORES = ("minmax_exp", "softmax", "rank_exp", "zscore_exp")


def resolve_score(score: str | ScoreFn) -> ScoreFn:
    """The score function named by ``score`` (or ``score`` itself if callable)."""
    if score is softmax_score:
        raise ValueError(
            "score=softmax_score is the factory, not a score function: pass "
            "score=softmax_score(temperature) or score='softmax'"
        )
    if isinstance(score, str):
        if score == "minmax_exp":
            return minmax_exp_score
        if score == "softmax":
            return softmax_score(1.0)
        if score == "rank_exp":
            return rank_exp_score
        if score == "zscore_exp":
            return zscore_exp_score
    elif callable(score):
        return score
    raise ValueError(
        f"score must be one of {SCORES!r} or a callable score(losses, finite) -> scores, "
        f"got {score!r}"
    )
