"""The CIFAR-10 example (examples/cifar10) end to end.

Every ``--schedule`` trains a few short epochs on a tiny image folder written by
the test, and the logged learning rate is checked against the library's schedule
(or an independent oracle for plateau and auto, the beam rule for alr, each
method's own step-size rule for the learning-rate-free optimizers); resume
equals an uninterrupted run (auto, and alr with a beam that changes size); bad
data sources give clear errors; the tfds path (mocked: no download) goes through
the same array loader as the image folder. Under CI=true, one short run of the
``cpu`` preset on the real CIFAR-10 copy in ``../shared/data``.

The models are tiny (width 1/16, one block per stage), so the time goes to
compilation: the fixed schedules share one test to share compiled pieces where
possible; the whole file takes about 2-3 minutes on 2 cores.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import subprocess
import sys
import tarfile
import time
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import IN_CI, require

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cifar10"
REAL_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
_MODULES = ("input_pipeline", "models", "train", "main", "configs")


@pytest.fixture(scope="module")
def ex():
    """The example's modules, imported without leaving their generic names in sys.modules."""
    for mod, why in (
        ("flax", "the example's model"),
        ("orbax.checkpoint", "the example's checkpoints"),
        ("tqdm", "the example's progress bar"),
        ("matplotlib", "the example's plots"),
        ("PIL", "decoding the image folder"),
    ):
        require(mod, why)

    def ours(name):
        return name in _MODULES or name.startswith("configs.")

    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if ours(k)}
    path = str(EXAMPLE)
    sys.path.insert(0, path)
    try:
        mods = {name: importlib.import_module(name) for name in _MODULES}
    finally:
        while path in sys.path:
            sys.path.remove(path)
        for k in [k for k in sys.modules if ours(k)]:
            del sys.modules[k]
        sys.modules.update(saved)
    return types.SimpleNamespace(**mods)


