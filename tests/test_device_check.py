"""The prepared GPU check runs end to end on CPU (``--smoke``) and writes what it promises.

The smoke run is the device command's own code path at tiny sizes: stage 1 measures a
narrow ResNet's forward, train step and probe strategies; stage 2 trains the example
(``examples.cifar10.train.train_and_evaluate``) for one epoch per schedule on an image
folder the smoke mode writes itself. The other tests drive stage 2 with a fake training
function, to check the time budget and the failure records without training.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from benchmarks import device_check as dc
from examples.cifar10.input_pipeline import CLASS_NAMES

ROOT = Path(__file__).resolve().parent.parent
STRATEGIES = ("map", "map_chunk2", "vmap")


# One real run (the library default): the pipeline is the same for every schedule
# (test_stage2_with_a_fake_trainer covers the full list in order); each real run costs
# seconds of CI.
SMOKE_SCHEDULES = ("auto",)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("device_check")
    returned = dc.main(["--smoke", "--out", str(out), "--schedules", ",".join(SMOKE_SCHEDULES)])
    return out, returned


def _rows(md: str) -> list[list[str]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:]]  # no header


def test_smoke_json(smoke):
    out, returned = smoke
    data = json.loads((out / "device_check.json").read_text())
    assert data == returned
    assert data["schema"] == dc.SCHEMA and data["smoke"] is True
    m = data["machine"]
    for key in ("devices", "platform", "device_kind", "cpu_model", "python", "date", "command"):
        assert m[key], key
    for lib in ("jax", "jaxlib", "flax", "optax"):
        assert m["versions"][lib], lib
    assert m["device_memory_bytes"] is None  # CPU keeps no memory statistics
    host = socket.gethostname()
    if len(host) >= 6:
        assert host not in json.dumps(data)

    s1 = data["stage1"]
    assert s1["model"]["width"] == dc.SMOKE_WIDTH
    assert [(c["batch"], c["factors"]) for c in s1["cases"]] == [(4, 3), (4, 7)]
    for c in s1["cases"]:
        assert c["forward"]["median_s"] > 0 and c["train_step"]["median_s"] > 0
        assert set(c["probes"]) == set(STRATEGIES)
        for label, p in c["probes"].items():
            assert "skipped" not in p, label
            assert math.isfinite(p["probe_s"]), label
            assert p["peak_extra_bytes"] is None  # CPU: no memory_stats
            assert p["extra_temp_bytes"] >= 0
            assert p["epoch_fraction"] == pytest.approx(
                p["probe_s"] / (c["epoch_steps"] * c["train_step"]["median_s"])
            )
        assert c["probes"]["map_chunk2"]["chunk_size"] == 2
        assert c["fastest"] == min(c["probes"], key=lambda k: c["probes"][k]["probe_s"])
        assert c["epoch_steps"] == math.ceil(50_000 / 4)

    s2 = data["stage2"]
    assert [r["schedule"] for r in s2["runs"]] == list(SMOKE_SCHEDULES)
    for r in s2["runs"]:
        assert "skipped" not in r and "error" not in r, r
        assert r["epochs"] == 1 and len(r["records"]) == 1
        assert 0.0 <= r["final_test_accuracy"] <= 1.0
        assert r["run_s"] > 0 and r["steps_per_s"] > 0
    assert data["total_s"] < 120


def test_smoke_table(smoke, capsys):
    out, _ = smoke
    md = (out / "device_check.md").read_text()
    assert "Device check (smoke" in md and "platform `cpu`" in md
    rows = _rows(md)
    assert {len(r) for r in rows} == {4}
    cells = {(r[0], r[1], r[2]) for r in rows}
    for n in (3, 7):
        case = f"batch 4, N = {n}"
        for what in ("forward (loss)", "train step (plain SGD)", "fastest strategy"):
            assert ("1 probe", case, what) in cells, (case, what)
        for s in STRATEGIES:
            assert ("1 probe", case, f"probe, {s}") in cells, (case, s)
    for s in SMOKE_SCHEDULES:
        case = f"gpu-short, {s}"
        for what in ("test accuracy after 1 epochs", "final learning rate", "time"):
            assert ("2 train", case, what) in cells, (case, what)
    assert not [r for r in rows if r[3].startswith(("skipped", "failed"))]


def test_smoke_data_is_the_example_format(smoke):
    out, _ = smoke
    root = out / "smoke_data"
    for split, n in (("train", 4), ("test", 2)):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(CLASS_NAMES)
        assert sorted(p.name for p in (root / split / "cat").iterdir()) == [
            f"{i:04d}.{'png' if i % 2 == 0 else 'jpg'}" for i in range(n)
        ]
    from examples.cifar10 import input_pipeline

    ds = input_pipeline.load_image_folder(root, cache_dir=str(out / "cache"))
    assert ds.train.images.shape == (40, 32, 32, 3) and len(ds.test) == 20


def test_a_second_check_into_the_same_out_replaces_its_runs(smoke, tmp_path):
    # The example refuses a workdir that holds a run unless told to overwrite it: the runs
    # in <out>/smoke_runs/<schedule> of an earlier check must not make this one fail.
    out = tmp_path / "out"
    shutil.copytree(smoke[0], out)
    argv = ["--smoke", "--stages", "2", "--out", str(out), "--schedules", ",".join(SMOKE_SCHEDULES)]
    runs = dc.main(argv)["stage2"]["runs"]
    assert [r["schedule"] for r in runs] == list(SMOKE_SCHEDULES)
    for r in runs:
        assert "error" not in r and "skipped" not in r, r
        metrics = (out / "smoke_runs" / r["schedule"] / "metrics.jsonl").read_text()
        assert len(metrics.splitlines()) == 1  # replaced, not appended to


def _fake_records(epochs: int = 2):
    return [
        {
            "epoch": e,
            "test_accuracy": 0.1 * e,
            "test_loss": 2.0,
            "train_loss": 2.1,
            "lr": 0.1,
            "epoch_time_s": 1.0,
            "train_time_s": float(e),
            "wall_time_s": 2.0 * e,
            "steps_per_s": 10.0 * e,
        }
        for e in range(1, epochs + 1)
    ]


def test_stage2_with_a_fake_trainer(tmp_path):
    seen, seen_rules = [], []

    def train(config, workdir):
        seen.append((config.schedule, config.data.data_dir, config.progress, config.plots))
        seen_rules.append(config.auto.rule)
        assert not config.checkpoint and config.epochs == 1
        if config.schedule == "cosine":
            raise RuntimeError("boom")
        return _fake_records()

    data = dc.main(["--smoke", "--stages", "2", "--out", str(tmp_path)], train_fn=train)
    # auto-seed runs the example's auto with Algorithm 1's settings
    want = [s.replace("auto-seed", "auto") for s in dc.SCHEDULES]
    assert [s[0] for s in seen] == want
    assert seen_rules[list(dc.SCHEDULES).index("auto-seed")] == "seed"
    assert seen_rules[list(dc.SCHEDULES).index("auto")] == "armijo"
    assert {s[1] for s in seen} == {str(tmp_path / "smoke_data")}
    assert all(s[2] is False and s[3] is False for s in seen)
    runs = {r["schedule"]: r for r in data["stage2"]["runs"]}
    assert runs["cosine"]["error"] == "RuntimeError: boom"
    assert runs["auto"]["final_test_accuracy"] == pytest.approx(0.2)
    assert runs["auto"]["steps_per_s"] == 20.0  # the epochs after the first
    assert data["stage1"] == {"not_run": "not in --stages"}
    rows = _rows((tmp_path / "device_check.md").read_text())
    assert ["2 train", "gpu-short, cosine", "run", "failed: RuntimeError: boom"] in rows
    assert ["1 probe", "—", "stage", "not run (not in --stages)"] in rows


def test_stage2_stops_before_its_budget(tmp_path, monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr(dc, "_now", lambda: clock["t"])

    def train(config, workdir):
        clock["t"] += 40.0  # each run takes 40 s of the 100 s budget
        return _fake_records(1)

    argv = ["--smoke", "--stages", "2", "--stage2-budget", "100", "--out", str(tmp_path)]
    data = dc.main(argv, train_fn=train)
    runs = data["stage2"]["runs"]
    # 1st run: guess 8 s fits; 2nd: 1.5 x 40 = 60 s fits in 60 s left; 3rd: 60 > 20 left.
    assert [("skipped" in r) for r in runs] == [False, False, True, True, True]
    assert runs[2]["skipped"].startswith("time budget: 20 s left of 100")
    saved = json.loads((tmp_path / "device_check.json").read_text())
    assert saved["stage2"]["runs"][2]["schedule"] == dc.SCHEDULES[2]


def test_missing_data_is_recorded(tmp_path):
    argv = ["--stages", "2", "--data-dir", str(tmp_path / "nope.tar.gz"), "--out", str(tmp_path)]
    data = dc.main(argv, train_fn=lambda c, w: pytest.fail("must not train"))
    assert data["stage2"]["not_run"].startswith("no data at")


def test_clock_and_estimates(monkeypatch):
    t = {"now": 100.0}
    monkeypatch.setattr(dc, "_now", lambda: t["now"])
    clock, est = dc.Clock(50.0), dc.Estimates({"probe": 10.0})
    assert est("probe") == 10.0 and clock.skip_reason(10.0) is None
    est.record("probe", 20.0)
    est.record("probe", 5.0)
    assert est("probe") == 30.0  # 1.5 x the longest seen
    t["now"] += 30.0
    assert clock.skip_reason(est("probe")) == "time budget: 20 s left of 50, needs ~30 s"


def test_config_overrides():
    pytest.importorskip("ml_collections")
    c = dc.make_config("auto", "/data/x.tar.gz", smoke=False)
    assert (c.schedule, c.data.data_dir, c.epochs, c.batch_size) == (
        "auto",
        "/data/x.tar.gz",
        10,
        128,
    )
    assert (c.progress, c.plots, c.checkpoint) == (False, False, False)
    s = dc.make_config("cosine", "/d", smoke=True)
    assert (s.epochs, s.model.width, s.data.train_subset) == (1, dc.SMOKE_WIDTH, None)


def test_install_wheels(tmp_path, monkeypatch):
    # A wheel of a distribution that is not installed is installed into `target` and
    # becomes importable; one that is installed is left alone.
    name = "device_check_dummy_pkg"
    wheel = tmp_path / "wheels" / f"{name}-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(f"{name}/__init__.py", "VALUE = 42\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        z.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr(f"{info}/RECORD", "")
    (tmp_path / "wheels" / "optax-0.0.1-py3-none-any.whl").write_bytes(b"not used")
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert dc.install_wheels(wheel.parent, target=tmp_path / "site") == [wheel.name]
    mod = __import__(name)
    assert mod.VALUE == 42
    assert dc.install_wheels(tmp_path / "empty") == []


def test_runs_as_a_module_from_the_repository_root():
    cmd = [sys.executable, "-m", "benchmarks.device_check", "--help"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--smoke" in r.stdout and "--wheels" in r.stdout


def test_bad_arguments():
    for argv in (["--stages", "3"], ["--chunk", "1"], ["--factors", "1"], ["--batches", "0"]):
        with pytest.raises(SystemExit):
            dc.parse_args([*argv, "--out", "x"])
    with pytest.raises(SystemExit):
        dc.parse_args([])  # --out is required
