"""The GPU numbers in one prepared command: what a probe costs, and three short training runs.

Run from the repository root, on whatever accelerator JAX sees::

    python -m benchmarks.device_check --out DIR [--wheels .carry/wheels] [--data-dir PATH]
    python -m benchmarks.device_check --smoke --out DIR   # the same code on CPU, tiny, < 1 min

Stage 1, the probe's cost (``benchmarks.probe_overhead``'s measurements): the full-width
ResNet-18 (CIFAR variant, ``examples.cifar10.models.ResNet``) at batch 32 and 256 with
N = 3 and 7 factors: one forward, one plain-SGD training step, and the probe (jitted
``tx.update`` probing minus not probing) under ``strategy="map"``, a chunked ``map``
(``chunk_size=--chunk``) and ``"vmap"``, each with its extra memory: the device's
``memory_stats()`` peak during the first probing call minus what was in use before it
(``null`` on CPU, which keeps no statistics, and where an earlier measurement had set a
higher peak) and XLA's ``memory_analysis()`` temp bytes over a plain SGD update. It
records which strategy was fastest for each case, and the probe's cost per CIFAR-10
epoch (probe / (ceil(50000 / batch) x training step)).

Stage 2, the example's ``gpu-short`` protocol (``examples.cifar10.configs.gpu_short``: a
10,000-image subset, batch 128, 10 epochs) for the schedules auto (the example's default:
armijo + search + wsd budget), auto-seed (Algorithm 1), cosine, prodigy and constant, in
that order, seed 0, each one ``examples.cifar10.train.train_and_evaluate(config, workdir,
overwrite=True)`` (a later check replaces the runs of an earlier one) on the CIFAR-10
archive (``--data-dir``, default ``../shared/data/cifar10-jpg.tar.gz``).

Each stage has its own time budget (``--stage1-budget`` 210 s, ``--stage2-budget`` 300 s:
with start-up, about 9 minutes). Between measurements the script checks the clock and
skips what would not fit, recording it as skipped; it writes ``device_check.json`` and
``device_check.md`` (one table) into ``--out`` after every measurement, and prints the
table at the end.

``--smoke`` runs the same code on tiny sizes: ResNet width 1/16 with two one-block stages,
batch 4, and for stage 2 a 1-epoch run on an image folder of 60 random 32x32 PNGs that it
writes into ``DIR/smoke_data/`` (``train/<class>/NNNN.png``, ``test/<class>/NNNN.png``).

No GPU run of this script has been done yet: there are no GPU numbers to quote.
What must travel to a GPU machine, and the command: ``benchmarks/README.md``, section
"GPU device check".
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import site
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from benchmarks import _common
from benchmarks import probe_overhead as po

SCHEMA = "autolr_jax/device_check/v1"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
# In the order they run (later ones are skipped when the stage's budget runs out):
# the new default, Algorithm 1 ('auto-seed': the former defaults), cosine, prodigy, constant.
SCHEDULES = ("auto", "auto-seed", "cosine", "prodigy", "constant")
# Algorithm 1 as the benchmark's auto rows run it (benchmarks.compare_schedules.plan).
AUTO_SEED = {"rule": "seed", "initial_search": False, "probe_source": "random", "budget": None}
# The smoke test's ResNet: width 1/16, two stages of one block (compiles in about a second).
SMOKE_WIDTH, SMOKE_STAGES = 1 / 16, (1, 1)
# What a first measurement of a kind is assumed to take, before one has been seen (s).
FIRST_GUESS = {"full": {"probe": 30.0, "train": 90.0}, "smoke": {"probe": 3.0, "train": 8.0}}

TrainFn = Callable[[Any, str], list]


def _now() -> float:
    """The clock every budget reads (a function, so that tests can replace it)."""
    return time.monotonic()


_T0 = _now()


def log(msg: str) -> None:
    print(f"[device_check {_now() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


# ===================================================================================== plan


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="where device_check.{json,md} are written")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on any backend (CI)")
    p.add_argument("--data-dir", default=None, help=f"CIFAR-10 archive (default {DEFAULT_DATA})")
    p.add_argument("--wheels", default=None, help="folder of wheels to install if missing")
    p.add_argument("--workdir", default=None, help="stage-2 run folders (default: a temp dir)")
    p.add_argument("--stages", default="1,2", help="comma-separated subset of 1,2")
    p.add_argument("--stage1-budget", type=float, default=210.0, help="seconds")
    p.add_argument("--stage2-budget", type=float, default=300.0, help="seconds")
    p.add_argument("--batches", default=None, help="stage 1 (default 32,256; smoke 4)")
    p.add_argument("--factors", default="3,7", help="stage 1 factor counts N")
    p.add_argument("--chunk", type=int, default=2, help="chunk size of the chunked map")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (10; smoke 3)")
    p.add_argument("--schedules", default=",".join(SCHEDULES), help="stage 2")
    a = p.parse_args(argv)
    a.stages = {int(s) for s in a.stages.split(",") if s.strip()}
    if not a.stages <= {1, 2}:
        p.error(f"--stages must be a subset of 1,2, got {sorted(a.stages)}")
    a.batches = [int(b) for b in (a.batches or ("4" if a.smoke else "32,256")).split(",")]
    a.factors = [int(n) for n in a.factors.split(",")]
    a.reps = a.reps or (3 if a.smoke else 10)
    a.schedules = [s.strip() for s in a.schedules.split(",") if s.strip()]
    if min(a.batches) < 1 or min(a.factors) < 2 or a.chunk < 2 or a.reps < 1:
        p.error("--batches >= 1, --factors >= 2, --chunk >= 2, --reps >= 1")
    if a.data_dir is None:
        a.data_dir = str(DEFAULT_DATA)
    return a


def install_wheels(folder: str | os.PathLike, target: str | os.PathLike | None = None) -> list[str]:
    """Installs the wheels in ``folder`` whose distribution is missing; returns their names.

    Into a folder of its own (``pip install --no-index --no-deps --target``), added as a
    site directory: nothing is fetched, nothing installed is replaced.
    """
    wheels = sorted(Path(folder).glob("*.whl"))
    missing = []
    for w in wheels:
        dist = w.name.split("-")[0]
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(w)
    if not missing:
        return []
    target = Path(target or Path(tempfile.gettempdir()) / "device_check_site")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
    subprocess.run([*cmd, "--target", str(target), *map(str, missing)], check=True)
    site.addsitedir(str(target))  # only missing distributions are there: order cannot matter
    importlib.invalidate_caches()
    return [w.name for w in missing]


class Clock:
    """A stage's time budget: what is left, and whether a measurement would fit."""

    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.start = _now()

    def elapsed(self) -> float:
        return _now() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def skip_reason(self, estimate_s: float) -> str | None:
        if estimate_s <= self.left():
            return None
        left = max(self.left(), 0.0)
        return f"time budget: {left:.0f} s left of {self.budget_s:.0f}, needs ~{estimate_s:.0f} s"