def _write_folder(root: Path, n_train: int = 4, n_test: int = 2, size: int = 32) -> Path:
    """A CIFAR-10-shaped image folder with random PNG and JPEG images; returns ``root``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, cls in enumerate(CLASSES):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                # A class-dependent tint, so the labels are learnable at all.
                img = rng.integers(0, 128, (size, size, 3)) + 12 * c
                ext = "png" if i % 2 == 0 else "jpg"
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i:04d}.{ext}")
    return root


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    # 40 train / 20 test images; an extra top-level folder, as in the shared archive.
    return _write_folder(tmp_path_factory.mktemp("data") / "cifar10")


def tiny_config(ex, data_dir, **overrides):
    config = ex.configs.get_config("cpu")
    config.data_dir = str(data_dir)
    config.width = 0.0625
    config.stage_sizes = (1, 1, 1, 1)
    config.train_subset = None
    config.batch_size = 8  # 5 updates per epoch
    config.eval_batch_size = 16  # the last test batch is padded
    config.epochs = 3
    config.learning_rate = 0.05
    config.progress = False
    config.probe_batch_size = 8
    for k, v in overrides.items():
        setattr(config, k, v)
    return config


def read_metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def check_outputs(workdir: Path, history: list[dict], epochs: int) -> None:
    records = read_metrics(workdir)
    assert records == history
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))
    for r in records:
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr",
                    "wall_time_s", "epoch_time_s", "steps_per_s"):  # fmt: skip
            assert math.isfinite(r[key]), (key, r)
        assert 0.0 <= r["test_accuracy"] <= 1.0
    for name in ("lr.png", "train_loss.png", "test_accuracy.png"):
        png = (workdir / "plots" / name).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000, name
    assert (workdir / "checkpoints" / str(epochs)).is_dir()


# --------------------------------------------------------------------------------------
# Every schedule: the logged learning rate follows the library's schedule.

SPE = 5  # updates per epoch of tiny_config: 40 images / batch 8


def _expected_fixed(al, name, lr):
    """(overrides, f(epoch) -> (lr of the epoch's first update, of its last update))."""

    def per_epoch(schedule):
        return lambda e: (float(schedule(e)),) * 2

    def per_step(schedule):
        return lambda e: (float(schedule(e * SPE)), float(schedule(e * SPE + SPE - 1)))

    return {
        "constant": ({}, lambda e: (lr, lr)),
        "step": (dict(step_size=1, gamma=0.5), per_epoch(al.step_lr(lr, 1, 0.5))),
        "multistep": (
            dict(milestones=(1, 2), gamma=0.3),
            per_epoch(al.multistep_lr(lr, [1, 2], 0.3)),
        ),
        "exponential": (dict(gamma=0.5), per_epoch(al.exponential_lr(lr, 0.5))),
        "linear": (
            dict(linear_total_iters=2, linear_start_factor=0.25),
            per_epoch(al.linear_lr(lr, 0.25, 1.0, 2)),
        ),
        "cosine": ({}, per_epoch(al.cosine_annealing_lr(lr, 3))),
        "warmup_cosine": (
            dict(warmup_epochs=1, lr_update="step"),
            per_step(al.warmup_cosine(lr, SPE, 3 * SPE)),
        ),
        "one_cycle": ({}, per_step(al.one_cycle_lr(lr, 3 * SPE))),
    }[name]


FIXED = ("constant", "step", "multistep", "exponential", "linear", "cosine", "warmup_cosine",
         "one_cycle")  # fmt: skip


@pytest.mark.parametrize("schedule", FIXED)
def test_fixed_schedule_smoke(ex, tiny_folder, tmp_path, schedule):
    lr = 0.05
    overrides, expected = _expected_fixed(ex.train.al, schedule, lr)
    config = tiny_config(ex, tiny_folder, schedule=schedule, learning_rate=lr, **overrides)
    history = ex.train.train_and_evaluate(config, tmp_path)
    check_outputs(tmp_path, history, 3)
    got = [(r["lr_first"], r["lr"]) for r in history]
    want = [expected(e) for e in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    if schedule != "constant":  # the test would pass for a constant lr otherwise
        assert len({v for pair in want for v in pair}) > 1


def test_plateau_schedule(ex, tiny_folder, tmp_path):
    lr, factor = 0.05, 0.5
    config = tiny_config(
        ex, tiny_folder, schedule="plateau", learning_rate=lr, plateau_patience=0,
        plateau_factor=factor, epochs=4,
    )  # fmt: skip
    history = ex.train.train_and_evaluate(config, tmp_path)
    check_outputs(tmp_path, history, 4)
    # ReduceLROnPlateau(mode='min', threshold=1e-4 rel, patience=0), written out here,
    # fed the logged test losses once per epoch: the lr of epoch e+1 follows epoch e.
    want, cur, best = [], lr, math.inf
    for r in history:
        want.append(cur)
        if r["test_loss"] < best * (1 - 1e-4):
            best = r["test_loss"]
        else:
            cur *= factor
    np.testing.assert_allclose([r["lr"] for r in history], want, rtol=1e-6)


LR_FREE = ("prodigy", "dog", "mechanize", "schedule_free")


def test_every_schedule_is_tested(ex):
    tested = (*FIXED, "plateau", "auto", "alr", *LR_FREE)
    assert sorted(tested) == sorted(ex.configs.SCHEDULES)
    assert tuple(ex.configs.LR_FREE) == LR_FREE


@pytest.mark.parametrize("schedule", LR_FREE)
def test_lr_free_smoke(ex, tiny_folder, tmp_path, schedule):
    lr = 0.05
    overrides = {}
    if schedule == "schedule_free":
        # A warmup makes the logged lr move: 0 -> lr linearly over 10 updates (2 epochs).
        overrides = dict(schedule_free_warmup_steps=10, schedule_free_bn_batches=2)
    config = tiny_config(
        ex, tiny_folder, schedule=schedule, learning_rate=lr, epochs=2, **overrides
    )
    history = ex.train.train_and_evaluate(config, tmp_path)
    check_outputs(tmp_path, history, 2)
    lrs = [v for r in history for v in (r["lr_first"], r["lr"])]
    assert all(v > 0 for v in lrs), lrs
    if schedule == "schedule_free":
        # optax's warmup_constant_schedule(0, lr, 10) at the update counts 1..10
        # (schedule-free counts from 1): updates 1, 5, 6, 10 open and close the epochs.
        np.testing.assert_allclose(lrs, [lr * k / 10 for k in (1, 5, 6, 10)], rtol=1e-6)
    elif schedule == "prodigy":
        # d starts at 1e-6 (times learning_rate 1.0) and never decreases (it grows over
        # hundreds of updates, not these 10). Bias correction, if it leaked in, would vary.
        assert lrs == sorted(lrs) and lrs[0] >= np.float32(1e-6)
    else:
        assert len(set(lrs)) > 1, lrs  # an estimated step size, not a constant


def test_schedule_free_evaluates_the_averaged_iterate(ex):
    """make_eval_state: x = (y - (1 - b1) z) / b1 (written out here), BatchNorm refreshed at x."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    config = ex.configs.get_config("cpu")
    config.schedule, config.learning_rate, config.schedule_free_b1 = "schedule_free", 0.1, 0.8
    model = ex.models.ResNet((1,), 10, 0.0625, rngs=nnx.Rngs(0))
    tx = ex.train.build_optimizer(config, steps_per_epoch=4)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    rng = np.random.default_rng(0)
    for _ in range(3):
        grads = jax.tree.map(
            lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), nnx.state(model, nnx.Param)
        )
        optimizer.update(model, grads)
    model_gd, model_state = nnx.split(model)
    opt_gd, opt_state = nnx.split(optimizer)
    state = {"model": model_state, "opt": opt_state}
    eval_state = ex.train.make_eval_state(model_gd, opt_gd, config)

    sf = nnx.as_pure(optimizer.opt_state)
    y = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    z = nnx.to_pure_dict(sf.z)
    want = jax.tree.map(lambda a, b: (np.asarray(a) - 0.2 * np.asarray(b)) / 0.8, y, z)
    stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))

    images = rng.integers(0, 256, (2, 8, 8, 8, 3)).astype(np.uint8)
    for n in (0, 2):
        out = nnx.merge(model_gd, eval_state(state, images[:n]))
        got = nnx.to_pure_dict(nnx.state(out, nnx.Param))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)
        new_stats = nnx.to_pure_dict(nnx.state(out, nnx.BatchStat))
        same = jax.tree.leaves(jax.tree.map(np.array_equal, new_stats, stats))
        assert all(same) if n == 0 else not any(same)
    assert not all(
        jax.tree.leaves(jax.tree.map(lambda a, b: np.allclose(a, b), want, y))
    )  # x differs from y: the test would pass for the training parameters otherwise


def test_auto_schedule(ex, tiny_folder, tmp_path):
    lr, factors = 0.05, (2.0, 1.0, 0.5)
    config = tiny_config(
        ex, tiny_folder, schedule="auto", learning_rate=lr, auto_every=2, auto_factors=factors
    )
    history = ex.train.train_and_evaluate(config, tmp_path)
    check_outputs(tmp_path, history, 3)
    probes = [p for r in history for p in r["probes"]]
    # Probes at updates 0, 2, 4, ... across epoch boundaries, each logged with its multiplier.
    assert [p["step"] for p in probes] == list(range(0, 3 * SPE, 2))
    assert history[-1]["num_probes"] == len(probes)
    cur = lr
    for p in probes:
        assert min(factors) - 1e-6 <= p["multiplier"] <= max(factors) + 1e-6
        assert len(p["losses"]) == len(factors) and all(map(math.isfinite, p["losses"]))
        # The probe's own update already uses lr * multiplier.
        cur *= p["multiplier"]
        np.testing.assert_allclose(p["lr"], cur, rtol=1e-5)
    np.testing.assert_allclose(history[-1]["lr"], cur, rtol=1e-5)
    # The probe's cost is measured (probe step minus the next plain step, per epoch).
    assert all(math.isfinite(r["probe_time_s"]) for r in history)


@pytest.mark.parametrize("source", ["random", "train"])
def test_auto_lookahead_and_score_spec(ex, tiny_folder, tmp_path, source):
    factors = (2.0, 1.0, 0.5)
    config = tiny_config(
        ex, tiny_folder, schedule="auto", auto_every=2, auto_factors=factors, epochs=1,
        auto_lookahead=3, auto_score="softmax:0.5", probe_source=source, probe_batch_size=4,
    )  # fmt: skip
    history = ex.train.train_and_evaluate(config, tmp_path)
    probes = history[0]["probes"]
    assert [p["step"] for p in probes] == [0, 2, 4]
    for p in probes:
        assert all(map(math.isfinite, p["losses"]))
        # softmax scores sum to 1 (minmax_exp's best candidate would score 1 alone).
        np.testing.assert_allclose(sum(p["scores"]), 1.0, rtol=1e-5)
    # The look-ahead changes the losses the probe sees.
    one = dataclasses.replace(config, auto_lookahead=1)
    first = ex.train.train_and_evaluate(one, tmp_path / "one")[0]["probes"][0]["losses"]
    assert not np.allclose(first, probes[0]["losses"])


def test_lookahead_probe_batches_are_independent_draws(ex):
    # Class-sorted storage: 10 classes x 100 images, labels 0..9 in blocks.
    labels = np.repeat(np.arange(10), 100)
    one = ex.input_pipeline.probe_indices(1000, 32, 0, 7)
    np.testing.assert_array_equal(
        one, np.sort(np.random.default_rng([0, 1, 7]).choice(1000, 32, replace=False))
    )
    idx = ex.input_pipeline.probe_indices(1000, 32, 0, 7, groups=10)
    assert len(set(idx.tolist())) == 320
    for batch in idx.reshape(10, 32):
        assert np.all(np.diff(batch) > 0)
        # A random batch of 32 from 10 balanced classes has several classes, not one or two.
        assert len(set(labels[batch].tolist())) >= 5


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(auto_score="softmax:0"), "temperature"),
        (dict(auto_score="softmax:hot"), "auto_score"),
        (dict(auto_score="rank"), "auto_score"),
        (dict(auto_lookahead=0), "auto_lookahead"),
        (dict(auto_lookahead=2, probe_batch_size=30), "auto_lookahead"),
    ],
)
def test_auto_bad_settings(ex, tiny_folder, tmp_path, overrides, message):
    config = tiny_config(ex, tiny_folder, schedule="auto", **overrides)
    with pytest.raises(ex.train.ConfigError, match=message):
        ex.train.train_and_evaluate(config, tmp_path)


# --------------------------------------------------------------------------------------
# Resume.


def _final_state(workdir: Path, epoch: int) -> dict:
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore((workdir / "checkpoints" / str(epoch) / "state").absolute())


def test_resume_equals_uninterrupted_run(ex, tiny_folder, tmp_path):
    # auto: its probe schedule (every 3 updates) straddles the epoch boundary.
    config = tiny_config(ex, tiny_folder, schedule="auto", auto_every=3, epochs=2)
    straight = ex.train.train_and_evaluate(config, tmp_path / "straight")

    stopped = dataclasses.replace(config, stop_after_epoch=1)
    first = ex.train.train_and_evaluate(stopped, tmp_path / "resumed")
    assert len(first) == 1
    # Without --resume an existing run is not overwritten.
    with pytest.raises(ex.train.ConfigError, match="--resume"):
        ex.train.train_and_evaluate(config, tmp_path / "resumed")
    # A resume must not change the optimizer.
    with pytest.raises(ex.train.ConfigError, match="schedule"):
        ex.train.train_and_evaluate(
            dataclasses.replace(config, schedule="constant", resume=True), tmp_path / "resumed"
        )
    resumed = ex.train.train_and_evaluate(
        dataclasses.replace(config, resume=True), tmp_path / "resumed"
    )

    timing = (
        "epoch_time_s",
        "train_time_s",
        "eval_time_s",
        "steps_per_s",
        "wall_time_s",
        "probe_time_s",
    )

    def strip(history):
        return [{k: v for k, v in r.items() if k not in timing} for r in history]

    assert strip(resumed) == strip(straight)
    assert strip(read_metrics(tmp_path / "resumed")) == strip(straight)
    a = _final_state(tmp_path / "straight", 2)
    b = _final_state(tmp_path / "resumed", 2)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_alr_schedule_and_resume(ex, tiny_folder, tmp_path):
    """alr: the logged beam follows the beam rule; a stopped and resumed run is identical.

    M = 2 (the default rates lr, lr/2), N = 3, beam size K = 3: the beam grows after
    the first epoch, which the resume must restore at its new size.
    """
    lr, factors, k = 0.05, (2.0, 1.0, 0.5), 3
    config = tiny_config(
        ex, tiny_folder, schedule="alr", learning_rate=lr, alr_factors=factors, alr_beam_size=k
    )
    straight = ex.train.train_and_evaluate(config, tmp_path / "straight")
    check_outputs(tmp_path / "straight", straight, 3)

    beam, total = [lr, lr / 2], 0
    for r in straight:
        a = r["alr"]
        want_children = np.outer(beam, factors)
        np.testing.assert_allclose(a["child_learning_rates"], want_children, rtol=1e-6)
        losses = np.array([[np.inf if v is None else v for v in row] for row in a["losses"]])
        assert losses.shape == (len(beam), len(factors)) and np.isfinite(losses).all()
        # The beam rule, written out: the K lowest losses, ties to the lower flat index.
        order = sorted(range(losses.size), key=lambda i: (losses.flat[i], i))[:k]
        assert a["parents"] == [i // len(factors) for i in order]
        assert a["branches"] == [i % len(factors) for i in order]
        beam = [float(want_children.flat[i]) for i in order]
        np.testing.assert_allclose(a["beam_learning_rates"], beam, rtol=1e-6)
        assert r["lr"] == r["lr_first"] == pytest.approx(beam[0], rel=1e-6)
        # rank_by="mean": the best child's ranking loss is its mean training loss.
        assert r["train_loss"] == pytest.approx(losses.min(), rel=1e-5)
        total += losses.size
        assert (r["child_epochs"], r["child_epochs_total"]) == (losses.size, total)
        assert not a["all_diverged"] and not any(map(any, a["diverged"]))
    assert [r["child_epochs"] for r in straight] == [6, 9, 9]
    assert len({r["lr"] for r in straight}) > 1 or len(set(beam)) > 1

    stopped = dataclasses.replace(config, stop_after_epoch=1)
    assert len(ex.train.train_and_evaluate(stopped, tmp_path / "resumed")) == 1
    resumed = ex.train.train_and_evaluate(
        dataclasses.replace(config, resume=True), tmp_path / "resumed"
    )
    timing = ("epoch_time_s", "train_time_s", "eval_time_s", "steps_per_s", "wall_time_s",
              "child_steps_per_s")  # fmt: skip

    def strip(history):
        return [{k: v for k, v in r.items() if k not in timing} for r in history]

    assert strip(resumed) == strip(straight)
    a = _final_state(tmp_path / "straight", 3)
    b = _final_state(tmp_path / "resumed", 3)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(alr_factors=()), "factors"),
        (dict(alr_learning_rates=(0.1, -1.0)), "learning_rates"),
        (dict(alr_beam_size=7), "beam_size"),
        (dict(alr_rank_by="best"), "alr_rank_by"),
    ],
)
def test_alr_bad_settings(ex, tiny_folder, tmp_path, overrides, message):
    config = tiny_config(ex, tiny_folder, schedule="alr", **overrides)
    with pytest.raises(ex.train.ConfigError, match=message):
        ex.train.train_and_evaluate(config, tmp_path)


# --------------------------------------------------------------------------------------
# Data sources.


def test_image_folder_and_archive_load_the_same_arrays(ex, tiny_folder, tmp_path):
    ip = ex.input_pipeline
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny_folder, arcname="cifar10")
    a = ip.load_image_folder(tiny_folder.parent)  # one level of nesting
    b = ip.load_image_folder(archive)
    assert (archive.parent / "tiny.tar.gz.arrays.npz").is_file()  # cached beside it
    for x, y in ((a.train, b.train), (a.test, b.test)):
        assert x.images.dtype == np.uint8 and x.images.shape[1:] == (32, 32, 3)
        np.testing.assert_array_equal(x.images, y.images)
        np.testing.assert_array_equal(x.labels, y.labels)
    np.testing.assert_array_equal(np.bincount(a.train.labels), [4] * 10)
    # PNG pixels survive exactly: image 0000 of class 'bird' (label 2) is a PNG.
    from PIL import Image

    png = np.asarray(Image.open(tiny_folder / "train" / "bird" / "0000.png"))
    np.testing.assert_array_equal(a.train.images[a.train.labels == 2][0], png)
    # The second load comes from the cache.
    t = time.perf_counter()
    c = ip.load_image_folder(archive)
    assert time.perf_counter() - t < 2.0
    np.testing.assert_array_equal(c.train.images, b.train.images)


def test_read_only_source_caches_elsewhere(ex, tiny_folder, tmp_path):
    ip = ex.input_pipeline
    ro = tmp_path / "ro"
    ro.mkdir()
    archive = ro / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny_folder, arcname="cifar10")
    os.chmod(ro, 0o555)
    try:
        ip.load_image_folder(archive, cache_dir=str(tmp_path / "cache"))
        assert not (ro / "data.tar.gz.arrays.npz").exists()
        assert len(list((tmp_path / "cache").glob("data.tar.gz-*.arrays.npz"))) == 1
    finally:
        os.chmod(ro, 0o755)


def _copy_folder(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "does not exist"),
        ("no_splits", "found no train/ and test/"),
        (
            "wrong_class",
            "missing class folders \\['cat'\\] and unexpected class folders \\['kat'\\]",
        ),
        ("empty_class", "test/dog/ holds no images"),
        ("not_archive", "not a .tar.gz"),
        ("bad_image", "cannot decode image"),
        ("sizes", "images differ in size"),
    ],
)
def test_bad_data_dir(ex, tiny_folder, tmp_path, damage, message):
    ip = ex.input_pipeline
    path = tmp_path / "data"
    if damage == "missing":
        pass
    elif damage == "no_splits":
        (path / "images" / "train").mkdir(parents=True)
    elif damage == "not_archive":
        path = tmp_path / "data.zip"
        path.write_bytes(b"PK")
    else:
        _copy_folder(tiny_folder, path)
        if damage == "wrong_class":
            (path / "train" / "cat").rename(path / "train" / "kat")
        elif damage == "empty_class":
            for f in (path / "test" / "dog").iterdir():
                f.unlink()
        elif damage == "bad_image":
            (path / "train" / "cat" / "0000.png").write_bytes(b"not an image")
        elif damage == "sizes":
            from PIL import Image

            Image.new("RGB", (16, 16)).save(path / "test" / "cat" / "0000.png")
    with pytest.raises(ip.DataError, match=message) as info:
        ip.load_image_folder(path)
    if damage in ("missing", "no_splits", "wrong_class", "empty_class"):
        assert "train/<class>/" in str(info.value)  # says how to supply the data


def test_bad_data_dir_tar(ex, tiny_folder, tmp_path):
    archive = tmp_path / "wrong.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny_folder / "train", arcname="cifar10/training")
    with pytest.raises(ex.input_pipeline.DataError, match="holds no train/<class>/"):
        ex.input_pipeline.load_image_folder(archive)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(ex.input_pipeline.DataError, match="cannot read it as a .tar.gz"):
        ex.input_pipeline.load_image_folder(broken)


def test_command_line_reports_bad_data_dir(tmp_path):
    # The whole CLI, as a user runs it: a clear message and exit status 2, no traceback.
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE / "main.py"),
            "--data-dir",
            str(tmp_path / "nope"),
            "--workdir",
            str(tmp_path / "wd"),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_tfds_source_uses_the_same_loader(ex, tiny_folder, tmp_path, monkeypatch):
    """The tfds path, with tfds.data_source mocked (never a download): same arrays out."""
    tfds = require("tensorflow_datasets", "the tfds data source")
    ip = ex.input_pipeline
    folder = ip.load_image_folder(tiny_folder)
    calls = []

    def fake_data_source(name, *, split, data_dir=None, download=True, builder_kwargs=None):
        calls.append((name, split, data_dir, builder_kwargs))

        # tfds yields examples as dicts of numpy values, in the data set's own order.
        def examples(s):
            return [{"image": im, "label": np.int64(lb), "id": f"{i}"}
                    for i, (im, lb) in enumerate(zip(s.images, s.labels, strict=True))]  # fmt: skip

        return [examples(folder.train), examples(folder.test)]

    monkeypatch.setattr(tfds, "data_source", fake_data_source)
    seen = []
    real = ip.arrays_to_dataset
    monkeypatch.setattr(
        ip, "arrays_to_dataset", lambda *a, **k: seen.append(a[-1]) or real(*a, **k)
    )
    ds = ip.load_tfds(str(tmp_path / "tfds"), cache_dir=str(tmp_path / "cache"))
    assert calls == [
        ("cifar10", ["train", "test"], str(tmp_path / "tfds"), {"file_format": "array_record"})
    ]
    assert seen and seen[0].startswith("tfds:cifar10")  # through the common loader
    np.testing.assert_array_equal(ds.train.images, folder.train.images)
    np.testing.assert_array_equal(ds.test.labels, folder.test.labels)
    # Cached: the second load does not call tfds.
    ds2 = ip.load_tfds(str(tmp_path / "tfds"), cache_dir=str(tmp_path / "cache"))
    assert len(calls) == 1
    np.testing.assert_array_equal(ds2.train.images, folder.train.images)

    # A missing tfds copy is a clear error, not a stack trace from inside tfds.
    def missing(*args, **kwargs):
        raise KeyError("Trying to access `splits['train']` but `splits` is empty.")

    monkeypatch.setattr(tfds, "data_source", missing)
    with pytest.raises(ip.DataError, match="--data-dir"):
        ip.load_tfds(str(tmp_path / "tfds2"), cache_dir=str(tmp_path / "cache"))


def test_command_line_flags(ex):
    """Every config field is a flag; a preset plus flags gives the expected config."""
    args = ex.main.build_parser().parse_args(
        [
            "--config",
            "seed",
            "--workdir",
            "w",
            "--schedule",
            "multistep",
            "--milestones",
            "30,60",
            "--gamma",
            "0.2",
            "--no-augment",
            "--auto-factors",
            "4,2,1,0.5,0.125",
            "--t-max",
            "none",
            "--train-subset",
            "100",
        ]  # fmt: skip
    )
    config = ex.main.config_from_args(args)
    seed = ex.configs.get_config("seed")
    assert (config.batch_size, config.learning_rate, config.epochs) == (32, 0.005, 100)
    assert (config.momentum, config.weight_decay) == (seed.momentum, 0.0) == (0.0, 0.0)
    assert config.schedule == "multistep" and config.milestones == (30, 60)
    assert config.gamma == 0.2 and config.augment is False and config.t_max is None
    assert config.auto_factors == (4.0, 2.0, 1.0, 0.5, 0.125) and config.train_subset == 100
    tuned = ex.configs.get_config("tuned")
    assert (tuned.momentum, tuned.nesterov, tuned.weight_decay) == (0.9, True, 5e-4)
    assert (tuned.batch_size, tuned.learning_rate, tuned.schedule) == (128, 0.1, "warmup_cosine")
    with pytest.raises(SystemExit):
        ex.main.build_parser().parse_args(["--workdir", "w", "--schedule", "nope"])


def test_command_line_new_schedules_and_gpu_short(ex):
    parse = ex.main.build_parser().parse_args
    for name in ("gpu-short", "gpu_short"):
        config = ex.main.config_from_args(parse(["--config", name, "--workdir", "w"]))
        assert (config.width, config.batch_size, config.epochs) == (1.0, 128, 10)
        assert config.train_subset == 10_000 and config.momentum == 0.0
    args = parse(
        ["--workdir", "w", "--schedule", "alr", "--alr-factors", "4,1,0.25", "--alr-rank-by",
         "last", "--alr-learning-rates", "0.1,0.01", "--alr-beam-size", "3",
         "--alr-strategy", "map", "--alr-chunk-size", "2"]
    )  # fmt: skip
    config = ex.main.config_from_args(args)
    assert config.alr_factors == (4.0, 1.0, 0.25) and config.alr_rank_by == "last"
    assert config.alr_learning_rates == (0.1, 0.01) and config.alr_beam_size == 3
    assert (config.alr_strategy, config.alr_chunk_size) == ("map", 2)
    assert ex.train.alr_learning_rates(ex.configs.get_config("cpu")) == (0.05, 0.025)
    args = parse(
        ["--workdir", "w", "--schedule", "schedule_free", "--schedule-free-warmup-steps", "100",
         "--lr-free-learning-rate", "0.5", "--dog-init-alpha", "1e-6"]
    )  # fmt: skip
    config = ex.main.config_from_args(args)
    assert config.schedule_free_warmup_steps == 100 and config.lr_free_learning_rate == 0.5
    assert config.dog_init_alpha == 1e-6
    for bad in (["--alr-rank-by", "best"], ["--config", "gpu"]):
        with pytest.raises(SystemExit):
            parse(["--workdir", "w", *bad])


def test_sgd_matches_torch(ex, torch):
    """The example's optimizer, and an ALR child's, is torch.optim.SGD: momentum, Nesterov, wd."""
    import jax.numpy as jnp
    import optax

    rng = np.random.default_rng(0)
    p0 = rng.normal(size=6).astype(np.float32)
    grads = rng.normal(size=(8, 6)).astype(np.float32)
    for momentum, nesterov, wd in ((0.9, True, 5e-4), (0.9, False, 1e-2), (0.0, False, 0.0)):
        config = ex.configs.get_config("tuned")
        config.schedule, config.learning_rate = "constant", 0.1
        config.momentum, config.nesterov, config.weight_decay = momentum, nesterov, wd
        tx = ex.train.build_optimizer(config, steps_per_epoch=4)
        p = jnp.asarray(p0)
        state = tx.init(p)
        # An ALR child's optimizer: the same SGD at the learning rate the tree injects.
        config.schedule = "alr"
        tree = ex.train.build_alr_tree(config, None, loss_fn=lambda p, s, b: (jnp.sum(p), s))
        alr_state = tree.optimizer.init(p)
        alr_state.hyperparams["learning_rate"] = jnp.float32(0.1)
        alr_p = p
        tp = torch.tensor(p0, requires_grad=True)
        opt = torch.optim.SGD([tp], lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd)
        for g in grads:
            updates, state = tx.update(jnp.asarray(g), state, p)
            p = optax.apply_updates(p, updates)
            updates, alr_state = tree.optimizer.update(jnp.asarray(g), alr_state, alr_p)
            alr_p = optax.apply_updates(alr_p, updates)
            tp.grad = torch.tensor(g)
            opt.step()
        np.testing.assert_allclose(np.asarray(p), tp.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(alr_p), tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_loop_safe_conv_matches_autodiff(ex):
    """models.loop_safe_conv gives lax's convolution's outputs and gradients.

    (It exists for speed: XLA's CPU backend leaves autodiff's gradient convolutions
    inside lax.scan non-canonical and 20-50x slower; that is measured, not tested.)
    """
    from functools import partial

    import jax
    import jax.numpy as jnp
    from flax import nnx

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 12, 12, 3)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, 4))
    outs = []
    for loop_safe in (False, True):
        # Two stages: 3x3 stride-1 and stride-2 convolutions and a 1x1 stride-2 projection.
        model = ex.models.ResNet((1, 1), 10, 0.125, rngs=nnx.Rngs(0), loop_safe_conv=loop_safe)

        def loss(model):
            logits = model(x, train=True)
            return ex.train.cross_entropy(logits, labels).mean(), logits

        (_, logits), grads = nnx.jit(nnx.value_and_grad(loss, has_aux=True))(model)
        outs.append((logits, nnx.to_pure_dict(grads)))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-6)
    flat_a, flat_b = jax.tree.leaves(outs[0][1]), jax.tree.leaves(outs[1][1])
    assert len(flat_a) == len(flat_b) > 10
    for a, b in zip(flat_a, flat_b, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

    # Odd sizes, negative padding (a 1x1 stride-2 conv of an odd image), padding 2.
    dn = ("NHWC", "HWIO", "NHWC")
    cases = (((2, 8, 6, 3), 1, 2, 0), ((2, 9, 7, 3), 3, 2, 1), ((2, 8, 8, 3), 5, 1, 2))
    for shape, k, s, pad in cases:
        xi = jnp.asarray(rng.normal(size=shape), jnp.float32)
        w = jnp.asarray(rng.normal(size=(k, k, 3, 5)), jnp.float32)
        pads = ((pad, pad), (pad, pad))

        def f(conv, xi, w, s=s, pads=pads):
            return jnp.sum(jnp.sin(conv(xi, w, (s, s), pads, dimension_numbers=dn)))

        want = jax.jit(jax.grad(partial(f, jax.lax.conv_general_dilated), (0, 1)))(xi, w)
        got = jax.jit(jax.grad(partial(f, ex.models.loop_safe_conv), (0, 1)))(xi, w)
        # The custom gradient is the one in use, not the fallback to lax.
        assert "custom_vjp" in str(jax.make_jaxpr(partial(f, ex.models.loop_safe_conv))(xi, w))
        for a, b in zip(want, got, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_augment_crops_and_flips(ex):
    import jax
    import jax.numpy as jnp

    x = jnp.arange(2 * 6 * 6 * 3, dtype=jnp.int32).reshape(2, 6, 6, 3).astype(jnp.uint8)
    outs = [np.asarray(ex.train.augment(x, jax.random.PRNGKey(i), pad=2)) for i in range(20)]
    padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
    for out in outs:
        for b in range(2):
            crops = [padded[b, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
            windows = crops + [c[:, ::-1] for c in crops]
            assert any(np.array_equal(out[b], w) for w in windows)
    # Not the identity every time: some crops move, some flip.
    assert any(not np.array_equal(o, np.asarray(x)) for o in outs)


# --------------------------------------------------------------------------------------
# Integration on the real data (CI only).


@pytest.mark.skipif(not IN_CI, reason="integration run on the real CIFAR-10: CI=true only (~1 min)")
def test_cpu_preset_on_real_cifar10(ex, tmp_path):
    if not REAL_DATA.is_file():
        pytest.fail(f"CI=true but the real CIFAR-10 copy is missing: {REAL_DATA}")
    import shutil

    # A private copy: the decoded-array cache lands beside it, never in ../shared, and the
    # decode of the 60,000 JPEGs is part of the measured run.
    archive = tmp_path / REAL_DATA.name
    shutil.copyfile(REAL_DATA, archive)
    config = ex.configs.get_config("cpu")
    config.data_dir = str(archive)
    config.epochs = 2
    config.test_subset = 2000
    config.progress = False
    t = time.time()
    history = ex.train.train_and_evaluate(config, tmp_path / "run")
    elapsed = time.time() - t
    check_outputs(tmp_path / "run", history, 2)
    print(f"cpu preset, 2 epochs on real CIFAR-10: {history[-1]}, {elapsed:.0f} s in all")
    assert history[-1]["test_accuracy"] > 0.25  # chance is 0.10
