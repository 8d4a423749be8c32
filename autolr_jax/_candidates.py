"""How N candidates are evaluated inside one jitted computation.

Both users evaluate one function at N candidates that differ only by a scalar
(or an index): an :func:`autolr_jax.auto_lr` probe computes the loss at N
factors of the update, an :func:`autolr_jax.alr_tree` epoch trains its
``M * N`` children. Two ways of doing that inside one jitted computation:

* ``"vmap"``: ``jax.vmap`` over the candidates, one batched computation.
  Batching over *weights* turns every convolution into a grouped convolution.
* ``"map"``: ``lax.map`` over the candidates, one after another in one
  computation (``chunk_size=k`` vmaps k candidates at a time).

Which is faster depends on the backend; :func:`default_probe_strategy` holds the
choice made for ``strategy="auto"`` in one place so a benchmark can report it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "PROBE_STRATEGIES",
    "default_probe_strategy",
    "evaluate_candidates",
    "resolve_probe_strategy",
]

PROBE_STRATEGIES = ("auto", "vmap", "map")

# Measured on a 2-core CPU, Flax ResNet-18 (CIFAR variant), batch 32, 7 factors:
# one forward 0.49 s; 7 sequential jitted forwards 3.45 s; lax.map in one jit
# 2.87 s; jax.vmap over the weights 20.0 s (grouped convolutions run badly on
# XLA:CPU). So CPU -> "map".
# GPU and TPU -> "vmap" is NOT measured here: it assumes batched (grouped)
# convolutions are efficient on accelerators. benchmarks/probe_overhead.py
# must confirm it on the hardware it runs on.
_AUTO_BY_BACKEND = {"cpu": "map", "gpu": "vmap", "cuda": "vmap", "rocm": "vmap", "tpu": "vmap"}


def default_probe_strategy(backend: str | None = None) -> str:
    """The strategy ``strategy="auto"`` resolves to on a backend.

    Args:
      backend: a JAX platform name (``"cpu"``, ``"gpu"``, ``"tpu"``); ``None``
        means ``jax.default_backend()``.

    Returns:
      ``"map"`` or ``"vmap"``. Unknown backends get ``"map"``, whose peak memory
      is that of one forward pass (times ``chunk_size``).

    Example:
      >>> from autolr_jax.auto import default_probe_strategy
      >>> default_probe_strategy("cpu")
      'map'
    """
    if backend is None:
        backend = jax.default_backend()
    return _AUTO_BY_BACKEND.get(str(backend).lower(), "map")


def resolve_probe_strategy(
    strategy: str, chunk_size: int | None = None, backend: str | None = None
) -> str:
    """The concrete strategy (``"vmap"`` or ``"map"``) an evaluation will use.

    ``"auto"`` with a ``chunk_size`` resolves to ``"map"``: a chunk size is a
    bound on how many candidates are evaluated at once, which only ``"map"``
    honours (``lax.map(..., batch_size=chunk_size)`` is a chunked vmap).

    Args:
      strategy: ``"auto"``, ``"vmap"`` or ``"map"`` (already validated).
      chunk_size: ``None`` or the number of candidates vmapped at a time.
      backend: platform name for ``"auto"``; ``None`` means the default backend.

    Returns:
      ``"vmap"`` or ``"map"``.

    Example:
      >>> from autolr_jax import resolve_probe_strategy
      >>> resolve_probe_strategy("auto", backend="gpu"), resolve_probe_strategy("auto", 2, "gpu")
      ('vmap', 'map')
    """
    if strategy != "auto":
        return strategy
    if chunk_size is not None:
        return "map"
    return default_probe_strategy(backend)


def evaluate_candidates(
    fn: Callable[[jax.Array], Any],
    candidates: jax.Array,
    strategy: str,
    chunk_size: int | None,
    *,
    max_width: int | None = None,
) -> Any:
    """Evaluates ``fn(c)`` for every entry ``c`` of ``candidates``, stacked on axis 0.

    Args:
      fn: a traceable function of one candidate (a factor, an index) to a pytree.
      candidates: an array with the candidate index on axis 0 (``N`` entries).
      strategy: ``"vmap"`` or ``"map"`` (resolved, see :func:`resolve_probe_strategy`).
      chunk_size: with ``"map"``, how many candidates are vmapped at a time
        (``None`` or 1: one at a time; ``>= N``: all at once, as ``"vmap"``).
      max_width: with ``"vmap"``, the most candidates vmapped at once: more than
        that are evaluated ``max_width`` at a time (``lax.map`` over vmapped chunks,
        the last chunk filled up with copies of the last candidate), so the
        transient memory is that of ``max_width`` candidates, not ``N``. ``None``
        (default): all ``N`` at once. An :func:`autolr_jax.auto_lr` probe passes
        ``len(factors)``, which bounds its first-probe search (17 grid points) by
        a regular probe's memory.

    Returns:
      The outputs of ``fn``, every leaf with a leading axis ``N``.

    Example:
      >>> import jax.numpy as jnp
      >>> from autolr_jax._candidates import evaluate_candidates
      >>> evaluate_candidates(lambda f: f * f, jnp.arange(4.0), "map", 3).tolist()
      [0.0, 1.0, 4.0, 9.0]
      >>> evaluate_candidates(lambda f: f * f, jnp.arange(5.0), "vmap", None, max_width=2).tolist()
      [0.0, 1.0, 4.0, 9.0, 16.0]
    """
    n = candidates.shape[0]
    if strategy == "vmap" and (max_width is None or n <= max_width):
        return jax.vmap(fn)(candidates)
    if strategy == "vmap" and max_width <= 1:
        return lax.map(fn, candidates)
    if strategy == "vmap":
        # Chunks of max_width, the last one filled up with copies of the last candidate:
        # lax.map's remainder would be a second vmap beside the loop, whose buffers XLA
        # does not share with the loop's (up to 2 * max_width - 1 candidates' memory).
        pad = -n % max_width
        padded = jnp.concatenate([candidates, jnp.repeat(candidates[-1:], pad, axis=0)])
        out = lax.map(fn, padded, batch_size=max_width)
        return jax.tree.map(lambda x: x[:n], out)
    batch_size = None if chunk_size is None or chunk_size <= 1 else min(chunk_size, n)
    if batch_size == n:
        return jax.vmap(fn)(candidates)
    if batch_size is None:
        return lax.map(fn, candidates)
    return lax.map(fn, candidates, batch_size=batch_size)
