"""The momentum-free twin of an Optax optimizer: the step :func:`auto_lr`'s probes scale.

A one-step probe along a momentum update judges a step that is mostly the past
gradients' average, not the step the incoming gradient asks for; and the level
such a probe accepts grows with the momentum while the best rate does not.
Vaswani et al.'s line search for adaptive methods leaves the
momentum out of its trial steps; :func:`momentum_free_twin` builds that step for
the Optax factories whose momentum is known, at the scale of the optimizer's
steady step, so the level it finds applies to the optimizer itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import optax

__all__ = [
    "PROBE_OPTIMIZER_MODES",
    "averages_gradients",
    "momentum_free_twin",
    "resolve_probe_optimizer",
]

# What auto_lr's probe_optimizer may name besides None and a factory.
PROBE_OPTIMIZER_MODES = ("auto", "momentum_free", "matched")

# Factories whose momentum is an exponential average of gradients with weight b1: the
# average's steady value is the gradient's, so the twin is the same factory with b1=0 at the
# same rate. (adabelief is not here: its second moment follows g - m, which b1=0 changes.)
_EMA_MOMENTUM = (
    optax.adam,
    optax.adamw,
    optax.nadam,
    optax.nadamw,
    optax.amsgrad,
    optax.adamax,
    optax.adamaxw,
    optax.radam,
    optax.lamb,
    optax.lion,
    optax.yogi,
)
# Factories with heavy-ball momentum (a sum of gradients, optionally Nesterov's) in
# `momentum=`: the steady step is 1 / (1 - momentum) times the rate's.
_TRACE_MOMENTUM = (optax.sgd, optax.rmsprop)


def _unwrap(optimizer: Any, kwargs: dict) -> tuple[Any, dict]:
    """``functools.partial`` layers peeled off; their keywords merged (the caller's win)."""
    while isinstance(optimizer, functools.partial) and not optimizer.args:
        kwargs = {**optimizer.keywords, **kwargs}
        optimizer = optimizer.func
    return optimizer, kwargs


def _is_zero(value: Any) -> bool:
    """Whether a momentum coefficient is known to be 0 (None counts; a traced value does not)."""
    if value is None:
        return True
    try:
        return float(np.asarray(value)) == 0.0
    except Exception:  # noqa: BLE001 - a tracer or anything non-numeric: momentum may be on
        return False


def _check_momentum(name: str, value: Any) -> float:
    """A heavy-ball coefficient as a float in [0, 1), ``ValueError`` naming it otherwise."""
    try:
        m = float(np.asarray(value))
    except Exception:  # noqa: BLE001 - a traced momentum cannot set the twin's scale
        raise ValueError(
            f"momentum_free_twin: {name} must be a concrete number in [0, 1) (it sets the "
            f"twin's step scale 1 / (1 - {name})), got {value!r}"
        ) from None
    if not 0.0 <= m < 1.0:
        raise ValueError(f"momentum_free_twin: {name} must be in [0, 1), got {value!r}")
    return m


def averages_gradients(optimizer: Any, **inner_kwargs: Any) -> bool:
    """Whether ``optimizer`` is one of the Adam family with its momentum (``b1``) on.

    Its twin is the same factory with ``b1=0``, whose state has the same structure
    and the same statistics but the first moment, which a ``b1=0`` step does not read
    (``mu = 0 * mu + g``): so the wrapped optimizer's own state can stand in for the
    twin's.
    """
    factory, kwargs = _unwrap(optimizer, dict(inner_kwargs))
    return any(factory is f for f in _EMA_MOMENTUM) and not _is_zero(kwargs.get("b1", 0.9))


def momentum_free_twin(
    optimizer: Callable[..., optax.GradientTransformation], **inner_kwargs: Any
) -> Callable[..., optax.GradientTransformation] | None:
    """The momentum-free step of an Optax optimizer, as a factory of the learning rate.

    For the factories whose momentum is an exponential average of gradients
    (``optax.adam``, ``adamw``, ``nadam``, ``nadamw``, ``amsgrad``, ``adamax``,
    ``adamaxw``, ``radam``, ``lamb``, ``lion``, ``yogi``) the twin is the same
    factory with the same keywords and ``b1=0``: the average's steady value is the
    gradient, so the rate means the same step. For heavy-ball momentum
    (``optax.sgd`` and ``optax.rmsprop`` with ``momentum=m``, Nesterov's or not)
    the momentum sums the gradients and the steady step is ``1 / (1 - m)`` times
    the rate's, so the twin is the factory without momentum at ``learning_rate /
    (1 - m)`` (with ``sgd``'s ``accumulator_dtype`` dropped: there is no
    accumulator). ``functools.partial`` wrappers with keywords only are looked
    through. This is what ``auto_lr(probe_optimizer="auto")`` uses.

    Args:
      optimizer: an Optax optimizer factory, e.g. ``optax.adam``.
      **inner_kwargs: the keywords the optimizer is built with (what
        :func:`auto_lr` passes on to it), e.g. ``b1=0.95`` or ``momentum=0.9``.

    Returns:
      A callable ``learning_rate -> optax.GradientTransformation``; ``None`` when
      the optimizer has no momentum (``b1=0``, ``momentum`` None or 0) or its
      momentum is not known (any other factory, a lambda, ``optax.chain``).

    Raises:
      ValueError: if a heavy-ball ``momentum`` is not a number in [0, 1).

    Example:
      >>> import optax, autolr_jax as al
      >>> twin = al.momentum_free_twin(optax.sgd, momentum=0.9)
      >>> tx = twin(0.01)  # optax.sgd(0.01 / (1 - 0.9)): the steady step of the momentum run
      >>> al.momentum_free_twin(optax.sgd) is None  # no momentum: the update is the step
      True

    References:
      S. Vaswani et al., "Painless stochastic gradient: interpolation, line-search,
      and convergence rates", NeurIPS 2019 (trial steps without momentum).
    """
    factory, kwargs = _unwrap(optimizer, dict(inner_kwargs))
    if any(factory is f for f in _EMA_MOMENTUM):
        if _is_zero(kwargs.get("b1", 0.9)):
            return None
        twin_kwargs = {**kwargs, "b1": 0.0}
        return lambda learning_rate: factory(learning_rate=learning_rate, **twin_kwargs)
    if any(factory is f for f in _TRACE_MOMENTUM):
        if _is_zero(kwargs.get("momentum")):
            return None
        scale = 1.0 / (1.0 - _check_momentum("momentum", kwargs["momentum"]))
        twin_kwargs = {k: v for k, v in kwargs.items() if k not in ("momentum", "nesterov")}
        twin_kwargs.pop("accumulator_dtype", None)
        return lambda learning_rate: factory(learning_rate=learning_rate * scale, **twin_kwargs)
    return None


def resolve_probe_optimizer(
    probe_optimizer: Any,
    optimizer: Any,
    inner_kwargs: dict,
    *,
    rule: Any,
    lookahead: int,
) -> Any:
    """``auto_lr``'s ``probe_optimizer`` as a factory or None (modes resolved, not yet checked).

    ``"auto"``: the momentum-free twin where one is known, the rule is not
    ``"seed"`` (Algorithm 1 keeps its trajectory) and the probe is one step;
    otherwise None. ``"matched"``: as ``"auto"`` (``auto_lr`` then rescales the
    twin's step to the length of the applied update). ``"momentum_free"``: the
    twin, ``ValueError`` where there is none to build.
    """
    if not isinstance(probe_optimizer, str):
        return probe_optimizer
    if probe_optimizer not in PROBE_OPTIMIZER_MODES:
        raise ValueError(
            f"probe_optimizer must be None, one of {PROBE_OPTIMIZER_MODES} or an Optax "
            f"optimizer factory (a callable with a learning_rate argument), got "
            f"{probe_optimizer!r}"
        )
    if probe_optimizer in ("auto", "matched"):
        if (isinstance(rule, str) and rule == "seed") or lookahead != 1:
            return None
        return momentum_free_twin(optimizer, **inner_kwargs)
    twin = momentum_free_twin(optimizer, **inner_kwargs)
    if twin is None:
        raise ValueError(
            "probe_optimizer='momentum_free' needs an optimizer whose momentum auto_lr knows "
            "(optax.adam and its b1 family, optax.sgd or optax.rmsprop with momentum=) and "
            f"has momentum on, got {optimizer!r} with {sorted(inner_kwargs)}; pass the "
            "momentum-free factory itself as probe_optimizer="
        )
    return twin
