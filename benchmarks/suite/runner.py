"""Runs the suite's cells: one jitted ``lax.scan`` per run, records as JSON lines.

A run is (task, method, rate, seed). Its function is compiled once per
(task, method): the rate, the seed's batch order and the data are arguments.
Records are appended to ``runs.jsonl`` as each run ends, and a rerun skips
every run already there, so an interrupted suite resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax import contrib

import autolr_jax as al
from benchmarks._common import _cpu_model
from benchmarks.suite.methods import Method, shape
from benchmarks.suite.tasks import Task

__all__ = ["batch_order", "run_one", "run_lr_find", "Records", "sweep", "update_fns"]


def batch_order(task: Task, seed: int) -> np.ndarray:
    """``(steps, batch_size)`` training indices: a fresh permutation per epoch (seed's RNG)."""
    n = len(task.load().train[1])
    per_epoch = n // task.batch_size
    rng = np.random.default_rng(1000 + seed)
    epochs = -(-task.steps // per_epoch)
    idx = [
        rng.permutation(n)[: per_epoch * task.batch_size].reshape(per_epoch, task.batch_size)
        for _ in range(epochs)
    ]
    return np.concatenate(idx)[: task.steps].astype(np.int32)


def _auto_state(state: Any) -> Any:
    """The ``AutoLRState`` inside a (chained) optimizer state."""
    for node in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, al.AutoLRState)):
        if isinstance(node, al.AutoLRState):
            return node
    return None


_COMPILED: dict[tuple[str, Method], Any] = {}


def _compiled(task: Task, method: Method, lr: float | None = None):
    """The jitted run ``(seed, lr, order, train) -> (params, losses, lrs, levels)``, one per row.

    ``lr``: a rate fixed at trace time (auto_lr checks its initial rate when it is built),
    or ``None`` for the rate as an argument (one compilation for the row's grid).
    """
    key = (task.name, method, lr)
    if key not in _COMPILED:
        _COMPILED[key] = _build(task, method, lr)
    return _COMPILED[key]


def update_fns(task: Task, method: Method, static_lr: float | None):
    """``(start, step, finish)`` of one run, unjitted: what a run's scan or loop calls.

    ``start(seed, lr) -> carry``; ``step(carry, t, idx, lr, train_x, train_y) -> (carry,
    (loss, rate, level))``, one update on the rows ``idx``; ``finish(params, state) ->``
    the parameters to evaluate. ``static_lr`` as in :func:`_compiled`.
    """
    # auto_lr checks its arguments when it is built: outside the trace, at a Python rate.
    static_tx = None if static_lr is None else method.build(task, static_lr)
    fixed_shape = (
        shape(task, "wsd" if method.kind == "lrfind-wsd" else method.kind)
        if (method.kind in ("constant", "cosine", "wsd", "lrfind-wsd"))
        else None
    )

    def start(seed, lr):
        params = task.init(jax.random.key(seed))
        tx = static_tx if static_tx is not None else method.build(task, lr)
        return params, tx.init(params)

    def step(carry, t, idx, lr, train_x, train_y):
        tx = static_tx if static_tx is not None else method.build(task, lr)
        # One update: the body of the scan, or of the Python loop.
        params, state = carry
        batch = (train_x[idx], train_y[idx])
        loss, grads = jax.value_and_grad(task.loss_fn)(params, batch)
        if method.is_auto:
            updates, state = tx.update(grads, state, params, batch=batch, value=loss)
            auto = _auto_state(state)
            rate = al.current_lr(auto)
            level = auto.control.level
        else:
            updates, state = tx.update(grads, state, params)
            rate = lr * fixed_shape(t) if fixed_shape is not None else jnp.nan
            level = lr if fixed_shape is not None else jnp.nan
        params = optax.apply_updates(params, updates)
        return (params, state), (loss, jnp.float32(rate), jnp.float32(level))

    def finish(params, state):
        if method.kind == "schedule_free":
            return contrib.schedule_free_eval_params(state[-1], params)
        return params

    return start, step, finish


def _build(task: Task, method: Method, static_lr: float | None):
    start, step, finish = update_fns(task, method, static_lr)

    def scanned(seed, lr, order, train_x, train_y):
        def body(carry, xs):
            return step(carry, *xs, lr, train_x, train_y)

        steps = jnp.arange(order.shape[0])
        (params, state), outs = jax.lax.scan(body, start(seed, lr), (steps, order))
        return finish(params, state), *outs

    if task.scan:
        return jax.jit(scanned)
    start_j, step_j, finish_j = jax.jit(start), jax.jit(step), jax.jit(finish)

    def looped(seed, lr, order, train_x, train_y):
        carry, outs = start_j(seed, lr), []
        for t, idx in enumerate(order):
            carry, out = step_j(carry, jnp.int32(t), idx, lr, train_x, train_y)
            outs.append(out)
        losses, rates, levels = (jnp.stack(x) for x in zip(*outs, strict=True))
        return finish_j(*carry), losses, rates, levels

    return looped


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _metrics(task: Task, params: Any, split: tuple) -> dict[str, float | None]:
    out = jax.jit(task.evaluate)(params, *split)
    return {k: _finite(float(v)) for k, v in out.items()}


