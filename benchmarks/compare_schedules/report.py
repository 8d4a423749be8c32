"""The report, rewritten from ``results.jsonl`` alone: ``<out>/README.md`` (one table per
group, the lr x schedule matrix, the learning-rate drift and the probes' decisions),
``<out>/plots/*.png``, ``<out>/environment.json`` and ``<out>/data.json``.

The tables are pandas frames, aggregated with ``groupby().agg()`` and written with
``DataFrame.to_markdown()``: one row per run configuration and variant in
:func:`frame`, one formatter per kind of cell (:func:`pm`: mean ± sample std over seeds).
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.compare_schedules.plan import (
    BIG_PROBE_BATCH,
    GROUPS,
    LOOKAHEAD,
    MAX_LR_BOUND,
    Run,
    build_config,
    jsonable,
    variants,
)
from benchmarks.compare_schedules.runner import (
    RESULTS,
    finished,
    finite,
    machine,
    median,
    outcome,
    read_results,
)

DASH = "–"
_AUTO_GROUPS = ("main", "score", "probe")  # the drift table's rows (sensitivity has its own)


# --------------------------------------------------------------------------------------
# Cell formatters: a Series of per-run values -> the cell's text.


def _finite_values(values, scale: float = 1.0) -> list[float]:
    return [scale * x for x in values if finite(x)]


def pm(scale: float = 100.0, digits: int = 1) -> Callable[[pd.Series], str]:
    """``mean ± std`` (sample std) of the finite values times ``scale``; one value alone."""

    def cell(values) -> str:
        xs = _finite_values(values, scale)
        if not xs:
            return DASH
        if len(xs) == 1:
            return f"{xs[0]:.{digits}f}"
        return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"

    return cell


def mean(values) -> float | None:
    xs = _finite_values(values)
    return statistics.mean(xs) if xs else None


def fixed(digits: int) -> Callable[[pd.Series], str]:
    """The mean of the finite values with ``digits`` decimals."""

    def cell(values) -> str:
        m = mean(values)
        return DASH if m is None else f"{m:.{digits}f}"

    return cell


def lr_text(values) -> str:
    vals = sorted(set(_finite_values(values)))
    return ", ".join(f"{v:g}" for v in vals) if vals else DASH


def _percent(values) -> str:
    text = pm(100.0, 1)(values)
    return text if text == DASH else text + "%"


def _names(label: str) -> str:
    return ", ".join(f"`{x}`" for x in label.split(" = "))


def _markdown(table: pd.DataFrame) -> list[str]:
    # disable_numparse: the cells are already formatted text ("13.0" must not become "13").
    return [table.to_markdown(index=False, disable_numparse=True), ""]


# --------------------------------------------------------------------------------------
# The frame.


def _epoch_time(rec: dict) -> float | None:
    """Median training time of an epoch, leaving out the first (it compiles)."""
    times = rec.get("train_time_s") or []
    return median(times[1:] if len(times) > 1 else times)


def frame(runs: list[Run], results: dict[str, dict], groups, preset) -> pd.DataFrame:
    """One row per planned (variant, run), in table order, with the run's record's numbers
    (NaN where the run has not finished)."""
    order = {v.label: i for i, v in enumerate(variants(groups, preset))}
    rows = []
    for run in runs:
        rec = results.get(run.key) or {}
        done = finished(rec)
        got = rec if done else {}
        for v in run.variants:
            rows.append(
                {
                    "order": order[v.label],
                    "label": v.label,
                    "group": v.group,
                    "variant": v.name,
                    "key": run.key,
                    "shared": [x.label for x in run.variants if x.label != v.label],
                    "supported": run.supported,
                    "done": done,
                    "outcome": outcome(rec) if done else None,
                    "error": rec.get("error") if rec.get("status") == "error" else None,
                    "schedule": got.get("schedule"),
                    "lr": got.get("lr", math.nan),
                    "planned_lr": dict(v.overrides).get("learning_rate", preset.learning_rate),
                    "final_test_accuracy": got.get("final_test_accuracy", math.nan),
                    "best_test_accuracy": got.get("best_test_accuracy", math.nan),
                    "final_train_loss": got.get("final_train_loss", math.nan),
                    "wall_time_s": got.get("wall_time_s", math.nan),
                    "epoch_time_s": _epoch_time(got) if done else math.nan,
                    "probe_overhead": got.get("probe_overhead", math.nan),
                    "record": got or None,
                }
            )
    df = pd.DataFrame(rows)
    return df.sort_values("order", kind="stable") if len(df) else df


# --------------------------------------------------------------------------------------
# The tables.


def _notes(sub: pd.DataFrame) -> str:
    notes = []
    if not sub.supported.all():
        notes.append("schedule not in the example")
    missing = len(sub) - int(sub.done.sum())
    if missing:
        notes.append(f"**incomplete** ({missing} missing)")
    for what in ("diverged", "at_chance"):
        k = int((sub.outcome == what).sum())
        if k:
            notes.append(f"{k} {what.replace('_', ' ')}")
    errors = sub.error.dropna()
    if len(errors):
        notes.append(f"{len(errors)} failed: {errors.iloc[-1][:60]}")
    shared = sorted({x for labels in sub.shared for x in labels})
    if shared:
        notes.append("same runs as " + ", ".join(f"`{s}`" for s in shared))
    timed = len(_finite_values(sub.probe_overhead[sub.done]))
    automated = int((sub.done & (sub.schedule == "auto")).sum())
    if 0 < timed < automated:
        notes.append(f"probe overhead of {timed} of {automated} runs (the others were not timed)")
    return "; ".join(notes)


def group_table(df: pd.DataFrame) -> list[str]:
    """A group's table: one row per variant."""
    by = df.groupby("order", sort=True)
    t = by.agg(
        variant=("variant", "first"),
        lr=("lr", lr_text),
        planned_lr=("planned_lr", lr_text),
        done=("done", "sum"),
        planned=("done", "size"),
        final=("final_test_accuracy", pm()),
        best=("best_test_accuracy", pm()),
        loss=("final_train_loss", pm(1.0, 3)),
        wall=("wall_time_s", fixed(0)),
        epoch=("epoch_time_s", fixed(1)),
        overhead=("probe_overhead", _percent),
    )
    table = pd.DataFrame(
        {
            "variant": "`" + t.variant + "`",
            "lr": t.lr.where(t.done > 0, t.planned_lr),
            "n": t.done.astype(str) + "/" + t.planned.astype(str),
            "final test acc": t.final,
            "best test acc": t.best,
            "final train loss": t.loss,
            "time/run (s)": t.wall,
            "train s/epoch": t.epoch,
            "probe overhead": t.overhead,
            "notes": [_notes(sub) for _, sub in by],
        }
    )
    return _markdown(table)


