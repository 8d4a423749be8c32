"""Running the plan, resumably: one JSON line per finished run in ``<out>/results.jsonl``.

Each run is one call of the example's ``train_and_evaluate(config, workdir, resume=True)``
in its own workdir ``<out>/runs/<key>/``: a run that was interrupted continues from its
last per-epoch checkpoint there, a fresh workdir starts afresh. A finished run appends its
record (:func:`summarize`) to ``results.jsonl``; a failed one appends an ``error`` line
and is retried on the next invocation; keys with a finished record are skipped.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.compare_schedules.plan import Run, build_config, jsonable

SCHEMA = 1
STATUSES = ("ok", "diverged", "at_chance")  # of a finished run ("error": failed, retried)
RESULTS = "results.jsonl"
CHECKPOINTS = "checkpoints"  # the example's checkpoint folder in a workdir
REPORT_EVERY_S = 30.0  # the report is rewritten after a run at most this often (and at the end)
# A run "diverged" if a loss is non-finite; it ended "at chance" (too large a learning rate
# that stalled, or too small a one that never trained) with a final training loss no better
# than guessing uniformly among the 10 classes and a test accuracy of at most 15%.
_LN10 = math.log(10.0)
_CHANCE = 0.15


def load_train_fn() -> Callable[..., list[dict]]:
    """The example's ``train_and_evaluate`` (imported on first use: it imports JAX and Flax)."""
    from examples.cifar10 import train

    return train.train_and_evaluate


# --------------------------------------------------------------------------------------
# results.jsonl


def read_results(out: Path) -> dict[str, dict]:
    """The latest JSON line of every key in ``results.jsonl`` (a torn last line is skipped)."""
    path = out / RESULTS
    results: dict[str, dict] = {}
    if not path.exists():
        return results
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # an empty line, or one cut short by a kill: that run is simply run again
        if isinstance(rec, dict) and "key" in rec:
            results[rec["key"]] = rec
    return results


def finished(rec: dict | None) -> bool:
    return rec is not None and rec.get("status") in STATUSES


def outcome(rec: dict) -> str:
    """``ok``, ``diverged`` or ``at_chance``, from the record's losses (also for records
    written before ``at_chance`` existed, when both were ``diverged``)."""
    if rec.get("status") == "ok":
        return "ok"
    losses = list(rec.get("train_loss") or []) + [rec.get("final_test_loss")]
    return "diverged" if any(not finite(x) for x in losses) else "at_chance"


def _line(rec: dict) -> str:
    """Strict JSON: non-finite floats null, tuples lists."""
    return json.dumps(_clean(rec), allow_nan=False)


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return jsonable(obj)


def append(out: Path, rec: dict) -> None:
    with open(out / RESULTS, "a") as f:
        f.write(_line(rec) + "\n")
        f.flush()


def finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def median(xs) -> float | None:
    xs = [x for x in xs if finite(x)]
    return statistics.median(xs) if xs else None


# --------------------------------------------------------------------------------------
# Records.


def probes_of(history: list[dict]) -> list[dict]:
    """What each probe saw and decided (the example's per-probe telemetry), in order: the
    candidate losses in the order of the factors, the multiplier, and where the example
    logged them the rule's decision (``"guard"``: the guard undid a rise), the level it
    set and the loss at the current parameters on the probe batch."""
    return [
        {k: p.get(k) for k in ("step", "multiplier", "losses")}
        | {k: p[k] for k in ("decision", "level", "loss0") if k in p}
        for r in history
        for p in r.get("probes") or []
    ]