def run_lr_find(task: Task, seed: int, suggest: str = "valley") -> dict[str, Any]:
    """``al.lr_find`` on ``task`` from seed ``seed``'s initialisation and batch order."""
    factory, kwargs = task.factory
    data = task.load()
    order = batch_order(task, seed)
    pre = task.pre()

    def opt(learning_rate):
        return optax.chain(*pre, factory(learning_rate, **kwargs))

    batches = ((data.train[0][i], data.train[1][i]) for i in order)
    t0 = time.perf_counter()
    res = al.lr_find(opt, task.init(jax.random.key(seed)), task.loss_fn, batches, suggest=suggest)
    return {
        "lrs": res.lrs.tolist(),
        "losses": [_finite(float(x)) for x in res.losses],
        "suggestions": {k: _finite(float(v)) for k, v in res.suggestions.items()},
        "suggestion": _finite(float(res.suggestion)),
        "steps": len(res.lrs),
        "wall_s": time.perf_counter() - t0,
    }


def run_one(task: Task, method: Method, lr: float | None, seed: int) -> dict[str, Any]:
    """One run: its validation and test metrics, training loss, rates and wall time."""
    data = task.load()
    order = batch_order(task, seed)
    extra: dict[str, Any] = {}
    if method.kind in ("lrfind-wsd", "lrfind-auto"):
        found = run_lr_find(task, seed, method.suggest)
        extra["lr_find"] = found
        lr = found["suggestion"]
        if lr is None:  # no suggestion (the curve blew up at once): recorded as diverged
            return _no_run(task, method, seed, extra)
    fn = _compiled(task, method, float(lr) if method.is_auto else None)
    train = tuple(jnp.asarray(a) for a in data.train)
    args = (seed, jnp.float32(lr if lr is not None else 0.0), order, *train)
    t0 = time.perf_counter()
    params, losses, rates, levels = jax.block_until_ready(fn(*args))
    wall = time.perf_counter() - t0
    losses, rates, levels = (np.asarray(a, np.float64) for a in (losses, rates, levels))
    per = max(1, task.every)
    cooldown_start = task.steps - round(0.2 * task.steps)
    val, test = _metrics(task, params, data.val), _metrics(task, params, data.test)
    return {
        "task": task.name,
        "method": method.name,
        "lr": lr,
        "seed": seed,
        "val": val,
        "test": test,
        "diverged": val.get(task.metric) is None,
        "train_loss_end": _finite(float(np.mean(losses[-per:]))),
        "level_before_cooldown": _finite(float(levels[cooldown_start - 1])),
        "lr_trace": [_finite(float(x)) for x in rates[::per]],
        "level_trace": [_finite(float(x)) for x in levels[::per]],
        "wall_s": wall,
        "cpu": _cpu_model(),
        # The plan's key of a row without a rate of its own (lr above is what it found).
        **({} if method.uses_lr else {"lr_key": None}),
        **extra,
    }


def _no_run(task: Task, method: Method, seed: int, extra: dict) -> dict[str, Any]:
    none = {task.metric: None}
    return {
        "task": task.name, "method": method.name, "lr": None, "seed": seed, "val": none,
        "test": none, "diverged": True, "train_loss_end": None, "level_before_cooldown": None,
        "lr_trace": [], "level_trace": [], "wall_s": extra["lr_find"]["wall_s"], "lr_key": None,
        **extra,
    }  # fmt: skip


class Records:
    """The JSON-lines file of a suite run: appended to, and read back to skip done runs."""

    def __init__(self, path: pathlib.Path):
        self.path = pathlib.Path(path)
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            with self.path.open() as f:
                self.rows = [json.loads(line) for line in f if line.strip()]

    @staticmethod
    def key(row: dict[str, Any]) -> tuple:
        # A row that found its rate (lr_find) is keyed by the plan's rate, None.
        lr = row["lr_key"] if "lr_key" in row else (None if "lr_find" in row else row["lr"])
        return (row.get("kind", "run"), row["task"], row["method"], lr, row["seed"])

    def done(self) -> set:
        return {self.key(r) for r in self.rows if "task" in r}

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def _mean_metric(rows: list[dict], task: Task) -> float:
    vals = [r["val"].get(task.metric) for r in rows]
    if any(v is None for v in vals) or not vals:
        return -math.inf if task.higher_is_better else math.inf
    return float(np.mean(vals))


def sweep(
    task: Task,
    method: Method,
    seeds: tuple[int, ...],
    records: Records,
    grid: tuple[float, ...],
    extend: bool,
    log=print,
) -> None:
    """Runs ``method`` at every rate of ``grid`` and seed; with ``extend``, grows the grid
    by half decades at the edge where the best mean validation metric sits (at most 4 times),
    so that the best rate is interior."""
    grid = sorted(grid)
    done = records.done()

    def run_rate(lr):
        for seed in seeds:
            key = ("run", task.name, method.name, lr, seed)
            if key in done:
                continue
            row = run_one(task, method, lr, seed)
            records.add(row)
            done.add(key)
            log(
                f"{task.name:9s} {method.name:22s} lr={lr if lr is not None else '-'!s:>10} "
                f"seed={seed} val {task.metric}={row['val'].get(task.metric)} "
                f"({row['wall_s']:.1f} s)"
            )

    if not method.uses_lr:
        run_rate(None)
        return
    for lr in grid:
        run_rate(lr)
    if not extend:
        return
    for _ in range(4):
        rows = [r for r in records.rows if (r.get("task"), r["method"]) == (task.name, method.name)]
        means = {lr: _mean_metric([r for r in rows if r["lr"] == lr], task) for lr in grid}
        pick = max if task.higher_is_better else min
        best = pick(grid, key=lambda lr: means[lr])
        k = round(2 * math.log10(best))  # the grid's points are 10 ** (k / 2)
        if best == grid[0]:
            new = float(10.0 ** ((k - 1) / 2))
            grid.insert(0, new)
        elif best == grid[-1]:
            new = float(10.0 ** ((k + 1) / 2))
            grid.append(new)
        else:
            return
        run_rate(float(new))
