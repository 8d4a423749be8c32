"""Building blocks shared by the schedules: counts, exact integer powers, cosine factors.

Every schedule here is a closed form of the step count evaluated in float32. The
helpers keep that closed form accurate to a few float32 ulps for every count up
to ``2**31 - 1``: floors and remainders are taken in int32 (never in float, where
counts above ``2**24`` are inexact), powers ``gamma**n`` are assembled from a
float64 table instead of ``exp(n * log(gamma))`` in float32, and cosine factors
are written as squared sines of exact integer distances so that values close to
``eta_min`` keep their relative precision.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from autolr_jax._validation import is_concrete

INT32_MAX = 2**31 - 1
# gamma**n needs the bits 0..30 of an int32 count n >= 0.
_BITS = np.arange(31, dtype=np.int32)


def _saturate_on_host(count: Any) -> Any:
    """A concrete integer count clipped to ``[0, INT32_MAX]`` before JAX sees it.

    Without ``jax_enable_x64``, ``jnp.asarray`` turns an ``np.int64`` into int32
    by dropping the high bits (``2**32 + 3`` becomes 3) and refuses a Python int
    above ``INT32_MAX``; clipping first saturates instead, as for traced counts.
    """
    if isinstance(count, (bool, np.bool_)):
        return count  # rejected below with the other non-integers
    if isinstance(count, int):
        return min(max(count, 0), INT32_MAX)
    if isinstance(count, (np.integer, np.ndarray)) and np.issubdtype(count.dtype, np.integer):
        if np.iinfo(count.dtype).max > INT32_MAX or np.iinfo(count.dtype).min < -INT32_MAX - 1:
            return np.clip(count, 0, INT32_MAX).astype(np.int32)
    return count


def as_count(count: Any) -> jax.Array:
    """The step count as int32, negative counts as 0 and wider integers saturated.

    Every schedule calls it first, so a count of ``2**31`` or more (an
    ``np.int64``, a Python int, or an int64 array under ``jax_enable_x64``)
    gives the value at ``2**31 - 1`` rather than wrapping around.

    Raises:
      TypeError: for a non-integer count (a float step count is almost always a bug).

    Example:
      >>> import numpy as np
      >>> from autolr_jax.schedules._base import as_count
      >>> int(as_count(np.int64(2**32 + 3))), int(as_count(-5))
      (2147483647, 0)
    """
    count = jnp.asarray(_saturate_on_host(count))
    if not jnp.issubdtype(count.dtype, jnp.integer):
        raise TypeError(f"a schedule takes an integer step count, got dtype {count.dtype}")
    if count.dtype.itemsize > 4 or jnp.issubdtype(count.dtype, jnp.unsignedinteger):
        # With jax_enable_x64 counts may be int64; saturate rather than wrap around.
        count = jnp.clip(count, 0, INT32_MAX)
    return jnp.maximum(count.astype(jnp.int32), 0)


def f32(value: Any) -> jax.Array:
    """``value`` as a float32 array (a Python number, NumPy or JAX array, or a tracer)."""
    return jnp.asarray(value, dtype=jnp.float32)


def int_floordiv_mod(count: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """``(count // n, count % n)`` in int32 for a Python int ``n >= 1``, any size."""
    if n > INT32_MAX:
        # n does not fit in int32, but then every int32 count is below n.
        return jnp.zeros_like(count), count
    return count // n, count % n


def int_pow(base: Any, n: jax.Array) -> jax.Array:
    """``base ** n`` in float32 for ``base > 0`` and an int32 array ``n >= 0``.

    ``jnp.power`` evaluates ``exp(n * log(base))`` in float32, whose relative error
    grows like ``n`` times the rounding error of ``base`` (``0.9999999`` rounds to
    ``1.0`` in float32). Instead ``base ** n`` is the product of ``base ** 2**k``
    over the set bits ``k`` of ``n``, the 31 factors computed in float64 on the host
    when ``base`` is concrete: at most 62 roundings of 2**-24, whatever ``n``.
    A traced ``base`` (e.g. under ``vmap`` over ``gamma``) gets its table in its own
    precision instead.
    """
    if is_concrete(base):
        log_base = np.log(np.asarray(base, dtype=np.float64))[..., None]
        with np.errstate(over="ignore", under="ignore"):
            table = jnp.asarray(np.exp(np.ldexp(log_base, _BITS)).astype(np.float32))
    else:
        log_base = jnp.log(jnp.asarray(base))[..., None]
        table = jnp.exp(log_base * np.ldexp(1.0, _BITS)).astype(jnp.float32)
    # Trailing axis: bit k. Leading axes broadcast the shapes of n and base.
    bits = ((n[..., None] >> _BITS) & 1) == 1
    return jnp.prod(jnp.where(bits, table, np.float32(1.0)), axis=-1)


def sin2_half_pi(num: jax.Array, den: Any) -> jax.Array:
    """``sin(pi/2 * num/den) ** 2`` in float32 for float ``num`` and ``den``."""
    return jnp.square(jnp.sin((np.float32(np.pi / 2) * (num / f32(den))).astype(jnp.float32)))


def cosine_mix(high: Any, low: Any, to_end: jax.Array, from_start: jax.Array, length: Any):
    """Half-cosine interpolation from ``high`` (at the start) to ``low`` (at the end).

    Equals ``low + (high - low) * (1 + cos(pi * from_start / length)) / 2`` with
    ``to_end = length - from_start``, computed as
    ``high * sin(pi/2 * to_end/length)**2 + low * sin(pi/2 * from_start/length)**2``:
    for ``from_start`` in ``[0, length]`` both terms are non-negative, so there is no
    cancellation and values near ``low`` (often 0) keep their relative precision.
    ``to_end`` and ``from_start`` are float32 distances the caller computes exactly
    (from integers), not ``1 - fraction``.
    """
    w_high = sin2_half_pi(to_end, length)
    w_low = sin2_half_pi(from_start, length)
    return f32(high) * w_high + f32(low) * w_low


def zero_safe_mul(a: Any, b: Any) -> jax.Array:
    """``a * b``, but 0 wherever ``a`` or ``b`` is 0, also when the other one is inf.

    A zero learning rate (or a zero factor of one) stays zero, as PyTorch's recursive
    form keeps it, once a growing factor (``gamma > 1``) has overflowed float32 to inf,
    where the plain product would be ``0 * inf = NaN``.
    """
    a, b = f32(a), f32(b)
    return jnp.where((a == 0) | (b == 0), jnp.float32(0), a * b)


class MultiplicativeSchedule:
    """A schedule ``init_value * factor(count)``, as PyTorch's chainable schedulers.

    Behaves as an ``optax.Schedule`` (call it with a step count) and exposes the
    parts that :func:`autolr_jax.chained` multiplies: PyTorch's ``StepLR``,
    ``MultiStepLR``, ``ExponentialLR``, ``ConstantLR``, ``LinearLR`` and
    ``PolynomialLR`` each multiply the learning rate by their own factor, so a
    ``ChainedScheduler`` of them holds ``init_value`` times the product of the
    factors.

    Attributes:
      init_value: the learning rate the factor multiplies (PyTorch's ``base_lr``).
      factor: a pure function of the step count to a float32 factor.
      name: the constructor that made this schedule, for error messages.
    """

    def __init__(self, init_value: Any, factor: Callable[[jax.Array], jax.Array], name: str):
        self.init_value = init_value
        self.factor = factor
        self.name = name
        self.__name__ = name

    def __call__(self, count: Any) -> jax.Array:
        # A zero learning rate stays zero, also once a growing factor has overflowed to inf.
        return zero_safe_mul(self.init_value, self.factor(as_count(count)))

    def __repr__(self) -> str:
        return f"<{self.name} schedule, init_value={self.init_value!r}>"