class Estimates:
    """How long the next measurement of a kind will take: 1.5 x the longest seen so far."""

    def __init__(self, first_guess: dict[str, float]):
        self.first_guess = first_guess
        self.seen: dict[str, float] = {}

    def __call__(self, kind: str) -> float:
        return 1.5 * self.seen[kind] if kind in self.seen else self.first_guess[kind]

    def record(self, kind: str, seconds: float) -> None:
        self.seen[kind] = max(seconds, self.seen.get(kind, 0.0))


# ================================================================================== machine


def _versions() -> dict[str, str | None]:
    names = ["jax", "jaxlib", "flax", "optax", "numpy", "ml_collections", "autolr_jax"]
    names += sorted(
        {
            d.metadata["Name"]
            for d in importlib.metadata.distributions()
            if (d.metadata["Name"] or "").lower().replace("_", "-").startswith("jax-cuda")
        }
    )
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = None
    return out


def machine(argv: Sequence[str]) -> dict[str, Any]:
    """The machine and the versions, without the host's name."""
    facts = _common.machine_facts(["-m", "benchmarks.device_check", *argv])
    devices = jax.devices()
    mem = po.device_memory() or {}
    return {
        "devices": [repr(d) for d in devices],
        "device_count": len(devices),
        "platform": devices[0].platform,
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_memory_bytes": mem.get("bytes_limit"),
        "cpu_model": facts["cpu_model"],
        "cpu_cores": facts["cpu_cores"],
        "os": facts["platform"],
        "python": facts["python"],
        "versions": _versions(),
        "date": facts["date"],
        "command": facts["command"],
    }


# =================================================================================== report


class Report:
    """The result dict, written to ``<out>/device_check.{json,md}`` at every :meth:`save`."""

    def __init__(self, out: Path, data: dict[str, Any]):
        self.out, self.data, self.t0 = out, data, _now()
        out.mkdir(parents=True, exist_ok=True)

    def save(self) -> None:
        self.data["total_s"] = _now() - self.t0
        tmp = self.out / "device_check.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=2, default=_json_default) + "\n")
        tmp.replace(self.out / "device_check.json")
        (self.out / "device_check.md").write_text(render_markdown(self.data))


