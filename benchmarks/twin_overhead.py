"""What the momentum-free twin (``probe_optimizer="auto"``, the default) costs per step.

Run from the repository root::

    python -m benchmarks.twin_overhead          # the cpu protocol's ResNet-18 (width 1/8)
    python -m benchmarks.twin_overhead --quick  # small CNN, width 1/16: a smoke test

With a momentum optimizer ``auto_lr``'s default probes a twin without momentum: SGD's
has no state; Adam's reads Adam's own statistics (its committed results below
benchmarks/results/twin_overhead/ predate that, when it kept a state of its own and took
one more optimizer update per step). This measures that cost, per optimizer (Adam, SGD with
momentum 0.9), at batch 32 on 32x32x3 inputs, on ``auto_lr``'s own jitted training
steps, all timed together in rotated order (``probe_overhead.interleaved``):

* ``plain``: the optimizer with its learning rate injected (as ``auto_lr`` holds it);
* ``update``: ``auto_lr(..., probe_optimizer=None)`` (the probes scale the update);
* ``twin``: ``auto_lr(..., probe_optimizer="auto")``;

each on an ordinary (non-probing) update, and both ``auto_lr`` variants on a probing one
(rule ``armijo``, 3 factors, no first-probe search). Reported: the step times, the
twin's extra time per ordinary step against ``update``, the probe's cost per epoch of
``--epoch-steps`` updates, and the optimizer state's bytes.

Results go to ``<out>/twin_overhead.md`` and ``<out>/twin_overhead.json``.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
import pandas as pd

from benchmarks import _common
from benchmarks import probe_overhead as po

SCHEMA = "autolr_jax/twin_overhead/v1"
RESULTS = Path(__file__).resolve().parent / "results" / "twin_overhead"
# name -> (factory, inner keyword arguments, learning rate): the example's two optimizers.
OPTIMIZERS = {
    "adam": (optax.adam, {}, 1e-3),
    "sgd_momentum": (optax.sgd, {"momentum": 0.9}, 0.01),
}
VARIANTS = ("plain", "update", "twin")


# ===================================================================================== plan


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18", choices=po.MODELS)
    p.add_argument("--width", type=float, default=None, help="default 0.125 (the cpu protocol)")
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS), help="comma-separated")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=30, help="timed rounds (default 30)")
    p.add_argument("--epoch-steps", type=int, default=312, help="probe interval (cpu: 312)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="cap per measurement")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--quick", action="store_true", help="small CNN, width 1/16, 5 rounds")
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.reps = "small_cnn", min(args.reps, 5)
        args.width = 0.0625 if args.width is None else args.width
    args.width = 0.125 if args.width is None else args.width
    args.optimizers = [o for o in args.optimizers.split(",") if o]
    for name in args.optimizers:
        if name not in OPTIMIZERS:
            p.error(f"--optimizers: unknown {name!r}; choose from {', '.join(OPTIMIZERS)}")
    if args.reps < 2:
        p.error(f"--reps must be >= 2, got {args.reps}")
    return args


def transformations(name: str, loss_fn, every: int) -> dict[str, Any]:
    """The three optimizers of one row, keyed by :data:`VARIANTS`."""
    from autolr_jax.auto import auto_lr

    factory, kwargs, lr = OPTIMIZERS[name]
    inner = optax.inject_hyperparams(factory, hyperparam_dtype=jnp.float32)(
        learning_rate=lr, **kwargs
    )

    def plain_update(updates, state, params=None, *, batch=None, **extra):
        del batch, extra  # the same keyword as auto_lr's update, ignored
        return inner.update(updates, state, params)

    auto = functools.partial(
        auto_lr, factory, lr, loss_fn=loss_fn, every=every, rule="armijo",
        initial_search=False, **kwargs,
    )  # fmt: skip
    return {
        "plain": optax.GradientTransformationExtraArgs(inner.init, plain_update),
        "update": auto(probe_optimizer=None),
        "twin": auto(probe_optimizer="auto"),
    }


# ====================================================================================== run


def _bytes(tree) -> int:
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def measure(name: str, fns: po.Functions, batch, args) -> dict[str, Any]:
    p, r = fns.params, fns.rest
    txs = transformations(name, fns.loss_fn, args.epoch_steps)
    calls, labels, out = [], [], {"state_bytes": {}, "compile_s": {}}
    for variant, tx in txs.items():
        s0 = tx.init(p)
        step, ct, _ = po.compile_fn(fns.make_train_step(tx), p, r, s0, batch, memory=False)
        out["state_bytes"][variant], out["compile_s"][variant] = _bytes(s0), ct
        if variant == "plain":
            states = {"ordinary": s0}
        else:  # count 0 probes; the state after it, at count 1, does not
            states = {"probing": s0, "ordinary": _common.block(step(p, r, s0, batch))[2]}
        for kind, s in states.items():
            calls.append(functools.partial(lambda f, s: _common.block(f(p, r, s, batch)), step, s))
            labels.append(f"{variant}/{kind}")
    po.log(f"{name}: compiled {len(txs)} steps; timing {args.reps} rounds")
    timings = po.interleaved(calls, args.reps, args.max_seconds)
    out["steps"] = dict(zip(labels, timings, strict=True))
    return out


# =================================================================================== report


def figures(res: dict[str, Any], every: int) -> dict[str, float]:
    t = {k: v["median_s"] for k, v in res["steps"].items()}
    probe = {v: t[f"{v}/probing"] - t[f"{v}/ordinary"] for v in ("update", "twin")}
    return {
        **{f"{k} (ms)": 1e3 * v for k, v in t.items()},
        "twin ÷ update, ordinary step": t["twin/ordinary"] / t["update/ordinary"] - 1,
        "update ÷ plain, ordinary step": t["update/ordinary"] / t["plain/ordinary"] - 1,
        "twin probe per epoch": probe["twin"] / (every * t["twin/ordinary"]),
        "update probe per epoch": probe["update"] / (every * t["update/ordinary"]),
        "twin state ÷ update state": res["state_bytes"]["twin"] / res["state_bytes"]["update"],
    }


def table(result: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for name, res in result["optimizers"].items():
        f = figures(res, result["config"]["epoch_steps"])
        rows.append(
            {
                "optimizer": name,
                **{k: f"{v:.1f}" for k, v in f.items() if k.endswith("(ms)")},
                **{k: f"{100 * v:+.1f} %" for k, v in f.items() if "÷" in k and "state" not in k},
                **{k: f"{100 * v:.2f} %" for k, v in f.items() if "per epoch" in k},
                "twin state ÷ update state": f"{f['twin state ÷ update state']:.2f}×",
            }
        )
    return pd.DataFrame(rows)


def render_markdown(result: dict[str, Any]) -> str:
    cfg, mach = result["config"], result["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in mach["versions"].items() if v)
    return "\n".join(
        [
            '# What the momentum-free twin costs (`probe_optimizer="auto"`)',
            "",
            f"`{mach['command']}` — {mach['date']}",
            "",
            f"Machine: {mach['cpu_model']}, {mach['cpu_cores']} cores; JAX backend "
            f"`{mach['backend']}`. {versions}, Python {mach['python']}.",
            "",
            f"{result['description']}; batch {cfg['batch']}; median of {cfg['reps']} rounds, "
            "every call of a round in rotated order (the JSON has every sample). Rule "
            f"`armijo`, 3 factors, one probe per {cfg['epoch_steps']} updates. A ratio "
            "within a few percent of 0 is timing noise on a shared CPU.",
            "",
            table(result).set_index("optimizer").T.to_markdown(),
            "",
        ]
    )


# ===================================================================================== main


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    x, y = po.random_batch(args.batch)
    model, _, desc = po.build_models(args.model, args.width)
    fns = po.model_functions(model)
    batch = (jnp.asarray(x), jnp.asarray(y), fns.rest)
    command = ["-m", "benchmarks.twin_overhead", *(sys.argv[1:] if argv is None else argv)]
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "machine": _common.machine_facts(command),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "description": f"{desc} (width {args.width})",
        "optimizers": {name: measure(name, fns, batch, args) for name in args.optimizers},
    }
    _common.write_record(args.out, "twin_overhead", result, render_markdown(result))
    return result


if __name__ == "__main__":
    main()
