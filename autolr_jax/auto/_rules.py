"""Rules that turn a probe's candidate losses into the next level of :func:`autolr_jax.auto_lr`.

Pure functions of arrays, each usable (and tested) without building an optimizer.
A *rule* is a function

    rule(losses, factors, loss0, slope) -> (multiplier, decision)

of the candidate losses ``L_i = loss(params + f_i * u)`` (float32 ``(N,)``, in
the order of ``factors``, possibly NaN or infinite), the factors (float32
``(N,)``), ``loss0 = loss(params)`` on the same batch and ``slope = <g, u>``, the
directional derivative of the loss along the update ``u`` computed at the current
level (negative for a descent direction). It returns the float32 multiplier of
the level (finite, > 0) and an int32 decision code (:data:`DECISIONS`); a custom
rule may return the multiplier alone (its decision is then ``"custom"``).

Built in:

* :func:`armijo_rule`: sufficient decrease on the probe batch; the *largest*
  factor whose candidate decreases the loss by at least ``c`` times the decrease
  the slope predicts.
* :func:`parabola_rule`: a quadratic model of the losses in ``log f``; move to
  its minimum only when the predicted gain beats the noise of the fit.

And the helpers of the first-probe search (:func:`search_grid`,
:func:`search_factor`) and of the do-no-harm guard (:func:`guard_level`, and
:func:`cap_rise` for its memory).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from autolr_jax._validation import check_int, check_real

__all__ = [
    "DECISIONS",
    "RuleFn",
    "armijo_rule",
    "cap_rise",
    "guard_level",
    "parabola_rule",
    "resolve_rule",
    "search_factor",
    "search_grid",
]

RuleFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], Any]

# The decision codes recorded in AutoLRTelemetry.decision (int32).
DECISIONS = {
    "none": 0,  # no probe yet
    "seed": 1,  # Algorithm 1: the score-weighted geometric mean of the factors
    "seed_fallback": 2,  # Algorithm 1 with no usable score: the smallest factor
    "accept": 3,  # armijo: the largest factor meeting sufficient decrease
    "backoff": 4,  # no candidate acceptable (or not a descent direction): smallest factor
    "stay": 5,  # parabola: the predicted gain is below the noise; multiplier 1
    "move": 6,  # parabola: to the vertex (clipped to the factor range)
    "guard": 7,  # the last rise made the loss worse: back to the level before it (or lower)
    "search": 8,  # the first probe's wide search chose the level
    "search_none": 9,  # the search found no factor that lowers the loss: level kept
    "custom": 10,  # a user rule that returned no decision code
    "capped": 11,  # guard_memory: a rise limited to below a level the guard undid
    "search_down": 12,  # every search candidate was non-finite: the smallest grid factor
}
DECISION_NAMES = {v: k for k, v in DECISIONS.items()}


def _code(name: str) -> jax.Array:
    return jnp.asarray(DECISIONS[name], jnp.int32)


def armijo_rule(c: float = 0.5) -> RuleFn:
    """Sufficient decrease along the update: the largest factor with ``L_i <= L_0 - c f_i |s|``.

    With ``s = <g, u>`` the slope of the loss along the update ``u`` (for plain
    SGD ``-lr * |g|**2``), a candidate ``f`` is acceptable when its loss is finite
    and ``L(f) <= L(0) - c * f * |s|``: it achieves at least the fraction ``c``
    of the decrease that the linear model predicts. The multiplier is the
    largest acceptable factor (decision ``"accept"``). If none is acceptable, or
    ``s`` is not negative (``u`` is not a descent direction, so no step along it
    is guaranteed to help) or not finite, it is the smallest factor
    (``"backoff"``).

    What it optimises: not the one-step loss but the *largest* step that is
    still safe on the probe batch. On a quadratic with curvature ``h`` along
    ``u`` the condition holds for ``lr * f <= 2 (1 - c) / h``: with ``c = 0.5``
    up to the one-step optimum ``1 / h``, never beyond it, while the greedy
    choice of a noisy one-step probe drifts to the smallest factor (the
    short-horizon bias). Picking the largest acceptable factor keeps it biased
    *upwards* instead, which is why it is paired with the do-no-harm guard and a
    budget ``schedule`` that does the annealing.

    Args:
      c: the sufficient-decrease constant, in ``(0, 1)``.

    Returns:
      A rule (see the module docstring).

    Example:
      >>> import jax.numpy as jnp
      >>> from autolr_jax.auto._rules import armijo_rule, DECISION_NAMES
      >>> rule = armijo_rule(c=0.5)
      >>> f = jnp.array([2.0, 1.0, 0.5])
      >>> m, d = rule(jnp.array([0.95, 0.9, 0.94]), f, jnp.float32(1.0), jnp.float32(-0.1))
      >>> float(m), DECISION_NAMES[int(d)]
      (1.0, 'accept')
      >>> m, d = rule(jnp.array([1.2, 1.1, 1.05]), f, jnp.float32(1.0), jnp.float32(-0.1))
      >>> float(m), DECISION_NAMES[int(d)]
      (0.5, 'backoff')
    """
    check_real("c", c, lo=0.0, hi=1.0, lo_open=True, hi_open=True, scalar=True)
    c = float(c)

    def rule(losses, factors, loss0, slope):
        losses = jnp.asarray(losses, jnp.float32)
        factors = jnp.asarray(factors, jnp.float32)
        loss0 = jnp.asarray(loss0, jnp.float32)
        slope = jnp.asarray(slope, jnp.float32)
        descent = jnp.isfinite(slope) & (slope < 0) & jnp.isfinite(loss0)
        bound = loss0 - c * factors * jnp.abs(slope)
        ok = descent & jnp.isfinite(losses) & (losses <= bound)
        best = jnp.max(jnp.where(ok, factors, -jnp.inf))
        any_ok = jnp.any(ok)
        multiplier = jnp.where(any_ok, best, jnp.min(factors))
        return multiplier, jnp.where(any_ok, _code("accept"), _code("backoff"))

    return rule


def parabola_rule(min_gain: float = 0.0, rtol: float = 1e-3) -> RuleFn:
    """A quadratic in ``log f`` fitted to the losses; move to its minimum if the gain is real.

    The finite losses are fitted by least squares with ``q(x) = a x**2 + b x +
    c0``, ``x = log f``. The target ``x*`` is the minimum of ``q`` over
    ``[log min f, log max f]`` (the vertex if ``a > 0``, else the better end).
    The predicted gain is ``q(0) - q(x*)`` (``x = 0``: the current level). The
    multiplier is ``exp(x*)`` (decision ``"move"``) when the gain exceeds the
    noise scale ``max(min_gain, rtol * |q(0)|, rms residual of the fit)``,
    otherwise 1 (``"stay"``). With fewer than three finite losses it moves to
    the best finite factor, or backs off to the smallest factor if none is
    finite (``"backoff"``).

    What it optimises: the one-step loss on the probe batch, like Algorithm 1,
    but it does not *average* the factors (no pull of the geometric mean toward
    a set's small factors) and it does not move on differences that the noise
    explains, so a probe that learns nothing leaves the level alone instead of
    drifting. It is still a one-step criterion and keeps that much short-horizon
    bias: where the one-step optimum is smaller than the rate that trains best,
    it follows the one-step optimum.

    Args:
      min_gain: the smallest predicted loss gain that moves the level, >= 0.
      rtol: the same, relative to the predicted loss at the current level, >= 0.

    Returns:
      A rule (see the module docstring).

    Example:
      >>> import jax.numpy as jnp
      >>> from autolr_jax.auto._rules import parabola_rule, DECISION_NAMES
      >>> f = jnp.array([4.0, 2.0, 1.0, 0.5, 0.25])
      >>> losses = (jnp.log(f) - jnp.log(2.0)) ** 2 + 1.0   # minimum at f = 2
      >>> m, d = parabola_rule()(losses, f, jnp.float32(3.0), jnp.float32(-1.0))
      >>> round(float(m), 4), DECISION_NAMES[int(d)]
      (2.0, 'move')
      >>> m, d = parabola_rule(min_gain=1.0)(losses, f, jnp.float32(3.0), jnp.float32(-1.0))
      >>> float(m), DECISION_NAMES[int(d)]
      (1.0, 'stay')
    """
    check_real("min_gain", min_gain, lo=0.0, scalar=True)
    check_real("rtol", rtol, lo=0.0, scalar=True)
    min_gain, rtol = float(min_gain), float(rtol)

    def rule(losses, factors, loss0, slope):
        del loss0, slope
        losses = jnp.asarray(losses, jnp.float32)
        factors = jnp.asarray(factors, jnp.float32)
        x = jnp.log(factors)
        finite = jnp.isfinite(losses)
        w = finite.astype(jnp.float32)
        y = jnp.where(finite, losses, 0.0)
        # Centre and scale the losses and x: the normal equations stay well
        # conditioned for any loss magnitude and factor span.
        y_ref = jnp.sum(w * y) / jnp.maximum(jnp.sum(w), 1.0)
        y_c = y - y_ref
        x_scale = jnp.maximum(jnp.max(jnp.abs(x)), 1e-6)
        xs = x / x_scale
        basis = jnp.stack([xs**2, xs, jnp.ones_like(xs)], axis=1) * w[:, None]
        gram = basis.T @ basis + 1e-9 * jnp.eye(3)
        coef = jnp.linalg.solve(gram, basis.T @ (w * y_c))
        a, b, c0 = coef[0], coef[1], coef[2]
        lo, hi = jnp.min(xs), jnp.max(xs)

        def q(t):
            return a * t**2 + b * t + c0

        vertex = jnp.clip(-b / jnp.where(a > 0, 2.0 * a, 1.0), lo, hi)
        end = jnp.where(q(lo) <= q(hi), lo, hi)
        target = jnp.where(a > 0, vertex, end)
        gain = q(0.0) - q(target)
        # Masked rows of basis are 0, so their residuals are 0 too.
        resid = jnp.sqrt(jnp.sum((basis @ coef - w * y_c) ** 2) / jnp.maximum(jnp.sum(w), 1.0))
        noise = jnp.maximum(jnp.maximum(min_gain, rtol * jnp.abs(q(0.0) + y_ref)), resid)
        move = jnp.isfinite(gain) & (gain > noise)
        fitted_m = jnp.where(move, jnp.exp(target * x_scale), 1.0)
        fitted_d = jnp.where(move, _code("move"), _code("stay"))
        count = jnp.sum(finite)
        best = factors[jnp.argmin(jnp.where(finite, losses, jnp.inf))]
        multiplier = jnp.where(count >= 3, fitted_m, jnp.where(count > 0, best, jnp.min(factors)))
        decision = jnp.where(
            count >= 3, fitted_d, jnp.where(count > 0, _code("move"), _code("backoff"))
        )
        return multiplier.astype(jnp.float32), decision

    return rule


RULES = {"armijo": armijo_rule, "parabola": parabola_rule}


def _check_rule_signature(rule: Any) -> None:
    """``ValueError`` unless ``rule`` can be called as ``rule(losses, factors, loss0, slope)``."""
    try:
        signature = inspect.signature(rule)
    except (TypeError, ValueError):
        return  # a builtin or C callable: nothing to inspect, the first update will tell
    try:
        signature.bind(None, None, None, None)
    except TypeError as e:
        raise ValueError(
            f"rule must be callable as rule(losses, factors, loss0, slope) -> multiplier or "
            f"(multiplier, decision), but {getattr(rule, '__name__', rule)!r}{signature} "
            f"cannot be: {e}"
        ) from None


def resolve_rule(rule: Any) -> tuple[str, RuleFn | None]:
    """``(name, fn)`` for ``auto_lr``'s ``rule``: ``("seed", None)``, a built-in, or a callable.

    Raises:
      ValueError: for anything else (naming ``rule`` and the choices).
    """
    if isinstance(rule, str):
        if rule == "seed":
            return "seed", None
        if rule in RULES:
            return rule, RULES[rule]()
    elif callable(rule):
        _check_rule_signature(rule)
        return getattr(rule, "__name__", "custom"), rule
    raise ValueError(
        f"rule must be 'seed', 'armijo', 'parabola' or a callable rule(losses, factors, loss0, "
        f"slope) -> multiplier or (multiplier, decision), got {rule!r}"
    )


def call_rule(rule: RuleFn, losses, factors, loss0, slope, fallback: float):
    """Calls a rule and cleans its answer: ``(multiplier, decision)``, finite and > 0.

    A multiplier that is not a finite positive number becomes ``fallback`` (the
    smallest factor) with decision ``"backoff"``.
    """
    out = rule(losses, factors, loss0, slope)
    if isinstance(out, (tuple, list)) and len(out) == 2:
        multiplier, decision = out
    else:
        multiplier, decision = out, _code("custom")
    multiplier = jnp.asarray(multiplier)
    if multiplier.shape != () or not jnp.issubdtype(multiplier.dtype, jnp.floating):
        raise ValueError(
            f"auto_lr: rule {rule!r} must return a float scalar multiplier (or "
            f"(multiplier, decision)), got shape {multiplier.shape} dtype {multiplier.dtype}"
        )
    multiplier = multiplier.astype(jnp.float32)
    decision = jnp.asarray(decision, jnp.int32).reshape(())
    ok = jnp.isfinite(multiplier) & (multiplier > 0)
    return (
        jnp.where(ok, multiplier, jnp.float32(fallback)),
        jnp.where(ok, decision, _code("backoff")),
    )


def search_grid(decades: int = 4, per_decade: int = 2) -> tuple[float, ...]:
    """The first probe's search factors: ``10**(k / per_decade)``, ``|k| <= decades * per_decade``.

    Example:
      >>> from autolr_jax.auto._rules import search_grid
      >>> [round(f, 4) for f in search_grid(decades=1, per_decade=2)]
      [10.0, 3.1623, 1.0, 0.3162, 0.1]
    """
    decades = check_int("search_decades", decades, lo=1, hi=30)
    per_decade = check_int("search_per_decade", per_decade, lo=1, hi=20)
    m = decades * per_decade
    return tuple(float(np.float32(10.0 ** (k / per_decade))) for k in range(m, -m - 1, -1))


def search_factor(losses, grid, loss0, safety: float):
    """The first probe's multiplier: the best grid factor that lowers the loss, over ``safety``.

    Non-finite losses are excluded. The best factor is the one of lowest loss;
    it is divided by ``safety`` (>= 1) because the one-step optimum on the probe
    batch sits near the edge of stability (a rate that lowers the loss in one
    step can diverge over many), and kept no smaller than the smallest grid
    factor. If no finite candidate is below ``loss0`` the level is kept
    (multiplier 1, decision ``"search_none"``): no factor of the grid helps, so
    the grid says nothing about the scale. But if even the smallest factor's
    candidate is non-finite, or more than doubles a positive ``loss0``, every step
    of the grid is too large: the multiplier is the smallest grid factor (decision
    ``"search_down"``; :func:`auto_lr` then applies no update and searches again at
    the next one), so no update is applied at a level measured to blow up.

    Example:
      >>> import jax.numpy as jnp
      >>> from autolr_jax.auto._rules import search_factor, DECISION_NAMES
      >>> grid = jnp.array([100.0, 10.0, 1.0, 0.1, 0.01])
      >>> m, d = search_factor(jnp.array([jnp.nan, 0.5, 0.8, 0.9, 0.99]), grid, 1.0, 4.0)
      >>> float(m), DECISION_NAMES[int(d)]
      (2.5, 'search')
      >>> m, d = search_factor(jnp.array([jnp.inf, 9e9, 1e6, 50.0, 3.0]), grid, 1.0, 4.0)
      >>> round(float(m), 6), DECISION_NAMES[int(d)]
      (0.01, 'search_down')
    """
    losses = jnp.asarray(losses, jnp.float32)
    grid = jnp.asarray(grid, jnp.float32)
    loss0 = jnp.asarray(loss0, jnp.float32)
    ok = jnp.isfinite(losses) & (~jnp.isfinite(loss0) | (losses < loss0))
    best = grid[jnp.argmin(jnp.where(ok, losses, jnp.inf))]
    chosen = jnp.maximum(best / jnp.float32(safety), jnp.min(grid))
    any_ok = jnp.any(ok)
    smallest = losses[jnp.argmin(grid)]
    too_large = ~jnp.isfinite(smallest) | (
        jnp.isfinite(loss0) & (loss0 > 0) & (smallest > 2.0 * loss0)
    )
    none = jnp.where(too_large, _code("search_down"), _code("search_none"))
    return (
        jnp.where(any_ok, chosen, jnp.where(too_large, jnp.min(grid), jnp.float32(1.0))),
        jnp.where(any_ok, _code("search"), none),
    )


def guard_level(level, proposed, loss0, last_loss0, before_rise, rose, tolerance, backoff):
    """The do-no-harm guard: undo the last rise if the loss got worse since it.

    If the previous probe raised the level (``rose``) and the loss at the
    current parameters ``loss0`` is now worse than the loss ``last_loss0`` at
    that probe by more than ``tolerance * |last_loss0|`` (or is not finite), the
    level goes back to ``before_rise`` (the level before that rise), or to
    ``proposed`` if the rule asks for lower. A non-finite ``loss0`` always backs
    off (``level * backoff`` at most).

    Returns:
      ``(new_level, guarded)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from autolr_jax.auto._rules import guard_level
      >>> lvl, g = guard_level(jnp.float32(0.2), jnp.float32(0.4), jnp.float32(3.0),
      ...                      jnp.float32(1.0), jnp.float32(0.1), True, 0.05, 0.5)
      >>> round(float(lvl), 6), bool(g)
      (0.1, True)
    """
    loss0 = jnp.asarray(loss0, jnp.float32)
    last_loss0 = jnp.asarray(last_loss0, jnp.float32)
    bad = ~jnp.isfinite(loss0)
    worse = (
        jnp.asarray(rose)
        & jnp.isfinite(last_loss0)
        & (bad | (loss0 > last_loss0 + tolerance * jnp.abs(last_loss0)))
    )
    undone = jnp.minimum(jnp.asarray(before_rise, jnp.float32), proposed)
    undone = jnp.where(bad, jnp.minimum(undone, level * backoff), undone)
    blown = bad & ~worse
    cut = jnp.where(blown, jnp.minimum(proposed, level * backoff), proposed)
    new = jnp.where(worse, undone, cut)
    return new.astype(jnp.float32), worse | blown


def cap_rise(level, proposed, failed):
    """The guard's memory: a rise may go at most halfway (in log) to a level that failed.

    While the guard remembers ``failed``, a level it undid because the loss got
    worse there, a proposed rise above the geometric mean ``sqrt(level * failed)``
    is cut to that mean (never below ``level``). Repeated over probes this
    bisects, in log, between the last level that trained well and the lowest one
    that did not, instead of re-trying the failed rise at every other probe.
    ``failed = inf`` (nothing remembered) changes nothing; neither does a
    proposal that does not rise.

    Returns:
      ``(new_level, capped)``, float32 and bool scalars.

    Example:
      >>> import jax.numpy as jnp
      >>> from autolr_jax.auto._rules import cap_rise
      >>> lvl, capped = cap_rise(jnp.float32(0.1), jnp.float32(0.4), jnp.float32(0.2))
      >>> round(float(lvl), 4), bool(capped)
      (0.1414, True)
      >>> lvl, capped = cap_rise(jnp.float32(0.1), jnp.float32(0.2), jnp.float32(jnp.inf))
      >>> round(float(lvl), 6), bool(capped)
      (0.2, False)
    """
    level = jnp.asarray(level, jnp.float32)
    proposed = jnp.asarray(proposed, jnp.float32)
    failed = jnp.asarray(failed, jnp.float32)
    # sqrt(a) * sqrt(b): no overflow for levels near float32's largest.
    cap = jnp.maximum(jnp.sqrt(level) * jnp.sqrt(failed), level)
    capped = jnp.isfinite(failed) & (proposed > level) & (proposed > cap)
    return jnp.where(capped, cap, proposed).astype(jnp.float32), capped
