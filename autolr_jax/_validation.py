"""Argument checks shared by every constructor.

Every check runs eagerly, before any tracing, and raises ``ValueError`` whose
message names the argument, the value received and the allowed range. Values
that are JAX tracers (a hyperparameter passed through ``jit``/``vmap``) cannot
be checked and are let through unchanged.

Real-valued arguments are checked *as they will be used*: every learning rate
and factor here ends up in float32, so a value must also lie in its range after
rounding to float32 (``1e300`` is ``inf`` there and ``1e-300`` is 0).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import numpy as np

__all__ = [
    "F32_MAX",
    "F32_TINY",
    "check_choice",
    "check_int",
    "check_milestones",
    "check_positive_sequence",
    "check_real",
    "check_strategy",
    "is_concrete",
]

# The largest finite float32 and the smallest normal one: XLA flushes float32
# subnormals to zero on CPU and GPU, so a positive value below F32_TINY can act
# as 0 in a computation.
F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).tiny)


def is_concrete(value: Any) -> bool:
    """True when ``value`` can be inspected on the host (not a tracer)."""
    return not isinstance(value, jax.core.Tracer)


def _is_real_scalar(x: Any) -> bool:
    """A Python or NumPy real number, or a 0-d real array; never a bool or a string."""
    if isinstance(x, (bool, np.bool_, str, bytes)):
        return False
    if isinstance(x, numbers.Real):
        return True
    return isinstance(x, (np.ndarray, jax.Array)) and x.shape == () and _real_dtype(x.dtype)


def _real_dtype(dtype: Any) -> bool:
    return np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)


def _as_real_array(name: str, value: Any, scalar: bool) -> np.ndarray:
    """``value`` as a float64 array, refusing anything that is not made of real numbers.

    NumPy would parse ``"0.1"`` and turn ``True`` into 1.0; neither is a number here.
    """
    what = "a real number" if scalar else "a real number or an array of real numbers"
    if _is_real_scalar(value):
        try:
            return np.asarray(float(value), dtype=np.float64)
        except OverflowError:  # a Python int beyond float64
            return np.asarray(math.inf if value > 0 else -math.inf)
    if scalar:
        raise ValueError(f"{name} must be {what} (a scalar), got {value!r}")
    if isinstance(value, (np.ndarray, jax.Array)):
        if not _real_dtype(value.dtype):
            raise ValueError(f"{name} must be {what}, got {value!r} of dtype {value.dtype}")
        return np.asarray(value, dtype=np.float64)
    if isinstance(value, (list, tuple)):
        items = np.asarray(value, dtype=object)
        if items.size == 0 or not all(_is_real_scalar(x) for x in items.reshape(-1)):
            raise ValueError(f"{name} must be {what}, got {value!r}")
        return np.asarray(value, dtype=np.float64)
    raise ValueError(f"{name} must be {what}, got {value!r}")


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


def _outside(arr: np.ndarray, lo, hi, lo_open, hi_open) -> bool:
    if lo is not None and np.any(arr <= lo if lo_open else arr < lo):
        return True
    return hi is not None and bool(np.any(arr >= hi if hi_open else arr > hi))


def check_real(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    allow_inf: bool = False,
    scalar: bool = False,
    float32: bool = True,
) -> Any:
    """Checks that every element of ``value`` is a real number in a range.

    Args:
      name: the argument's name, as the user typed it.
      value: a Python number or array; tracers are not checked. Strings, bools
        and ``None`` are not numbers.
      lo: lower bound, or ``None`` for none.
      hi: upper bound, or ``None`` for none.
      lo_open: whether ``lo`` itself is excluded.
      hi_open: whether ``hi`` itself is excluded.
      allow_inf: whether ``+inf`` is allowed (for upper bounds such as ``max_lr``).
      scalar: whether ``value`` must be a single number (not an array).
      float32: whether the value is used in float32: it must then also be in range
        after rounding to float32, finite there (unless ``allow_inf``) and, for a
        lower bound ``> 0``, at least the smallest normal float32 ``F32_TINY``.

    Returns:
      ``value`` unchanged.

    Example:
      >>> from autolr_jax._validation import check_real
      >>> check_real("gamma", 0.5, lo=0.0, lo_open=True)
      0.5
      >>> check_real("gamma", 1e-300, lo=0.0, lo_open=True)
      Traceback (most recent call last):
      ...
      ValueError: gamma must be > 0.0 and at least 1.1754943508222875e-38, the smallest ...
    """
    if not is_concrete(value):
        return value
    arr = _as_real_array(name, value, scalar)
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got {value!r}")
    allowed = _describe(lo, hi, lo_open, hi_open)
    if np.any(np.isnan(arr)):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    if not allow_inf and np.any(np.isinf(arr)):
        if not _outside(arr, lo, hi, lo_open, hi_open):  # in range but for being infinite
            raise ValueError(f"{name} must be {allowed} and finite, got {value!r}")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    if _outside(arr, lo, hi, lo_open, hi_open):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    if not float32:
        return value
    with np.errstate(over="ignore"):
        arr32 = arr.astype(np.float32)
    if not allow_inf and np.any(np.isinf(arr32)):
        raise ValueError(
            f"{name} must be {allowed} and finite in float32 (|x| <= {F32_MAX}), got {value!r}"
        )
    if lo == 0 and lo_open and np.any(arr < F32_TINY):
        raise ValueError(
            f"{name} must be {allowed} and at least {F32_TINY}, the smallest normal float32 "
            f"(smaller values act as 0 in float32 arithmetic), got {value!r}"
        )
    lo32 = None if lo is None else np.float32(lo)
    hi32 = None if hi is None else np.float32(hi)
    if _outside(arr32, lo32, hi32, lo_open, hi_open):
        raise ValueError(
            f"{name} must be {allowed} in float32, got {value!r}, which float32 rounds to "
            f"{arr32.tolist()!r}"
        )
    return value


def check_int(name: str, value: Any, *, lo: int | None = None, hi: int | None = None) -> int:
    """Checks that ``value`` is a Python or NumPy integer in ``[lo, hi]``.

    Returns:
      ``value`` as a Python ``int``.

    Example:
      >>> from autolr_jax._validation import check_int
      >>> check_int("every", 5.0, lo=1)
      5
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
    """Checks that ``value`` is one of ``choices``.

    When the choices are strings, only a string can match (``in`` on an array or
    an unhashable value would not give a clean error).
    """
    choices = tuple(choices)
    if all(isinstance(c, str) for c in choices) and not isinstance(value, str):
        raise ValueError(f"{name} must be one of {choices!r}, got {value!r}")
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


