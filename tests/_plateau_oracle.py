"""ReduceLROnPlateau(mode='min', threshold=1e-4 rel, patience=0), written out in Python."""

from __future__ import annotations

import math


def plateau_lrs(metrics, lr: float, factor: float) -> list[float]:
    """The learning rate of each epoch when the metric of epoch e is reported after it."""
    want, cur, best = [], lr, math.inf
    for m in metrics:
        want.append(cur)
        if m < best * (1 - 1e-4):
            best = m
        else:
            cur *= factor
    return want
