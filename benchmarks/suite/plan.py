"""The suite's pre-registered plan: tasks, rows, grids, starts and seeds, fixed before any run.

Per task:

* ``constant``, ``cosine`` and ``wsd`` (warmup-stable-decay, 20 % linear
  cooldown), each with the task's warmup, over the task's half-decade grid of
  peak rates (x sqrt(10) steps), extended by the runner until the best mean
  validation metric is interior;
* ``prodigy``, ``schedule_free`` and ``dog`` at their Optax defaults;
* ``auto_lr`` rows from the task's five starts (four decades): the default
  (``auto-default``), Algorithm 1 (``seed``), and the level candidates;
* ``auto-probe-update``: the default, but its probes scale the optimizer's own
  update (``probe_optimizer=None``) rather than the momentum-free twin's step.
  Registered after the first suite run (probe records on the language model:
  the twin's step is much sharper than the update that is applied, so its
  one-step level sits far below the tuned peak), before any run of this row;
* ``auto-matched``: the default, but each probe rescales the twin's step to the
  length of the update the optimizer applies (``probe_optimizer="matched"``).
  Registered after the ``auto-probe-update`` runs and an exploratory measurement
  (seed 0, the tuned wsd peak as a constant rate; ``python -m
  benchmarks.suite.step_ratio``) of that length ratio on digits, diabetes,
  cifar-momentum and bytelm: 0.17-0.3 at every probe, as the noise
  averaged out of a b1 = 0.9 or momentum 0.9 update predicts. Prediction, written
  before any run of this row: levels about 4-5x the default's where there is a
  twin (cifar-momentum near the tuned peak; bytelm still ~10x below it; digits
  and diabetes above their validation-tuned peaks), and identical to the default
  on cifar-sgd (no momentum, no twin);
* task ``cifar-adam`` (the CIFAR CNN with Adam), every row: registered after
  the ``auto-matched`` runs above, as a task on which none of the level rules
  was chosen. Those runs suggest a rule by momentum kind ("matched" for an
  exponential-average momentum, the twin for heavy ball), so its prediction,
  written before any run on this task: ``auto-matched``'s level within x2 of
  the tuned wsd peak and its validation accuracy at least ``auto-default``'s;
* ``auto-guard-memory5``: the default with ``guard_memory=5`` (for five probes
  after the guard undoes a rise, a rise goes at most halfway, in log, to the
  level that failed). Registered after the ``auto-matched`` rows showed, on
  cifar-sgd (Intel Xeon; ``auto-matched`` is the default's code path there, no
  twin), seed 2 diverging from 3 of 5 starts: the guard undid 0.32 -> 0.16, the
  next probe rose to 0.32 again and a later one to 0.64, and the loss went
  non-finite within ten updates. Prediction, written before any run: no seed
  diverges on cifar-sgd, and every other task within seed noise of
  ``auto-default``;
* ``lrfind-wsd-*``: a fixed wsd at the peak ``lr_find`` suggests (100 updates
  before the run, by each suggestion rule); ``lrfind-auto``: ``auto_lr`` from the
  valley suggestion, without its one-step search.

Seeds 0-4 on every task but the language model and the CIFAR CNNs (0-2, 15-30 s
a run). The default for all tasks is chosen on the validation metric across the
suite; test metrics are read once, in the report.
"""

from __future__ import annotations

import dataclasses

from benchmarks.suite.methods import Method
from benchmarks.suite.tasks import TASKS, Task

__all__ = ["Cell", "QUICK_SEEDS", "ROW_NOTES", "SEEDS", "TASK_SEEDS", "plan", "seeds_for"]

SEEDS = (0, 1, 2, 3, 4)
# The language model and the CIFAR CNNs cost 15-30 s a run on 2 CPU cores: three seeds there.
TASK_SEEDS = {
    "bytelm": (0, 1, 2),
    "cifar-sgd": (0, 1, 2),
    "cifar-momentum": (0, 1, 2),
    "cifar-adam": (0, 1, 2),
}
QUICK_SEEDS = (0,)


def seeds_for(task: str, quick: bool = False) -> tuple[int, ...]:
    """The pre-registered seeds of a task."""
    return QUICK_SEEDS if quick else TASK_SEEDS.get(task, SEEDS)


# What a row's records mean where its name alone no longer says it (printed by the report).
ROW_NOTES = {
    "auto-default": "the default as it was when these rows ran: guard_memory=0. Since "
    "2026-12-08 the default is guard_memory=5 where the guard is on: the auto-guard-memory5 row.",
    "auto-guard-memory5": "the default since 2026-12-08 (guard_memory=5 where the guard is on).",
}

FIXED = (Method("constant", "constant"), Method("cosine", "cosine"), Method("wsd", "wsd"))
LR_FREE = (Method("prodigy", "prodigy"), Method("schedule_free", "schedule_free"),
           Method("dog", "dog"))  # fmt: skip
LR_FIND = tuple(
    Method(f"lrfind-wsd-{rule}", "lrfind-wsd", suggest=rule)
    for rule in ("valley", "minimum", "steepest")
) + (Method("lrfind-auto", "lrfind-auto", suggest="valley"),)
AUTO = (
    Method("auto-default", "auto"),
    Method("seed", "seed"),
    Method("auto-probe-update", "auto", auto=(("probe_optimizer", None),)),
    Method("auto-matched", "auto", auto=(("probe_optimizer", "matched"),)),
    Method("auto-guard-memory5", "auto", auto=(("guard_memory", 5),)),
)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One row of the plan on one task: its method, its rates and whether the grid grows."""

    task: Task
    method: Method
    rates: tuple[float | None, ...]
    extend: bool


def plan(tasks: tuple[str, ...] | None = None, quick: bool = False) -> list[Cell]:
    """The cells in run order; ``quick``: one fixed and one auto row, two rates, one seed."""
    cells = []
    for name in tasks or tuple(TASKS):
        task = TASKS[name]
        if quick:
            mid = task.starts[2]
            cells.append(Cell(task, FIXED[2], (mid,), False))
            cells.append(Cell(task, AUTO[0], (task.starts[0], mid), False))
            cells.append(Cell(task, LR_FIND[0], (None,), False))
            continue
        cells += [Cell(task, m, task.grid, True) for m in FIXED]
        cells += [Cell(task, m, (None,), False) for m in LR_FREE + LR_FIND]
        cells += [Cell(task, m, task.starts, False) for m in AUTO]
    return cells