def check_positive_sequence(name: str, values: Any, *, distinct: bool = False) -> tuple[float, ...]:
    """Checks a non-empty 1-D sequence of finite reals > 0 that float32 represents.

    For the factors of :func:`autolr_jax.auto_lr` and :func:`autolr_jax.alr_tree`
    and the learning rates of an ALR beam. Each element is checked by
    :func:`check_real` (so ``1e-300``, which is 0 in float32, is refused).

    Args:
      name: the argument's name.
      values: a list, tuple or 1-D array; not a string, a scalar or a 2-D array
        (which would silently be flattened).
      distinct: whether repeated values are refused.

    Returns:
      The values as a tuple of Python floats, in the order given.

    Example:
      >>> from autolr_jax._validation import check_positive_sequence
      >>> check_positive_sequence("factors", [2, 1.0, 0.5])
      (2.0, 1.0, 0.5)
    """
    usage = f"{name} must be a non-empty 1-D sequence of reals > 0, got {values!r}"
    if isinstance(values, (np.ndarray, jax.Array)):
        if values.ndim != 1:
            raise ValueError(usage)
        items = list(np.asarray(values))
    elif isinstance(values, Sequence) and not isinstance(values, (str, bytes)):
        items = list(values)
    else:
        raise ValueError(usage)
    if not items or any(np.ndim(v) != 0 for v in items if not isinstance(v, (str, bytes))):
        raise ValueError(usage)
    out = []
    for i, v in enumerate(items):
        if not _is_real_scalar(v):
            raise ValueError(f"{name}[{i}] must be a real number > 0, got {v!r} in {values!r}")
        # Python floats: the message shows 0.5, not np.float64(0.5).
        out.append(float(check_real(f"{name}[{i}]", float(v), lo=0.0, lo_open=True)))
    if distinct and len(set(out)) != len(out):
        dup = sorted({f for f in out if out.count(f) > 1})
        raise ValueError(
            f"{name} must be distinct (a repeated factor would silently double its weight in "
            f"the geometric mean), got {values!r} with {dup} repeated"
        )
    return tuple(out)


def check_strategy(
    strategy: Any, chunk_size: Any, *, choices: Sequence[str], candidates: str
) -> int | None:
    """Checks a candidate-evaluation ``strategy`` and its ``chunk_size``.

    Args:
      strategy: one of ``choices`` (``"auto"``, ``"vmap"``, ``"map"``).
      chunk_size: ``None`` or an integer >= 1; not allowed with ``"vmap"``, which
        evaluates every candidate at once.
      choices: the allowed strategies.
      candidates: what the candidates are called in messages (``"candidates"``,
        ``"children"``).

    Returns:
      ``chunk_size`` as an ``int``, or ``None``.
    """
    check_choice("strategy", strategy, choices)
    if chunk_size is None:
        return None
    chunk_size = check_int("chunk_size", chunk_size, lo=1)
    if strategy == "vmap":
        raise ValueError(
            f"chunk_size must be None with strategy='vmap' (which evaluates all {candidates} "
            f"at once), got {chunk_size!r}; use strategy='map' to vmap chunk_size "
            f"{candidates} at a time"
        )
    return chunk_size
