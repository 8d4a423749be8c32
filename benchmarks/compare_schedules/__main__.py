"""The command line: ``python -m benchmarks.compare_schedules --protocol cpu ...``.

``main(argv, train_fn=None)``: ``train_fn`` replaces the example's ``train_and_evaluate``
(the tests pass a fake one).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks._declarations import METHODS
from benchmarks.compare_schedules import plan, report, runner

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "benchmarks" / "results"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"


def build_parser() -> argparse.ArgumentParser:
    from benchmarks import compare_schedules

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.compare_schedules",
        description=compare_schedules.__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--protocol", default="cpu", help=f"the example's preset: {', '.join(plan.PROTOCOLS)}"
    )
    p.add_argument(
        "--groups", default=None, help=f"comma-separated (default: {','.join(plan.GROUPS)})"
    )
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: 0,1)")
    p.add_argument(
        "--data-dir",
        default=None,
        help=f"CIFAR-10 image folder or .tar.gz (default: {DEFAULT_DATA} if present, else tfds)",
    )
    p.add_argument(
        "--out", default=None, help="output folder (default: benchmarks/results/compare_<protocol>)"
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=None,
        metavar="PATH=VALUE",
        help="override a setting of the example's config in every run, as its "
        "--config.PATH=VALUE would (e.g. epochs=2, auto.factors='(4.,1.,.25)'); part of the "
        "run keys",
    )
    p.add_argument("--only", action="append", default=[], metavar="GROUP:VARIANT[,...]")
    p.add_argument("--max-runs", type=int, default=None, help="run at most K runs, then stop")
    p.add_argument("--dry-run", action="store_true", help="list the planned runs and their keys")
    p.add_argument(
        "--report-only", action="store_true", help="rewrite tables and plots from results.jsonl"
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
    groups = args.groups.split(",") if args.groups else saved.get("groups", list(plan.GROUPS))
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else saved.get("seeds", [0, 1])
    sets = args.sets if args.sets is not None else saved.get("sets", [])
    data_dir = args.data_dir
    if data_dir is None:
        data_dir = saved.get("data_dir") or (str(DEFAULT_DATA) if DEFAULT_DATA.exists() else None)
    if data_dir is not None:
        data_dir = str(Path(data_dir).expanduser().resolve())
    groups = [g.strip() for g in groups if g.strip()]
    for g in groups:
        if g not in plan.GROUPS:
            raise SystemExit(f"error: unknown group {g!r}; choose from {', '.join(plan.GROUPS)}")
    return {"groups": groups, "seeds": seeds, "sets": sets, "data_dir": data_dir}


def _dry_run(runs, selected, results, out: Path) -> None:
    print(f"{len(runs)} planned runs ({len(selected)} selected); out: {out}")
    for r in selected:
        state = "done" if runner.finished(results.get(r.key)) else "pending"
        if not r.supported:
            state = "unsupported"
        if state == "pending" and (out / "runs" / r.key / runner.CHECKPOINTS).exists():
            state = "partial"
        print(f"{state:11s} {r.key:60s} {','.join(v.label for v in r.variants)}")


def main(argv: list[str] | None = None, train_fn: Callable | None = None) -> int:
    """The command line; ``train_fn`` replaces the example's ``train_and_evaluate`` (tests)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    out = Path(args.out) if args.out else RESULTS_DIR / f"compare_{args.protocol}"
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(args, out)
    preset_name, preset = plan.preset_config(args.protocol)
    sets = plan.parse_sets(preset, settings["sets"])
    runs = plan.make_plan(
        args.protocol, preset, settings["groups"], settings["seeds"], sets, METHODS
    )

    only = {x.strip() for item in args.only for x in item.split(",") if x.strip()}
    labels = {v.label for r in runs for v in r.variants}
    unknown = only - labels
    if unknown:
        raise SystemExit(
            f"error: --only {', '.join(sorted(unknown))}: no such GROUP:VARIANT in the plan "
            f"(e.g. {', '.join(sorted(labels)[:4])}; --dry-run lists them)"
        )
    selected = [r for r in runs if not only or any(v.label in only for v in r.variants)]
    results = runner.read_results(out)
    if args.dry_run:
        _dry_run(runs, selected, results, out)
        return 0

    data = report.data_facts(settings["data_dir"], preset_name, preset, sets, out)

    def write_report() -> Path:
        return report.write(out, args.protocol, preset_name, preset, runs, settings, sets, data)

    if args.import_probes:
        report.record_environment(out, argv)  # the report lists the command with the others
        imported, differed = runner.import_probes(out, Path(args.import_probes))
        print(f"probes imported into {len(imported)} records")
        for key in differed:
            print(f"  {key}: the re-run's test accuracies differ; not imported", file=sys.stderr)
    if args.report_only or args.import_probes:
        print(f"report: {write_report()}")
        return 0

    (out / "invocation.json").write_text(
        json.dumps({"protocol": args.protocol, **settings}, indent=2) + "\n"
    )
    report.record_environment(out, argv)
    pending = [r for r in selected if not runner.finished(results.get(r.key))]
    for r in pending:
        if not r.supported:
            print(f"skipping {r.key}: the example has no schedule {r.diff.get('schedule')!r}")
    # Seed by seed: an interrupted protocol has every variant once before any twice.
    seeds = settings["seeds"]
    pending = sorted((r for r in pending if r.supported), key=lambda r: seeds.index(r.seed))
    if args.max_runs is not None:
        pending = pending[: args.max_runs]
    n_done = sum(runner.finished(results.get(r.key)) for r in selected)
    print(
        f"{n_done} of {len(selected)} selected runs already done; running {len(pending)}; "
        f"results: {out / runner.RESULTS}"
    )
    runner.execute(
        pending,
        out=out,
        protocol=args.protocol,
        preset=preset,
        sets=sets,
        data_dir=settings["data_dir"],
        progress=args.progress,
        keep_checkpoints=args.keep_checkpoints,
        train_fn=train_fn or (runner.load_train_fn() if pending else None),
        report=write_report,
    )
    print(f"report: {write_report()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
