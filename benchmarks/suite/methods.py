"""The suite's methods: how each builds its optimizer for a task, a rate and a budget.

A :class:`Method` is a plan row. ``build(task, lr)`` returns the Optax
transformation of one run (``lr`` may be a tracer: one compilation per row);
``uses_lr`` says whether the row has a rate at all (the learning-rate-free
comparators run once per seed). Fixed schedules: ``constant``, ``cosine`` and
``wsd`` at a peak rate, each with the task's warmup. ``auto``: ``auto_lr``
around the task's optimizer from an initial rate, with the run's budget as its
shape; ``seed``: Algorithm 1 as the slides give it. ``lrfind-wsd``: the rate
``lr_find`` suggests before the run, as a fixed warmup-stable-decay's peak.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import optax
from optax import contrib

import autolr_jax as al
from benchmarks.suite.tasks import Task

__all__ = ["Method", "shape"]


def shape(task: Task, kind: str) -> optax.Schedule:
    """The budget shape (peak 1) of a fixed schedule ``kind`` on ``task``."""
    if kind == "constant":
        if task.warmup:
            return optax.linear_schedule(0.0, 1.0, task.warmup)
        return optax.constant_schedule(1.0)
    if kind == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, 1.0, task.warmup, task.steps)
    if kind == "wsd":
        return al.warmup_stable_decay(1.0, task.steps, warmup_steps=task.warmup)
    raise ValueError(f"unknown schedule kind {kind!r}")


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of the plan.

    Attributes:
      name: the row's name in the report.
      kind: ``"constant"``, ``"cosine"``, ``"wsd"``, ``"auto"``, ``"seed"``,
        ``"lrfind-wsd"``, ``"prodigy"``, ``"schedule_free"`` or ``"dog"``.
      auto: keyword arguments for ``auto_lr`` beyond the defaults (``auto`` rows).
      suggest: the ``lr_find`` rule (``lrfind-wsd`` rows).
    """

    name: str
    kind: str
    auto: tuple[tuple[str, Any], ...] = ()
    suggest: str = "valley"

    @property
    def uses_lr(self) -> bool:
        return self.kind not in ("prodigy", "schedule_free", "dog", "lrfind-wsd", "lrfind-auto")

    @property
    def is_auto(self) -> bool:
        return self.kind in ("auto", "seed", "lrfind-auto")

    def build(self, task: Task, lr: Any) -> optax.GradientTransformation:
        if self.kind in ("constant", "cosine", "wsd", "lrfind-wsd"):
            s = shape(task, "wsd" if self.kind == "lrfind-wsd" else self.kind)
            return task.optimizer(lambda t: lr * s(t))
        factory, kwargs = task.factory
        if self.kind in ("auto", "lrfind-auto"):
            found = {"initial_search": False} if self.kind == "lrfind-auto" else {}
            tx = al.auto_lr(
                factory,
                lr,
                loss_fn=task.loss_fn,
                every=task.every,
                schedule=al.warmup_stable_decay(1.0, task.steps, warmup_steps=task.warmup),
                **found,
                **dict(self.auto),
                **kwargs,
            )
        elif self.kind == "seed":
            # Algorithm 1 of the slides, as the "Keep" section calls it.
            tx = al.auto_lr(
                factory,
                lr,
                loss_fn=task.loss_fn,
                every=task.every,
                rule="seed",
                initial_search=False,
                probe_optimizer=None,
                **kwargs,
            )
        elif self.kind == "prodigy":
            tx = contrib.prodigy()
        elif self.kind == "dog":
            tx = contrib.dog()
        elif self.kind == "schedule_free":
            tx = (
                contrib.schedule_free_adamw()
                if task.lr_free == "adam"
                else (contrib.schedule_free_sgd())
            )
        else:
            raise ValueError(f"unknown method kind {self.kind!r}")
        return optax.chain(*task.pre(), tx)
