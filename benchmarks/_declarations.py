"""What the benchmarks share: the seed's factor sets, the learning-rate grid, the method names.

``compare_schedules`` and ``probe_overhead`` import these, so a factor set or a method
name is declared once. The method names are the example's own: its ``config.schedule``
values (``METHODS``) and, among them, the learning-rate-free optimizers of optax.contrib
that replace SGD and its schedule (``LR_FREE``), from ``examples.cifar10.optimizers``
(importing them imports JAX, Optax and autolr_jax).
"""

from __future__ import annotations

from examples.cifar10.optimizers import LR_FREE, METHODS

__all__ = ["FACTORS", "LR_FREE", "LR_GRID", "METHODS", "WIDE_FACTORS"]

# The seed's factor sets (Factor_3, Factor_5, Factor_7): the candidate multipliers of the
# learning rate that one probe of the automated scheduler scores.
FACTORS: dict[int, tuple[float, ...]] = {
    3: (2.0, 1.0, 0.5),
    5: (4.0, 2.0, 1.0, 0.5, 0.125),
    7: (8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125),
}
# The wider set the seed suggests might avoid its divergence at lr = 1 ("if the range of
# factors increases ..."): 8 ... 1/64, 10 factors.
WIDE_FACTORS: tuple[float, ...] = (8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125, 1 / 16, 1 / 32, 1 / 64)
# Initial learning rates of the sensitivity sweep.
LR_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
