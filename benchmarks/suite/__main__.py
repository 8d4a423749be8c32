"""The task suite: ``python -m benchmarks.suite [plan|run|report] [--quick] [--tasks a,b]``.

    python -m benchmarks.suite                 # run every pending cell, then the report
    python -m benchmarks.suite plan            # list the pre-registered cells
    python -m benchmarks.suite report          # the report from the committed records
    python -m benchmarks.suite --quick --out /tmp/suite   # CI smoke run (1 seed, few rows)

Records: ``benchmarks/results/suite/runs.jsonl`` (resumable: a rerun skips the
runs already recorded); report: ``benchmarks/results/suite/report.md`` and its plots.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from benchmarks._common import machine_facts
from benchmarks.suite import report as report_mod
from benchmarks.suite.plan import plan, seeds_for
from benchmarks.suite.runner import Records, sweep
from benchmarks.suite.tasks import TASKS

OUT = pathlib.Path(__file__).resolve().parents[1] / "results" / "suite"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__)
    parser.add_argument(
        "command", nargs="?", default="all", choices=("all", "plan", "run", "report")
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: few rows, one seed")
    parser.add_argument("--tasks", default=None, help="comma-separated task names")
    parser.add_argument("--methods", default=None, help="comma-separated rows (default: all)")
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    args = parser.parse_args(argv)
    tasks = None
    if args.tasks:
        tasks = tuple(t for t in args.tasks.split(",") if t)
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown:
            parser.error(f"unknown task(s) {unknown}; the suite's tasks are {sorted(TASKS)}")
    cells = plan(tasks, args.quick)
    if args.methods:
        wanted = [m for m in args.methods.split(",") if m]
        unknown = sorted(set(wanted) - {c.method.name for c in cells})
        if unknown:
            parser.error(f"unknown row(s) {unknown}; `plan` lists the rows")
        # In the order given: the rows that matter most first.
        cells = sorted(
            (c for c in cells if c.method.name in wanted), key=lambda c: wanted.index(c.method.name)
        )
    if args.command == "plan":
        for c in cells:
            rates = ", ".join("-" if r is None else f"{r:.3g}" for r in c.rates)
            grow = " (extended until interior)" if c.extend else ""
            seeds = seeds_for(c.task.name, args.quick)
            print(f"{c.task.name:9s} {c.method.name:22s} rates [{rates}]{grow} seeds {seeds}")
        return 0
    if args.command in ("all", "run"):
        path = args.out / "runs.jsonl"
        env_path = args.out / "environment.json"
        args.out.mkdir(parents=True, exist_ok=True)
        # The first run's machine and versions; each row records its own CPU as well.
        if not env_path.exists():
            env_path.write_text(json.dumps(machine_facts(sys.argv[1:]), indent=1) + "\n")
        for c in cells:
            # Read afresh per cell: another process may be filling other rows of the same file.
            sweep(
                c.task,
                c.method,
                seeds_for(c.task.name, args.quick),
                Records(path),
                c.rates,
                c.extend,
            )
    if args.command in ("all", "report"):
        print(report_mod.write(args.out, tasks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
