"""The suite's report: one generated page from ``runs.jsonl``, the only place its numbers live.

Per task: every row's validation metric (the tuned fixed schedules at their best
rate, chosen on validation) and test metric, mean +- sample standard deviation
(ddof = 1) over seeds; auto_lr's rows per start with the level they held before
the cooldown; lr_find's suggestions against the tuned wsd peak; the issue's
targets, pass or miss; and one plot: the validation metric against the rate.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections import defaultdict
from typing import Any

import numpy as np

from benchmarks.suite import cost
from benchmarks.suite.plan import ROW_NOTES
from benchmarks.suite.tasks import TASKS, Task

__all__ = ["summarise", "write"]

FIXED = ("constant", "cosine", "wsd")


def _ms(values: list[float | None]) -> tuple[float, float, int, int]:
    """(mean, sample std (ddof=1), finite count, non-finite count)."""
    ok = [v for v in values if v is not None and math.isfinite(v)]
    bad = len(values) - len(ok)
    if not ok:
        return math.nan, math.nan, 0, bad
    std = float(np.std(ok, ddof=1)) if len(ok) > 1 else math.nan
    return float(np.mean(ok)), std, len(ok), bad


def _train(values: list[float | None]) -> tuple[float, float]:
    """Mean and sample std of the final training losses; NaN (shown "diverged") if any is not."""
    m, s, _, bad = _ms(values)
    return (math.nan, math.nan) if bad else (m, s)


def _fmt(m: float, s: float, digits: int = 4) -> str:
    if math.isnan(m):
        return "diverged"
    return f"{m:.{digits}g} ± {s:.2g}" if not math.isnan(s) else f"{m:.{digits}g}"


def _dead(row: dict[str, Any]) -> bool:
    """Whether a run ended non-finite: its training loss or any of its metrics."""
    values = [row.get("train_loss_end"), *row["val"].values(), *row["test"].values()]
    return any(v is None for v in values)


def _geo(values: list[float | None]) -> float:
    ok = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return float(np.exp(np.mean(np.log(ok)))) if ok else math.nan


def summarise(rows: list[dict[str, Any]], task: Task) -> dict[str, Any]:
    """The numbers of one task: per (method, rate) the metrics, and the tuned optimum."""
    runs = [r for r in rows if r.get("task") == task.name and r.get("kind", "run") == "run"]
    groups: dict[tuple[str, Any], list[dict]] = defaultdict(list)
    for r in runs:
        groups[(r["method"], r["lr"] if r["method"] not in _NO_LR else None)].append(r)
    cells = {}
    for (method, lr), rs in groups.items():
        # A diverged seed counts as the worst value: the mean is then "diverged". A seed is
        # diverged when any of its metrics or its final training loss is non-finite (a model
        # of NaNs still scores 10 % accuracy).
        val = [None if _dead(r) else r["val"].get(task.metric) for r in rs]
        test = [None if _dead(r) else r["test"].get(task.metric) for r in rs]
        vm, vs, n, bad = _ms(val)
        if bad:
            vm = math.nan
        tm, ts, _, tbad = _ms(test)
        if tbad:
            tm = math.nan
        cells[(method, lr)] = {
            "val": (vm, vs),
            "test": (tm, ts),
            "train": _train([r.get("train_loss_end") for r in rs]),
            "n": len(rs),
            "diverged": bad,
            "level": _geo([r.get("level_before_cooldown") for r in rs]),
            "suggestion": _geo([r.get("lr_find", {}).get("suggestion") for r in rs]),
            "suggestions": {
                k: _geo([r.get("lr_find", {}).get("suggestions", {}).get(k) for r in rs])
                for k in ("valley", "minimum", "steepest")
            },
            "wall_s": float(np.median([r["wall_s"] for r in rs])),
        }
    sign = -1.0 if task.higher_is_better else 1.0

    def key(c):
        m = cells[c]["val"][0]
        return math.inf if math.isnan(m) else sign * m

    best = {}
    for method in FIXED:
        cands = [c for c in cells if c[0] == method]
        if cands:
            c = min(cands, key=key)
            rates = sorted(x[1] for x in cands)
            best[method] = {"lr": c[1], "interior": rates[0] < c[1] < rates[-1], **cells[c]}
    return {"cells": cells, "best": best}


_NO_LR = {"prodigy", "schedule_free", "dog", "lrfind-wsd-valley", "lrfind-wsd-minimum",
          "lrfind-wsd-steepest", "lrfind-auto"}  # fmt: skip


def _steady_wall(runs: list[dict], method: str) -> float:
    """Median wall time of ``method``'s runs that did not compile (each compiled function's
    first run, in file order, is left out: a row compiles once, an auto row once per start)."""
    seen, walls = set(), []
    for r in runs:
        if r["method"] != method:
            continue
        compiled = r["lr"] if method.startswith(("auto", "seed")) else None
        if compiled in seen:
            walls.append(r["wall_s"])
        seen.add(compiled)
    return float(np.median(walls)) if walls else math.nan


def _within(task: Task, value: float, ref: float) -> bool:
    if math.isnan(value) or math.isnan(ref):
        return False
    if task.metric == "accuracy":
        return value >= ref - 1.0
    return value <= ref * 1.02 if not task.higher_is_better else value >= ref * 0.98


def _plot(task: Task, summary: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    cells = summary["cells"]
    for method in (*FIXED, "auto-default", "seed", *AUTO_EXTRA):
        pts = sorted((lr, c["val"]) for (m, lr), c in cells.items() if m == method and lr)
        if not pts:
            continue
        x = [p[0] for p in pts]
        y = [p[1][0] for p in pts]
        e = [0 if math.isnan(p[1][1]) else p[1][1] for p in pts]
        style = "-o" if method in FIXED else "--s"
        ax.errorbar(x, y, yerr=e, fmt=style, ms=3, capsize=2, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("peak rate (fixed) / initial rate (auto)")
    ax.set_ylabel(f"validation {task.metric}")
    finite = [c["val"][0] for c in cells.values() if not math.isnan(c["val"][0])]
    if finite:
        lo, hi = min(finite), np.percentile(finite, 60)
        pad = 0.1 * (hi - lo + 1e-9)
        ax.set_ylim(lo - pad, hi + 4 * pad) if not task.higher_is_better else None
    ax.set_title(task.name)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


AUTO_EXTRA: tuple[str, ...] = ()


def _elsewhere(rows: list[dict[str, Any]], env: dict) -> str:
    """Which of a task's rows ran on another CPU than the first run's (rows record their own)."""
    other = defaultdict(set)
    for r in rows:
        if r.get("cpu") and r["cpu"] != env.get("cpu_model"):
            other[r["cpu"]].add(r["method"])
    every = {r["method"] for r in rows}
    return "".join(
        f" Run on {cpu}: "
        + ("every row" if ms == every else ", ".join(f"`{m}`" for m in sorted(ms)))
        + " (compare across machines as means over seeds, not run by run)."
        for cpu, ms in sorted(other.items())
    )


def write(out: pathlib.Path, tasks: tuple[str, ...] | None = None) -> str:
    """Writes ``report.md`` and the plots under ``out``; returns the page's path."""
    out = pathlib.Path(out)
    path = out / "runs.jsonl"
    rows = [json.loads(line) for line in path.open()] if path.exists() else []
    env = {}
    if (out / "environment.json").exists():
        env = json.loads((out / "environment.json").read_text())
    versions = env.get("versions", {})
    costs = {}  # the newest record per task wins
    if (out / "cost.jsonl").exists():
        with (out / "cost.jsonl").open() as f:
            costs = {r["task"]: r for r in map(json.loads, filter(str.strip, f))}
    names = [t for t in (tasks or TASKS) if any(r.get("task") == t for r in rows)]
    lines = [
        "# Task suite: results",
        "",
        "Generated by `python -m benchmarks.suite report` from `runs.jsonl` beside this page. "
        "Every number is a mean ± sample standard deviation (ddof = 1) over the seeds in the "
        "`n` column; fixed schedules are tuned on the validation split; test metrics are read "
        "once, here. A row is `diverged` if any seed ended non-finite (its final training loss or "
        "any of its metrics).",
        "",
        f"Machine: {env.get('cpu_model', '?')}, {env.get('cpu_cores', '?')} cores; "
        f"jax {versions.get('jax', '?')}, optax {versions.get('optax', '?')}; "
        f"versions recorded by `{env.get('command', '?')}`. Rows run on another machine are named "
        "in their task's section.",
        "",
        *(
            f"- `{m}`: {note}"
            for m, note in ROW_NOTES.items()
            if any(r["method"] == m for r in rows)
        ),
        "",
    ]
    for name in names:
        task = TASKS[name]
        s = summarise(rows, task)
        cells, best = s["cells"], s["best"]
        direction = "higher" if task.higher_is_better else "lower"
        lines += [
            f"## {name}",
            "",
            f"{task.optimizer_name}; {task.steps} updates of batch {task.batch_size}; "
            f"metric: {task.metric} ({direction} is better)."
            + _elsewhere([r for r in rows if r.get("task") == name], env),
            "",
            "| row | rate | n | val | test | final training loss | level before cooldown |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for method, b in best.items():
            edge = "" if b["interior"] else " (grid edge)"
            lines.append(
                f"| {method} (tuned) | {b['lr']:.3g}{edge} | {b['n']} | {_fmt(*b['val'])} | "
                f"{_fmt(*b['test'])} | {_fmt(*b['train'])} | {b['lr']:.3g} |"
            )
        order = sorted(cells, key=lambda c: (c[0] in FIXED, c[0], c[1] or 0))
        for method, lr in order:
            if method in FIXED:
                continue
            c = cells[(method, lr)]
            rate = "-" if lr is None else f"start {lr:.3g}"
            if method.startswith("lrfind"):
                rate = f"found {c['suggestion']:.3g}"
            level = "" if math.isnan(c["level"]) else f"{c['level']:.3g}"
            lines.append(
                f"| {method} | {rate} | {c['n']} | {_fmt(*c['val'])} | {_fmt(*c['test'])} | "
                f"{_fmt(*c['train'])} | {level} |"
            )
        ref_rows = [b for b in best.values()]
        lines += ["", "Targets:", ""]
        if ref_rows:
            sign = -1 if task.higher_is_better else 1
            ref = min(ref_rows, key=lambda b: sign * b["val"][0] if not math.isnan(b["val"][0])
                      else math.inf)  # fmt: skip
            peak = best.get("wsd", ref)["lr"]
            # Where the training objective and the validation metric part: the wsd rate with the
            # lowest final training loss (what auto_lr, seeing only training losses, can aim at).
            wsd_cells = [(lr, c) for (m, lr), c in cells.items() if m == "wsd"]
            finite = [(lr, c["train"][0]) for lr, c in wsd_cells if math.isfinite(c["train"][0])]
            if finite:
                lr_train = min(finite, key=lambda t: t[1])[0]
                lines.append(
                    f"- wsd rate with the lowest final training loss: {lr_train:.3g} "
                    f"({lr_train / peak:.2g} x the validation-tuned peak)."
                )
            autos = sorted({m for m, _ in cells if m.startswith("auto")})
            if ("lrfind-auto", None) in cells:
                c = cells[("lrfind-auto", None)]
                inside = _within(task, c["val"][0], ref["val"][0])
                lines.append(
                    f"- `lrfind-auto`: {'within' if inside else 'outside'} the band; "
                    f"level / tuned wsd peak {c['level'] / peak:.2g}."
                )
            for m in autos:
                starts = sorted(lr for mm, lr in cells if mm == m and lr)
                ok = [_within(task, cells[(m, lr)]["val"][0], ref["val"][0]) for lr in starts]
                ratios = [cells[(m, lr)]["level"] / peak for lr in starts]
                lvl_ok = [0.5 <= r <= 2.0 for r in ratios]
                lines.append(
                    f"- `{m}`: within the band of the tuned best ({_fmt(*ref['val'])}) from "
                    f"{sum(ok)}/{len(ok)} starts; level / tuned wsd peak "
                    f"{', '.join(f'{r:.2g}' for r in ratios)} (within x2: {sum(lvl_ok)}/"
                    f"{len(lvl_ok)})."
                )
            for m in sorted({m for m, _ in cells if m.startswith("lrfind")}):
                c = cells[(m, None)]
                r = {k: v / peak for k, v in c["suggestions"].items()}
                lines.append(
                    f"- lr_find suggestions / tuned wsd peak ({peak:.3g}): "
                    + ", ".join(f"{k} {v:.2g}" for k, v in r.items())
                )
                break
        runs = [r for r in rows if r.get("task") == name]
        fixed_s, auto_s = _steady_wall(runs, "wsd"), _steady_wall(runs, "auto-default")
        finds = [r["lr_find"]["wall_s"] for r in runs if r["method"] == "lrfind-wsd-valley"]
        if not (math.isnan(fixed_s) or math.isnan(auto_s)):
            lines.append(
                f"- Cost: median wall time of a run (compiled, jitted scan) wsd {fixed_s:.2f} s, "
                f"auto-default {auto_s:.2f} s: probes and twin "
                f"{100 * (auto_s / fixed_s - 1):+.1f} % "
                "(across runs on one machine, not within one run)."
            )
        if name in costs:
            c, facts = cost.summary(costs[name]), costs[name].get("machine", {})
            lines.append(
                f"- Cost within one run (`python -m benchmarks.suite.cost`: "
                f"{costs[name]['steps']} updates, seed 0, each a jitted call from Python, "
                f"the two runs interleaved; {facts.get('cpu_model', '?')}): auto-default "
                f"{c['auto_s']:.2f} s against wsd {c['wsd_s']:.2f} s, "
                f"{100 * c['overhead']:+.1f} %; its {c['probes']} probe updates "
                f"{100 * c['probe_share']:+.1f} %, every update {100 * c['per_update']:+.1f} %."
            )
        if finds and not math.isnan(fixed_s):
            lines.append(
                f"- lr_find's 100 updates (compile included): median {np.median(finds):.2f} s, "
                f"{100 * np.median(finds) / fixed_s:.0f} % of a wsd run."
            )
        plot = out / f"{name}.png"
        _plot(task, s, plot)
        lines += ["", f"![{name}]({plot.name})", ""]
    page = out / "report.md"
    page.write_text("\n".join(lines) + "\n")
    return str(page)
