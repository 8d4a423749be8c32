"""The schedule-comparison benchmark's bookkeeping (benchmarks/compare_schedules.py).

Not the accuracies (that is the benchmark's job): the plan and its run keys,
resuming (finished runs are skipped, an interrupted run continues through the
example's ``resume``), failed runs are retried, the JSON schema of
``results.jsonl``, the Markdown table (n per row, incomplete rows marked),
``--report-only``, ``--only``/``--max-runs``/``--dry-run``. Most of it drives the
benchmark with a fake ``train_and_evaluate`` that writes a plausible metrics file
in milliseconds; one test runs the real example on a tiny generated image folder
to check that the benchmark reads what the example really writes.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# Module names the example puts on sys.modules (generic names: restored after this file).
_EXAMPLE_MODULES = ("input_pipeline", "models", "train", "main", "configs")

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
    "probe_overhead": (float, type(None)),
    "machine": str,
}


@pytest.fixture(scope="module")
def cs():
    """The benchmark module; sys.path and the example's generic module names restored after."""
    saved_path = list(sys.path)

    def ours(name):
        return name in _EXAMPLE_MODULES or name.startswith("configs.")

    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if ours(k)}
    sys.path.insert(0, str(BENCH))
    import compare_schedules

    yield compare_schedules
    for k in [k for k in sys.modules if ours(k)]:
        del sys.modules[k]
    sys.modules.update(saved)
    sys.path[:] = saved_path