def sensitivity_matrix(df: pd.DataFrame) -> list[str]:
    """Final test accuracy by schedule (rows) and initial learning rate (columns)."""
    grid = df[(df.group == "sensitivity") & ~df.variant.str.contains(r"\+|_wide")]
    if grid.empty:
        return []
    parts = grid.variant.str.split("@", expand=True)
    grid = grid.assign(schedule=parts[0], lr0=parts[1].astype(float))
    acc = grid.groupby(["schedule", "lr0"], sort=False).final_test_accuracy
    rows = list(grid.schedule.unique())
    cells = acc.agg(pm()).unstack().reindex(rows)
    means = acc.agg(mean).astype(float).unstack().reindex(rows)
    table = cells.rename(columns=lambda lr: f"lr {lr:g}").reset_index(drop=True)
    table.insert(0, "schedule", [f"`{s}`" for s in rows])
    complete = means.notna().all(axis=1)
    spread = 100 * (means.max(axis=1) - means.min(axis=1))
    table["spread"] = [
        f"{s:.1f}" if ok else "incomplete" for s, ok in zip(spread, complete, strict=True)
    ]
    return [
        "Final test accuracy (%) by initial learning rate; *spread* = best minus worst mean "
        "over the grid (how much the starting value matters):",
        "",
        *_markdown(table),
    ]


# The issue-13 sweep: the example's auto default (budget group) against the fixed schedules
# and Algorithm 1 (sensitivity group) from the same starts; prodigy has no start.
DEFAULT_ROW = ("budget", "armijo-train+search+wsd")
SWEEP_ROWS = (
    DEFAULT_ROW,
    ("sensitivity", "constant"),
    ("sensitivity", "cosine"),
    ("budget", "wsd"),
    ("sensitivity", "auto7"),
    ("budget", "auto3+search+wsd"),
)
FIXED_ROWS = (("sensitivity", "constant"), ("sensitivity", "cosine"), ("budget", "wsd"))


