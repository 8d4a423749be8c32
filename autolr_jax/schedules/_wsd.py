"""Warmup–stable–decay: linear warmup, a constant plateau, a cooldown over the last steps."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from autolr_jax._validation import check_choice, check_int, check_real, is_concrete
from autolr_jax.schedules._base import INT32_MAX, as_count, cosine_mix, f32

__all__ = ["warmup_stable_decay"]

DECAY_SHAPES = ("linear", "sqrt", "cosine")


def _check_number(name: str, value: Any, **bounds: Any) -> Any:
    """:func:`check_real`, also rejecting strings (NumPy would parse ``"0.2"``)."""
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return check_real(name, value, **bounds)


def _linear_cooldown(high, low, to_end, from_start, length):
    # high * (1 - x) + low * x with x = from_start / length; both weights >= 0.
    return f32(high) * (to_end / f32(length)) + f32(low) * (from_start / f32(length))


def _sqrt_cooldown(high, low, to_end, from_start, length):
    # 1 - sqrt(x) = (1 - x) / (1 + sqrt(x)): no cancellation as x nears 1, so the
    # values just before total_steps keep their relative precision.
    root = jnp.sqrt(from_start / f32(length))
    return f32(high) * ((to_end / f32(length)) / (1.0 + root)) + f32(low) * root


_COOLDOWNS = {"linear": _linear_cooldown, "sqrt": _sqrt_cooldown, "cosine": cosine_mix}


def warmup_stable_decay(
    init_value: Any,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    decay_fraction: float = 0.2,
    decay_shape: str = "linear",
    warmup_start_factor: Any = 0.0,
    end_value: Any = 0.0,
) -> optax.Schedule:
    """Linear warmup to ``init_value``, a constant plateau, then a cooldown to ``end_value``.

    With ``T = total_steps``, ``W = warmup_steps``, the number of cooldown steps
    ``D = round(decay_fraction * T)`` (Python's ``round``, which rounds halves
    to even: ``decay_fraction=0.5, total_steps=5`` gives ``D = 2``) and the
    first step of the cooldown ``S = T - D``, the learning rate at update ``t``
    (the first update is ``t = 0``, as for every Optax schedule) is::

        t < W:          init_value * (warmup_start_factor + (1 - warmup_start_factor) * t / W)
        W <= t <= S:    init_value
        S < t < T:      end_value + (init_value - end_value) * g((t - S) / D)
        t >= T:         end_value

    where ``g`` is the ``decay_shape``: ``"linear"`` ``g(x) = 1 - x``, ``"sqrt"``
    ``g(x) = 1 - sqrt(x)``, ``"cosine"`` ``g(x) = (1 + cos(pi * x)) / 2``; ``x``
    is the fraction of the cooldown done. Hence, at the boundaries:

    - ``t = 0``: ``warmup_start_factor * init_value`` if ``W > 0``, else
      ``init_value`` (also for ``decay_fraction = 1``: the cooldown then starts
      at ``S = 0``, where ``x = 0``).
    - ``t = W``: ``init_value`` (the warmup ends exactly at its peak), unless
      ``W = T`` (possible only when ``D = 0``), where ``t >= T`` wins.
    - ``t = S``: ``init_value`` (``x = 0``); the first lowered value is at ``S + 1``.
    - ``t = T - 1``, the last update of the budget: ``end_value + (init_value -
      end_value) * g((D - 1) / D)``, *not* ``end_value``: for ``"linear"``
      ``init_value / D`` when ``end_value = 0``, so that every one of the ``D``
      cooldown steps lowers the learning rate and none of the budget is spent
      at 0.
    - ``t >= T``: ``end_value`` (``x`` clamped to 1), for every later count.
    - ``decay_fraction = 0`` (``D = 0``): no cooldown; ``init_value`` up to
      ``T - 1`` and ``end_value`` from ``T`` on. ``W`` may then be ``T``.

    The warmup, plateau and cooldown each lie in ``[0, init_value]``, so with
    ``init_value=1.0`` and ``end_value=0.0`` the schedule is a budget shape with
    values in ``[0, 1]`` (the float32 result is clipped at ``init_value`` against
    rounding). As Hägele et al. (2024) show, a constant learning rate with a
    cooldown over the last ~20% of the budget (the default ``decay_fraction``)
    matches a cosine schedule, and a ``"sqrt"`` cooldown does better than a
    linear one; a linear decay to 0 over the whole budget (``decay_fraction=1``)
    is the strongest at small budgets.

    Counts are int32 (negative counts are 0, wider ones saturate at ``2**31 - 1``)
    and every distance ``t - S``, ``T - t`` is taken exactly in int32 before the
    float32 arithmetic, whose terms are all non-negative (``1 - sqrt(x)`` is
    computed as ``(1 - x) / (1 + sqrt(x))``), so values near ``end_value`` keep
    their relative precision.

    Args:
      init_value: the peak (plateau) learning rate, finite and > 0; may be a JAX
        array (then ``end_value`` is checked against it elementwise).
      total_steps: the budget ``T``: the count at which the learning rate reaches
        ``end_value``, an int in ``[1, 2**31 - 1]``.
      warmup_steps: the length ``W`` of the linear warmup, an int in ``[0, T - D]``
        (0: no warmup).
      decay_fraction: the fraction of ``total_steps`` spent in the cooldown, a
        Python number in ``[0, 1]``; it fixes ``D = round(decay_fraction * T)``,
        so it cannot be traced.
      decay_shape: ``"linear"``, ``"sqrt"`` (Hägele et al.'s best) or ``"cosine"``.
      warmup_start_factor: the fraction of ``init_value`` at ``t = 0`` when
        ``W > 0``, in ``[0, 1]``; 0 (the default) starts the warmup from 0.
      end_value: the learning rate from ``t = T`` on, in ``[0, init_value]``.

    Returns:
      An ``optax.Schedule``: a pure, ``jit``- and ``vmap``-safe function from the
      int32 step count to a float32 learning rate.

    Raises:
      ValueError: for an argument out of range (the message names it, its value
        and the allowed range); strings and bools are not numbers.

    Example:
      >>> import autolr_jax
      >>> schedule = autolr_jax.warmup_stable_decay(1.0, total_steps=10, warmup_steps=2,
      ...                                           decay_fraction=0.4)
      >>> [round(float(schedule(t)), 6) for t in range(12)]
      [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
      >>> sqrt = autolr_jax.warmup_stable_decay(1.0, 10, decay_fraction=0.4, decay_shape="sqrt")
      >>> [round(float(sqrt(t)), 6) for t in range(6, 11)]
      [1.0, 0.5, 0.292893, 0.133975, 0.0]

    References:
      Hägele et al., `Scaling Laws and Compute-Optimal Training Beyond Fixed
      Training Durations <https://arxiv.org/abs/2405.18392>`_ (arXiv:2405.18392), 2024.
    """
    _check_number("init_value", init_value, lo=0.0, lo_open=True)
    total_steps = check_int("total_steps", total_steps, lo=1, hi=INT32_MAX)
    if not is_concrete(decay_fraction) or np.ndim(decay_fraction) != 0:
        raise ValueError(
            "decay_fraction must be a concrete real number in [0, 1] (it fixes the number "
            f"of cooldown steps), got {decay_fraction!r}"
        )
    _check_number("decay_fraction", decay_fraction, lo=0.0, hi=1.0)
    if not isinstance(decay_shape, str):
        raise ValueError(f"decay_shape must be one of {DECAY_SHAPES!r}, got {decay_shape!r}")
    check_choice("decay_shape", decay_shape, DECAY_SHAPES)
    decay_steps = round(float(decay_fraction) * total_steps)
    decay_start = total_steps - decay_steps
    warmup_steps = check_int("warmup_steps", warmup_steps, lo=0)
    if warmup_steps > decay_start:
        raise ValueError(
            f"warmup_steps must be an integer in [0, {decay_start}] (warmup_steps + decay_steps "
            f"<= total_steps, with decay_steps = round(decay_fraction * total_steps) = "
            f"round({decay_fraction!r} * {total_steps}) = {decay_steps}), got {warmup_steps!r}"
        )
    _check_number("warmup_start_factor", warmup_start_factor, lo=0.0, hi=1.0)
    _check_number("end_value", end_value, lo=0.0)
    if is_concrete(init_value) and is_concrete(end_value):
        if np.any(np.asarray(end_value, np.float64) > np.asarray(init_value, np.float64)):
            raise ValueError(
                f"end_value must be in [0, init_value] = [0, {init_value!r}], got {end_value!r}"
            )
    cooldown = _COOLDOWNS[decay_shape]

    def schedule(count):
        count = as_count(count)
        peak = f32(init_value)
        low = f32(end_value)
        if decay_steps > 0:
            # Plateau (x = 0) up to decay_start, end_value (x = 1) from total_steps on.
            clamped = jnp.clip(count, decay_start, total_steps)
            to_end = (total_steps - clamped).astype(jnp.float32)
            from_start = (clamped - decay_start).astype(jnp.float32)
            value = cooldown(peak, low, to_end, from_start, decay_steps)
        else:
            value = jnp.where(count < total_steps, peak, low)
        if warmup_steps > 0:
            done = jnp.minimum(count, warmup_steps)
            w_peak = done.astype(jnp.float32) / f32(warmup_steps)
            w_start = (warmup_steps - done).astype(jnp.float32) / f32(warmup_steps)
            warm = peak * (f32(warmup_start_factor) * w_start + w_peak)
            value = jnp.where(count < warmup_steps, warm, value)
        # The terms are >= 0 and sum to at most init_value; clip rounding excess.
        return jnp.minimum(value, peak).astype(jnp.float32)

    return schedule