class FakeTrain:
    """Stands in for ``train.train_and_evaluate``: metrics.jsonl and a 'checkpoint' per epoch."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.interrupt: tuple[str, int] | None = None  # (workdir name, after epoch)
        self.fail: set[str] = set()  # schedules that raise

    def __call__(self, config, workdir):
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        ckpt = workdir / "checkpoints" / "history.json"
        history = json.loads(ckpt.read_text()) if config.resume and ckpt.exists() else []
        self.calls.append((workdir.name, config.resume, len(history), config))
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
                if config.seed == 0:  # seed 1 stands for a run from before the probe timer
                    rec["probe_time_s"] = 0.12
                    # The factor-1 candidate is best, yet the lr goes down.
                    losses = [1.0 + abs(math.log(f)) for f in config.auto_factors]
                    rec["probes"] = [{"step": 10 * e, "multiplier": 0.8, "losses": losses}]
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
            "--set", "epochs=3", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "cifar10-fake.tar.gz"
    path.write_bytes(b"not really an archive")
    return path


def test_plan_keys_and_sharing(cs):
    configs = cs.load_configs()
    _, preset = cs.preset_config(configs, "cpu")
    runs = cs.plan("cpu", preset, cs.GROUPS, [0, 1], {"epochs": 3})
    keys = [r.key for r in runs]
    assert len(keys) == len(set(keys))
    labels = [(v.label, r.seed) for r in runs for v in r.variants]
    assert len(labels) == len(set(labels)) == 2 * (13 + 18 + 4 + 5)  # each variant once per seed
    # Every variant of every group has one run per seed.
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
    assert shared.diff["auto_factors"] == [8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125]
    assert shared.diff["epochs"] == 3
    # A key is a function of what the run computes: same inputs, same key; another seed or
    # another --set, another key.
    again = cs.plan("cpu", preset, ["main"], [0, 1], {"epochs": 3})
    assert {r.key for r in again} <= set(keys)
    other = cs.plan("cpu", preset, ["main"], [0], {"epochs": 4})
    assert not {r.key for r in other} & set(keys)
    # The run configurations are the preset plus the variant's fields: nothing else moves.
    wide = next(r for r in runs if "sensitivity:auto_wide@1" in [v.label for v in r.variants])
    assert min(wide.diff["auto_factors"]) == pytest.approx(1 / 64)
    assert set(wide.diff) == {"schedule", "auto_factors", "learning_rate", "epochs"}


def test_resume_schema_table_report_only(cs, tmp_path, data_file, capsys):
    out = tmp_path / "compare_cpu"
    fake = FakeTrain()

    # --dry-run: the plan, nothing trained.
    assert cs.main(_argv(out, data_file, "--dry-run"), train_fn=fake) == 0
    listing = capsys.readouterr().out
    assert fake.calls == []
    assert listing.count("pending") == 76 and "main:auto7,score:minmax_exp,probe:random" in listing

    # Interrupted in the 3rd run after its 2nd epoch (Ctrl-C stops the benchmark).
    configs = cs.load_configs()
    _, preset = cs.preset_config(configs, "cpu")
    runs = cs.plan("cpu", preset, cs.GROUPS, [0, 1], {"epochs": 3})
    order = sorted(runs, key=lambda r: r.seed)  # the benchmark runs seed 0 first
    fake.interrupt = (order[2].key, 2)
    with pytest.raises(KeyboardInterrupt):
        cs.main(_argv(out, data_file, "--max-runs", "5"), train_fn=fake)
    assert [json.loads(x)["key"] for x in (out / "results.jsonl").read_text().splitlines()] == [
        order[0].key,
        order[1].key,
    ]
    assert "partial" in _dry(cs, out, data_file, capsys)

    # Restart: the two finished runs are skipped, the third resumes from its checkpoint.
    fake.calls.clear()
    fake.fail = {"dog"}
    assert cs.main(_argv(out, data_file, "--max-runs", "3"), train_fn=fake) == 0
    assert [(c[0], c[1], c[2]) for c in fake.calls] == [
        (order[2].key, True, 2),
        (order[3].key, True, 0),
        (order[4].key, True, 0),
    ]
    lines = _lines(out)
    assert len(lines) == 5 and lines[2]["resumed"] is True and lines[3]["resumed"] is False

    # All the rest; 'dog' fails (recorded, not fatal) and is retried next time.
    fake.calls.clear()
    assert cs.main(_argv(out, data_file), train_fn=fake) == 0
    assert len(fake.calls) == 71
    errors = [r for r in _lines(out) if r["status"] == "error"]
    assert {r["variant"] for r in errors} == {"dog"} and "no dog today" in errors[0]["error"]
    assert "failed" in (out / "README.md").read_text()
    fake.calls.clear()
    fake.fail = set()
    assert cs.main(_argv(out, data_file), train_fn=fake) == 0
    assert sorted(c[0] for c in fake.calls) == sorted(r["key"] for r in errors)

    # Nothing left: a further invocation trains nothing.
    fake.calls.clear()
    before = (out / "results.jsonl").read_text()
    assert cs.main(_argv(out, data_file), train_fn=fake) == 0
    assert fake.calls == [] and (out / "results.jsonl").read_text() == before

    # The JSON schema: one strict-JSON line per run (plus the failed attempts).
    latest = cs.read_results(out)
    assert set(latest) == {r.key for r in runs}
    for line in (out / "results.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    for rec in latest.values():
        for field, types in REQUIRED.items():
            assert isinstance(rec[field], types), (field, rec[field])
        assert rec["status"] in cs.STATUSES
        assert len(rec["test_accuracy"]) == len(rec["lr_per_epoch"]) == rec["epochs"] == 3
        assert rec["best_test_accuracy"] == max(rec["test_accuracy"])
        assert rec["final_test_accuracy"] == rec["test_accuracy"][-1]
        assert rec["protocol"] == "cpu" and rec["key"].startswith("cpu.")
        assert not (out / "runs" / rec["key"] / "checkpoints").exists()
    div = {r["variant"] for r in latest.values() if r["status"] == "diverged"}
    assert div == {"constant@1"}  # NaN losses in the fake; null in the JSON
    assert all(
        r["final_train_loss"] is None for r in latest.values() if r["variant"] == "constant@1"
    )

    # The table: every variant a row with n = 2/2, mean ± std, the shared runs named.
    readme = (out / "README.md").read_text()
    assert "**incomplete** (" not in readme
    row = _row(readme, "auto7")
    assert "| 2/2 |" in row and "40.5 ± 0.7" in row  # final acc 0.40/0.41: fake's seeds 0, 1
    assert "score:minmax_exp" in row and "probe:random" in row
    # Probe overhead: probe time / training time (0.12 / 1.2) where the run measured it.
    assert "| 10.0% |" in row and "probe overhead of 1 of 2 runs" in row
    # The probes of the runs that kept them (seed 0 here): 3 probes, best = 1, lr down.
    probe_rows = [x for x in readme.split("## What the probes decided")[1].splitlines()
                  if x.startswith("| `main:auto7`")]  # fmt: skip
    assert probe_rows == [
        "| `main:auto7`, `score:minmax_exp`, `probe:random` | 1/2 | 3 | 0% | 0% | 100% | 3 of 3 "
        "| 0.0000 |"
    ]
    sens = "## What the probes decided" + readme.split("## What the probes decided")[1]
    assert "\n| `sensitivity:auto7@1` | 1/2 | 3 |" in sens  # every group's automated runs
    auto7 = next(r for r in latest.values() if r["variant"] == "auto7" and r["seed"] == 0)
    assert auto7["probe_factors"] == [8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125]
    assert [p["step"] for p in auto7["probes"]] == [0, 10, 20]
    assert all(
        r["probes"] is None for r in latest.values() if r["seed"] == 1 or r["schedule"] != "auto"
    )
    assert "2 diverged" in _row(readme, "constant@1")
    assert "2 at chance" in _row(readme, "constant@0.0001")
    assert {r["status"] for r in latest.values() if r["variant"] == "constant@0.0001"} == {
        "at_chance"
    }
    # A record written when both were "diverged" is told apart by its losses.
    old = dict(next(r for r in latest.values() if r["variant"] == "constant@0.0001"))
    old["status"] = "diverged"
    assert cs.outcome(old) == "at_chance"
    assert "| spread |" in readme and "Best constant learning rate" in readme
    assert data_file.name in readme
    env = json.loads((out / "environment.json").read_text())
    assert len(env["machines"]) == 1 and env["machines"][0]["versions"]["jax"]
    assert env["machines"][0]["cpu_model"] in readme
    assert any("--protocol cpu" in c for c in env["commands"])
    data = json.loads((out / "data.json").read_text())
    assert data["sha256"] == __import__("hashlib").sha256(data_file.read_bytes()).hexdigest()
    assert data["train_subset"] == 10_000
    for png in ("test_accuracy.png", "lr.png"):
        assert (out / "plots" / png).stat().st_size > 10_000

    # --report-only rewrites the same report from results.jsonl, training nothing.
    (out / "README.md").unlink()
    for p in (out / "plots").iterdir():
        p.unlink()

    def boom(config, workdir):
        raise AssertionError("--report-only must not train")

    assert cs.main(["--protocol", "cpu", "--out", str(out), "--report-only"], train_fn=boom) == 0
    assert (out / "README.md").read_text() == readme
    assert (out / "plots" / "lr.png").exists()

    # Missing runs are marked: drop one seed of cosine.
    cos = next(r for r in latest.values() if r["variant"] == "cosine" and r["seed"] == 1)
    kept = [x for x in before.splitlines() if json.loads(x)["key"] != cos["key"]]
    (out / "results.jsonl").write_text("\n".join(kept) + "\n")
    assert cs.main(["--protocol", "cpu", "--out", str(out), "--report-only"], train_fn=boom) == 0
    row = _row((out / "README.md").read_text(), "cosine")
    assert "| 1/2 |" in row and "**incomplete** (1 missing)" in row


def _dry(cs, out, data_file, capsys) -> str:
    capsys.readouterr()
    cs.main(_argv(out, data_file, "--dry-run"), train_fn=None)
    return capsys.readouterr().out


def test_probe_decisions_counts_by_hand(cs):
    factors = [2.0, 1.0, 0.5]
    probes = [
        {"multiplier": 0.8, "losses": [3.0, 1.0, 1.5]},  # best 1, lr down: against the best
        {"multiplier": 0.7, "losses": [3.0, 2.0, 1.0]},  # best 0.5 (the smallest), down
        {"multiplier": 1.3, "losses": [1.0, float("nan"), 2.0]},  # best 2, up; no L(1)
        {"multiplier": float("nan"), "losses": [1.0, 1.0, 1.0]},  # not a decision: skipped
        {"multiplier": 1.0, "losses": [float("inf")] * 3},  # every candidate diverged: skipped
        {"multiplier": 1.0, "losses": [1.0, 2.0]},  # wrong length: skipped
    ]
    got = cs.probe_decisions(factors, probes)
    assert got == {
        "probes": 3,
        "smallest_best": 1,
        "largest_best": 1,
        "down": 2,
        "best_ge1": 2,
        "best_ge1_down": 1,
        "gaps": [0.0, 1.0],
    }


def _row(readme: str, variant: str) -> str:
    rows = [x for x in readme.splitlines() if x.startswith(f"| `{variant}` |")]
    assert rows, variant
    return rows[0]


def test_only_and_bad_arguments(cs, tmp_path, data_file):
    out = tmp_path / "only"
    fake = FakeTrain()
    assert cs.main(_argv(out, data_file, "--only", "main:cosine,probe:train"), train_fn=fake) == 0
    assert sorted((c[3].schedule, c[3].probe_source, c[3].seed) for c in fake.calls) == [
        ("auto", "train", 0),
        ("auto", "train", 1),
        ("cosine", "random", 0),
        ("cosine", "random", 1),
    ]
    readme = (out / "README.md").read_text()
    assert "| 2/2 |" in _row(readme, "cosine") and "**incomplete** (2" in _row(readme, "constant")
    with pytest.raises(SystemExit, match="no such GROUP:VARIANT"):
        cs.main(_argv(out, data_file, "--only", "main:nope"), train_fn=fake)
    with pytest.raises(SystemExit, match="no field 'epoch'"):
        cs.main(_argv(out, data_file, "--set", "epoch=3", "--dry-run"), train_fn=fake)
    with pytest.raises(SystemExit, match="unknown group"):
        cs.main(_argv(out, data_file, "--groups", "main,nope", "--dry-run"), train_fn=fake)
    with pytest.raises(SystemExit, match="no preset"):
        cs.main(["--protocol", "tpu-long", "--out", str(out), "--dry-run"], train_fn=fake)


def test_import_probes_only_from_exact_reruns(cs, tmp_path, data_file):
    out = tmp_path / "imp"
    fake = FakeTrain()  # its seed-0 auto runs keep probes, its seed-1 ones have none
    argv = _argv(out, data_file, "--only", "main:auto3,main:auto5")
    assert cs.main(argv, train_fn=fake) == 0
    latest = cs.read_results(out)
    s1 = {r["variant"]: r for r in latest.values() if r["seed"] == 1}
    assert all(r["probes"] is None for r in s1.values())
    before = {k: dict(r) for k, r in latest.items()}

    # A re-run dir: auto3 reproduced exactly (with probes), auto5 differs in one epoch.
    reruns = tmp_path / "reruns"
    for name, drift in (("auto3", 0.0), ("auto5", 0.01)):
        rec = s1[name]
        d = reruns / rec["key"]
        d.mkdir(parents=True)
        factors = [2.0, 1.0, 0.5] if name == "auto3" else [4.0, 2.0, 1.0, 0.5, 0.125]
        (d / "config.json").write_text(json.dumps({"auto_factors": factors}))
        history = [
            {"epoch": e + 1, "test_accuracy": a + (drift if e == 1 else 0.0),
             "probes": [{"step": 10 * e, "multiplier": 1.25, "losses": [1.0] * len(factors),
                         "scores": [1.0] * len(factors)}]}
            for e, a in enumerate(rec["test_accuracy"])
        ]  # fmt: skip
        history.insert(1, history[0])  # a resumed run repeats an epoch
        (d / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))

    imported, differed = cs.import_probes(out, reruns)
    assert imported == [s1["auto3"]["key"]] and differed == [s1["auto5"]["key"]]
    after = cs.read_results(out)
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
    assert cs.main(_argv(out, data_file, "--import-probes", str(reruns)), train_fn=None) == 0
    section = (out / "README.md").read_text().split("## What the probes decided")[1]
    row = next(x for x in section.splitlines() if x.startswith("| `main:auto3`"))
    assert row.startswith("| `main:auto3` | 2/2 | 6 |")
    commands = json.loads((out / "environment.json").read_text())["commands"]
    assert any(f"--import-probes {reruns}" in c for c in commands)


def test_every_variant_is_a_valid_example_config(cs):
    # The score and look-ahead variants go through the example's own flags (no shim):
    # each variant's configuration passes the example's validation.
    configs = cs.load_configs()
    _, preset = cs.preset_config(configs, "cpu")
    train = sys.modules.get("train") or __import__("train")
    runs = cs.plan("cpu", preset, cs.GROUPS, [0], {})
    scores = set()
    for r in runs:
        config = cs.build_config(preset, r.variants[0].overrides, {})
        train._check_config(config)
        scores.add(config.auto_score)
    assert {"softmax:0.25", "rank_exp", "softmax"} <= scores
    look = [r for r in runs if "probe:random+lookahead10" in [v.label for v in r.variants]]
    assert len(look) == 1 and look[0].diff["auto_lookahead"] == cs.LOOKAHEAD
    big = [r for r in runs if "probe:random+batch256" in [v.label for v in r.variants]]
    assert len(big) == 1 and big[0].diff["probe_batch_size"] == cs.BIG_PROBE_BATCH == 256
    big_config = cs.build_config(preset, big[0].variants[0].overrides, {})
    assert big_config.probe_source == "random" and big_config.auto_lookahead == 1
    ranked = [r for r in runs if "probe:random+batch256+rank_exp" in [v.label for v in r.variants]]
    assert len(ranked) == 1 and ranked[0].diff["auto_score"] == "rank_exp"
    assert ranked[0].diff["probe_batch_size"] == 256


def _write_folder(root: Path, n_train: int = 4, n_test: int = 2) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, cls in enumerate(CLASSES):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 128, (32, 32, 3)) + 12 * c
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i:04d}.png")
    return root


def test_real_example_tiny(cs, tmp_path):
    """Two real one-epoch runs on 40 generated images: it reads what the example writes."""
    for mod in ("flax", "orbax.checkpoint", "tqdm", "matplotlib", "PIL"):
        require(mod, "the CIFAR-10 example")
    folder = _write_folder(tmp_path / "data" / "cifar10")
    out = tmp_path / "real"
    argv = [
        "--protocol", "cpu", "--seeds", "0", "--data-dir", str(folder), "--out", str(out),
        "--only", "main:constant,main:auto3",
        "--set", "epochs=1", "--set", "width=0.0625", "--set", "stage_sizes=1,1,1,1",
        "--set", "train_subset=none", "--set", "batch_size=8", "--set", "eval_batch_size=16",
        "--set", "probe_batch_size=8", "--set", "plots=false",
    ]  # fmt: skip
    assert cs.main(argv) == 0
    latest = cs.read_results(out)
    assert {r["variant"] for r in latest.values()} == {"constant", "auto3"}
    for rec in latest.values():
        assert rec["epochs"] == 1 and rec["steps_per_epoch"] == 5
        assert 0.0 <= rec["final_test_accuracy"] <= 1.0
        assert rec["lr_per_epoch"][0] == pytest.approx(0.05) or rec["schedule"] == "auto"
        assert rec["train_time_s"][0] > 0 and rec["wall_time_s"] > 0
        assert (out / "runs" / rec["key"] / "metrics.jsonl").exists()
    auto = next(r for r in latest.values() if r["schedule"] == "auto")
    assert auto["num_probes"] == 1
    assert "| 1/1 |" in _row((out / "README.md").read_text(), "auto3")