def _sweep(df: pd.DataFrame) -> pd.DataFrame:
    """The finished runs of SWEEP_ROWS' ``name@lr`` variants: row, lr0, seed, accuracy."""
    done = df[df.done & df.variant.str.contains("@", regex=False)]
    parts = done.variant.str.split("@", n=1, expand=True)
    if parts.empty:
        return pd.DataFrame(columns=["row", "lr0", "seed", "acc", "outcome"])
    done = done.assign(name=parts[0], lr0=parts[1].astype(float))
    keep = [(g, n) in SWEEP_ROWS for g, n in zip(done.group, done.name, strict=True)]
    done = done[keep]
    seeds = [int(r["seed"]) for r in done.record]
    return pd.DataFrame(
        {
            "row": done.group + ":" + done.name,
            "lr0": done.lr0,
            "seed": seeds,
            "acc": done.final_test_accuracy,
            "outcome": done.outcome,
        }
    )


def default_section(df: pd.DataFrame) -> list[str]:
    """The default's targets: every start against the best fixed run, prodigy, constant."""
    sweep = _sweep(df)
    default = ":".join(DEFAULT_ROW)
    if sweep.empty or default not in set(sweep.row):
        return []
    by = sweep.groupby(["row", "lr0"], sort=False).acc
    cells = by.agg(lambda v: f"{pm()(v)} ({len(v)})").unstack()
    rows = [":".join(r) for r in SWEEP_ROWS if ":".join(r) in cells.index]
    cells = cells.reindex(rows)
    table = cells.rename(columns=lambda lr: f"lr {lr:g}").reset_index(drop=True).fillna("–")
    table.insert(0, "schedule", [f"`{r}`" for r in rows])
    means = by.agg(mean).astype(float)
    fixed = means[[r in {":".join(f) for f in FIXED_ROWS} for r, _ in means.index]]
    best_key = fixed.idxmax() if len(fixed) else None
    best = fixed.max() if len(fixed) else math.nan
    prod = df[df.done & (df.group == "main") & (df.variant == "prodigy")].final_test_accuracy
    prod_mean = mean(prod)
    lines = [
        "## The automated default from every start",
        "",
        "Final test accuracy (%), mean ± sample std (number of seeds), by initial learning "
        "rate: the example's `auto` default (`budget:armijo-train+search+wsd`: Armijo on the "
        "training batch, first-probe search, warmup-stable-decay budget) against the fixed "
        "schedules and Algorithm 1 (`auto7`, the seed's factors) from the same starts.",
        "",
        *_markdown(table),
        "",
    ]
    if best_key is not None:
        lines += [
            f"Best fixed run in this table: `{best_key[0]}` at lr {best_key[1]:g}, "
            f"{100 * best:.1f} %; prodigy (no start): "
            + (f"{pm()(prod)} ({len(prod)} seeds)." if len(prod) else "–."),
            "",
        ]
    target_rows = []
    for lr0, acc in sweep[sweep.row == default].groupby("lr0").acc:
        m = mean(acc)
        c = means.get(("sensitivity:constant", lr0), math.nan)
        target_rows.append(
            {
                "lr": f"{lr0:g}",
                "n": len(acc),
                "default": pm()(acc),
                "vs best fixed (pt)": f"{100 * (m - best):+.1f}",
                "within 1 pt": "yes" if m >= best - 0.01 else "no",
                "vs prodigy (pt)": f"{100 * (m - prod_mean):+.1f}" if prod_mean else "–",
                "vs constant here (pt)": f"{100 * (m - c):+.1f}" if math.isfinite(c) else "–",
                "diverged": int(
                    (sweep[(sweep.row == default) & (sweep.lr0 == lr0)].outcome == "diverged").sum()
                ),  # fmt: skip
            }
        )
    d_means = means[[r == default for r, _ in means.index]]
    spread = 100 * (d_means.max() - d_means.min())
    lines += [
        "Targets of the default (issue 13): within 1 point of the best fixed run, above "
        "prodigy, at least as good as constant at the same start, never diverging; "
        f"spread over the starts measured: {spread:.1f} points (target ≤ 2).",
        "",
        *_markdown(pd.DataFrame(target_rows)),
        "",
    ]
    return lines


