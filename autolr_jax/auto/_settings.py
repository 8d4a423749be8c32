"""The arguments of :func:`autolr_jax.auto.auto_lr`, checked up front.

Every check runs before any tracing and raises a ``ValueError`` naming the
argument, its value and the allowed range; :func:`check_settings` returns them
converted, with what follows from them (the level bounds, the search grid,
whether a probe needs the loss at the current parameters).
"""

from __future__ import annotations

import inspect
from collections.abc import Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from autolr_jax._candidates import PROBE_STRATEGIES
from autolr_jax._validation import (
    check_int,
    check_positive_sequence,
    check_real,
    check_strategy,
)
from autolr_jax.auto._combine import level_bounds
from autolr_jax.auto._rules import resolve_rule, search_grid
from autolr_jax.auto._scores import resolve_score
from autolr_jax.auto._twin import PROBE_OPTIMIZER_MODES, resolve_probe_optimizer

__all__ = ["GUARD_SIGNALS", "Settings", "check_settings"]

# What the guard may compare (auto_lr's guard_on).
GUARD_SIGNALS = ("probe", "value")

# How many probes the guard remembers a level it undid, by default (where there is a guard).
DEFAULT_GUARD_MEMORY = 5


def _factory_name(optimizer: Any) -> str:
    mod = getattr(optimizer, "__module__", "") or ""
    name = getattr(optimizer, "__qualname__", None) or getattr(optimizer, "__name__", None)
    if name is None:
        return repr(optimizer)
    return f"{mod.split('.')[0]}.{name}" if mod.startswith("optax") else name


def _check_optimizer(
    optimizer: Any, learning_rate: Any, inner_kwargs: dict, arg: str = "optimizer"
) -> str:
    """The factory's name; ``ValueError`` (naming ``arg``) unless it takes ``learning_rate``."""
    if isinstance(optimizer, optax.GradientTransformation) or not callable(optimizer):
        raise ValueError(
            f"{arg} must be an Optax optimizer factory taking learning_rate, such as "
            f"optax.sgd (the function, not optax.sgd(...)), got {optimizer!r}"
        )
    name = _factory_name(optimizer)
    try:
        signature = inspect.signature(optimizer)
    except (TypeError, ValueError):
        raise ValueError(
            f"{arg} {name} has no inspectable signature; auto_lr needs a factory with a "
            "learning_rate argument, such as optax.sgd"
        ) from None
    params = signature.parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "learning_rate" not in params and not var_kw:
        raise ValueError(
            f"{arg} must be an Optax optimizer factory with a learning_rate argument, "
            f"but {name}{signature} has none"
        )
    try:
        signature.bind(learning_rate=learning_rate, **inner_kwargs)
    except TypeError as e:
        raise ValueError(
            f"{arg} {name}{signature} does not accept the keyword arguments "
            f"{sorted(inner_kwargs)} passed through auto_lr: {e}"
        ) from None
    return name


def check_probe_optimizer(
    probe_optimizer: Any,
    learning_rate: Any,
    lookahead: int,
    *,
    optimizer: Any,
    inner_kwargs: dict,
    rule: Any,
) -> Any:
    """``probe_optimizer`` resolved and checked: None, or a factory taking ``learning_rate``.

    The modes ``"auto"`` and ``"momentum_free"`` become the wrapped optimizer's
    momentum-free twin (:func:`autolr_jax.auto._twin.resolve_probe_optimizer`);
    a factory needs ``lookahead=1``.
    """
    probe_optimizer = resolve_probe_optimizer(
        probe_optimizer, optimizer, inner_kwargs, rule=rule, lookahead=lookahead
    )
    if probe_optimizer is None:
        return None
    if isinstance(probe_optimizer, optax.GradientTransformation) or not callable(probe_optimizer):
        raise ValueError(
            f"probe_optimizer must be None, one of {PROBE_OPTIMIZER_MODES} or an Optax "
            "optimizer factory (a callable with a learning_rate argument), got "
            f"{probe_optimizer!r}"
        )
    # Its own keyword arguments are bound already (functools.partial, a lambda): none pass.
    _check_optimizer(probe_optimizer, learning_rate, {}, arg="probe_optimizer")
    if lookahead != 1:
        raise ValueError(
            f"probe_optimizer needs lookahead=1 (a one-step probe), got lookahead={lookahead!r}"
        )
    return probe_optimizer