def _json_default(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    return str(o)


def _ms(s) -> str:
    return "—" if s is None else f"{1e3 * s:,.2f} ms"


def _mib(b) -> str:
    return "n/a" if b is None else f"{b / 2**20:,.1f} MiB"


def table_rows(data: dict[str, Any]) -> list[dict[str, str]]:
    """Every figure as a row: stage, case, measurement, value."""
    rows = []

    def add(stage, case, what, value):
        rows.append({"stage": stage, "case": case, "measurement": what, "value": value})

    s1 = data.get("stage1")
    for c in (s1 or {}).get("cases", []):
        case = f"batch {c['batch']}, N = {c['factors']}"
        for key, what in (("forward", "forward (loss)"), ("train_step", "train step (plain SGD)")):
            m = c[key]
            add(
                "1 probe",
                case,
                what,
                f"skipped ({m['skipped']})" if "skipped" in m else _ms(m["median_s"]),
            )
        for label, p in c.get("probes", {}).items():
            if "skipped" in p:
                add("1 probe", case, f"probe, {label}", f"skipped ({p['skipped']})")
                continue
            add(
                "1 probe",
                case,
                f"probe, {label}",
                f"{_ms(p['probe_s'])} ({p['x_train_step']:.2f}× step); peak extra "
                f"{_mib(p['peak_extra_bytes'])}; XLA temp extra {_mib(p['extra_temp_bytes'])}",
            )
        if c.get("fastest"):
            f = c["probes"][c["fastest"]]
            add(
                "1 probe",
                case,
                "fastest strategy",
                f"{c['fastest']} (auto picks {c['auto_picks']})",
            )
            add(
                "1 probe",
                case,
                f"fastest probe per CIFAR-10 epoch ({c['epoch_steps']} steps)",
                f"{100 * f['epoch_fraction']:.3f} %",
            )
    for r in (data.get("stage2") or {}).get("runs", []):
        case = f"gpu-short, {r['schedule']}"
        if "skipped" in r:
            add("2 train", case, "run", f"skipped ({r['skipped']})")
            continue
        if "error" in r:
            add("2 train", case, "run", f"failed: {r['error']}")
            continue
        add(
            "2 train",
            case,
            f"test accuracy after {r['epochs']} epochs",
            f"{100 * r['final_test_accuracy']:.2f} % (best {100 * r['best_test_accuracy']:.2f} %)",
        )
        add("2 train", case, "final learning rate", f"{r['final_lr']:.4g}")
        add(
            "2 train",
            case,
            "time",
            f"train {r['train_time_s']:.1f} s, run {r['run_s']:.1f} s, "
            f"{r['steps_per_s']:.1f} steps/s",
        )
    for stage, key in (("1 probe", "stage1"), ("2 train", "stage2")):
        part = data.get(key)
        if part and part.get("not_run"):
            add(stage, "—", "stage", f"not run ({part['not_run']})")
        if part and part.get("error"):
            add(stage, "—", "stage", f"stopped by an error: {part['error']}")
    return rows


def render_markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    head = [
        "# Device check" + (" (smoke: tiny sizes, not a measurement)" if data["smoke"] else ""),
        "",
        f"`{m['command']}` — {m['date']}",
        "",
        f"Devices: {', '.join(m['devices'])} — platform `{m['platform']}`, kind "
        f"{m['device_kind']}; CPU {m['cpu_model']}, {m['cpu_cores']} cores; "
        f"{versions}; Python {m['python']}.",
        "",
    ]
    rows = table_rows(data)
    cols = ["stage", "case", "measurement", "value"]
    table = pd.DataFrame(rows, columns=cols).to_markdown(index=False) if rows else "(nothing yet)"
    return "\n".join([*head, table, ""])


# ================================================================================== stage 1


def _attempt(clock: Clock, est: Estimates, kind: str, fn: Callable[..., dict], *args, **kw):
    """``fn(*args, **kw)`` if the clock allows one more measurement of ``kind``, else why not.

    A failure (say, out of device memory) is recorded the same way: as skipped, with the
    error, so that the other measurements still run.
    """
    why = clock.skip_reason(est(kind))
    if why:
        return {"skipped": why}
    t0 = _now()
    try:
        out = fn(*args, **kw)
    except Exception as e:
        return {"skipped": f"failed: {type(e).__name__}: {e}"[:300]}
    est.record(kind, _now() - t0)
    return out


def stage_probe(report: Report, args, clock: Clock, est: Estimates) -> None:
    """Forward, train step and the probe under each strategy, per (batch, N)."""
    from autolr_jax.auto import default_probe_strategy

    width = SMOKE_WIDTH if args.smoke else 1.0
    stage_sizes = SMOKE_STAGES if args.smoke else (2, 2, 2, 2)
    fns = po.model_functions(po.resnet(width, stage_sizes))
    stage: dict[str, Any] = {
        "model": {"name": "ResNet (CIFAR variant)", "width": width, "stage_sizes": stage_sizes},
        "params": int(sum(x.size for x in jax.tree.leaves(fns.params))),
        "cases": [],
    }
    report.data["stage1"] = stage
    reps, budget = args.reps, 5.0 if args.smoke else 10.0  # budget: s of repetitions
    # In rising memory, so that each probe is likely to set a new device peak.
    labels = [("map", "map", None), (f"map_chunk{args.chunk}", "map", args.chunk)]
    labels.append(("vmap", "vmap", None))
    for b in args.batches:
        x, y = po.random_batch(b)
        batch = (jnp.asarray(x), jnp.asarray(y), fns.rest)
        measure = (fns, batch, reps, budget, False)
        fwd = _attempt(clock, est, "probe", po.measure_forward, *measure)
        step = _attempt(clock, est, "probe", po.measure_plain_step, *measure)
        log(f"batch {b}: forward {_ms(fwd.get('median_s'))}, step {_ms(step.get('median_s'))}")
        grads = sgd_mem = None
        for n in args.factors:
            case: dict[str, Any] = {
                "batch": b,
                "factors": n,
                "factor_set": list(po.factors_of(n)),
                "epoch_steps": math.ceil(po.CIFAR10_TRAIN / b),
                "auto_picks": default_probe_strategy(),
                "forward": fwd,
                "train_step": step,
                "probes": {},
            }
            stage["cases"].append(case)
            for label, strategy, chunk in labels:
                if "skipped" in step:
                    case["probes"][label] = {"skipped": "no train step to compare with"}
                    continue
                if grads is None:
                    grads, sgd_mem = _grads_and_sgd_memory(fns, batch)
                p = case["probes"][label] = _attempt(
                    clock,
                    est,
                    "probe",
                    po.measure_probe,
                    fns,
                    batch,
                    grads,
                    po.factors_of(n),
                    strategy,
                    chunk,
                    reps,
                    budget,
                    all_buffers=False,
                )
                if "skipped" not in p:
                    _derive(p, case, sgd_mem)
                    log(f"batch {b}, N = {n}: probe {label} {_ms(p['probe_s'])}")
                report.save()
            measured = {k: v for k, v in case["probes"].items() if "probe_s" in v}
            case["fastest"] = min(measured, key=lambda k: measured[k]["probe_s"], default=None)
            report.save()


def _grads_and_sgd_memory(fns, batch):
    import optax

    grads = jax.jit(jax.grad(fns.loss_fn))(fns.params, batch)
    sgd = optax.sgd(po.LEARNING_RATE)
    _, _, mem = po.compile_fn(
        lambda g, s, p: sgd.update(g, s, p),
        grads,
        sgd.init(fns.params),
        fns.params,
        all_buffers=False,
    )
    return grads, mem


def _derive(p: dict, case: dict, sgd_mem: dict | None) -> None:
    step = case["train_step"]["median_s"]
    p["x_train_step"] = p["probe_s"] / step
    p["epoch_fraction"] = p["probe_s"] / (case["epoch_steps"] * step)
    temp, base = (p["memory"] or {}).get("temp_bytes"), (sgd_mem or {}).get("temp_bytes")
    p["extra_temp_bytes"] = max(temp - base, 0) if temp is not None and base is not None else None


# ================================================================================== stage 2


def write_smoke_data(root: Path, train_per_class: int = 4, test_per_class: int = 2) -> Path:
    """A tiny CIFAR-10-shaped image folder (the example's synthetic one)."""
    from examples.cifar10 import input_pipeline

    return input_pipeline.write_synthetic_folder(root, train_per_class, test_per_class)


def make_config(schedule: str, data_dir: str, smoke: bool, cache_dir: str | None = None):
    """The example's ``gpu_short`` config for ``schedule`` (tiny with ``smoke``)."""
    from examples.cifar10 import configs

    config = configs.get_config("gpu_short")
    config.schedule = "auto" if schedule == "auto-seed" else schedule
    if schedule == "auto-seed":
        config.auto.update(AUTO_SEED)
    config.data.data_dir = str(data_dir)
    if cache_dir is not None:
        config.data.cache_dir = str(cache_dir)
    config.progress = False
    config.plots = False
    config.checkpoint = False
    if smoke:
        config.model.width = SMOKE_WIDTH
        config.model.stage_sizes = SMOKE_STAGES
        config.epochs = 1
        config.batch_size = 8
        config.eval_batch_size = 10
        config.data.train_subset = None
        config.auto.probe_batch_size = 8
    return config


def summarize(schedule: str, records: list[dict], run_s: float) -> dict[str, Any]:
    last = records[-1]
    later = [r["steps_per_s"] for r in records[1:]] or [last["steps_per_s"]]
    return {
        "schedule": schedule,
        "epochs": last["epoch"],
        "final_test_accuracy": last["test_accuracy"],
        "best_test_accuracy": max(r["test_accuracy"] for r in records),
        "final_test_loss": last["test_loss"],
        "final_train_loss": last["train_loss"],
        "final_lr": last["lr"],
        "train_time_s": last["train_time_s"],
        "wall_time_s": last["wall_time_s"],
        "run_s": run_s,
        # The first epoch includes compilation: the median of the others.
        "steps_per_s": float(np.median(later)),
        "records": records,
    }


def stage_train(report: Report, args, clock: Clock, est: Estimates, train_fn: TrainFn) -> None:
    stage: dict[str, Any] = {"protocol": "gpu_short", "seed": 0, "runs": []}
    report.data["stage2"] = stage
    out = Path(args.out)
    if args.smoke:
        data_dir = write_smoke_data(out / "smoke_data")
    else:
        data_dir = Path(args.data_dir)
        if not data_dir.exists():
            stage["not_run"] = f"no data at {data_dir} (--data-dir)"
            report.save()
            return
    stage["data_dir"] = str(data_dir)
    if args.workdir:
        workdir = Path(args.workdir)
    elif args.smoke:
        workdir = out / "smoke_runs"
    else:  # not under --out: only a few files come back from a device machine
        workdir = Path(tempfile.mkdtemp(prefix="device_check_"))
    for schedule in args.schedules:
        why = clock.skip_reason(est("train"))
        if why:
            stage["runs"].append({"schedule": schedule, "skipped": why})
            report.save()
            continue
        config = make_config(schedule, str(data_dir), args.smoke, workdir / "cache")
        stage.setdefault("config", config.to_dict() if hasattr(config, "to_dict") else None)
        log(f"stage 2: {schedule} ({clock.left():.0f} s left)")
        t0 = _now()
        try:
            records = train_fn(config, str(workdir / schedule))
        except Exception as e:  # record it; the other schedules still run
            stage["runs"].append({"schedule": schedule, "error": f"{type(e).__name__}: {e}"[:500]})
            report.save()
            continue
        run_s = _now() - t0
        est.record("train", run_s)
        stage["runs"].append(summarize(schedule, records, run_s))
        report.save()


def _train_and_evaluate(config, workdir: str) -> list:
    from examples.cifar10 import train

    # A second check into the same --out (or --workdir) replaces the runs of the one before:
    # the example refuses a workdir that holds a run unless told to overwrite it.
    return train.train_and_evaluate(config, workdir, overwrite=True)


# ===================================================================================== main


def main(argv: Sequence[str] | None = None, train_fn: TrainFn | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    installed = install_wheels(args.wheels) if args.wheels else []
    kind = "smoke" if args.smoke else "full"
    report = Report(
        Path(args.out),
        {
            "schema": SCHEMA,
            "smoke": args.smoke,
            "machine": machine(argv),
            "installed_wheels": installed,
            "budgets_s": {"stage1": args.stage1_budget, "stage2": args.stage2_budget},
        },
    )
    for n, budget in ((1, args.stage1_budget), (2, args.stage2_budget)):
        if n not in args.stages:
            report.data[f"stage{n}"] = {"not_run": "not in --stages"}
            continue
        clock, est = Clock(budget), Estimates(FIRST_GUESS[kind])
        try:
            if n == 1:
                stage_probe(report, args, clock, est)
            else:
                stage_train(report, args, clock, est, train_fn or _train_and_evaluate)
        except Exception as e:  # keep what was measured; the next stage still runs
            log(f"stage {n} failed: {type(e).__name__}: {e}")
            report.data.setdefault(f"stage{n}", {})["error"] = f"{type(e).__name__}: {e}"[:500]
        report.data[f"stage{n}"]["elapsed_s"] = clock.elapsed()
        report.save()
    report.save()
    print(render_markdown(report.data))
    return json.loads((Path(args.out) / "device_check.json").read_text())


if __name__ == "__main__":
    main()