def summarize(
    history: list[dict], protocol: str, run: Run, config, run_time_s: float, resumed: bool
) -> dict:
    """The JSON line of a finished run, from its per-epoch records.

    The example does not time its probes (``python -m benchmarks.probe_overhead`` measures
    them), so a new record has no ``probe_overhead``; records from when it did keep theirs.
    """

    def series(name):
        return [r.get(name) for r in history]

    test_acc = series("test_accuracy")
    losses = series("train_loss") + series("test_loss")
    final_train = history[-1].get("train_loss")
    status = "ok"
    final_acc = test_acc[-1] if finite(test_acc[-1]) else 0.0
    if any(not finite(x) for x in losses) or not finite(final_train):
        status = "diverged"
    elif final_train >= _LN10 and final_acc <= _CHANCE:
        status = "at_chance"
    probes = probes_of(history)
    lr, lr_meaning = config.learning_rate, "initial learning rate"
    if config.schedule in ("prodigy", "dog"):
        # They estimate the step size; their learning_rate only multiplies the estimate.
        lr = config[config.schedule].learning_rate
        lr_meaning = "multiplier of the estimated step size"
    last = history[-1]
    return {
        **_identity(protocol, run),
        "schedule": config.schedule,
        "lr": lr,
        "lr_meaning": lr_meaning,
        "overrides": run.diff,
        "status": status,
        "epochs": len(history),
        "final_test_accuracy": test_acc[-1],
        "best_test_accuracy": max((a for a in test_acc if finite(a)), default=None),
        "final_test_loss": last.get("test_loss"),
        "final_train_loss": final_train,
        "test_accuracy": test_acc,
        # With a validation split (--set data.validation_size=N): what settings are chosen on.
        **(
            {
                "final_val_accuracy": last["val_accuracy"],
                "final_val_loss": last["val_loss"],
                "val_accuracy": series("val_accuracy"),
                "val_loss": series("val_loss"),
            }
            if "val_loss" in last
            else {}
        ),
        "train_loss": series("train_loss"),
        "lr_per_epoch": series("lr"),
        "train_time_s": series("train_time_s"),
        "wall_time_s": last.get("wall_time_s", run_time_s),
        "run_time_s": run_time_s,
        "resumed": resumed,
        "num_probes": last.get("num_probes"),
        "probe_factors": list(config.auto.factors) if probes else None,
        "probes": probes or None,
        "steps_per_epoch": (last["steps"] // last["epoch"])
        if last.get("steps") and last.get("epoch")
        else None,
        "batch_size": config.batch_size,
        "train_subset": config.data.train_subset,
        "test_subset": config.data.test_subset,
        "machine": machine_line(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _identity(protocol: str, run: Run) -> dict:
    """The fields that say which run a record is."""
    first = run.variants[0]
    return {
        "schema": SCHEMA,
        "key": run.key,
        "protocol": protocol,
        "group": first.group,
        "variant": first.name,
        "variants": [v.label for v in run.variants],
        "seed": run.seed,
    }


def _error_record(protocol: str, run: Run, error: Exception, run_time_s: float) -> dict:
    return {
        **_identity(protocol, run),
        "status": "error",
        "error": f"{type(error).__name__}: {error}",
        "run_time_s": run_time_s,
    }


_MACHINE: dict | None = None


def machine() -> dict:
    """This machine's facts (``benchmarks._common.machine_facts``), once per process."""
    global _MACHINE
    if _MACHINE is None:
        from benchmarks._common import machine_facts

        _MACHINE = machine_facts()
    return _MACHINE


def machine_line() -> str:
    m = machine()
    return f"{m['cpu_model']} ({m['cpu_cores']} cores), {m['backend']}: {m['device_kind']}"


# --------------------------------------------------------------------------------------
# Probes from exact re-runs.


def _factors_of(config_json: dict) -> list[float]:
    """The auto factors of a re-run's ``config.json``: the example's flattened config
    (``auto.factors``), or its former flat one (``auto_factors``)."""
    return list(config_json["auto.factors" if "auto.factors" in config_json else "auto_factors"])


def import_probes(out: Path, runs_dir: Path) -> tuple[list[str], list[str]]:
    """Adds the probes of re-runs to the finished automated records that lack them.

    Records written before the benchmark kept probes can get them from a re-run of the same
    key (``runs_dir/<key>/metrics.jsonl`` and ``config.json``, e.g. ``--only ... --out
    <elsewhere>``), but only where the re-run reproduced the record exactly: the same test
    accuracy after every epoch. Nothing else in the record changes; it is marked
    ``probes_source: "imported"``. Returns the keys imported and the keys whose re-run
    differed (not imported).
    """
    path = out / RESULTS
    imported, differed, lines = [], [], []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None  # a torn line stays as it is (read_results skips it)
        if not isinstance(rec, dict):
            lines.append(line)
            continue
        metrics = runs_dir / str(rec.get("key")) / "metrics.jsonl"
        if (
            finished(rec)
            and rec.get("schedule") == "auto"
            and not rec.get("probes")
            and metrics.exists()
            and metrics.with_name("config.json").exists()
        ):
            by_epoch = {}
            for x in metrics.read_text().splitlines():
                if x.strip():
                    h = json.loads(x)
                    by_epoch[h["epoch"]] = h  # a resumed run may repeat an epoch
            history = [by_epoch[e] for e in sorted(by_epoch)]
            probes = probes_of(history)
            if [h.get("test_accuracy") for h in history] != rec.get("test_accuracy"):
                differed.append(rec["key"])
            elif probes:
                config_json = json.loads(metrics.with_name("config.json").read_text())
                rec["probe_factors"] = _factors_of(config_json)
                rec["probes"] = probes
                rec["probes_source"] = "imported"
                imported.append(rec["key"])
                line = _line(rec)
        lines.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return imported, differed


# --------------------------------------------------------------------------------------
# The loop.


def execute(
    pending: list[Run],
    *,
    out: Path,
    protocol: str,
    preset,
    sets: dict[str, Any],
    data_dir: str | None,
    progress: bool,
    keep_checkpoints: bool,
    train_fn: Callable[..., list[dict]],
    report: Callable[[], Any],
) -> None:
    """Trains ``pending`` in order, appending each record; ``report()`` now and then.

    One failing run does not stop the others (its error is recorded); a run that returns
    fewer epochs than configured is not recorded (it continues next time).
    """
    last_report = time.time()
    for i, run in enumerate(pending):
        config = build_config(preset, run.variants[0].overrides, sets)
        config.seed = run.seed
        config.data.data_dir = data_dir
        config.progress = progress
        workdir = out / "runs" / run.key
        ckpts = workdir / CHECKPOINTS
        resumed = ckpts.is_dir() and any(ckpts.iterdir())
        print(f"[{i + 1}/{len(pending)}] {run.key} ({', '.join(v.label for v in run.variants)})")
        t0 = time.time()
        try:
            # resume=True continues a stopped run and starts afresh in an empty workdir.
            history = train_fn(config, workdir, resume=True)
        except Exception as e:  # one failing run must not stop the others
            if isinstance(getattr(e, "record", None), dict):  # train.Diverged: a result
                history = [*e.history, e.record]
                rec = summarize(history, protocol, run, config, time.time() - t0, resumed)
                append(out, rec)
                print(f"  {rec['status']} in epoch {len(history)}: {e}")
                continue
            append(out, _error_record(protocol, run, e, time.time() - t0))
            print(f"  failed: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        elapsed = time.time() - t0
        if not history or len(history) < config.epochs:
            print(f"  stopped after {len(history or [])} epochs; not recorded", file=sys.stderr)
            continue
        rec = summarize(history, protocol, run, config, elapsed, resumed)
        append(out, rec)
        if not keep_checkpoints:
            shutil.rmtree(ckpts, ignore_errors=True)
        acc = 100 * (rec["final_test_accuracy"] or 0)
        print(f"  {rec['status']}: final test accuracy {acc:.2f}% in {elapsed:.0f} s")
        if time.time() - last_report > REPORT_EVERY_S:  # runs take minutes; reports, seconds
            report()
            last_report = time.time()
