"""The task suite (benchmarks/suite): plan, a quick run, resume and report; the LM task's parts."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

pytest.importorskip("sklearn")

from benchmarks.suite import __main__ as suite  # noqa: E402
from benchmarks.suite import plan as plan_mod  # noqa: E402
from benchmarks.suite import tasks  # noqa: E402


def test_plan_declares_every_row_and_seed(capsys):
    assert suite.main(["plan"]) == 0
    out = capsys.readouterr().out
    for row in ("constant", "cosine", "wsd", "prodigy", "schedule_free", "dog", "auto-default",
                "seed", "lrfind-wsd-valley", "lrfind-auto"):  # fmt: skip
        assert f" {row} " in out
    for name in tasks.TASKS:
        assert name in out
    assert plan_mod.seeds_for("digits") == (0, 1, 2, 3, 4)
    assert len(plan_mod.seeds_for("bytelm")) >= 3
    # Every fixed grid steps by half decades; every auto row has five starts over four decades.
    for task in tasks.TASKS.values():
        np.testing.assert_allclose(np.diff(np.log10(task.grid)), 0.5, rtol=1e-9)
        assert len(task.starts) == 5 and task.starts[-1] / task.starts[0] == pytest.approx(1e4)


def test_quick_run_resumes_and_reports(tmp_path):
    argv = ["--quick", "--tasks", "digits", "--out", str(tmp_path)]
    assert suite.main(argv) == 0
    rows = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == {"wsd", "auto-default", "lrfind-wsd-valley"}
    auto = [r for r in rows if r["method"] == "auto-default"]
    assert len(auto) == 2 and all(r["level_before_cooldown"] > 0 for r in auto)
    found = next(r for r in rows if r["method"] == "lrfind-wsd-valley")
    assert found["lr"] == found["lr_find"]["suggestion"] > 0
    # A second run finds every run recorded and adds none.
    assert suite.main(argv) == 0
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == len(rows)
    report = (tmp_path / "report.md").read_text()
    assert "## digits" in report and "wsd (tuned)" in report and "ddof = 1" in report
    assert (tmp_path / "digits.png").exists()
    env = json.loads((tmp_path / "environment.json").read_text())
    assert env["versions"]["jax"]


def test_unknown_task_is_refused(capsys):
    with pytest.raises(SystemExit):
        suite.main(["plan", "--tasks", "digits,nope"])
    assert "unknown task" in capsys.readouterr().err


def test_grid_grows_until_the_best_rate_is_interior(tmp_path):
    from benchmarks.suite.runner import Records, sweep

    task = tasks.TASKS["digits"]
    ran = []

    def fake_run_one(task, method, lr, seed):
        ran.append(lr)
        # The best rate is 10 ** -1.5 (beyond the grid's top, 10 ** -2): two half decades.
        return {"task": task.name, "method": method.name, "lr": lr, "seed": seed,
                "val": {task.metric: (np.log10(lr) + 1.5) ** 2}, "wall_s": 0.0}  # fmt: skip

    import benchmarks.suite.runner as runner

    original = runner.run_one
    runner.run_one = fake_run_one
    try:
        sweep(task, plan_mod.FIXED[0], (0,), Records(tmp_path / "r.jsonl"), (1e-3, 1e-2), True,
              log=lambda *_: None)  # fmt: skip
    finally:
        runner.run_one = original
    np.testing.assert_allclose(sorted(ran), [1e-3, 1e-2, 10**-1.5, 1e-1], rtol=1e-9)


def test_english_corpus_is_prose_and_the_lm_trains():
    text = tasks.english_corpus()
    assert len(text) > 100_000
    sample = text[:20_000].decode()
    assert sample.count(" the ") > 50 and ">>>" not in sample and "def " not in sample[:2000]
    task = tasks.TASKS["bytelm"]
    data = task.load()
    assert data.train[0].shape[1:] == (tasks.CTX,) and data.val[0].shape == (512, tasks.CTX)
    np.testing.assert_array_equal(data.train[0][:, 1:], data.train[1][:, :-1])  # next byte
    params = task.init(jax.random.key(0))
    bpb0 = float(task.evaluate(params, *data.val)["bpb"])
    assert 7.0 < bpb0 < 10.0  # about log2(256) = 8 at initialisation


def test_cifar_cnn_and_balanced_subsets():
    params = tasks._cnn_init(jax.random.key(0))
    logits = tasks._cnn(params, np.zeros((2, 32, 32, 3), np.float32))
    assert logits.shape == (2, 10)
    labels = np.repeat(np.arange(10), 50)
    idx = tasks._balanced(labels, 100, np.random.default_rng(0))
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=10), np.full(10, 10))
    assert len(set(idx.tolist())) == 100
    for name in ("cifar-sgd", "cifar-momentum"):
        assert not tasks.TASKS[name].scan  # convolutions: a Python loop, not lax.scan


def test_cost_summary_splits_probe_updates_from_the_rest():
    from benchmarks.suite import cost

    record = {"auto_times": [2.0, 1.0, 1.0, 3.0, 1.2], "wsd_times": [1.0] * 5,
              "probe_steps": [0, 3]}  # fmt: skip
    s = cost.summary(record)
    assert s["auto_s"] == pytest.approx(8.2) and s["wsd_s"] == pytest.approx(5.0)
    assert s["overhead"] == pytest.approx(8.2 / 5 - 1)
    assert s["probes"] == 2
    assert s["probe_share"] == pytest.approx((1.0 + 2.0) / 5)  # beyond the regular median 1.0
    assert s["per_update"] == pytest.approx(0.0)


def test_cost_measures_both_runs_interleaved_on_the_same_batches(tmp_path):
    from benchmarks.suite import cost

    assert cost.main(["--tasks", "digits", "--steps", "9", "--out", str(tmp_path)]) == 0
    (record,) = [json.loads(line) for line in (tmp_path / "cost.jsonl").open()]
    assert len(record["auto_times"]) == len(record["wsd_times"]) == 9
    every = tasks.TASKS["digits"].every
    assert record["probe_steps"] == list(range(0, 9, every))
    assert record["machine"]["cpu_model"]


def test_step_ratio_prints_the_applied_against_the_twin_length(capsys):
    from benchmarks.suite import step_ratio

    assert step_ratio.main(["--task", "digits", "--lr", "0.001", "--steps", "12"]) == 0
    lines = capsys.readouterr().out.splitlines()
    every = tasks.TASKS["digits"].every
    printed = [int(line.split("update ")[1].split(":")[0]) for line in lines]
    assert printed == sorted({*range(0, 12, every), 11})  # every probe's update and the last
    ratios = [float(line.split("|u|/|u_twin| ")[1].split()[0]) for line in lines]
    # Adam's bias-corrected first step is the twin's (b1 = 0) step: ratio 1; then shorter.
    assert ratios[0] == pytest.approx(1.0, abs=1e-3) and all(0 < r <= 1.0 + 1e-3 for r in ratios)
    with pytest.raises(SystemExit):  # no momentum, no twin
        step_ratio.main(["--task", "cifar-sgd", "--lr", "0.01"])
