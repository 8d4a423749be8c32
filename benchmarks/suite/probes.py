"""Probe records of one ``auto_lr`` run on a suite task: what each probe saw and decided.

    python -m benchmarks.suite.probes --task bytelm --steps 300
    python -m benchmarks.suite.probes --task bytelm --auto "search_safety=1.0,guard=False"

One line per probe: the update, the training loss, the level and applied rate
after it, the decision, the candidate losses at ``factors`` and ``loss0``; at
the first probe also the search grid's losses. Seed 0, start 1e-3 unless given.
"""

from __future__ import annotations

import argparse
import ast

import jax
import jax.numpy as jnp
import numpy as np
import optax

import autolr_jax as al
from benchmarks.suite.runner import batch_order
from benchmarks.suite.tasks import get_task


def _kwargs(text: str) -> dict:
    out = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        out[key.strip()] = ast.literal_eval(value.strip())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite.probes")
    parser.add_argument("--task", default="bytelm")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--start", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--auto", default="", help="auto_lr keywords, e.g. guard=False")
    args = parser.parse_args(argv)
    task = get_task(args.task)
    steps = args.steps or task.steps
    data = task.load()
    order = batch_order(task, args.seed)
    x, y = jnp.asarray(data.train[0]), jnp.asarray(data.train[1])
    factory, kwargs = task.factory
    shape = al.warmup_stable_decay(1.0, task.steps, warmup_steps=task.warmup)
    auto = al.auto_lr(factory, args.start, loss_fn=task.loss_fn, every=task.every,
                      schedule=shape, **_kwargs(args.auto), **kwargs)  # fmt: skip
    tx = optax.chain(*task.pre(), auto)
    params = task.init(jax.random.key(args.seed))
    state = tx.init(params)

    @jax.jit
    def step(params, state, idx):
        batch = (x[idx], y[idx])
        loss, grads = jax.value_and_grad(task.loss_fn)(params, batch)
        updates, state = tx.update(grads, state, params, batch=batch, value=loss)
        return optax.apply_updates(params, updates), state, loss

    names = {code: name for name, code in al.DECISIONS.items()}
    for i in range(steps):
        params, state, loss = step(params, state, order[i])
        a = state[-1]
        if i % task.every:
            continue
        tel = a.telemetry
        print(
            f"{i:5d} loss {float(loss):.4f} level {float(a.control.level):.3g} "
            f"lr {float(al.current_lr(a)):.3g} {names[int(tel.decision)]:8s} "
            f"losses {np.round(np.asarray(tel.losses), 4).tolist()} loss0 {float(tel.loss0):.4f}"
        )
        if i == 0:
            print(f"      search losses {np.round(np.asarray(tel.search_losses), 3).tolist()}")
    metrics = {k: float(v) for k, v in task.evaluate(params, *data.val).items()}
    print(f"validation after {steps} updates: {metrics}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