def _check_schedule(schedule: Any) -> optax.Schedule | None:
    """``schedule`` checked: None, or a callable of the count whose value at 0 is in [0, 1]."""
    if schedule is None:
        return None
    if not callable(schedule):
        raise ValueError(
            "schedule must be None or an Optax schedule of the update count with values in "
            f"[0, 1] (the budget shape, e.g. warmup_stable_decay(1.0, total_steps)), got "
            f"{schedule!r}"
        )
    try:
        first = np.asarray(schedule(jnp.zeros((), jnp.int32)))
    except Exception as e:  # noqa: BLE001 - any failure means it is not a schedule
        raise ValueError(
            f"schedule must be callable as schedule(count) -> a number in [0, 1], "
            f"but schedule(0) raised {type(e).__name__}: {e}"
        ) from None
    if (
        first.shape != ()
        or not np.issubdtype(first.dtype, np.number)
        or not (0.0 <= float(first) <= 1.0)
    ):
        raise ValueError(
            "schedule must return a scalar in [0, 1] (a shape: the learning rate is "
            f"level * schedule(count)), got schedule(0) = {first!r}"
        )
    peak = _peak(schedule)
    if peak is not None and peak < 1.0 - 1e-6:
        # A learning-rate schedule passed as the shape would silently scale the level.
        raise ValueError(
            f"schedule must be a shape that starts at 1 or warms up to it (the learning rate "
            f"is level * schedule(count)), but its largest value is {peak:.6g}: pass the "
            f"shape, e.g. warmup_stable_decay(1.0, total_steps), not a learning-rate schedule"
        )
    return schedule


# Counts at which a shape's peak is looked for: every update up to 4,096, then a
# geometric grid up to 2**31 (a warmup longer than that is not a warmup).
_PEAK_COUNTS = np.unique(
    np.concatenate([np.arange(4097), np.geomspace(4096, 2**31 - 1, 400).astype(np.int64)])
).astype(np.int32)


def _peak(schedule: optax.Schedule) -> float | None:
    """The largest value of ``schedule`` over :data:`_PEAK_COUNTS` (None if it cannot be
    evaluated on an array of counts)."""
    try:
        values = np.asarray(jax.vmap(schedule)(jnp.asarray(_PEAK_COUNTS)), np.float64)
    except Exception:  # noqa: BLE001 - not vmappable: only its first value is checked
        return None
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else None


class Settings(NamedTuple):
    """The arguments of :func:`auto_lr`, checked and converted (plus what follows from them)."""

    learning_rate: Any
    factors: Any
    floor: Any
    ceiling: Any
    every: Any
    min_lr: Any
    max_lr: Any
    has_aux: Any
    score_fn: Any
    chunk_size: Any
    lookahead: Any
    rule_name: Any
    rule_fn: Any
    schedule: Any
    guard: Any
    initial_search: Any
    probe_during_decay: Any
    search_safety: Any
    guard_tolerance: Any
    guard_memory: Any
    guard_on: Any
    grid: Any
    needs_loss0: Any
    backoff: Any


