"""What ``auto_lr``'s probes and twin cost, measured within one run on each suite task.

    python -m benchmarks.suite.cost                      # every task, records to cost.jsonl
    python -m benchmarks.suite.cost --tasks digits --steps 100 --out /tmp/suite

One process per call; per task, the default ``auto_lr`` row and the fixed
``wsd`` row are compiled first (compilation is not counted), then run side by
side on the same batches: every update of one, then the same update of the
other, in alternating order, each timed to ``block_until_ready``. So both see
the same machine at the same moment, and the difference is what ``auto_lr``
adds: the probe updates (the candidates' forward passes, recognised by the
probe counter) and, on every update, the twin's statistics and the level's
bookkeeping. A step here is a jitted call from Python (dispatch included), not
the suite's ``lax.scan``: on the smallest tasks the dispatch is most of a step.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import machine_facts
from benchmarks.suite.plan import AUTO, FIXED
from benchmarks.suite.runner import _auto_state, batch_order, update_fns
from benchmarks.suite.tasks import TASKS, Task

__all__ = ["measure", "summary"]

OUT = pathlib.Path(__file__).resolve().parents[1] / "results" / "suite"


def measure(task: Task, steps: int | None = None, seed: int = 0) -> dict:
    """Per-update wall times of the default ``auto_lr`` and ``wsd`` on ``task``, interleaved."""
    steps = steps or task.steps
    data = task.load()
    x, y = (jnp.asarray(a) for a in data.train)
    order = batch_order(task, seed)[:steps]
    lr = task.starts[len(task.starts) // 2]
    auto_m, wsd_m = AUTO[0], FIXED[2]
    runs = {}
    for name, method in (("auto", auto_m), ("wsd", wsd_m)):
        # The suite's own update (runner.update_fns), jitted one update at a time.
        start, step, _ = update_fns(task, method, lr)
        step = jax.jit(step)
        carry = start(seed, lr)
        args = (jnp.int32(0), order[0], jnp.float32(lr), x, y)
        jax.block_until_ready(step(carry, *args))  # compiles; the result is dropped
        runs[name] = {"step": step, "carry": carry, "times": [], "probe": []}
    last_probes = 0
    for t in range(steps):
        names = ("auto", "wsd") if t % 2 == 0 else ("wsd", "auto")
        for name in names:
            r = runs[name]
            args = (jnp.int32(t), order[t], jnp.float32(lr), x, y)
            t0 = time.perf_counter()
            r["carry"] = jax.block_until_ready(r["step"](r["carry"], *args)[0])
            r["times"].append(time.perf_counter() - t0)
            if name == "auto":
                probes = int(_auto_state(r["carry"][1]).telemetry.num_probes)
                r["probe"].append(probes > last_probes)
                last_probes = probes
    return {
        "task": task.name,
        "steps": steps,
        "seed": seed,
        "lr": lr,
        "auto_times": runs["auto"]["times"],
        "wsd_times": runs["wsd"]["times"],
        "probe_steps": [i for i, p in enumerate(runs["auto"]["probe"]) if p],
    }


def summary(record: dict) -> dict:
    """Totals and shares of one :func:`measure` record.

    ``overhead``: the auto run's total time over the wsd run's, minus 1.
    ``probe_share``: the probe updates' time beyond a regular auto update (the
    median of the others), as a share of the wsd run's total. ``per_update``:
    the median regular auto update over the median wsd update, minus 1 (the
    twin's statistics and the bookkeeping every update carries).
    """
    auto, fixed = np.asarray(record["auto_times"]), np.asarray(record["wsd_times"])
    probe = np.zeros(len(auto), bool)
    probe[record["probe_steps"]] = True
    regular = float(np.median(auto[~probe])) if (~probe).any() else float("nan")
    return {
        "auto_s": float(auto.sum()),
        "wsd_s": float(fixed.sum()),
        "overhead": float(auto.sum() / fixed.sum() - 1),
        "probes": int(probe.sum()),
        "probe_share": float((auto[probe] - regular).sum() / fixed.sum()),
        "per_update": float(regular / np.median(fixed) - 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite.cost", description=__doc__)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--steps", type=int, default=None, help="default: the task's budget")
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    args = parser.parse_args(argv)
    names = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(names) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {unknown}; the suite's tasks are {sorted(TASKS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "cost.jsonl"
    facts = machine_facts(["benchmarks.suite.cost", *(argv if argv is not None else sys.argv[1:])])
    for name in names:
        record = {**measure(TASKS[name], args.steps), "machine": facts}
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        s = summary(record)
        print(
            f"{name:15s} auto {s['auto_s']:.2f} s, wsd {s['wsd_s']:.2f} s: "
            f"{100 * s['overhead']:+.1f} % ({s['probes']} probes "
            f"{100 * s['probe_share']:+.1f} %, every update "
            f"{100 * s['per_update']:+.1f} %)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
