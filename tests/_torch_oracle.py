"""Steps real PyTorch schedulers: the oracle for schedule parity.

The oracle value at count ``t`` is ``optimizer.param_groups[0]['lr']`` after ``t``
calls of ``scheduler.step()``, each after an ``optimizer.step()`` as PyTorch
requires, so recursive ("chainable") schedulers are checked by what they really
hold, not by their closed forms.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np


def torch_lrs(
    torch: Any,
    build: Callable[[Any], Any],
    n: int,
    lr: float = 1.0,
    momentum: float = 0.9,
) -> np.ndarray:
    """Learning rates held after ``0, 1, ..., n - 1`` scheduler steps, as float64.

    Args:
      torch: the ``torch`` module.
      build: makes the scheduler from an ``SGD`` optimizer with learning rate ``lr``
        (and ``momentum``, which ``CyclicLR``/``OneCycleLR`` cycle by default).
      n: the number of values.
      lr: the optimizer's initial learning rate (PyTorch's ``base_lr``).
      momentum: the optimizer's momentum.
    """
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr, momentum=momentum)
    out = np.empty(n, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = build(opt)
        out[0] = opt.param_groups[0]["lr"]
        for t in range(1, n):
            opt.step()
            sched.step()
            out[t] = opt.param_groups[0]["lr"]
    return out
