"""Argument checks shared by every constructor.

Every check runs eagerly, before any tracing, and raises ``ValueError`` whose
message names the argument, the value received and the allowed range. Values
that are JAX tracers (a hyperparameter passed through ``jit``/``vmap``) cannot
be checked and are let through unchanged.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import numpy as np

__all__ = [
    "check_choice",
    "check_int",
    "check_milestones",
    "check_real",
    "is_concrete",
]


def is_concrete(value: Any) -> bool:
    """True when ``value`` can be inspected on the host (not a tracer)."""
    return not isinstance(value, jax.core.Tracer)


def _as_float_array(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a real number, got {value!r}") from e
    return arr


def _describe(lo, hi, lo_open, hi_open) -> str:
    if lo is None and hi is None:
        return "a finite real number"
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo}"
    if lo is None:
        return f"{'<' if hi_open else '<='} {hi}"
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    return f"in {left}{lo}, {hi}{right}"


def check_real(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    allow_inf: bool = False,
) -> Any:
    """Checks that every element of ``value`` is a real number in a range.

    Args:
      name: the argument's name, as the user typed it.
      value: a Python number or array; tracers are not checked.
      lo: lower bound, or ``None`` for none.
      hi: upper bound, or ``None`` for none.
      lo_open: whether ``lo`` itself is excluded.
      hi_open: whether ``hi`` itself is excluded.
      allow_inf: whether ``+inf`` is allowed (for upper bounds such as ``max_lr``).

    Returns:
      ``value`` unchanged.
    """
    if not is_concrete(value):
        return value
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    arr = _as_float_array(name, value)
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got {value!r}")
    allowed = _describe(lo, hi, lo_open, hi_open)
    if np.any(np.isnan(arr)) or (not allow_inf and np.any(np.isinf(arr))):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    if lo is not None and np.any(arr <= lo if lo_open else arr < lo):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    if hi is not None and np.any(arr >= hi if hi_open else arr > hi):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def check_int(name: str, value: Any, *, lo: int | None = None, hi: int | None = None) -> int:
    """Checks that ``value`` is a Python or NumPy integer in ``[lo, hi]``.

    Returns:
      ``value`` as a Python ``int``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        # Accept integral floats such as 5.0 only if exact: PyTorch takes ints.
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if math.isfinite(value) and float(value).is_integer():
                value = int(value)
            else:
                raise ValueError(f"{name} must be an integer, got {value!r}")
        else:
            raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if lo is not None and value < lo:
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    if hi is not None and value > hi:
        bound = f"<= {hi}" if lo is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Checks that ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices!r}, got {value!r}")
    return value


def check_milestones(name: str, milestones: Any, *, lo: int = 0) -> tuple[int, ...]:
    """Checks a non-empty, non-decreasing sequence of integer milestones >= ``lo``."""
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, (Sequence, np.ndarray)):
        try:
            milestones = list(milestones)
        except TypeError:
            raise ValueError(f"{name} must be a sequence of integers, got {milestones!r}") from None
    values = tuple(check_int(f"{name}[{i}]", m, lo=lo) for i, m in enumerate(milestones))
    if not values:
        raise ValueError(f"{name} must not be empty, got {milestones!r}")
    return values
