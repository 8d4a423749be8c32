"""The schedule-comparison benchmark's bookkeeping (``benchmarks/compare_schedules/``).

Not the accuracies (that is the benchmark's job): the plan and its run keys (the
committed results must stay recognised), ``--set`` parsing, resuming (finished runs
are skipped, an interrupted run continues through ``resume=True``), failed runs are
retried, the JSON schema of ``results.jsonl``, the Markdown tables (n per row,
incomplete rows marked), ``--report-only``, ``--only``/``--max-runs``/``--dry-run``,
``--import-probes``. It drives the benchmark with a fake ``train_and_evaluate`` that
writes plausible per-epoch records in milliseconds; one test, under CI only, runs the
real example on a tiny generated image folder.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from conftest import IN_CI, require

from benchmarks._declarations import FACTORS, METHODS
from benchmarks.compare_schedules import plan, report, runner
from benchmarks.compare_schedules.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "benchmarks" / "results" / "compare_cpu" / "results.jsonl"
# The budget group's first runs, measured on another machine (kept apart: one machine a file).
COMMITTED_INTEL = COMMITTED.parents[1] / "compare_cpu_intel" / "results.jsonl"
CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
N_VARIANTS = 13 + 18 + 4 + 5  # main, sensitivity, score, probe
N_RUNS = 76  # at 2 seeds: main:auto7 = score:minmax_exp = probe:random (cpu: batch 32 = probe's)

REQUIRED = {
    "schema": int,
    "key": str,
    "protocol": str,
    "group": str,
    "variant": str,
    "variants": list,
    "seed": int,
    "schedule": str,
    "lr": float,
    "overrides": dict,
    "status": str,
    "epochs": int,
    "final_test_accuracy": float,
    "best_test_accuracy": float,
    "final_test_loss": (float, type(None)),
    "final_train_loss": (float, type(None)),
    "test_accuracy": list,
    "lr_per_epoch": list,
    "train_time_s": list,
    "wall_time_s": float,
    "run_time_s": float,
    "resumed": bool,
    "machine": str,
}


@pytest.fixture(scope="module")
def preset():
    return plan.preset_config("cpu")[1]


class FakeTrain:
    """Stands in for ``train_and_evaluate``: metrics.jsonl and a 'checkpoint' per epoch."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.interrupt: tuple[str, int] | None = None  # (workdir name, after epoch)
        self.fail: set[str] = set()  # schedules that raise

    def __call__(self, config, workdir, resume=False):
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        ckpt = workdir / "checkpoints" / "history.json"
        history = json.loads(ckpt.read_text()) if resume and ckpt.exists() else []
        self.calls.append((workdir.name, resume, len(history), config))
        if config.schedule in self.fail:
            raise ValueError(f"no {config.schedule} today")
        diverge = config.learning_rate >= 1.0 and config.schedule == "constant"
        # Too small a rate: finite losses, never leaves chance.
        stalls = config.learning_rate <= 1e-4 and config.schedule == "constant"
        for e in range(len(history), config.epochs):
            lr = config.learning_rate * (0.5**e if config.schedule != "constant" else 1.0)
            rec = {
                "epoch": e + 1,
                "steps": (e + 1) * 10,
                "train_loss": math.nan if diverge else 2.4 if stalls else 2.0 - 0.3 * e,
                "train_accuracy": 0.1 if diverge else 0.3 + 0.05 * e,
                "test_loss": math.nan if diverge else 2.1 - 0.3 * e,
                "test_accuracy": 0.1 if diverge or stalls else 0.3 + 0.05 * e + 0.01 * config.seed,
                "lr": lr,
                "lr_first": lr,
                "epoch_time_s": 1.0,
                "train_time_s": 1.2 if config.schedule == "auto" else 1.0,
                "eval_time_s": 0.1,
                "steps_per_s": 10.0,
                "wall_time_s": 1.0 * (e + 1),
            }
            if config.schedule == "auto":
                rec["probes"], rec["num_probes"] = [], e + 1
                if config.seed == 0:  # seed 1 stands for a run from before records kept probes
                    # The factor-1 candidate is best, yet the lr goes down.
                    losses = [1.0 + abs(math.log(f)) for f in config.auto.factors]
                    rec["probes"] = [{"step": 10 * e, "multiplier": 0.8, "losses": losses,
                                      "lr": lr, "scores": losses}]  # fmt: skip
            history.append(rec)
            with open(workdir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            ckpt.parent.mkdir(exist_ok=True)
            ckpt.write_text(json.dumps(history))
            if self.interrupt == (workdir.name, e + 1):
                self.interrupt = None
                raise KeyboardInterrupt
        return history


def _lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def _argv(out, data, *extra):
    return ["--protocol", "cpu", "--seeds", "0,1", "--data-dir", str(data), "--out", str(out),
            "--set", "epochs=3", "--groups", ",".join(plan.COMPARISON_GROUPS), *extra]  # fmt: skip


def _cells(readme: str, variant: str) -> list[str]:
    """The cells of the first table row whose first cell is `variant`."""
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == f"`{variant}`":
            return cells
    raise AssertionError(f"no row {variant!r}")


def _section(readme: str, title: str) -> str:
    return readme.split(f"## {title}")[1].split("\n## ")[0]


@pytest.fixture
def no_plots(monkeypatch):
    """Plots take seconds: the tests that do not look at them skip them."""
    monkeypatch.setattr(report, "write_plots", lambda *args, **kwargs: [])
    return monkeypatch


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "cifar10-fake.tar.gz"
    path.write_bytes(b"not really an archive")
    return path


def test_committed_results_keep_their_keys(preset):
    # Hours of CPU: the plan must recognise every committed run as done, by the same key,
    # and each record's overrides (flat names) are the run's difference from the preset.
    committed = {}
    later = {}
    for path in (COMMITTED, COMMITTED_INTEL):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            first = rec["group"] in plan.COMPARISON_GROUPS and rec["seed"] in (0, 1)
            if first and path == COMMITTED:
                committed[rec["key"]] = rec
            else:
                later[rec["key"]] = rec
    # Runs of groups added since (budget) and later seeds (2; 3 and 4 for wsd@1) are planned
    # runs too.
    every = {r.key for r in plan.make_plan("cpu", preset, plan.GROUPS, [0, 1, 2, 3, 4], {})}
    assert later and set(later) <= every
    runs = {r.key: r for r in plan.make_plan("cpu", preset, plan.COMPARISON_GROUPS, [0, 1], {})}
    assert set(runs) == set(committed) and len(runs) == N_RUNS
    for key, rec in committed.items():
        assert rec["overrides"] == runs[key].diff, key
        assert set(rec["variants"]) <= {v.label for v in runs[key].variants}, key
        assert rec["seed"] == runs[key].seed


def test_legacy_names():
    assert plan.legacy_name("auto.factors") == "auto_factors"
    assert plan.legacy_name("auto.probe_batch_size") == "probe_batch_size"
    assert plan.legacy_name("model.width") == "width"
    assert plan.legacy_name("data.train_subset") == "train_subset"
    assert plan.legacy_name("linear.total_iters") == "linear_total_iters"
    assert plan.legacy_name("warmup_cosine.eta_min") == "eta_min"
    assert plan.legacy_name("dog.learning_rate") == "lr_free_learning_rate"
    assert plan.legacy_name("mechanize.weight_decay") == "mechanize_weight_decay"
    assert plan.legacy_name("epochs") == "epochs"
    assert plan.legacy_name("ema.decay") == "ema.decay"  # a new sub-config keeps its path


def test_plan_keys_and_sharing(preset):
    sets = plan.parse_sets(preset, ["epochs=3"])
    runs = plan.make_plan("cpu", preset, plan.COMPARISON_GROUPS, [0, 1], sets)
    keys = [r.key for r in runs]
    assert len(keys) == len(set(keys)) == N_RUNS
    labels = [(v.label, r.seed) for r in runs for v in r.variants]
    assert len(labels) == len(set(labels)) == 2 * N_VARIANTS  # each variant once per seed
    per_variant = {}
    for r in runs:
        for v in r.variants:
            per_variant.setdefault(v.label, set()).add(r.seed)
    assert all(seeds == {0, 1} for seeds in per_variant.values())
    for name in ("constant", "linear", "cosine", "step", "auto3", "auto5", "auto7", "plateau",
                 "alr", "prodigy", "dog", "mechanize", "schedule_free"):  # fmt: skip
        assert f"main:{name}" in per_variant, name
    for lr in ("0.0001", "0.001", "0.01", "0.1", "1"):
        for s in ("constant", "cosine", "auto7"):
            assert f"sensitivity:{s}@{lr}" in per_variant
    # The cpu preset's batch is 32 = its probe batch: the separate-batch probe run is auto7's,
    # and the seed's score is auto7's too; they run once.
    shared = next(r for r in runs if "main:auto7" in [v.label for v in r.variants])
    assert {v.label for v in shared.variants} == {"main:auto7", "score:minmax_exp", "probe:random"}
    assert shared.diff["auto_factors"] == list(FACTORS[7])
    assert shared.diff["epochs"] == 3
    # A key is a function of what the run computes: same inputs, same key; another seed or
    # another --set, another key; --set's settings are left out of the readable part.
    again = plan.make_plan("cpu", preset, ["main"], [0, 1], sets)
    assert {r.key for r in again} <= set(keys)
    other = plan.make_plan("cpu", preset, ["main"], [0], {"epochs": 4})
    assert not {r.key for r in other} & set(keys)
    assert "epochs" not in shared.key
    # The run configurations are the preset plus the variant's settings: nothing else moves.
    wide = next(r for r in runs if "sensitivity:auto_wide@1" in [v.label for v in r.variants])
    assert min(wide.diff["auto_factors"]) == pytest.approx(1 / 64)
    assert set(wide.diff) == {"schedule", "auto_factors", "learning_rate", "epochs"}
    config = plan.build_config(preset, wide.variants[0].overrides, sets)
    assert plan.config_diff(preset, config) == wide.diff
    assert (config.epochs, config.learning_rate, config.schedule) == (3, 1.0, "auto")
    assert preset.epochs == 15  # the preset itself is untouched


def test_set_is_parsed_by_the_config_flags(preset):
    got = plan.parse_sets(
        preset,
        ["epochs=2", "auto.factors=(4.,1.,.25)", "data.augment=false", "learning_rate=1",
         "model.stage_sizes=1,1,1,1", "auto.score=softmax:0.5", "data.train_subset=40"],
    )  # fmt: skip
    assert got == {
        "epochs": 2,
        "auto.factors": (4.0, 1.0, 0.25),
        "data.augment": False,
        "learning_rate": 1.0,
        "model.stage_sizes": (1, 1, 1, 1),
        "auto.score": "softmax:0.5",
        "data.train_subset": 40,
    }
    assert type(got["learning_rate"]) is float and type(got["epochs"]) is int
    with pytest.raises(SystemExit, match="no field 'epoch'"):
        plan.parse_sets(preset, ["epoch=3"])
    with pytest.raises(SystemExit, match=r"no field 'width' \(now model.width\)"):
        plan.parse_sets(preset, ["width=0.5"])
    with pytest.raises(SystemExit, match="epochs=abc"):
        plan.parse_sets(preset, ["epochs=abc"])
    with pytest.raises(SystemExit, match="PATH=VALUE"):
        plan.parse_sets(preset, ["epochs"])
    # A nested setting with a legacy name keys like its old flat self.
    a = plan.make_plan("cpu", preset, ["main"], [0], plan.parse_sets(preset, ["model.width=0.5"]))
    assert all(r.diff["width"] == 0.5 for r in a)


def test_every_variant_is_a_valid_example_config(preset):
    # Each variant's overrides name settings of the example's config and have their types;
    # each schedule is one of the example's methods.
    flat = plan.flatten(preset)
    for v in plan.variants(plan.COMPARISON_GROUPS, preset):
        for path, value in v.overrides:
            assert path in flat, (v.label, path)
            parent, _, name = path.rpartition(".")
            field_type = (preset[parent] if parent else preset).get_type(name)
            ok = isinstance(value, field_type) or (field_type is float and type(value) is int)
            assert ok, (v.label, path, value, field_type)
            if field_type is tuple and isinstance(flat[path], tuple):
                assert {type(x) for x in value} <= {type(x) for x in flat[path]}, (v.label, path)
        config = plan.build_config(preset, v.overrides, {})
        assert config.schedule in METHODS, v.label
    runs = plan.make_plan("cpu", preset, plan.COMPARISON_GROUPS, [0], {}, METHODS)
    assert all(r.supported for r in runs)
    configs = [plan.build_config(preset, r.variants[0].overrides, {}) for r in runs]
    assert {"softmax:0.25", "rank_exp", "softmax"} <= {c.auto.score for c in configs}

    def run_of(label):
        (run,) = [r for r in runs if label in [v.label for v in r.variants]]
        return run, plan.build_config(preset, run.variants[0].overrides, {})

    look, _ = run_of("probe:random+lookahead10")
    assert look.diff["auto_lookahead"] == plan.LOOKAHEAD == 10
    big, big_config = run_of("probe:random+batch256")
    assert big.diff["probe_batch_size"] == plan.BIG_PROBE_BATCH == 256
    assert big_config.auto.probe_source == "random" and big_config.auto.lookahead == 1
    ranked, _ = run_of("probe:random+batch256+rank_exp")
    assert ranked.diff["auto_score"] == "rank_exp" and ranked.diff["probe_batch_size"] == 256


def test_resume_schema_table_report_only(preset, tmp_path, data_file, capsys, no_plots):
    out = tmp_path / "compare_cpu"
    fake = FakeTrain()

    # --dry-run: the plan, nothing trained.
    assert main(_argv(out, data_file, "--dry-run"), train_fn=fake) == 0
    listing = capsys.readouterr().out
    assert fake.calls == []
    assert listing.count("pending") == N_RUNS
    assert "main:auto7,score:minmax_exp,probe:random" in listing

    # Interrupted in the 3rd run after its 2nd epoch (Ctrl-C stops the benchmark).
    runs = plan.make_plan("cpu", preset, plan.COMPARISON_GROUPS, [0, 1], {"epochs": 3})
    order = sorted(runs, key=lambda r: r.seed)  # the benchmark runs seed 0 first
    fake.interrupt = (order[2].key, 2)
    with pytest.raises(KeyboardInterrupt):
        main(_argv(out, data_file, "--max-runs", "5"), train_fn=fake)
    assert [r["key"] for r in _lines(out)] == [order[0].key, order[1].key]
    assert "partial" in _dry(out, data_file, capsys)

    # Restart: the two finished runs are skipped, the third resumes from its checkpoint.
    fake.calls.clear()
    fake.fail = {"dog"}
    assert main(_argv(out, data_file, "--max-runs", "3"), train_fn=fake) == 0
    assert [(c[0], c[1], c[2]) for c in fake.calls] == [
        (order[2].key, True, 2),
        (order[3].key, True, 0),
        (order[4].key, True, 0),
    ]
    lines = _lines(out)
    assert len(lines) == 5 and lines[2]["resumed"] is True and lines[3]["resumed"] is False
    # Each run's config: the preset, the variant, --set, the seed, the data; no progress bar.
    config = fake.calls[0][3]
    assert config.epochs == 3 and config.data.data_dir == str(data_file) and not config.progress
    assert config.seed == order[2].seed

    # All the rest; 'dog' fails (recorded, not fatal) and is retried next time.
    fake.calls.clear()
    assert main(_argv(out, data_file), train_fn=fake) == 0
    assert len(fake.calls) == N_RUNS - 5
    errors = [r for r in _lines(out) if r["status"] == "error"]
    assert {r["variant"] for r in errors} == {"dog"} and "no dog today" in errors[0]["error"]
    assert "failed" in (out / "README.md").read_text()
    fake.calls.clear()
    fake.fail = set()
    assert main(_argv(out, data_file), train_fn=fake) == 0
    assert sorted(c[0] for c in fake.calls) == sorted(r["key"] for r in errors)

    # Nothing left: a further invocation trains nothing.
    fake.calls.clear()
    before = (out / "results.jsonl").read_text()
    assert main(_argv(out, data_file), train_fn=fake) == 0
    assert fake.calls == [] and (out / "results.jsonl").read_text() == before

    # The JSON schema: one strict-JSON line per run (plus the failed attempts).
    latest = runner.read_results(out)
    assert set(latest) == {r.key for r in runs}
    for line in before.splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    for rec in latest.values():
        for field, types in REQUIRED.items():
            assert isinstance(rec[field], types), (field, rec[field])
        assert rec["status"] in runner.STATUSES
        assert len(rec["test_accuracy"]) == len(rec["lr_per_epoch"]) == rec["epochs"] == 3
        assert rec["best_test_accuracy"] == max(rec["test_accuracy"])
        assert rec["final_test_accuracy"] == rec["test_accuracy"][-1]
        assert rec["protocol"] == "cpu" and rec["key"].startswith("cpu.")
        assert rec["train_subset"] == 10_000 and rec["steps_per_epoch"] == 10
        assert "probe_overhead" not in rec  # the example no longer times its probes
        assert not (out / "runs" / rec["key"] / "checkpoints").exists()
    div = {r["variant"] for r in latest.values() if r["status"] == "diverged"}
    assert div == {"constant@1"}  # NaN losses in the fake; null in the JSON
    assert all(
        r["final_train_loss"] is None for r in latest.values() if r["variant"] == "constant@1"
    )
    assert {r["lr"] for r in latest.values() if r["schedule"] in ("prodigy", "dog")} == {1.0}

    # The tables: every variant a row with n = 2/2, mean ± std, the shared runs named.
    readme = (out / "README.md").read_text()
    assert "**incomplete** (" not in readme
    row = _cells(readme, "auto7")
    assert row[2] == "2/2" and row[3] == "40.5 ± 0.7"  # final acc 0.40/0.41: seeds 0, 1
    assert "score:minmax_exp" in row[-1] and "probe:random" in row[-1]
    assert row[8] == "–"  # no probe overhead: not measured by the example any more
    assert "python -m benchmarks.probe_overhead" in readme
    # The probes of the runs that kept them (seed 0 here): 3 probes, best = 1, lr down.
    probes = _section(readme, "What the probes decided")
    assert _cells(probes, "main:auto7`, `score:minmax_exp`, `probe:random") == [
        "`main:auto7`, `score:minmax_exp`, `probe:random`", "1/2", "3", "0%", "0%", "100%",
        "3 of 3", "0.0000",
    ]  # fmt: skip
    assert _cells(probes, "sensitivity:auto7@1")[1:3] == ["1/2", "3"]  # every group's runs
    auto7 = next(r for r in latest.values() if r["variant"] == "auto7" and r["seed"] == 0)
    assert auto7["probe_factors"] == list(FACTORS[7])
    assert [p["step"] for p in auto7["probes"]] == [0, 10, 20]
    assert set(auto7["probes"][0]) == {"step", "multiplier", "losses"}  # what the history had
    assert all(
        r["probes"] is None for r in latest.values() if r["seed"] == 1 or r["schedule"] != "auto"
    )
    assert "2 diverged" in _cells(readme, "constant@1")[-1]
    assert "2 at chance" in _cells(readme, "constant@0.0001")[-1]
    assert {r["status"] for r in latest.values() if r["variant"] == "constant@0.0001"} == {
        "at_chance"
    }
    # A record written when both were "diverged" is told apart by its losses.
    old = dict(next(r for r in latest.values() if r["variant"] == "constant@0.0001"))
    old["status"] = "diverged"
    assert runner.outcome(old) == "at_chance"
    grid = readme.split("how much the starting value matters):")[1]
    assert _cells(grid, "constant")[1:] == [
        "10.0 ± 0.0", "40.5 ± 0.7", "40.5 ± 0.7", "40.5 ± 0.7", "10.0 ± 0.0", "30.5"
    ]  # fmt: skip
    drift = _section(readme, "Learning-rate drift of the automated scheduler")
    # A tie (40.5% at 0.05, 1e-3, 1e-2, 0.1): the first in table order, main:constant's.
    assert "Best constant learning rate among those run: **0.05**" in drift
    assert _cells(drift, "main:auto3") == ["`main:auto3`", "2", "1.00 ± 0.00",
                                           "0.38 ± 0.00", "0 ± 0%"]  # fmt: skip
    assert data_file.name in readme
    env = json.loads((out / "environment.json").read_text())
    assert len(env["machines"]) == 1 and env["machines"][0]["versions"]["jax"]
    assert env["machines"][0]["cpu_model"] in readme
    assert any(c.startswith("python -m benchmarks.compare_schedules --protocol cpu")
               for c in env["commands"])  # fmt: skip
    data = json.loads((out / "data.json").read_text())
    assert data["sha256"] == hashlib.sha256(data_file.read_bytes()).hexdigest()
    assert data["train_subset"] == 10_000

    # --report-only rewrites the same report from results.jsonl, training nothing.
    (out / "README.md").unlink()
    no_plots.undo()

    def boom(config, workdir, resume=False):
        raise AssertionError("--report-only must not train")

    report_only = ["--protocol", "cpu", "--out", str(out), "--report-only"]
    assert main(report_only, train_fn=boom) == 0
    assert (out / "README.md").read_text() == readme
    for png in ("test_accuracy.png", "lr.png"):
        assert (out / "plots" / png).stat().st_size > 10_000
    no_plots.setattr(report, "write_plots", lambda *args, **kwargs: [])

    # Records from when the example timed its probes keep their overhead in the table.
    timed = dict(auto7, probe_overhead=0.1, probe_overhead_source="metrics")
    runner.append(out, timed)
    assert main(report_only, train_fn=boom) == 0
    row = _cells((out / "README.md").read_text(), "auto7")
    assert row[8] == "10.0%" and "probe overhead of 1 of 2 runs" in row[-1]

    # Missing runs are marked: drop one seed of cosine.
    cos = next(r for r in latest.values() if r["variant"] == "cosine" and r["seed"] == 1)
    kept = [x for x in before.splitlines() if json.loads(x)["key"] != cos["key"]]
    (out / "results.jsonl").write_text("\n".join(kept) + "\n")
    assert main(report_only, train_fn=boom) == 0
    row = _cells((out / "README.md").read_text(), "cosine")
    assert row[2] == "1/2" and "**incomplete** (1 missing)" in row[-1]


def _dry(out, data_file, capsys) -> str:
    capsys.readouterr()
    main(_argv(out, data_file, "--dry-run"), train_fn=None)
    return capsys.readouterr().out


def test_probe_decisions_counts_by_hand():
    factors = [2.0, 1.0, 0.5]
    probes = [
        {"multiplier": 0.8, "losses": [3.0, 1.0, 1.5]},  # best 1, lr down: against the best
        {"multiplier": 0.7, "losses": [3.0, 2.0, 1.0]},  # best 0.5 (the smallest), down
        {"multiplier": 1.3, "losses": [1.0, float("nan"), 2.0]},  # best 2, up; no L(1)
        {"multiplier": float("nan"), "losses": [1.0, 1.0, 1.0]},  # not a decision: skipped
        {"multiplier": 1.0, "losses": [float("inf")] * 3},  # every candidate diverged: skipped
        {"multiplier": 1.0, "losses": [1.0, 2.0]},  # wrong length: skipped
    ]
    assert report.probe_decisions(factors, probes) == {
        "probes": 3,
        "smallest_best": 1,
        "largest_best": 1,
        "down": 2,
        "best_ge1": 2,
        "best_ge1_down": 1,
        "gaps": [0.0, 1.0],
    }


def test_cell_formatters():
    assert report.pm()([0.40, 0.41]) == "40.5 ± 0.7"
    assert report.pm()([0.4, math.nan, None]) == "40.0"
    assert report.pm(1.0, 3)([]) == "–"
    assert report.lr_text([0.05, 0.05, math.nan]) == "0.05"
    assert report.fixed(1)([13.0, math.inf]) == "13.0"


def test_only_and_bad_arguments(tmp_path, data_file, no_plots):
    out = tmp_path / "only"
    fake = FakeTrain()
    assert main(_argv(out, data_file, "--only", "main:cosine,probe:train"), train_fn=fake) == 0
    assert sorted((c[3].schedule, c[3].auto.probe_source, c[3].seed) for c in fake.calls) == [
        ("auto", "train", 0),
        ("auto", "train", 1),
        ("cosine", "random", 0),
        ("cosine", "random", 1),
    ]
    readme = (out / "README.md").read_text()
    assert _cells(readme, "cosine")[2] == "2/2"
    assert "**incomplete** (2" in _cells(readme, "constant")[-1]
    with pytest.raises(SystemExit, match="no such GROUP:VARIANT"):
        main(_argv(out, data_file, "--only", "main:nope"), train_fn=fake)
    with pytest.raises(SystemExit, match="no field 'epoch'"):
        main(_argv(out, data_file, "--set", "epoch=3", "--dry-run"), train_fn=fake)
    with pytest.raises(SystemExit, match="unknown group"):
        main(_argv(out, data_file, "--groups", "main,nope", "--dry-run"), train_fn=fake)
    with pytest.raises(SystemExit, match="no preset"):
        main(["--protocol", "tpu-long", "--out", str(out), "--dry-run"], train_fn=fake)


def test_import_probes_only_from_exact_reruns(tmp_path, data_file, no_plots):
    out = tmp_path / "imp"
    fake = FakeTrain()  # its seed-0 auto runs keep probes, its seed-1 ones have none
    assert main(_argv(out, data_file, "--only", "main:auto3,main:auto5"), train_fn=fake) == 0
    latest = runner.read_results(out)
    s1 = {r["variant"]: r for r in latest.values() if r["seed"] == 1}
    assert all(r["probes"] is None for r in s1.values())
    before = {k: dict(r) for k, r in latest.items()}

    # A re-run dir: auto3 reproduced exactly (with probes), auto5 differs in one epoch.
    # config.json: the example's (flattened: auto.factors) for auto3, its former one for auto5.
    reruns = tmp_path / "reruns"
    for name, drift, factors in (("auto3", 0.0, FACTORS[3]), ("auto5", 0.01, FACTORS[5])):
        rec = s1[name]
        d = reruns / rec["key"]
        d.mkdir(parents=True)
        config = {"auto.factors": factors} if name == "auto3" else {"auto_factors": factors}
        (d / "config.json").write_text(json.dumps(config))
        history = [
            {"epoch": e + 1, "test_accuracy": a + (drift if e == 1 else 0.0),
             "probes": [{"step": 10 * e, "multiplier": 1.25, "losses": [1.0] * len(factors),
                         "scores": [1.0] * len(factors)}]}
            for e, a in enumerate(rec["test_accuracy"])
        ]  # fmt: skip
        history.insert(1, history[0])  # a resumed run repeats an epoch
        (d / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    assert runner._factors_of({"auto_factors": [2.0, 1.0]}) == [2.0, 1.0]

    imported, differed = runner.import_probes(out, reruns)
    assert imported == [s1["auto3"]["key"]] and differed == [s1["auto5"]["key"]]
    after = runner.read_results(out)
    got = after[s1["auto3"]["key"]]
    assert got["probes"] == [
        {"step": 10 * e, "multiplier": 1.25, "losses": [1.0, 1.0, 1.0]} for e in range(3)
    ]
    assert got["probe_factors"] == [2.0, 1.0, 0.5] and got["probes_source"] == "imported"
    # Nothing else moved: the other fields of that record, and every other record.
    extra = {"probes", "probe_factors", "probes_source"}
    assert {k: v for k, v in got.items() if k not in extra} == {
        k: v for k, v in before[got["key"]].items() if k not in extra
    }
    assert {k: r for k, r in after.items() if k != got["key"]} == {
        k: r for k, r in before.items() if k != got["key"]
    }
    # Through the command line: the report counts the imported run.
    assert main(_argv(out, data_file, "--import-probes", str(reruns)), train_fn=None) == 0
    section = _section((out / "README.md").read_text(), "What the probes decided")
    assert _cells(section, "main:auto3")[1:3] == ["2/2", "6"]
    commands = json.loads((out / "environment.json").read_text())["commands"]
    assert any(f"--import-probes {reruns}" in c for c in commands)


def _write_folder(root: Path) -> Path:
    from examples.cifar10 import input_pipeline

    return input_pipeline.write_synthetic_folder(root)


@pytest.mark.skipif(not IN_CI, reason="trains the real example (compilation: ~10 s); CI only")
def test_real_example_tiny(tmp_path):
    """Two real one-epoch runs on 40 generated images: it reads what the example writes."""
    for mod in ("flax", "orbax.checkpoint", "matplotlib", "PIL"):
        require(mod, "the CIFAR-10 example")
    folder = _write_folder(tmp_path / "data" / "cifar10")
    out = tmp_path / "real"
    argv = [
        "--protocol", "cpu", "--seeds", "0", "--data-dir", str(folder), "--out", str(out),
        "--only", "main:constant,main:auto3",
        "--set", "epochs=1", "--set", "model.width=0.0625", "--set", "model.stage_sizes=1,1",
        "--set", "data.train_subset=40", "--set", "batch_size=8", "--set", "eval_batch_size=16",
        "--set", "auto.probe_batch_size=8", "--set", "plots=false", "--keep-checkpoints",
    ]  # fmt: skip
    assert main(argv) == 0
    latest = runner.read_results(out)
    assert {r["variant"] for r in latest.values()} == {"constant", "auto3"}
    for rec in latest.values():
        assert rec["epochs"] == 1 and rec["steps_per_epoch"] == 5
        assert 0.0 <= rec["final_test_accuracy"] <= 1.0
        assert rec["lr_per_epoch"][0] == pytest.approx(0.05) or rec["schedule"] == "auto"
        assert rec["train_time_s"][0] > 0 and rec["wall_time_s"] > 0
        workdir = out / "runs" / rec["key"]
        assert (workdir / "metrics.jsonl").exists() and (workdir / runner.CHECKPOINTS).is_dir()
        config_json = json.loads((workdir / "config.json").read_text())
        assert runner._factors_of(config_json) == list(FACTORS[3])  # what --import-probes reads
    auto = next(r for r in latest.values() if r["schedule"] == "auto")
    assert auto["num_probes"] == 1 and len(auto["probes"]) == 1
    assert _cells((out / "README.md").read_text(), "auto3")[2] == "1/1"


def test_probe_records_keep_the_decision_level_and_loss0():
    logged = {"step": 0, "multiplier": 1.0, "losses": [1.0, 2.0], "decision": "guard",
              "level": 0.1, "loss0": 1.5, "lr": 0.08, "scores": [1.0, 0.5]}  # fmt: skip
    assert runner.probes_of([{"probes": [logged]}, {"probes": []}]) == [
        {k: logged[k] for k in ("step", "multiplier", "losses", "decision", "level", "loss0")}
    ]
