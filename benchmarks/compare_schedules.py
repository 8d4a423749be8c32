"""Does the automated scheduler pay off? Schedules compared on the CIFAR-10 example (issue 6).

  python benchmarks/compare_schedules.py --protocol cpu --seeds 0,1 \\
      --data-dir ../shared/data/cifar10-jpg.tar.gz          # hours on 2 CPU cores; resumable
  python benchmarks/compare_schedules.py --protocol cpu --dry-run          # the plan, run keys
  python benchmarks/compare_schedules.py --protocol cpu --report-only      # table + plots again

Every run is one call of the example's ``train.train_and_evaluate(config, workdir)``
(``examples/cifar10/train.py``) with ``config`` = the protocol's preset (``cpu``,
``seed`` or ``gpu-short``) plus the variant's field overrides (plus ``--set``).
Four groups of variants:

* ``main``: constant, linear, cosine, step (PyTorch's defaults apart from the
  initial learning rate, durations scaled to the preset's epochs by the preset),
  automated with the seed's factor sets 3, 5 and 7, plateau, the ALR tree (M=2,
  N=3), and the learning-rate-free optimizers prodigy, dog, mechanize (around
  SGD) and schedule-free SGD;
* ``sensitivity``: initial learning rate in {1e-4, 1e-3, 1e-2, 1e-1, 1} for
  constant, cosine and automated (factor set 7, the seed's diverging case), and,
  at lr = 1, the options that might remove the seed's divergence: a ``max_lr``
  bound, a wider factor set (8 ... 1/64) and the softmax score;
* ``score``: min-max + exp(-x) (the seed's) vs softmax (T = 1) vs softmax
  (T = 0.25) vs a rank-based score, with factor set 7;
* ``probe``: candidates scored on the training batch itself vs on a separate
  random batch of the same size vs after a 10-update look-ahead vs on a separate
  batch 8x larger, with the seed's score and with the rank score (factor set 7).

A run is identified by its *key*, derived from the protocol, the seed and the
fields of its configuration that differ from the preset, so a configuration
shared by two groups (``main:auto7`` is ``score:minmax_exp``) runs once. Each
finished run appends one JSON line to ``<out>/results.jsonl``; on restart the
finished keys are skipped, and a run that was interrupted midway continues from
its last per-epoch checkpoint (the example's ``--resume``) in its own workdir
``<out>/runs/<key>/``. After every run, and with ``--report-only``, the report is
(re)written from ``results.jsonl``: ``<out>/README.md`` (Markdown tables: mean ±
std over seeds, n per row, rows with missing runs marked), ``<out>/plots/*.png``
(test accuracy and learning rate per epoch, one panel per group),
``<out>/environment.json`` (machine, library versions, commands) and
``<out>/data.json`` (the data copy: path, sha256, subset sizes).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import re
import shlex
import shutil
import statistics
import sys
import time
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parent
EXAMPLE = ROOT / "examples" / "cifar10"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

SCHEMA = 1
STATUSES = ("ok", "diverged", "at_chance")  # of a finished run ("error": failed, retried)
RESULTS = "results.jsonl"
REPORT_EVERY_S = 30.0  # the report is rewritten after a run at most this often (and at the end)
GROUPS = ("main", "sensitivity", "score", "probe")
PROTOCOLS = ("cpu", "seed", "gpu-short")

# The seed's factor sets (Factor_3, Factor_5, Factor_7), and the wider one that the seed
# suggests might avoid its divergence at lr = 1 ("if the range of factors increases ...").
FACTORS = {
    3: (2.0, 1.0, 0.5),
    5: (4.0, 2.0, 1.0, 0.5, 0.125),
    7: (8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125),
}
WIDE_FACTORS = (8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125, 1 / 16, 1 / 32, 1 / 64)
LR_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# The max_lr bound tried at lr = 1: the largest learning rate of the grid below 1.
MAX_LR_BOUND = 0.1
# The learning-rate-free optimizers of optax.contrib, as the example names them.
LR_FREE = ("prodigy", "dog", "mechanize", "schedule_free")
# The look-ahead of the probe group's longer-horizon variant (auto_lr(lookahead=...)).
LOOKAHEAD = 10
# The probe group's larger scoring batch: if the separate-batch probe's downward drift were
# batch noise, 8x the examples (about 2.8x less noise in each candidate loss) would shrink it.
BIG_PROBE_BATCH = 256

# Fields that do not change what a run computes; they never enter its key.
_NOT_IN_KEY = {
    "data_dir",
    "tfds_data_dir",
    "cache_dir",
    "progress",
    "checkpoint",
    "plots",
    "resume",
    "stop_after_epoch",
    "seed",
}
# A run "diverged" if a loss is non-finite; it ended "at chance" (too large a learning rate
# that stalled, or too small a one that never trained) with a final training loss no better
# than guessing uniformly among the 10 classes and a test accuracy of at most 15%.
_LN10 = math.log(10.0)
_CHANCE = 0.15


# --------------------------------------------------------------------------------------
# The example.


def load_configs(example_dir: Path = EXAMPLE):
    """The example's ``configs`` package (its directory goes on ``sys.path``)."""
    path = str(example_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    import configs

    return configs


def load_train_fn(example_dir: Path = EXAMPLE) -> Callable[[Any, Path], list[dict]]:
    """The example's ``train.train_and_evaluate`` (imported on first use: JAX, Flax)."""
    load_configs(example_dir)
    import train

    return train.train_and_evaluate


def preset_config(configs, protocol: str):
    """(preset name, Config) of a protocol; accepts ``gpu-short`` and ``gpu_short``."""
    names = dict.fromkeys((protocol, protocol.replace("-", "_"), protocol.replace("_", "-")))
    for name in names:
        if name in configs.PRESETS:
            return name, configs.get_config(name)
    raise SystemExit(
        f"error: the example has no preset for protocol {protocol!r} "
        f"(presets: {', '.join(sorted(configs.PRESETS))})"
    )


def _field_types(config_cls) -> dict[str, Any]:
    return typing.get_type_hints(config_cls)


def parse_field(config_cls, name: str, text: str):
    """The value of ``--set name=text`` for a Config field, parsed by the field's type."""
    hints = _field_types(config_cls)
    if name not in hints:
        raise SystemExit(f"error: --set {name}=...: the example's Config has no field {name!r}")
    hint = hints[name]
    args = typing.get_args(hint)
    if type(None) in args:
        if text.lower() in ("none", ""):
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise SystemExit(f"error: --set {name}={text}: expected true or false")
    origin = typing.get_origin(hint)
    try:
        if origin is tuple:
            elem = typing.get_args(hint)[0]
            return tuple(elem(v) for v in text.replace(" ", "").split(",") if v)
        if hint in (int, float, str):
            return hint(text)
    except ValueError as e:
        raise SystemExit(f"error: --set {name}={text}: {e}") from None
    return text


# --------------------------------------------------------------------------------------
# The plan: variants, runs, keys.


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of a group's table: a name and the Config fields it sets."""

    group: str
    name: str
    overrides: tuple[tuple[str, Any], ...]

    @property
    def label(self) -> str:
        return f"{self.group}:{self.name}"


@dataclasses.dataclass
class Run:
    """One training run: a configuration (as its difference from the preset) and a seed."""

    key: str
    seed: int
    diff: dict[str, Any]
    variants: list[Variant]
    supported: bool = True


def _v(group: str, name: str, **overrides) -> Variant:
    return Variant(group, name, tuple(sorted(overrides.items())))


def _auto(n: int, **kw) -> dict:
    return {"schedule": "auto", "auto_factors": FACTORS[n], **kw}


def _alr_overrides(config_cls) -> dict:
    """The ALR tree at M = 2, N = 3: the example's defaults (beam (lr, lr / 2), factors 3)."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    kw: dict[str, Any] = {"schedule": "alr"}
    if "alr_factors" in fields:
        kw["alr_factors"] = FACTORS[3]
    return kw


def variants(groups: Iterable[str], preset) -> list[Variant]:
    """The variants of the chosen groups, in table order."""
    config_cls = type(preset)
    out: list[Variant] = []
    for group in groups:
        if group == "main":
            out += [_v(group, s, schedule=s) for s in ("constant", "linear", "cosine", "step")]
            out += [_v(group, f"auto{n}", **_auto(n)) for n in (3, 5, 7)]
            out += [_v(group, "plateau", schedule="plateau")]
            out += [_v(group, "alr", **_alr_overrides(config_cls))]
            out += [_v(group, s, schedule=s) for s in LR_FREE]
        elif group == "sensitivity":
            for name, kw in (
                ("constant", {"schedule": "constant"}),
                ("cosine", {"schedule": "cosine"}),
                ("auto7", _auto(7)),
            ):
                out += [_v(group, f"{name}@{lr:g}", learning_rate=lr, **kw) for lr in LR_GRID]
            out += [
                _v(
                    group, "auto7+max_lr@1", learning_rate=1.0, **_auto(7, auto_max_lr=MAX_LR_BOUND)
                ),
                _v(
                    group,
                    "auto_wide@1",
                    learning_rate=1.0,
                    schedule="auto",
                    auto_factors=WIDE_FACTORS,
                ),
                _v(group, "auto7+softmax@1", learning_rate=1.0, **_auto(7, auto_score="softmax")),
            ]
        elif group == "score":
            out += [
                _v(group, "minmax_exp", **_auto(7)),
                _v(group, "softmax", **_auto(7, auto_score="softmax")),
                _v(group, "softmax_t0.25", **_auto(7, auto_score="softmax:0.25")),
                _v(group, "rank_exp", **_auto(7, auto_score="rank_exp")),
            ]
        elif group == "probe":
            same = {"probe_batch_size": preset.batch_size}
            out += [
                _v(group, "train", **_auto(7, probe_source="train", **same)),
                _v(group, "random", **_auto(7, probe_source="random", **same)),
                _v(
                    group,
                    f"random+lookahead{LOOKAHEAD}",
                    **_auto(7, probe_source="random", auto_lookahead=LOOKAHEAD, **same),
                ),
                _v(
                    group,
                    f"random+batch{BIG_PROBE_BATCH}",
                    **_auto(7, probe_source="random", probe_batch_size=BIG_PROBE_BATCH),
                ),
                # The rank score is blind to the gaps: it tests whether the weighted mean's
                # pull towards the small factors (a too-large step costs far more one-step loss
                # than a too-small one) is what moves the lr down, not the probe's noise.
                _v(
                    group,
                    f"random+batch{BIG_PROBE_BATCH}+rank_exp",
                    **_auto(
                        7,
                        probe_source="random",
                        probe_batch_size=BIG_PROBE_BATCH,
                        auto_score="rank_exp",
                    ),
                ),
            ]
        else:
            raise SystemExit(f"error: unknown group {group!r}; choose from {', '.join(GROUPS)}")
    return out


def _jsonable(value):
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def config_diff(preset, config) -> dict[str, Any]:
    """The fields of ``config`` that differ from ``preset`` and change the computation."""
    diff = {}
    for f in dataclasses.fields(config):
        if f.name in _NOT_IN_KEY:
            continue
        a, b = getattr(preset, f.name), getattr(config, f.name)
        if a != b:
            diff[f.name] = _jsonable(b)
    return diff


_SHORT = {
    "learning_rate": "lr",
    "auto_factors": "f",
    "auto_score": "",
    "auto_max_lr": "maxlr",
    "auto_min_lr": "minlr",
    "probe_source": "probe-",
    "probe_batch_size": "pb",
    "alr_factors": "f",
    "alr_beam_size": "M",
    "auto_lookahead": "la",
}


def _slug(schedule: str, diff: dict[str, Any]) -> str:
    parts = [schedule]
    for k in sorted(diff):
        if k == "schedule":
            continue
        v = diff[k]
        if k in ("auto_factors", "alr_factors") and isinstance(v, list):
            text = f"{_SHORT[k]}{len(v)}"
        elif isinstance(v, float):
            text = f"{_SHORT.get(k, k + '=')}{v:g}"
        elif isinstance(v, list):
            text = f"{_SHORT.get(k, k + '=')}{':'.join(f'{x:g}' for x in v)}"
        else:
            text = f"{_SHORT.get(k, k + '=')}{v}"
        parts.append(text)
    return re.sub(r"[^A-Za-z0-9.=:+-]+", "_", "_".join(parts))[:80]


def run_key(
    protocol: str, seed: int, schedule: str, diff: dict[str, Any], common: Iterable[str] = ()
) -> str:
    """``<protocol>.<slug>.s<seed>.<digest>``: a function of what the run computes.

    The digest covers the protocol and every field in ``diff``; the readable slug
    leaves out the ``common`` fields (``--set``, the same in every run).
    """
    canon = json.dumps({"protocol": protocol, "diff": diff}, sort_keys=True)
    digest = hashlib.sha256(canon.encode()).hexdigest()[:8]
    slug = _slug(schedule, {k: v for k, v in diff.items() if k not in set(common)})
    return f"{protocol}.{slug}.s{seed}.{digest}"


def build_config(preset, overrides: Iterable[tuple[str, Any]], sets: dict[str, Any]):
    """A copy of ``preset`` with the variant's overrides, then ``--set``'s, applied."""
    config = dataclasses.replace(preset)
    for k, v in overrides:
        setattr(config, k, v)
    for k, v in sets.items():
        setattr(config, k, v)
    return config


def plan(protocol: str, preset, groups, seeds, sets, schedules=None) -> list[Run]:
    """The runs of the chosen groups and seeds, each configuration once, in table order."""
    runs: dict[str, Run] = {}
    for variant in variants(groups, preset):
        for seed in seeds:
            config = build_config(preset, variant.overrides, sets)
            diff = config_diff(preset, config)
            key = run_key(protocol, seed, config.schedule, diff, sets)
            if key not in runs:
                supported = schedules is None or config.schedule in schedules
                runs[key] = Run(key, seed, diff, [], supported)
            runs[key].variants.append(variant)
    return list(runs.values())


# --------------------------------------------------------------------------------------
# Results.


def read_results(out: Path) -> dict[str, dict]:
    """The latest JSON line of every key in ``results.jsonl`` (a torn last line is skipped)."""
    path = out / RESULTS
    results: dict[str, dict] = {}
    if not path.exists():
        return results
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill; that run is simply run again
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
    return "diverged" if any(not _finite(x) for x in losses) else "at_chance"


def _append(out: Path, rec: dict) -> None:
    line = json.dumps(_clean(rec), allow_nan=False, sort_keys=False)
    with open(out / RESULTS, "a") as f:
        f.write(line + "\n")
        f.flush()


def _clean(obj):
    """Non-finite floats become null, tuples lists: strict JSON."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if _finite(x)]
    return statistics.median(xs) if xs else None


def probes_of(history: list[dict]) -> list[dict]:
    """What each probe saw and decided (the example's per-probe telemetry), in order: the
    candidate losses in the order of the factors, and the multiplier applied."""
    return [
        {"step": p.get("step"), "multiplier": p.get("multiplier"), "losses": p.get("losses")}
        for r in history
        for p in r.get("probes") or []
    ]


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
        config_path = metrics.with_name("config.json")
        if (
            finished(rec)
            and rec.get("schedule") == "auto"
            and not rec.get("probes")
            and metrics.exists()
            and config_path.exists()
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
                rec["probe_factors"] = list(json.loads(config_path.read_text())["auto_factors"])
                rec["probes"] = probes
                rec["probes_source"] = "imported"
                imported.append(rec["key"])
                line = json.dumps(_clean(rec), allow_nan=False, sort_keys=False)
        lines.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return imported, differed


def summarize(
    history: list[dict], protocol: str, run: Run, config, run_time_s: float, resumed: bool
) -> dict:
    """The JSON line of a finished run, from its per-epoch metrics."""

    def series(name):
        return [r.get(name) for r in history]

    test_acc = series("test_accuracy")
    losses = series("train_loss") + series("test_loss")
    final_train = history[-1].get("train_loss")
    status = "ok"
    final_acc = test_acc[-1] if _finite(test_acc[-1]) else 0.0
    if any(not _finite(x) for x in losses) or not _finite(final_train):
        status = "diverged"
    elif final_train >= _LN10 and final_acc <= _CHANCE:
        status = "at_chance"
    train_times = series("train_time_s")
    probe_times = series("probe_time_s")
    overhead, overhead_source = None, None
    if all(_finite(t) for t in probe_times) and sum(train_times) > 0:
        overhead, overhead_source = sum(probe_times) / sum(train_times), "metrics"
    probes = probes_of(history)
    first = run.variants[0]
    lr, lr_meaning = config.learning_rate, "initial learning rate"
    if config.schedule in ("prodigy", "dog"):
        # They estimate the step size; their learning_rate only multiplies the estimate.
        lr = getattr(config, "lr_free_learning_rate", None) or 1.0
        lr_meaning = "multiplier of the estimated step size"
    return {
        "schema": SCHEMA,
        "key": run.key,
        "protocol": protocol,
        "group": first.group,
        "variant": first.name,
        "variants": [v.label for v in run.variants],
        "seed": run.seed,
        "schedule": config.schedule,
        "lr": lr,
        "lr_meaning": lr_meaning,
        "overrides": run.diff,
        "status": status,
        "epochs": len(history),
        "final_test_accuracy": test_acc[-1],
        "best_test_accuracy": max((a for a in test_acc if _finite(a)), default=None),
        "final_test_loss": history[-1].get("test_loss"),
        "final_train_loss": final_train,
        "test_accuracy": test_acc,
        "train_loss": series("train_loss"),
        "lr_per_epoch": series("lr"),
        "train_time_s": train_times,
        "wall_time_s": history[-1].get("wall_time_s", run_time_s),
        "run_time_s": run_time_s,
        "resumed": resumed,
        "probe_overhead": overhead,
        "probe_overhead_source": overhead_source,
        "num_probes": history[-1].get("num_probes"),
        "probe_factors": list(config.auto_factors) if probes else None,
        "probes": probes or None,
        "steps_per_epoch": (history[-1]["steps"] // history[-1]["epoch"])
        if history[-1].get("steps") and history[-1].get("epoch")
        else None,
        "batch_size": config.batch_size,
        "train_subset": config.train_subset,
        "test_subset": config.test_subset,
        "machine": _machine_line(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


_MACHINE: dict | None = None


def _machine() -> dict:
    global _MACHINE
    if _MACHINE is None:
        from _common import machine_facts

        _MACHINE = machine_facts()
    return _MACHINE


def _machine_line() -> str:
    m = _machine()
    return f"{m['cpu_model']} ({m['cpu_cores']} cores), {m['backend']}: {m['device_kind']}"


# --------------------------------------------------------------------------------------
# Facts: data, environment.


def data_facts(data_dir: str | None, preset_name: str, preset, sets: dict, out: Path) -> dict:
    """The data copy (path, size, sha256, cached by size and mtime) and the subset sizes."""
    facts: dict[str, Any] = {"path": data_dir, "source": None, "sha256": None, "bytes": None}
    if data_dir is None:
        facts["source"] = "tensorflow-datasets cifar10"
    else:
        p = Path(data_dir)
        if p.is_file():
            stat = p.stat()
            old = {}
            if (out / "data.json").exists():
                old = json.loads((out / "data.json").read_text())
            if (
                old.get("path") == str(p)
                and old.get("bytes") == stat.st_size
                and old.get("mtime") == stat.st_mtime
            ):
                digest = old["sha256"]
            else:
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                digest = h.hexdigest()
            facts.update(source="archive", sha256=digest, bytes=stat.st_size, mtime=stat.st_mtime)
        else:
            facts["source"] = "image folder"
    config = build_config(preset, (), sets)
    facts["preset"] = preset_name
    facts["train_subset"] = config.train_subset
    facts["test_subset"] = config.test_subset
    return facts


def _record_environment(out: Path, argv: list[str]) -> None:
    """Adds this machine and command to ``environment.json`` (one entry per distinct setup)."""
    path = out / "environment.json"
    env = json.loads(path.read_text()) if path.exists() else {"machines": [], "commands": []}
    m = dict(_machine())
    m.pop("command", None)
    m.pop("date", None)
    if m not in env["machines"]:
        env["machines"].append(m)
    cmd = "python " + shlex.join(["benchmarks/compare_schedules.py", *argv])
    if cmd not in env["commands"]:
        env["commands"].append(cmd)
    path.write_text(json.dumps(env, indent=2) + "\n")


# --------------------------------------------------------------------------------------
# The report.


def _fmt_pm(xs: list[float], scale: float = 100.0, digits: int = 1) -> str:
    xs = [x * scale for x in xs if _finite(x)]
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


def _mean(xs) -> float | None:
    xs = [x for x in xs if _finite(x)]
    return statistics.mean(xs) if xs else None


def _epoch_time(rec: dict) -> float | None:
    """Median training time of an epoch, leaving out the first (it compiles)."""
    times = rec.get("train_time_s") or []
    return _median(times[1:] if len(times) > 1 else times)


def _lr_text(run_lrs: list) -> str:
    vals = sorted({v for v in run_lrs if _finite(v)})
    return ", ".join(f"{v:g}" for v in vals) if vals else "–"


def build_report(
    out: Path,
    protocol: str,
    preset_name: str,
    preset,
    runs: list[Run],
    groups: list[str],
    seeds: list[int],
    sets: dict,
    results: dict[str, dict],
    data: dict,
) -> str:
    """The Markdown report (tables, probe drift, setup) from ``results``."""
    by_variant: dict[str, list[Run]] = {}
    for run in runs:
        for v in run.variants:
            by_variant.setdefault(v.label, []).append(run)
    n_done = sum(finished(results.get(r.key)) for r in runs)
    lines = [
        f"# Schedule comparison: protocol `{protocol}` (preset `{preset_name}`)",
        "",
        f"{n_done} of {len(runs)} planned runs finished "
        f"({len(seeds)} seed{'s' if len(seeds) != 1 else ''}: {', '.join(map(str, seeds))}). "
        "Accuracies are on the test set, in %, mean ± sample std over the seeds that "
        "finished (n of N); a row marked **incomplete** lacks some of its runs.",
        "",
    ]
    variant_list = variants(groups, preset)
    for group in groups:
        lines += [
            f"## {group}",
            "",
            "| variant | lr | n | final test acc | best test acc | final train loss "
            "| time/run (s) | train s/epoch | probe overhead | notes |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for v in [v for v in variant_list if v.group == group]:
            vruns = by_variant.get(v.label, [])
            recs = [results.get(r.key) for r in vruns]
            done = [r for r in recs if finished(r)]
            notes = []
            if any(not r.supported for r in vruns):
                notes.append("schedule not in the example")
            if len(done) < len(vruns):
                notes.append(f"**incomplete** ({len(vruns) - len(done)} missing)")
            for what in ("diverged", "at_chance"):
                k = sum(outcome(r) == what for r in done)
                if k:
                    notes.append(f"{k} {what.replace('_', ' ')}")
            errs = [r for r in recs if r is not None and r.get("status") == "error"]
            if errs:
                notes.append(f"{len(errs)} failed: {errs[-1].get('error', '')[:60]}")
            shared = sorted({lab for r in vruns for x in r.variants if (lab := x.label) != v.label})
            if shared:
                notes.append("same runs as " + ", ".join(f"`{s}`" for s in shared))
            ovh_vals = [r["probe_overhead"] for r in done if _finite(r.get("probe_overhead"))]
            ovh_text = _fmt_pm(ovh_vals, 100.0, 1) + "%" if ovh_vals else "–"
            untimed = [r for r in done if r["schedule"] == "auto"]
            if len(ovh_vals) < len(untimed):
                notes.append(
                    f"probe overhead of {len(ovh_vals)} of {len(untimed)} runs (the others "
                    "predate the example's probe timer)"
                )
            wall = _mean([r.get("wall_time_s") for r in done])
            ep = _mean([_epoch_time(r) for r in done])
            lr = (
                _lr_text([r.get("lr") for r in done])
                if done
                else _lr_text([dict(v.overrides).get("learning_rate", preset.learning_rate)])
            )
            lines.append(
                f"| `{v.name}` | {lr} | {len(done)}/{len(vruns)} "
                f"| {_fmt_pm([r['final_test_accuracy'] for r in done])} "
                f"| {_fmt_pm([r['best_test_accuracy'] for r in done])} "
                f"| {_fmt_pm([r['final_train_loss'] for r in done], 1.0, 3)} "
                f"| {'–' if wall is None else f'{wall:.0f}'} "
                f"| {'–' if ep is None else f'{ep:.1f}'} | {ovh_text} | {'; '.join(notes)} |"
            )
        lines.append("")
        if group == "sensitivity":
            lines += _sensitivity_matrix(variant_list, by_variant, results)
    lines += _drift_section(runs, results, preset)
    lines += _probe_section(runs, results)
    lines += _setup_section(out, protocol, preset_name, preset, sets, data)
    return "\n".join(lines) + "\n"


def _sensitivity_matrix(variant_list, by_variant, results) -> list[str]:
    rows = {}
    for v in variant_list:
        if v.group != "sensitivity" or "+" in v.name or "_wide" in v.name:
            continue
        name, lr = v.name.split("@")
        accs = [
            results[r.key]["final_test_accuracy"]
            for r in by_variant.get(v.label, [])
            if finished(results.get(r.key))
        ]
        rows.setdefault(name, {})[float(lr)] = accs
    if not rows:
        return []
    lrs = sorted({lr for row in rows.values() for lr in row})
    out = [
        "Final test accuracy (%) by initial learning rate; *spread* = best minus worst mean "
        "over the grid (how much the starting value matters):",
        "",
        "| schedule | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | spread |",
        "| --- | " + " | ".join("---" for _ in lrs) + " | --- |",
    ]
    for name, row in rows.items():
        means = [_mean(row.get(lr, [])) for lr in lrs]
        got = [m for m in means if m is not None]
        spread = f"{100 * (max(got) - min(got)):.1f}" if len(got) == len(lrs) else "incomplete"
        cells = [_fmt_pm(row.get(lr, [])) for lr in lrs]
        out.append(f"| `{name}` | " + " | ".join(cells) + f" | {spread} |")
    return out + [""]


def _drift_section(runs: list[Run], results: dict[str, dict], preset) -> list[str]:
    """Does the automated lr end above the best constant one?"""
    const: dict[float, list[float]] = {}
    for run in runs:
        rec = results.get(run.key)
        if finished(rec) and rec["schedule"] == "constant":
            const.setdefault(rec["lr"], []).append(rec["final_test_accuracy"])
    auto_variants = _auto_rows(runs, results)
    out = ["## Learning-rate drift of the automated scheduler", ""]
    if not const or not auto_variants:
        return out + ["Needs finished constant and automated runs.", ""]
    best_lr, best_acc = max(((lr, _mean(a)) for lr, a in const.items()), key=lambda t: t[1])
    out += [
        f"Best constant learning rate among those run: **{best_lr:g}** (final test accuracy "
        f"{100 * best_acc:.1f}%; constant runs at lr {', '.join(f'{x:g}' for x in sorted(const))})."
        " Per automated variant, over seeds: the largest learning rate reached, the median over "
        "the last half of the epochs, both as multiples of that best constant, and the share of "
        "epochs spent above it.",
        "",
        "| variant | n | max lr / best constant | late median lr / best constant | epochs above |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, recs in auto_variants.items():
        mx, late, above = [], [], []
        for rec in recs:
            lrs = [x for x in rec.get("lr_per_epoch") or [] if _finite(x)]
            if not lrs:
                continue
            mx.append(max(lrs) / best_lr)
            late.append(statistics.median(lrs[len(lrs) // 2 :]) / best_lr)
            above.append(sum(x > best_lr for x in lrs) / len(lrs))
        out.append(
            f"| {', '.join(f'`{x}`' for x in label.split(' = '))} | {len(recs)} "
            f"| {_fmt_pm(mx, 1.0, 2)} | {_fmt_pm(late, 1.0, 2)} "
            f"| {_fmt_pm(above, 100.0, 0)}% |"
        )
    return out + [""]


def _auto_rows(
    runs: list[Run], results: dict[str, dict], groups: Iterable[str] = ("main", "score", "probe")
) -> dict[str, list[dict]]:
    """Finished automated runs of ``groups``, one row per run configuration, named by all its
    variants."""
    rows: dict[str, list[dict]] = {}
    for run in runs:
        rec = results.get(run.key)
        if not finished(rec) or rec["schedule"] != "auto":
            continue
        labels = [v.label for v in run.variants if v.group in groups]
        if labels:
            rows.setdefault(" = ".join(labels), []).append(rec)
    return rows


def probe_decisions(factors: list[float], probes: list[dict]) -> dict[str, Any]:
    """How the probes of one run decided, from their candidate losses and multipliers.

    ``best`` is the factor with the lowest finite loss. Counts: probes with a finite best;
    ``smallest_best`` / ``largest_best``: the best was the smallest / largest factor;
    ``down``: multiplier < 1;
    ``best_ge1``: the best factor was >= 1; ``best_ge1_down``: of those, multiplier < 1
    (the weighted mean moved the learning rate against the best candidate). ``gaps``: for
    each probe, the loss of the factor nearest 1 minus the best loss.
    """
    unit = min(range(len(factors)), key=lambda i: abs(math.log(factors[i])))
    out = {
        "probes": 0,
        "smallest_best": 0,
        "largest_best": 0,
        "down": 0,
        "best_ge1": 0,
        "best_ge1_down": 0,
    }
    gaps = []
    for p in probes:
        losses, mult = p.get("losses") or [], p.get("multiplier")
        finite = [i for i, x in enumerate(losses) if _finite(x)]
        if len(losses) != len(factors) or not finite or not _finite(mult):
            continue
        best = min(finite, key=lambda i: losses[i])
        out["probes"] += 1
        out["smallest_best"] += factors[best] == min(factors)
        out["largest_best"] += factors[best] == max(factors)
        out["down"] += mult < 1.0
        if factors[best] >= 1.0:
            out["best_ge1"] += 1
            out["best_ge1_down"] += mult < 1.0
        if _finite(losses[unit]):
            gaps.append(losses[unit] - losses[best])
    out["gaps"] = gaps
    return out


def _probe_section(runs: list[Run], results: dict[str, dict]) -> list[str]:
    """What the probes saw and decided, for the runs whose records keep them."""
    table = []
    for label, recs in _auto_rows(runs, results, GROUPS).items():
        with_probes = [r for r in recs if r.get("probes") and r.get("probe_factors")]
        if not with_probes:
            continue
        tot: dict[str, Any] = {}
        for rec in with_probes:
            for k, v in probe_decisions(rec["probe_factors"], rec["probes"]).items():
                tot[k] = tot.get(k, 0 if k != "gaps" else []) + v
        n = tot["probes"]
        if not n:
            continue
        gap = _median(tot["gaps"])
        table.append(
            f"| {', '.join(f'`{x}`' for x in label.split(' = '))} | {len(with_probes)}/{len(recs)} "
            f"| {n} | {100 * tot['smallest_best'] / n:.0f}% | {100 * tot['largest_best'] / n:.0f}% "
            f"| {100 * tot['down'] / n:.0f}% "
            f"| {tot['best_ge1_down']} of {tot['best_ge1']} "
            f"| {'–' if gap is None else f'{gap:.4f}'} |"
        )
    if not table:
        return []
    return [
        "## What the probes decided",
        "",
        "For the automated runs whose records keep their probes (*runs* says how many do: "
        "records from before the benchmark stored them have none, unless `--import-probes` "
        "took them from an exact re-run, one with the same test accuracy after every epoch): "
        "the share of probes whose lowest candidate loss was the smallest (the largest) "
        "factor's, the share that lowered the learning rate, how often the learning rate "
        "went down although the best candidate was a factor ≥ 1, and the median loss gap "
        "between the factor-1 candidate and the best one.",
        "",
        "| variant | runs | probes | best = smallest factor | best = largest | multiplier < 1 "
        "| best ≥ 1 but multiplier < 1 | median gap L(1) − L(best) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *table,
        "",
    ]


def _setup_section(out: Path, protocol, preset_name, preset, sets, data) -> list[str]:
    c = build_config(preset, (), sets)
    env_path = out / "environment.json"
    env = (
        json.loads(env_path.read_text()) if env_path.exists() else {"machines": [], "commands": []}
    )
    train_n = f"class-balanced subset of {c.train_subset}" if c.train_subset else "all 50,000"
    test_n = f"class-balanced subset of {c.test_subset}" if c.test_subset else "all 10,000"
    lines = [
        "## Setup",
        "",
        f"- Preset `{preset_name}`: ResNet-18 width {c.width:g} (stages "
        f"{','.join(map(str, c.stage_sizes))}), batch {c.batch_size}, {c.epochs} epochs, "
        f"initial lr {c.learning_rate:g}, momentum {c.momentum:g}, weight decay "
        f"{c.weight_decay:g}, augmentation {'on' if c.augment else 'off'}; training images: "
        f"{train_n}; test images: {test_n}."
        + (f" Overrides (`--set`): {json.dumps(_jsonable(sets))}." if sets else ""),
        f"- Data: {data.get('source')} `{data.get('path')}`"
        + (f", {data['bytes']:,} bytes, sha256 `{data['sha256']}`" if data.get("sha256") else "")
        + ".",
        "- Variants: `auto<k>` = the automated scheduler (`--schedule auto`, one probe per epoch) "
        "with the seed's factor set of k factors; `auto_wide` = factors 8 ... 1/64 (10); "
        f"`+max_lr` = `auto_max_lr {MAX_LR_BOUND:g}`; `softmax_t0.25` = softmax score at "
        "temperature 0.25 (`--auto-score softmax:0.25`); `rank_exp` = the k-th best candidate "
        "scores 2^-k (`--auto-score rank_exp`); probe `train` / `random` = candidates scored "
        "on the training batch itself / on a separate random batch of the same size; "
        f"`random+lookahead{LOOKAHEAD}` = each candidate takes {LOOKAHEAD - 1} more SGD "
        f"updates at its learning rate on fresh random batches and is scored after "
        f"{LOOKAHEAD} (`--auto-lookahead {LOOKAHEAD}`); `random+batch{BIG_PROBE_BATCH}` = "
        f"scored on a separate random batch of {BIG_PROBE_BATCH} images "
        f"(`--probe-batch-size {BIG_PROBE_BATCH}`), `+rank_exp` with the rank score.",
        "- *diverged*: a non-finite loss; *at chance*: finite losses, but the run ended where "
        "uniform guessing is (final training loss ≥ ln 10 and final test accuracy ≤ 15%). "
        "*time/run*: the run's wall time (data loading, compilation, training, evaluation; "
        "summed over resumes). "
        "*train s/epoch*: median training time of an epoch after the first. *probe "
        "overhead*: the run's probe time / its training time, both measured by the example "
        "(`probe_time_s`: each probing step's time minus the next ordinary step's, timed between "
        "synchronisations).",
        "",
        "Machine(s) and versions:",
        "",
    ]
    for m in env["machines"]:
        vers = ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items() if v)
        lines.append(
            f"- {m.get('cpu_model')} ({m.get('cpu_cores')} cores), {m.get('platform')}, "
            f"JAX backend {m.get('backend')} ({m.get('device_kind')} × "
            f"{m.get('device_count')}), Python {m.get('python')}; {vers}"
        )
    lines += ["", "Commands:", ""] + [f"    {c}" for c in env["commands"]] + [""]
    lines += [
        "Plots: [test accuracy per epoch](plots/test_accuracy.png), "
        "[learning rate per epoch](plots/lr.png). Per-run metrics: `runs/<key>/metrics.jsonl`; "
        f"one JSON line per finished run in `{RESULTS}`.",
    ]
    return lines


def write_plots(out: Path, groups, preset, runs: list[Run], results: dict[str, dict]) -> list[Path]:
    """``plots/test_accuracy.png`` and ``plots/lr.png``: one panel per group, mean over seeds."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    by_variant: dict[str, list[dict]] = {}
    for run in runs:
        rec = results.get(run.key)
        if finished(rec):
            for v in run.variants:
                by_variant.setdefault(v.label, []).append(rec)
    variant_list = variants(groups, preset)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    paths = []
    for fname, field, ylabel, scale in (
        ("test_accuracy.png", "test_accuracy", "test accuracy (%)", 100.0),
        ("lr.png", "lr_per_epoch", "learning rate (last update of the epoch)", 1.0),
    ):
        ncols = min(2, len(groups))
        nrows = math.ceil(len(groups) / ncols)
        fig = Figure(figsize=(7 * ncols, 4.5 * nrows), dpi=100)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, group in zip(axes, groups, strict=False):
            gv = [v for v in variant_list if v.group == group]
            cmap = matplotlib.colormaps["tab20"]
            positive = True
            for i, v in enumerate(gv):
                recs = by_variant.get(v.label, [])
                if not recs:
                    continue
                length = min(len(r.get(field) or []) for r in recs)
                if length == 0:
                    continue
                ys = []
                for e in range(length):
                    vals = [r[field][e] for r in recs if _finite(r[field][e])]
                    ys.append(scale * statistics.mean(vals) if vals else math.nan)
                positive &= all(y > 0 for y in ys if _finite(y))
                style = "--" if "auto" in v.name or group in ("score", "probe") else "-"
                color = cmap(i % 20)
                ax.plot(
                    range(1, length + 1),
                    ys,
                    style,
                    marker="o",
                    markersize=2,
                    color=color,
                    label=f"{v.name} (n={len(recs)})",
                )
            if field == "lr_per_epoch" and positive and ax.lines:
                ax.set_yscale("log")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(group)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=6, ncol=2)
            else:
                ax.text(0.5, 0.5, "no finished runs", ha="center", transform=ax.transAxes)
        for ax in axes[len(groups) :]:
            ax.set_visible(False)
        fig.tight_layout()
        path = out / "plots" / fname
        fig.savefig(path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------
# Command line.


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--protocol", default="cpu", help=f"the example's preset: {', '.join(PROTOCOLS)}"
    )
    p.add_argument("--groups", default=None, help=f"comma-separated (default: {','.join(GROUPS)})")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: 0,1)")
    p.add_argument(
        "--data-dir",
        default=None,
        help=f"CIFAR-10 image folder or .tar.gz (default: {DEFAULT_DATA} if present, else tfds)",
    )
    p.add_argument(
        "--out", default=None, help="output folder (default: results/compare_<protocol>)"
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=None,
        metavar="FIELD=VALUE",
        help="override a Config field in every run (e.g. epochs=2); part of the run keys",
    )
    p.add_argument("--only", action="append", default=[], metavar="GROUP:VARIANT[,...]")
    p.add_argument("--max-runs", type=int, default=None, help="run at most K runs, then stop")
    p.add_argument("--dry-run", action="store_true", help="list the planned runs and their keys")
    p.add_argument(
        "--report-only", action="store_true", help="rewrite table and plots from results.jsonl"
    )
    p.add_argument(
        "--import-probes",
        default=None,
        metavar="RUNS_DIR",
        help="add the probes of exact re-runs (RUNS_DIR/<key>/) to records without them, "
        "then rewrite the report",
    )
    p.add_argument("--progress", action="store_true", help="the example's per-epoch progress bar")
    p.add_argument(
        "--keep-checkpoints", action="store_true", help="keep a finished run's checkpoints"
    )
    return p


def _settings(args, out: Path) -> dict:
    """groups/seeds/sets/data_dir: from the flags, else the last run's (``invocation.json``)."""
    saved = {}
    if (out / "invocation.json").exists():
        saved = json.loads((out / "invocation.json").read_text())
    groups = args.groups.split(",") if args.groups else saved.get("groups", list(GROUPS))
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else saved.get("seeds", [0, 1])
    sets = args.sets if args.sets is not None else saved.get("sets", [])
    data_dir = args.data_dir
    if data_dir is None:
        data_dir = saved.get("data_dir") or (str(DEFAULT_DATA) if DEFAULT_DATA.exists() else None)
    if data_dir is not None:
        data_dir = str(Path(data_dir).expanduser().resolve())
    groups = [g.strip() for g in groups if g.strip()]
    for g in groups:
        if g not in GROUPS:
            raise SystemExit(f"error: unknown group {g!r}; choose from {', '.join(GROUPS)}")
    return {"groups": groups, "seeds": seeds, "sets": sets, "data_dir": data_dir}


def report(out, protocol, preset_name, preset, runs, settings, sets, data) -> Path:
    results = read_results(out)
    (out / "data.json").write_text(json.dumps(data, indent=2) + "\n")
    text = build_report(
        out, protocol, preset_name, preset, runs, settings["groups"], settings["seeds"], sets,
        results, data,
    )  # fmt: skip
    (out / "README.md").write_text(text)
    write_plots(out, settings["groups"], preset, runs, results)
    return out / "README.md"


def main(argv: list[str] | None = None, train_fn: Callable | None = None) -> int:
    """The command line; ``train_fn`` replaces the example's ``train_and_evaluate`` (tests)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    out = Path(args.out or _HERE / "results" / f"compare_{args.protocol}")
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(args, out)
    configs = load_configs()
    preset_name, preset = preset_config(configs, args.protocol)
    config_cls = type(preset)
    sets = {}
    for item in settings["sets"]:
        if "=" not in item:
            raise SystemExit(f"error: --set {item!r}: expected FIELD=VALUE")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        sets[k] = parse_field(config_cls, k, v.strip())
    schedules = set(getattr(configs, "SCHEDULES", ())) or None
    runs = plan(args.protocol, preset, settings["groups"], settings["seeds"], sets, schedules)

    only = {x.strip() for item in args.only for x in item.split(",") if x.strip()}
    labels = {v.label for r in runs for v in r.variants}
    unknown = only - labels
    if unknown:
        raise SystemExit(
            f"error: --only {', '.join(sorted(unknown))}: no such GROUP:VARIANT in the plan "
            f"(e.g. {', '.join(sorted(labels)[:4])}; --dry-run lists them)"
        )
    selected = [r for r in runs if not only or any(v.label in only for v in r.variants)]
    results = read_results(out)

    if args.dry_run:
        print(f"{len(runs)} planned runs ({len(selected)} selected); out: {out}")
        for r in selected:
            state = "done" if finished(results.get(r.key)) else "pending"
            if not r.supported:
                state = "unsupported"
            if state == "pending" and (out / "runs" / r.key / "checkpoints").exists():
                state = "partial"
            names = ",".join(v.label for v in r.variants)
            print(f"{state:11s} {r.key:60s} {names}")
        return 0

    data = data_facts(settings["data_dir"], preset_name, preset, sets, out)
    if args.import_probes:
        _record_environment(out, argv)  # the report lists the command with the others
        imported, differed = import_probes(out, Path(args.import_probes))
        print(f"probes imported into {len(imported)} records")
        for key in differed:
            print(f"  {key}: the re-run's test accuracies differ; not imported", file=sys.stderr)
    if args.report_only or args.import_probes:
        path = report(out, args.protocol, preset_name, preset, runs, settings, sets, data)
        print(f"report: {path}")
        return 0

    (out / "invocation.json").write_text(
        json.dumps({"protocol": args.protocol, **settings}, indent=2) + "\n"
    )
    _record_environment(out, argv)
    if train_fn is None:
        train_fn = load_train_fn()
    pending = [r for r in selected if not finished(results.get(r.key))]
    skipped = [r for r in pending if not r.supported]
    for r in skipped:
        print(f"skipping {r.key}: the example has no schedule {r.diff.get('schedule')!r} yet")
    # Seed by seed: an interrupted protocol has every variant once before any twice.
    pending = sorted(
        (r for r in pending if r.supported), key=lambda r: settings["seeds"].index(r.seed)
    )
    if args.max_runs is not None:
        pending = pending[: args.max_runs]
    n_done = sum(finished(results.get(r.key)) for r in selected)
    print(
        f"{n_done} of {len(selected)} selected runs already done; running {len(pending)}; "
        f"results: {out / RESULTS}"
    )
    last_report = time.time()
    for i, run in enumerate(pending):
        first = run.variants[0]
        config = build_config(preset, first.overrides, sets)
        config.seed = run.seed
        config.data_dir = settings["data_dir"]
        config.progress = args.progress
        config.resume = True  # continues a stopped run; starts afresh in an empty workdir
        workdir = out / "runs" / run.key
        resumed = (workdir / "checkpoints").is_dir() and any((workdir / "checkpoints").iterdir())
        print(f"[{i + 1}/{len(pending)}] {run.key} ({', '.join(v.label for v in run.variants)})")
        t0 = time.time()
        try:
            history = train_fn(config, workdir)
        except Exception as e:  # one failing run must not stop the others
            _append(
                out,
                {
                    "schema": SCHEMA,
                    "key": run.key,
                    "protocol": args.protocol,
                    "group": first.group,
                    "variant": first.name,
                    "variants": [v.label for v in run.variants],
                    "seed": run.seed,
                    "status": "error",
                    "error": f"{type(e).__name__}: {e}",
                    "run_time_s": time.time() - t0,
                },
            )
            print(f"  failed: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        elapsed = time.time() - t0
        if not history or len(history) < config.epochs:
            print(f"  stopped after {len(history or [])} epochs; not recorded", file=sys.stderr)
            continue
        rec = summarize(history, args.protocol, run, config, elapsed, resumed)
        _append(out, rec)
        if not args.keep_checkpoints:
            shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
        print(
            f"  {rec['status']}: final test accuracy {100 * (rec['final_test_accuracy'] or 0):.2f}%"
            f" in {elapsed:.0f} s"
        )
        if time.time() - last_report > REPORT_EVERY_S:  # runs take minutes; reports, seconds
            report(out, args.protocol, preset_name, preset, runs, settings, sets, data)
            last_report = time.time()
    path = report(out, args.protocol, preset_name, preset, runs, settings, sets, data)
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