# fmt: off
def check_settings(
    optimizer, learning_rate, loss_fn, factors, every, min_lr, max_lr, has_aux, score,
    strategy, chunk_size, axis_name, lookahead, rule, schedule, probe_during_decay,
    initial_search, search_safety, guard, guard_tolerance, guard_memory, guard_on, inner_kwargs,
) -> Settings:
    """Every check of :func:`auto_lr`, up front and before any tracing: a ValueError naming
    the argument, its value and the allowed range."""
    # fmt: on
    if callable(learning_rate) or isinstance(learning_rate, (bool, np.bool_)):
        raise ValueError(
            "learning_rate must be the initial learning rate, a number > 0 (auto_lr sets it; "
            f"schedules are not accepted), got {learning_rate!r}"
        )
    check_real("learning_rate", learning_rate, lo=0.0, lo_open=True, scalar=True)
    _check_optimizer(optimizer, learning_rate, inner_kwargs)
    if loss_fn is None:
        raise ValueError("loss_fn is required: loss_fn(params, batch) -> scalar loss")
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable as loss_fn(params, batch), got {loss_fn!r}")
    factors = check_positive_sequence("factors", factors, distinct=True)
    floor, ceiling = level_bounds(factors)
    if floor > ceiling:
        raise ValueError(
            f"factors must span less than float32's range (max / min < 2**254), got {factors!r}"
        )
    if not floor <= float(learning_rate) <= ceiling:
        raise ValueError(
            f"learning_rate must be in [{floor}, {ceiling}] for factors {factors!r} (every "
            f"candidate's learning_rate * factor must be a normal, finite float32), "
            f"got {learning_rate!r}"
        )
    if every is None:
        raise ValueError(
            "every is required: the probe interval in update calls (e.g. steps per epoch)"
        )
    every = check_int("every", every, lo=1, hi=2**31 - 1)
    check_real("min_lr", min_lr, lo=0.0, hi=ceiling, scalar=True)
    check_real("max_lr", max_lr, lo=float(min_lr), lo_open=True, allow_inf=True, scalar=True)
    if float(max_lr) < floor:
        raise ValueError(
            f"max_lr must be >= {floor}, the smallest learning rate auto_lr keeps for factors "
            f"{factors!r}, got {max_lr!r}"
        )
    if not isinstance(has_aux, (bool, np.bool_)):
        raise ValueError(f"has_aux must be True or False, got {has_aux!r}")
    score_fn = resolve_score(score)
    chunk_size = check_strategy(
        strategy, chunk_size, choices=PROBE_STRATEGIES, candidates="candidates"
    )
    if axis_name is not None and not isinstance(axis_name, Hashable):
        raise ValueError(f"axis_name must be a mapped axis name or None, got {axis_name!r}")
    lookahead = check_int("lookahead", lookahead, lo=1, hi=10_000)
    rule_name, rule_fn = resolve_rule(rule)
    if rule_name == "armijo" and lookahead > 1:
        raise ValueError(
            f"rule='armijo' (the default) compares one-step candidates with the slope <g, u>; "
            f"it needs lookahead=1, got lookahead={lookahead!r} (pass rule='seed' for a "
            "look-ahead probe)"
        )
    schedule = _check_schedule(schedule)
    for flag_name, flag in (
        ("probe_during_decay", probe_during_decay),
        ("initial_search", initial_search),
    ):
        if not isinstance(flag, (bool, np.bool_)):
            raise ValueError(f"{flag_name} must be True or False, got {flag!r}")
    if guard is not None and not isinstance(guard, (bool, np.bool_)):
        raise ValueError(
            f"guard must be True, False or None (on unless rule='seed'), got {guard!r}"
        )
    check_real("search_safety", search_safety, lo=1.0, hi=1e4, scalar=True)
    check_real("guard_tolerance", guard_tolerance, lo=0.0, scalar=True)
    guard = rule_name != "seed" if guard is None else bool(guard)
    if guard_memory is None:  # the default: a memory where there is a guard to remember
        guard_memory = DEFAULT_GUARD_MEMORY if guard else 0
    guard_memory = check_int("guard_memory", guard_memory, lo=0, hi=2**31 - 1)
    if guard_memory and not guard:
        raise ValueError(
            f"guard_memory={guard_memory!r} remembers the levels the guard undid; it needs the "
            "guard on (guard=True, or guard=None with a rule other than 'seed')"
        )
    if guard_on is not None and not (isinstance(guard_on, str) and guard_on in GUARD_SIGNALS):
        raise ValueError(
            f"guard_on must be None or one of {GUARD_SIGNALS} (what the guard compares: the "
            f"probe batch's loss at successive probes, or the mean of update's value= between "
            f"probes; None: value where update gets value=), got {guard_on!r}"
        )
    if guard_on == "value" and not guard:
        raise ValueError(
            "guard_on='value' is what the guard compares; it needs the guard on (guard=True, "
            "or guard=None with a rule other than 'seed')"
        )
    initial_search = bool(initial_search)
    probe_during_decay = bool(probe_during_decay)
    search_safety, guard_tolerance = float(search_safety), float(guard_tolerance)
    grid = search_grid() if initial_search else ()
    if initial_search:
        # The level must also leave every grid candidate's rate normal and finite.
        g_floor, g_ceiling = level_bounds(grid)
        floor, ceiling = max(floor, g_floor), min(ceiling, g_ceiling)
        if not floor <= float(learning_rate) <= ceiling:
            raise ValueError(
                f"learning_rate must be in [{floor}, {ceiling}] with initial_search=True (every "
                f"search candidate's learning_rate * 10**k, |k| <= 4, must be a normal, finite "
                f"float32), got {learning_rate!r}"
            )
    # loss0 = loss_fn(params, batch), one forward more per probe, when a rule needs it.
    needs_loss0 = guard or initial_search or rule_name != "seed"
    backoff = min(1.0, min(factors))

    has_aux = bool(has_aux)
    learning_rate = float(learning_rate)
    min_lr, max_lr = float(min_lr), float(max_lr)
    return Settings(
        learning_rate=learning_rate,
        factors=factors,
        floor=floor,
        ceiling=ceiling,
        every=every,
        min_lr=min_lr,
        max_lr=max_lr,
        has_aux=has_aux,
        score_fn=score_fn,
        chunk_size=chunk_size,
        lookahead=lookahead,
        rule_name=rule_name,
        rule_fn=rule_fn,
        schedule=schedule,
        guard=guard,
        initial_search=initial_search,
        probe_during_decay=probe_during_decay,
        search_safety=search_safety,
        guard_tolerance=guard_tolerance,
        guard_memory=guard_memory,
        guard_on=guard_on,
        grid=grid,
        needs_loss0=needs_loss0,
        backoff=backoff,
    )