def _runs(df: pd.DataFrame, groups=GROUPS) -> pd.DataFrame:
    """The finished runs, once each (not once per variant), named by their variants in
    ``groups``; dropped where they have none."""
    done = df[df.done & df.group.isin(groups)]
    labels = done.groupby("key", sort=False).label.agg(" = ".join)
    once = done.drop_duplicates("key").set_index("key")
    return once.assign(row=labels).reset_index()


def drift_section(df: pd.DataFrame) -> list[str]:
    """Does the automated lr end above the best constant one?"""
    out = ["## Learning-rate drift of the automated scheduler", ""]
    runs = _runs(df)
    const = runs[runs.schedule == "constant"]
    auto = _runs(df, _AUTO_GROUPS)
    auto = auto[auto.schedule == "auto"]
    if const.empty or auto.empty:
        return out + ["Needs finished constant and automated runs.", ""]
    by_lr = const.groupby("lr", sort=False).final_test_accuracy.agg(mean).astype(float)
    best_lr, best_acc = by_lr.idxmax(), by_lr.max()

    def lr_stats(rec: dict) -> pd.Series:
        lrs = _finite_values(rec.get("lr_per_epoch") or [])
        if not lrs:
            return pd.Series({"max": math.nan, "late": math.nan, "above": math.nan})
        return pd.Series(
            {
                "max": max(lrs) / best_lr,
                "late": statistics.median(lrs[len(lrs) // 2 :]) / best_lr,
                "above": sum(x > best_lr for x in lrs) / len(lrs),
            }
        )

    stats = pd.concat([auto[["row"]], auto.record.apply(lr_stats)], axis=1)
    t = stats.groupby("row", sort=False).agg(
        n=("row", "size"),
        max=("max", pm(1.0, 2)),
        late=("late", pm(1.0, 2)),
        above=("above", pm(100.0, 0)),
    )
    table = pd.DataFrame(
        {
            "variant": t.index.map(_names),
            "n": t.n.astype(str),
            "max lr / best constant": t["max"],
            "late median lr / best constant": t.late,
            "epochs above": t.above + "%",
        }
    )
    consts = ", ".join(f"{x:g}" for x in sorted(const.lr.unique()))
    return out + [
        f"Best constant learning rate among those run: **{best_lr:g}** (final test accuracy "
        f"{100 * best_acc:.1f}%; constant runs at lr {consts}). Per automated variant, over "
        "seeds: the largest learning rate reached, the median over the last half of the "
        "epochs, both as multiples of that best constant, and the share of epochs spent above "
        "it.",
        "",
        *_markdown(table),
    ]


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
    out = dict.fromkeys(
        ("probes", "smallest_best", "largest_best", "down", "best_ge1", "best_ge1_down"), 0
    )
    gaps = []
    for p in probes:
        losses, mult = p.get("losses") or [], p.get("multiplier")
        ok = [i for i, x in enumerate(losses) if finite(x)]
        if len(losses) != len(factors) or not ok or not finite(mult):
            continue
        best = min(ok, key=lambda i: losses[i])
        out["probes"] += 1
        out["smallest_best"] += factors[best] == min(factors)
        out["largest_best"] += factors[best] == max(factors)
        out["down"] += mult < 1.0
        if factors[best] >= 1.0:
            out["best_ge1"] += 1
            out["best_ge1_down"] += mult < 1.0
        if finite(losses[unit]):
            gaps.append(losses[unit] - losses[best])
    out["gaps"] = gaps
    return out


def probe_section(df: pd.DataFrame) -> list[str]:
    """What the probes saw and decided, for the runs whose records keep them."""
    auto = _runs(df)
    auto = auto[auto.schedule == "auto"]
    if auto.empty:
        return []
    kept = auto.record.apply(lambda r: bool(r.get("probes") and r.get("probe_factors")))
    decisions = pd.DataFrame(
        [probe_decisions(r["probe_factors"], r["probes"]) for r in auto.record[kept]],
        index=auto.index[kept],
    )
    if decisions.empty:
        return []
    per_run = auto[["row"]].join(decisions).assign(kept=kept)
    t = per_run.groupby("row", sort=False).agg(
        kept=("kept", "sum"),
        runs=("kept", "size"),
        gaps=("gaps", lambda s: median([g for gaps in s.dropna() for g in gaps])),
        **{k: (k, "sum") for k in decisions.columns if k != "gaps"},
    )
    t = t[(t.kept > 0) & (t.probes > 0)]
    if t.empty:
        return []
    n = t.probes

    def share(col: str) -> pd.Series:
        return (100 * t[col] / n).map(lambda x: f"{x:.0f}%")

    table = pd.DataFrame(
        {
            "variant": t.index.map(_names),
            "runs": t.kept.astype(int).astype(str) + "/" + t.runs.astype(str),
            "probes": n.astype(int).astype(str),
            "best = smallest factor": share("smallest_best"),
            "best = largest": share("largest_best"),
            "multiplier < 1": share("down"),
            "best ≥ 1 but multiplier < 1": t.best_ge1_down.astype(int).astype(str)
            + " of "
            + t.best_ge1.astype(int).astype(str),
            "median gap L(1) − L(best)": t.gaps.map(lambda g: DASH if g is None else f"{g:.4f}"),
        }
    )
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
        *_markdown(table),
    ]


# --------------------------------------------------------------------------------------
# Facts: data, environment.


def data_facts(data_dir: str | None, preset_name: str, preset, sets: dict, out: Path) -> dict:
    """The data copy (path, size, sha256, cached by size and mtime) and the subset sizes."""
    facts: dict[str, Any] = {"path": data_dir, "source": None, "sha256": None, "bytes": None}
    if data_dir is None:
        facts["source"] = "tensorflow-datasets cifar10"
    elif Path(data_dir).is_file():
        p = Path(data_dir)
        stat = p.stat()
        old = json.loads((out / "data.json").read_text()) if (out / "data.json").exists() else {}
        if (old.get("path"), old.get("bytes"), old.get("mtime")) == (
            str(p),
            stat.st_size,
            stat.st_mtime,
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
    facts["train_subset"] = config.data.train_subset
    facts["test_subset"] = config.data.test_subset
    return facts


def record_environment(out: Path, argv: list[str]) -> None:
    """Adds this machine and command to ``environment.json`` (one entry per distinct setup)."""
    path = out / "environment.json"
    env = json.loads(path.read_text()) if path.exists() else {"machines": [], "commands": []}
    m = dict(machine())
    m.pop("command", None)
    m.pop("date", None)
    if m not in env["machines"]:
        env["machines"].append(m)
    cmd = "python -m benchmarks.compare_schedules " + shlex.join(argv)
    if cmd not in env["commands"]:
        env["commands"].append(cmd)
    path.write_text(json.dumps(env, indent=2) + "\n")


def setup_section(out: Path, preset_name: str, preset, sets: dict, data: dict) -> list[str]:
    c = build_config(preset, (), sets)
    env_path = out / "environment.json"
    env = json.loads(env_path.read_text()) if env_path.exists() else {}
    train_n = f"class-balanced subset of {c.data.train_subset}" if c.data.train_subset else None
    test_n = f"class-balanced subset of {c.data.test_subset}" if c.data.test_subset else None
    digest = f", {data['bytes']:,} bytes, sha256 `{data['sha256']}`" if data.get("sha256") else ""
    lines = [
        "## Setup",
        "",
        f"- Preset `{preset_name}`: ResNet-18 width {c.model.width:g} (stages "
        f"{','.join(map(str, c.model.stage_sizes))}), batch {c.batch_size}, {c.epochs} epochs, "
        f"initial lr {c.learning_rate:g}, momentum {c.momentum:g}, weight decay "
        f"{c.weight_decay:g}, augmentation {'on' if c.data.augment else 'off'}; training "
        f"images: {train_n or 'all 50,000'}; test images: {test_n or 'all 10,000'}."
        + (f" Overrides (`--set`): {json.dumps(jsonable(sets))}." if sets else ""),
        f"- Data: {data.get('source')} `{data.get('path')}`{digest}.",
        "- Variants: `auto<k>` = the automated scheduler (`schedule=auto`, one probe per "
        "epoch) with the seed's factor set of k factors; `auto_wide` = factors 8 ... 1/64 "
        f"(10); `+max_lr` = `auto.max_lr={MAX_LR_BOUND:g}`; `softmax_t0.25` = softmax score "
        "at temperature 0.25 (`auto.score=softmax:0.25`); `rank_exp` = the k-th best "
        "candidate scores 2^-k (`auto.score=rank_exp`); probe `train` / `random` = "
        "candidates scored on the training batch itself / on a separate random batch of the "
        f"same size; `random+lookahead{LOOKAHEAD}` = each candidate takes {LOOKAHEAD - 1} more "
        f"SGD updates at its learning rate on fresh random batches and is scored after "
        f"{LOOKAHEAD} (`auto.lookahead={LOOKAHEAD}`); `random+batch{BIG_PROBE_BATCH}` = "
        f"scored on a separate random batch of {BIG_PROBE_BATCH} images "
        f"(`auto.probe_batch_size={BIG_PROBE_BATCH}`), `+rank_exp` with the rank score.",
        "- *diverged*: a non-finite loss; *at chance*: finite losses, but the run ended where "
        "uniform guessing is (final training loss ≥ ln 10 and final test accuracy ≤ 15%). "
        "*time/run*: the run's wall time (data loading, compilation, training, evaluation; "
        "summed over resumes). *train s/epoch*: median training time of an epoch after the "
        "first. *probe overhead*: the run's probe time / its training time, in the records "
        "of runs from when the example timed its probes (`probe_time_s`: each probing step's "
        "time minus the next ordinary step's); the example no longer does: "
        "`python -m benchmarks.probe_overhead` measures what a probe costs.",
        "",
        "Machine(s) and versions:",
        "",
    ]
    for m in env.get("machines", []):
        vers = ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items() if v)
        lines.append(
            f"- {m.get('cpu_model')} ({m.get('cpu_cores')} cores), {m.get('platform')}, "
            f"JAX backend {m.get('backend')} ({m.get('device_kind')} × "
            f"{m.get('device_count')}), Python {m.get('python')}; {vers}"
        )
    lines += ["", "Commands:", ""] + [f"    {c}" for c in env.get("commands", [])] + [""]
    lines += [
        "Plots: [test accuracy per epoch](plots/test_accuracy.png), "
        "[learning rate per epoch](plots/lr.png). Per-run metrics: `runs/<key>/metrics.jsonl`; "
        f"one JSON line per finished run in `{RESULTS}`.",
    ]
    return lines


# --------------------------------------------------------------------------------------
# The report.


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
    """The Markdown report from ``results``."""
    df = frame(runs, results, groups, preset)
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
    for group in groups:
        lines += [f"## {group}", "", *group_table(df[df.group == group])]
        if group == "sensitivity":
            lines += sensitivity_matrix(df)
    lines += default_section(df)
    lines += drift_section(df)
    lines += probe_section(df)
    lines += setup_section(out, preset_name, preset, sets, data)
    return "\n".join(lines) + "\n"


def write_plots(out: Path, groups, preset, runs: list[Run], results: dict[str, dict]) -> list[Path]:
    """``plots/test_accuracy.png`` and ``plots/lr.png``: one panel per group, mean over seeds."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    df = frame(runs, results, groups, preset)
    by_variant = {label: list(sub.record) for label, sub in df[df.done].groupby("label")}
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
        cmap = matplotlib.colormaps["tab20"]
        for ax, group in zip(axes, groups, strict=False):
            positive = True
            for i, v in enumerate(x for x in variant_list if x.group == group):
                recs = by_variant.get(v.label, [])
                length = min((len(r.get(field) or []) for r in recs), default=0)
                if length == 0:
                    continue
                ys = [
                    scale * m if (m := mean([r[field][e] for r in recs])) is not None else math.nan
                    for e in range(length)
                ]
                positive &= all(y > 0 for y in ys if finite(y))
                style = "--" if "auto" in v.name or group in ("score", "probe") else "-"
                ax.plot(range(1, length + 1), ys, style, marker="o", markersize=2,
                        color=cmap(i % 20), label=f"{v.name} (n={len(recs)})")  # fmt: skip
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


def write(out, protocol, preset_name, preset, runs, settings, sets, data) -> Path:
    """README.md, data.json and the plots, from ``<out>/results.jsonl``."""
    results = read_results(out)
    (out / "data.json").write_text(json.dumps(data, indent=2) + "\n")
    text = build_report(
        out, protocol, preset_name, preset, runs, settings["groups"], settings["seeds"], sets,
        results, data,
    )  # fmt: skip
    (out / "README.md").write_text(text)
    write_plots(out, settings["groups"], preset, runs, results)
    return out / "README.md"
