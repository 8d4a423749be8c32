"""How long the applied update is against the momentum-free twin's step, along a run.

    python -m benchmarks.suite.step_ratio --task cifar-momentum --lr 0.01 --steps 300

The exploratory measurement behind the ``auto-matched`` row's registration
(benchmarks/suite/plan.py): the task's optimizer at a constant rate (seed 0), and
beside it the twin (``al.momentum_free_twin``) fed the same gradients. Every
``task.every`` updates it prints the training loss, ``|u| / |u_twin|`` (global
norms at the same rate) and the cosine between the two.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax

import autolr_jax as al
from benchmarks.suite.runner import batch_order
from benchmarks.suite.tasks import get_task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite.step_ratio")
    parser.add_argument("--task", default="cifar-momentum")
    parser.add_argument("--lr", type=float, required=True, help="the constant rate")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args(argv)
    task = get_task(args.task)
    factory, kwargs = task.factory
    twin_factory = al.momentum_free_twin(factory, **kwargs)
    if twin_factory is None:
        parser.error(f"{task.name}'s optimizer has no momentum: the update is the twin's step")
    steps = args.steps or task.steps
    data = task.load()
    x, y = (jnp.asarray(a) for a in data.train)
    order = batch_order(task, 0)
    pre = optax.chain(*task.pre()) if task.pre() else optax.identity()
    tx, twin = factory(args.lr, **kwargs), twin_factory(args.lr)
    params = task.init(jax.random.key(0))
    states = (tx.init(params), twin.init(params), pre.init(params))

    @jax.jit
    def step(params, states, idx):
        st, tst, pst = states
        loss, g = jax.value_and_grad(task.loss_fn)(params, (x[idx], y[idx]))
        g, pst = pre.update(g, pst, params)
        u, st = tx.update(g, st, params)
        ut, tst = twin.update(g, tst, params)
        norm = optax.tree.norm
        cos = optax.tree.vdot(u, ut) / (norm(u) * norm(ut))
        return optax.apply_updates(params, u), (st, tst, pst), loss, norm(u) / norm(ut), cos

    for t in range(steps):
        params, states, loss, ratio, cos = step(params, states, order[t])
        if t % max(1, task.every) == 0 or t == steps - 1:
            print(
                f"{task.name} update {t}: loss {float(loss):.3f} |u|/|u_twin| {float(ratio):.3f} "
                f"cos {float(cos):.3f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
