"""The CIFAR-10 example (examples/cifar10) end to end, on a tiny image folder.

Each method family trains a few short epochs and its logged learning rate is
checked against an independent rule (the library's schedule, plateau written out
here, the probe's multipliers, the beam rule for alr, each learning-rate-free
optimizer's own step size); resume equals an uninterrupted run; 8 simulated
devices give the learning rates and metrics of 1; the command line reports bad
settings with exit status 2. Under CI=true, one short run of the ``cpu`` preset
on the real CIFAR-10 copy in ``../shared/data``.

The models are tiny (width 1/16, one block per stage): the time goes to
compilation, so each run is shared by every check that can read it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from _plateau_oracle import plateau_lrs
from conftest import IN_CI
from test_cifar10_data import write_folder

import autolr_jax as al
from examples.cifar10 import configs, input_pipeline, models, optimizers, train

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
SPE = 5  # updates per epoch of tiny_config: 40 images / batch 8
TINY_STAGES = (1, 1)  # tiny_config's ResNet: two stages of one block
TIMING = ("epoch_time_s", "train_time_s", "eval_time_s", "steps_per_s", "wall_time_s",
          "child_steps_per_s")  # fmt: skip


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("data") / "cifar10")


def set_path(config, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[last] = value


ALGORITHM_1 = {"rule": "seed", "initial_search": False, "probe_source": "random", "budget": None}


def tiny_config(data_dir, **overrides):
    """The cpu preset shrunk to seconds; ``overrides`` use ``__`` for nesting (auto__every)."""
    config = configs.get_config("cpu")
    config.data.data_dir = str(data_dir)
    config.model.width = 0.0625
    # Two one-block stages: every kind of block (stride 1; stride 2 with a projection) at
    # about 60 % of four stages' compilation time, which is most of each run's.
    config.model.stage_sizes = TINY_STAGES
    config.data.train_subset = None
    config.batch_size = 8  # 5 updates per epoch
    config.eval_batch_size = 16  # the last test batch is padded
    config.epochs = 3
    config.progress = False
    config.auto.probe_batch_size = 8
    # Most tests below check Algorithm 1's bookkeeping (multipliers, resume, devices); the
    # example's default (armijo, search, training batch, wsd budget) has its own test.
    config.auto.update(ALGORITHM_1)
    for k, v in overrides.items():
        set_path(config, k.replace("__", "."), v)
    return config


def read_metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def check_outputs(workdir: Path, history: list[dict], epochs: int, plots=True, width=0.0625):
    records = read_metrics(workdir)
    assert records == history
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))
    for r in records:
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr",
                    "wall_time_s", "epoch_time_s", "steps_per_s"):  # fmt: skip
            assert math.isfinite(r[key]), (key, r)
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["train_accuracy"] <= 1.0
    if plots:
        for name in ("lr.png", "train_loss.png", "test_accuracy.png"):
            png = (workdir / "plots" / name).read_bytes()
            assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000, name
    assert (workdir / "checkpoints" / str(epochs)).is_dir()
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["model.width"] == width  # flat, dotted names
    assert set(saved["_data.class_counts"]["train"]) == set(input_pipeline.CLASS_NAMES)


def strip(history):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


# --------------------------------------------------------------------------------------
# The methods: one interface, every name.


def test_every_method_builds_and_names_are_declared_once():
    assert set(optimizers.METHODS) == {*optimizers.BUILDERS, "alr"}
    assert set(optimizers.LR_FREE) <= set(optimizers.BUILDERS)
    config = configs.get_config("cpu")
    for name in optimizers.BUILDERS:
        config.schedule = name
        method = optimizers.build_method(config, SPE, probe_loss_fn=lambda p, b: 0.0)
        assert (method.probe is not None) == (name == "auto"), name
        assert (method.after_epoch is not None) == (name == "plateau"), name
        assert (method.eval_params is not None) == (name == "schedule_free"), name
        assert (method.epoch_probe is not None) == (name == "null_model"), name
    config.schedule = "nope"
    with pytest.raises(train.ConfigError, match="config.schedule must be one of"):
        optimizers.build_method(config, SPE)


def _expected_fixed(name, lr):
    """(overrides, f(epoch) -> (lr of the epoch's first update, of its last update))."""

    def per_epoch(schedule):
        return lambda e: (float(schedule(e)),) * 2

    def per_step(schedule):
        return lambda e: (float(schedule(e * SPE)), float(schedule(e * SPE + SPE - 1)))

    return {
        "constant": ({}, lambda e: (lr, lr)),
        "step": ({"step.step_size": 1, "step.gamma": 0.5}, per_epoch(al.step_lr(lr, 1, 0.5))),
        "multistep": (
            {"multistep.milestones": (1, 2), "multistep.gamma": 0.3},
            per_epoch(al.multistep_lr(lr, [1, 2], 0.3)),
        ),
        "exponential": ({"exponential.gamma": 0.5}, per_epoch(al.exponential_lr(lr, 0.5))),
        "linear": (
            {"linear.total_iters": 2, "linear.start_factor": 0.25},
            per_epoch(al.linear_lr(lr, 0.25, 1.0, 2)),
        ),
        "cosine": ({}, per_epoch(al.cosine_annealing_lr(lr, 3))),
        "warmup_cosine": (
            {"warmup_cosine.warmup_epochs": 1, "lr_update": "step"},
            per_step(al.warmup_cosine(lr, SPE, 3 * SPE)),
        ),
        "one_cycle": ({}, per_step(al.one_cycle_lr(lr, 3 * SPE))),
        "wsd": (
            {"wsd.decay_fraction": 0.4, "wsd.decay_shape": "sqrt"},
            per_step(al.warmup_stable_decay(lr, 3 * SPE, decay_fraction=0.4, decay_shape="sqrt")),
        ),
    }[name]


@pytest.mark.parametrize("name", list(optimizers.FIXED_SCHEDULES))
def test_fixed_schedules_follow_the_library(name):
    """Each fixed schedule as the example builds it (epochs -> updates), checked per update."""
    lr = 0.05
    overrides, expected = _expected_fixed(name, lr)
    config = configs.get_config("cpu")
    config.schedule, config.learning_rate, config.epochs = name, lr, 3
    for k, v in overrides.items():
        set_path(config, k, v)
    schedule = optimizers.build_schedule(config, SPE)
    got = [(float(schedule(e * SPE)), float(schedule(e * SPE + SPE - 1))) for e in range(3)]
    want = [expected(e) for e in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    if name != "constant":  # the test would pass for a constant lr otherwise
        assert len({v for pair in want for v in pair}) > 1


def test_fixed_schedule_run(tiny_folder, tmp_path):
    """The training loop applies and logs a fixed schedule's learning rate."""
    config = tiny_config(
        tiny_folder, schedule="step", step__step_size=1, step__gamma=0.5, epochs=2, plots=False
    )
    history = train.train_and_evaluate(config, tmp_path)
    check_outputs(tmp_path, history, 2, plots=False)
    np.testing.assert_allclose([r["lr"] for r in history], [0.05, 0.025], rtol=1e-6)
    assert [r["lr_first"] for r in history] == [r["lr"] for r in history]


def test_plateau_schedule(tiny_folder, tmp_path):
    lr, factor = 0.05, 0.5
    config = tiny_config(tiny_folder, schedule="plateau", learning_rate=lr, epochs=3,
                         plateau__patience=0, plateau__factor=factor, plots=False)  # fmt: skip
    history = train.train_and_evaluate(config, tmp_path)
    check_outputs(tmp_path, history, 3, plots=False)
    # ReduceLROnPlateau(mode='min', threshold=1e-4 rel, patience=0), written out here,
    # fed the logged test losses once per epoch: the lr of epoch e+1 follows epoch e.
    want = plateau_lrs([r["test_loss"] for r in history], lr, factor)
    np.testing.assert_allclose([r["lr"] for r in history], want, rtol=1e-6)


def np_null_model_multiplier(losses, factors):
    """The published get_lr, in NumPy: z-score with torch.std's ddof=1, exp(-z), weighted
    geometric mean of the factors."""
    losses = np.asarray(losses, np.float64)
    z = (losses - losses.mean()) / losses.std(ddof=1)
    w = np.exp(-z)
    return float(np.exp(np.sum(w / w.sum() * np.log(factors))))


def test_null_model_multiplies_the_lr_by_the_published_rule_once_per_epoch(tiny_folder, tmp_path):
    lr, factors = 0.05, (2.0, 1.0, 0.5)
    config = tiny_config(tiny_folder, schedule="null_model", learning_rate=lr, epochs=3,
                         null_model__factors=factors, plots=False)  # fmt: skip
    history = train.train_and_evaluate(config, tmp_path)
    check_outputs(tmp_path, history, 3, plots=False)
    want = lr
    for r in history:
        np.testing.assert_allclose(r["lr"], want, rtol=1e-5)  # set by the previous epoch
        losses = r["epoch_probe"]["losses"]
        # one batch per factor, each its own random draw: the losses differ
        assert len(losses) == 3 and len(set(losses)) == 3 and all(map(math.isfinite, losses))
        want *= np_null_model_multiplier(losses, factors)
        np.testing.assert_allclose(r["epoch_probe"]["lr_next"], want, rtol=1e-5)
    assert history[-1]["epoch_probe"]["lr_next"] != lr


def test_null_model_multiplier_matches_numpy():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5):
        factors = tuple(np.sort(rng.uniform(0.1, 4.0, n)))
        losses = rng.normal(2.0, 0.3, n)
        got = optimizers.null_model_multiplier(jnp.asarray(losses, jnp.float32), factors)
        np.testing.assert_allclose(float(got), np_null_model_multiplier(losses, factors), rtol=1e-5)
    # equal losses: the plain geometric mean (the published code would give NaN)
    got = optimizers.null_model_multiplier(jnp.ones(3), (4.0, 1.0, 0.5))
    np.testing.assert_allclose(float(got), 2.0 ** (1 / 3), rtol=1e-6)


@pytest.mark.parametrize("schedule", optimizers.LR_FREE)
def test_lr_free_smoke(tiny_folder, tmp_path, schedule):
    lr = 0.05
    overrides = {}
    if schedule == "schedule_free":
        # A warmup makes the logged lr move: 0 -> lr linearly over 10 updates (2 epochs).
        overrides = {"schedule_free__warmup_steps": 10, "schedule_free__bn_batches": 2}
    epochs = 2 if schedule == "schedule_free" else 1
    config = tiny_config(tiny_folder, schedule=schedule, learning_rate=lr, epochs=epochs,
                         plots=False, **overrides)  # fmt: skip
    history = train.train_and_evaluate(config, tmp_path)
    check_outputs(tmp_path, history, epochs, plots=False)
    lrs = [v for r in history for v in (r["lr_first"], r["lr"])]
    assert all(v > 0 for v in lrs), lrs
    if schedule == "schedule_free":
        # optax's warmup_constant_schedule(0, lr, 10) at the update counts 1..10
        # (schedule-free counts from 1): updates 1, 5, 6, 10 open and close the epochs.
        np.testing.assert_allclose(lrs, [lr * k / 10 for k in (1, 5, 6, 10)], rtol=1e-6)
    elif schedule == "prodigy":
        # d starts at 1e-6 (times learning_rate 1.0) and never decreases.
        assert lrs == sorted(lrs) and lrs[0] >= np.float32(1e-6)
    else:
        assert len(set(lrs)) > 1, lrs  # an estimated step size, not a constant


def test_schedule_free_evaluates_the_averaged_iterate():
    """make_eval_model: x = (y - (1 - b1) z) / b1 (written out here), BatchNorm refreshed at x."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    config = configs.get_config("cpu")
    config.schedule, config.learning_rate, config.schedule_free.b1 = "schedule_free", 0.1, 0.8
    model = models.ResNet((1,), 10, 0.0625, rngs=nnx.Rngs(0))
    method = optimizers.build_method(config, steps_per_epoch=4)
    optimizer = nnx.Optimizer(model, method.tx, wrt=nnx.Param)
    rng = np.random.default_rng(0)
    for _ in range(3):
        grads = jax.tree.map(
            lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), nnx.state(model, nnx.Param)
        )
        optimizer.update(model, grads)
    model_gd, model_state = nnx.split(model)
    opt_gd, opt_state = nnx.split(optimizer)
    state = {"model": model_state, "opt": opt_state}
    eval_model = train.make_eval_model(model_gd, opt_gd, method)

    sf = nnx.as_pure(optimizer.opt_state)
    y = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    z = nnx.to_pure_dict(sf.z)
    want = jax.tree.map(lambda a, b: (np.asarray(a) - 0.2 * np.asarray(b)) / 0.8, y, z)
    stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    images = rng.integers(0, 256, (2, 8, 8, 8, 3)).astype(np.uint8)
    for n in (0, 2):
        out = nnx.merge(model_gd, eval_model(state, images[:n]))
        got = nnx.to_pure_dict(nnx.state(out, nnx.Param))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)
        new_stats = nnx.to_pure_dict(nnx.state(out, nnx.BatchStat))
        same = jax.tree.leaves(jax.tree.map(np.array_equal, new_stats, stats))
        assert all(same) if n == 0 else not any(same)
    # x differs from y: the test would pass for the training parameters otherwise.
    assert not all(jax.tree.leaves(jax.tree.map(lambda a, b: np.allclose(a, b), want, y)))


# --------------------------------------------------------------------------------------
# auto: probes, and resume (its probe schedule straddles the epoch boundary).


@pytest.fixture(scope="module")
def auto_runs(tiny_folder, tmp_path_factory):
    """An uninterrupted auto run, and the same run stopped after epoch 1 and resumed."""
    base = tmp_path_factory.mktemp("auto")
    config = tiny_config(tiny_folder, schedule="auto", auto__every=3, epochs=2)
    straight = train.train_and_evaluate(config, base / "straight")
    stopped = tiny_config(tiny_folder, schedule="auto", auto__every=3, epochs=2,
                          stop_after_epoch=1)  # fmt: skip
    first = train.train_and_evaluate(stopped, base / "resumed")
    return config, straight, first, base


def test_auto_probes(auto_runs):
    config, history, _, base = auto_runs
    check_outputs(base / "straight", history, 2)
    factors, cur = tuple(config.auto.factors), config.learning_rate
    probes = [p for r in history for p in r["probes"]]
    # Probes at updates 0, 3, 6, 9 across the epoch boundary, each with its multiplier.
    assert [p["step"] for p in probes] == list(range(0, 2 * SPE, 3))
    assert history[-1]["num_probes"] == len(probes)
    for p in probes:
        assert min(factors) - 1e-6 <= p["multiplier"] <= max(factors) + 1e-6
        assert len(p["losses"]) == len(factors) and all(map(math.isfinite, p["losses"]))
        cur *= p["multiplier"]  # the probe's own update already uses lr * multiplier
        np.testing.assert_allclose(p["lr"], cur, rtol=1e-5)
    np.testing.assert_allclose(history[-1]["lr"], cur, rtol=1e-5)


def _final_state(workdir: Path, epoch: int):
    import jax
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        state = ckptr.restore((workdir / "checkpoints" / str(epoch) / "state").absolute())
    return jax.tree_util.tree_flatten_with_path(state)[0]


def assert_same_state(a, b):
    assert [k for k, _ in a] == [k for k, _ in b] and len(a) > 10
    for (k, x), (_, y) in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(k))


def test_resume_equals_uninterrupted_run(auto_runs, tiny_folder):
    config, straight, first, base = auto_runs
    assert len(first) == 1
    # Without --resume an existing run is not overwritten.
    with pytest.raises(train.ConfigError, match="--resume"):
        train.train_and_evaluate(config, base / "resumed")
    # A resume must not change what the run computes.
    other = tiny_config(tiny_folder, schedule="constant", auto__every=3, epochs=2)
    with pytest.raises(train.ConfigError, match="schedule: 'auto' -> 'constant'"):
        train.train_and_evaluate(other, base / "resumed", resume=True)
    resumed = train.train_and_evaluate(config, base / "resumed", resume=True)
    assert strip(resumed) == strip(straight)
    assert strip(read_metrics(base / "resumed")) == strip(straight)
    assert_same_state(_final_state(base / "straight", 2), _final_state(base / "resumed", 2))


def test_auto_lookahead_and_score_spec(tiny_folder, tmp_path):
    config = tiny_config(
        tiny_folder, schedule="auto", auto__every=2, epochs=1, auto__lookahead=3,
        auto__score="softmax:0.5", auto__probe_source="random", auto__probe_batch_size=4,
        plots=False, checkpoint=False,
    )  # fmt: skip
    probes = train.train_and_evaluate(config, tmp_path)[0]["probes"]
    assert [p["step"] for p in probes] == [0, 2, 4]
    for p in probes:
        assert all(map(math.isfinite, p["losses"]))
        # softmax scores sum to 1 (minmax_exp's best candidate would score 1 alone).
        np.testing.assert_allclose(sum(p["scores"]), 1.0, rtol=1e-5)


def test_auto_default_is_armijo_search_on_the_training_batch_with_the_wsd_budget(
    tiny_folder, tmp_path
):
    """The example's auto default (the budget group's best) reaches auto_lr: the first probe
    searches, the logged lr of the last update is the last level times wsd's shape."""
    default = configs.get_config("cpu").auto
    assert (default.rule, default.initial_search, default.probe_source, default.budget,
            default.guard_on) == ("armijo", True, "train", "wsd", "value")  # fmt: skip
    config = tiny_config(
        tiny_folder, schedule="auto", epochs=2, plots=False, checkpoint=False,
        **{f"auto__{k}": default[k] for k in ALGORITHM_1},
    )  # fmt: skip
    history = train.train_and_evaluate(config, tmp_path)
    probes = [p for r in history for p in r["probes"]]
    assert [p["step"] for p in probes] == [0, SPE]
    assert probes[0]["decision"] == "search" and len(probes[0]["losses"]) == 3
    shape = al.warmup_stable_decay(1.0, 2 * SPE, decay_fraction=0.2)
    # Probes at updates 0 and 5 run at shape 1; the last update (9) at shape(9) = 0.5.
    assert float(shape(SPE)) == 1.0 and float(shape(2 * SPE - 1)) == 0.5
    np.testing.assert_allclose(history[-1]["lr"], probes[-1]["lr"] * 0.5, rtol=1e-6)
    assert all(math.isfinite(r["train_loss"]) for r in history)


def test_auto_guard_on_value_gets_the_training_loss(tiny_folder, tmp_path):
    # auto_lr(guard_on="value") raises a TypeError at trace time without update's value=:
    # the loop passes the batch's training loss.
    config = tiny_config(
        tiny_folder, schedule="auto", epochs=1, plots=False, checkpoint=False,
        auto__guard_on="value", auto__rule="armijo", auto__every=2,
    )  # fmt: skip
    history = train.train_and_evaluate(config, tmp_path)
    probes = [p for r in history for p in r["probes"]]
    assert [p["step"] for p in probes] == list(range(0, SPE, 2))
    assert all(math.isfinite(r["train_loss"]) for r in history)


def test_auto_momentum_free_probe_step(tiny_folder, tmp_path):
    # With momentum, probe_step='momentum_free' gives auto_lr a twin (its own state).
    config = tiny_config(
        tiny_folder, schedule="auto", epochs=1, plots=False, checkpoint=False, momentum=0.9,
        auto__probe_step="momentum_free", auto__every=2,
    )  # fmt: skip
    method = optimizers.build_method(config, SPE, probe_loss_fn=lambda p, b: jnp.float32(0.0))
    state = method.tx.init({"w": jnp.zeros(3)})
    assert state[-1].probe_state is not None
    history = train.train_and_evaluate(config, tmp_path)
    assert all(math.isfinite(r["train_loss"]) for r in history)


@pytest.mark.parametrize(
    "probe_step, momentum, rule, twin",
    [
        ("auto", 0.9, "armijo", True),  # the default: momentum-free probes with momentum
        ("auto", 0.9, "seed", False),  # Algorithm 1 keeps its trajectory
        ("auto", 0.0, "armijo", False),  # no momentum: the update is that step
        ("update", 0.9, "armijo", False),
        ("momentum_free", 0.9, "seed", True),
        ("momentum_free", 0.0, "armijo", False),
    ],
)
def test_auto_probe_step_maps_to_probe_optimizer(tiny_folder, probe_step, momentum, rule, twin):
    config = tiny_config(
        tiny_folder, schedule="auto", momentum=momentum, auto__probe_step=probe_step,
        auto__rule=rule,
    )  # fmt: skip
    method = optimizers.build_method(config, SPE, probe_loss_fn=lambda p, b: jnp.float32(0.0))
    assert (method.tx.init({"w": jnp.zeros(3)})[-1].probe_state is not None) == twin


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"auto__score": "softmax:0"}, "temperature"),
        ({"auto__score": "softmax:hot"}, "auto.score"),
        ({"auto__score": "rank"}, "auto.score"),
        ({"auto__lookahead": 0}, "lookahead"),
        ({"auto__probe_source": "val"}, "probe_source"),
        ({"auto__lookahead": 2, "auto__probe_batch_size": 30}, "auto.lookahead"),
        ({"schedule": "warmup_cosine", "warmup_cosine__warmup_epochs": 3}, "warmup_epochs"),
        ({"nesterov": True, "momentum": 0.0}, "nesterov"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": float("inf")}, "learning_rate"),
        ({"plateau__metric": "val", "schedule": "plateau"}, "plateau.metric"),
    ],
)
def test_bad_settings(tiny_folder, tmp_path, overrides, message):
    config = tiny_config(tiny_folder, schedule=overrides.pop("schedule", "auto"), **overrides)
    with pytest.raises(train.ConfigError, match=message):
        train.train_and_evaluate(config, tmp_path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model__width": 0.0}, "model.width"),
        ({"model__width": -1.0}, "model.width"),
        ({"model__stage_sizes": ()}, "model.stage_sizes"),
        ({"data__train_subset": 0}, "data.train_subset"),
        ({"data__test_subset": 0}, "data.test_subset"),
        ({"auto__every": 0}, "every"),
        ({"auto__guard_on": "loss"}, "guard_on"),
        ({"auto__probe_step": "twin"}, "auto.probe_step"),
        ({"auto__armijo_c": 1.5, "auto__rule": "armijo"}, "c must be in"),
        ({"auto__armijo_c": 0.1, "auto__rule": "seed"}, "armijo_c needs auto.rule='armijo'"),
        ({"lr_update": "often", "schedule": "cosine"}, "lr_update"),
        ({"optimizer": "adagrad"}, "config.optimizer must be one of"),
        ({"optimizer": "adam", "schedule": "prodigy"}, "brings its own optimizer"),
        ({"optimizer": "adam", "schedule": "alr"}, "brings its own optimizer"),
        ({"optimizer": "adam", "momentum": 0.9}, "momentum is config.adam.b1"),
    ],
)
def test_bad_settings_are_refused_before_any_data_is_read(tmp_path, overrides, message):
    # The data directory does not exist: the error must be about the setting, not the data.
    config = tiny_config(tmp_path / "no_data", schedule=overrides.pop("schedule", "auto"),
                         **overrides)  # fmt: skip
    with pytest.raises(train.ConfigError, match=message):
        train.train_and_evaluate(config, tmp_path / "wd")


def test_unusable_workdir_is_refused_before_any_data_is_read(tmp_path):
    config = tiny_config(tmp_path / "no_data", schedule="constant")
    (tmp_path / "file").write_text("x")
    with pytest.raises(train.ConfigError, match="--workdir .* cannot be created or written"):
        train.train_and_evaluate(config, tmp_path / "file" / "wd")
    if os.getuid() == 0:  # root writes through permission bits: use a read-only place
        unwritable = Path("/proc/self")
    else:
        unwritable = tmp_path / "ro"
        unwritable.mkdir(mode=0o555)
    with pytest.raises(train.ConfigError, match="cannot be created or written"):
        train.train_and_evaluate(config, unwritable)


def test_nonfinite_loss_stops_the_run_keeping_the_last_good_checkpoint(tiny_folder, tmp_path):
    """A learning rate that diverges (x1e30 per epoch: the model non-finite in epoch 2, the
    loss NaN in epoch 3): a clear error, the last good epoch's checkpoint kept, the bad one
    not written. (The model's own check, with finite losses: test_example_faults.py.)"""
    config = tiny_config(tiny_folder, schedule="step", learning_rate=0.05, step__step_size=1,
                         step__gamma=1e30, epochs=3, plots=False)  # fmt: skip
    with pytest.raises(train.Diverged, match="non-finite in epoch 2") as info:
        train.train_and_evaluate(config, tmp_path)
    assert [r["epoch"] for r in info.value.history] == [1] and info.value.record["epoch"] == 2
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]


def test_resume_with_other_epochs_only_where_no_schedule_depends_on_them(tiny_folder, tmp_path):
    kw = dict(epochs=2, plots=False, stop_after_epoch=1)
    for schedule, allowed in (("cosine", False), ("constant", True)):
        wd = tmp_path / schedule
        train.train_and_evaluate(tiny_config(tiny_folder, schedule=schedule, **kw), wd)
        longer = tiny_config(tiny_folder, schedule=schedule, epochs=3, plots=False)
        if allowed:
            assert len(train.train_and_evaluate(longer, wd, resume=True)) == 3
        else:
            with pytest.raises(train.ConfigError, match="shaped by the number of epochs"):
                train.train_and_evaluate(longer, wd, resume=True)


def test_resume_falls_back_to_the_newest_checkpoint_that_restores(tiny_folder, tmp_path, capsys):
    config = tiny_config(tiny_folder, schedule="constant", epochs=3, plots=False)
    stopped = tiny_config(tiny_folder, schedule="constant", epochs=3, plots=False,
                          stop_after_epoch=2)  # fmt: skip
    straight = train.train_and_evaluate(config, tmp_path / "straight")
    train.train_and_evaluate(stopped, tmp_path / "wd")
    # Damage the latest checkpoint's array data (as a torn copy would).
    for f in (tmp_path / "wd" / "checkpoints" / "2" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"\0" * 16)
    resumed = train.train_and_evaluate(config, tmp_path / "wd", resume=True)
    out = capsys.readouterr().out
    assert "epoch 2 does not restore" in out and "after epoch 1 (checkpoint 1)" in out
    assert strip(resumed) == strip(straight)


# --------------------------------------------------------------------------------------
# alr: its own loop.


def test_alr_schedule_and_resume(tiny_folder, tmp_path):
    """The logged beam follows the beam rule; a stopped and resumed run is identical.

    M = 2 (the default rates lr, lr/2), N = 3, beam size K = 3: the beam grows after
    the first epoch, which the resume must restore at its new size.
    """
    lr, factors, k = 0.05, (2.0, 1.0, 0.5), 3
    kw = dict(schedule="alr", learning_rate=lr, alr__factors=factors, alr__beam_size=k,
              plots=False, epochs=2)  # fmt: skip
    straight = train.train_and_evaluate(tiny_config(tiny_folder, **kw), tmp_path / "straight")
    check_outputs(tmp_path / "straight", straight, 2, plots=False)
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
    assert [r["child_epochs"] for r in straight] == [6, 9]

    # The run as stopped after epoch 1: the straight run's folder without epoch 2 (its
    # checkpoints keep both epochs; a separate stopped run would repeat epoch 1, ~10 s of
    # CI; stop_after_epoch itself is tested with the auto runs above).
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "2")
    metrics = tmp_path / "resumed" / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])
    resumed = train.train_and_evaluate(tiny_config(tiny_folder, **kw), tmp_path / "resumed",
                                       resume=True)  # fmt: skip
    assert strip(resumed) == strip(straight)
    # Epoch 1 was read back, not trained again (its timings too are the straight run's).
    assert resumed[0] == straight[0] and resumed[1]["wall_time_s"] != straight[1]["wall_time_s"]
    assert_same_state(_final_state(tmp_path / "straight", 2), _final_state(tmp_path / "resumed", 2))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"alr__factors": ()}, "factors"),
        ({"alr__learning_rates": (0.1, -1.0)}, "learning_rates"),
        ({"alr__beam_size": 7}, "beam_size"),
        ({"alr__rank_by": "best"}, "rank_by"),
    ],
)
def test_alr_bad_settings(tiny_folder, tmp_path, overrides, message):
    config = tiny_config(tiny_folder, schedule="alr", **overrides)
    with pytest.raises(train.ConfigError, match=message):
        train.train_and_evaluate(config, tmp_path)


# --------------------------------------------------------------------------------------
# Devices and the command line (subprocesses: a fresh JAX each).


def _run_main(args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "examples.cifar10.main", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
    )  # fmt: skip


def main_in_process(args) -> tuple[int, str, object]:
    """main.main on the command line ``args``, in this process (no start-up, and the
    session's compiled programs): its exit status, its stderr and the parsed config."""
    from examples.cifar10 import main

    err, saved = io.StringIO(), sys.argv
    sys.argv = ["main", *args]  # ml_collections reads the --config.<field> overrides here
    try:
        main.FLAGS(sys.argv)
        with contextlib.redirect_stderr(err):
            status = main.main(["main"])
        return status, err.getvalue(), copy.deepcopy(main.FLAGS.config)
    finally:
        main.FLAGS.unparse_flags()
        for name in [n for n in main.FLAGS if n.startswith("config.")]:
            delattr(main.FLAGS, name)  # the overrides' flags, defined by this parse
        sys.argv = saved


def _tiny_flags(data_dir, workdir):
    return [
        f"--config={ROOT / 'examples/cifar10/configs/cpu.py'}",
        f"--config.data.data_dir={data_dir}", "--config.model.width=0.0625",
        f"--config.model.stage_sizes={TINY_STAGES}", "--config.data.train_subset=40",
        "--config.batch_size=8", "--config.eval_batch_size=16", "--config.epochs=2",
        "--config.auto.probe_batch_size=8", "--config.progress=False", "--config.plots=False",
        "--config.checkpoint=False", f"--workdir={workdir}",
    ]  # fmt: skip


def _with_devices(n: int) -> str:
    """XLA_FLAGS for ``n`` simulated CPU devices, keeping the suite's own flags."""
    return f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"


def test_eight_devices_give_the_learning_rates_and_metrics_of_one(tiny_folder, tmp_path, capsys):
    """Data parallel: the batch is sharded over 8 simulated CPU devices (SPMD), in a
    subprocess; the one-device run is the same command line in this process (one CPU device).

    The probe scores by rank: min-max normalisation would magnify the float noise of
    reductions split over devices when candidate losses are nearly equal (as here).
    """
    histories, configs_run = {}, {}
    for n in (1, 8):
        flags = [*_tiny_flags(tiny_folder, tmp_path / f"d{n}"), "--config.schedule=auto",
                 "--config.auto.every=2", "--config.auto.score=rank_exp", "--config.auto.rule=seed",
                 "--config.auto.initial_search=False", "--config.auto.probe_source=random",
                 "--config.auto.budget=none"]  # fmt: skip
        if n == 1:
            status, err, _ = main_in_process(flags)
            assert status == 0, err[-3000:]
            out = capsys.readouterr().out
        else:
            result = _run_main(flags, {**os.environ, "XLA_FLAGS": _with_devices(n)})
            assert result.returncode == 0, result.stderr[-3000:]
            out = result.stdout
        assert f"on {n} device(s)" in out
        histories[n] = read_metrics(tmp_path / f"d{n}")
        saved = json.loads((tmp_path / f"d{n}" / "config.json").read_text())
        configs_run[n] = {k: v for k, v in saved.items() if not k.startswith("_")}
    assert configs_run[1] == configs_run[8]  # the same run on 1 and 8 devices
    for a, b in zip(histories[1], histories[8], strict=True):
        np.testing.assert_allclose(a["lr"], b["lr"], rtol=1e-5)
        # The metrics are means over sharded batches: the reductions split over devices
        # round differently (up to 6e-4 relative on an Intel Xeon, XLA:CPU), while the
        # learning rates and probe multipliers, the scheduler's decisions, agree to 1e-5.
        for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            np.testing.assert_allclose(a[key], b[key], rtol=3e-3, atol=1e-6, err_msg=key)
        np.testing.assert_allclose([p["multiplier"] for p in a["probes"]],
                                   [p["multiplier"] for p in b["probes"]], rtol=1e-5)  # fmt: skip


def test_a_batch_that_does_not_split_over_the_devices_is_refused(tiny_folder, monkeypatch):
    # In process, with the device count the check reads pretending 8 (a third subprocess
    # with 8 simulated devices cost CI about 10 s); main turns ConfigError into exit 2
    # (test_command_line_reports_bad_settings).
    monkeypatch.setattr(train.jax, "device_count", lambda: 8)
    with pytest.raises(train.ConfigError, match="batch_size must be a multiple of the 8 dev"):
        train.check_config(tiny_config(tiny_folder, batch_size=12))
    train.check_config(tiny_config(tiny_folder, batch_size=16, eval_batch_size=16))


def test_command_line_reports_bad_settings(tmp_path):
    # The whole CLI, as a user runs it: a clear message and exit status 2, no traceback.
    flags = _tiny_flags(tmp_path / "nope", tmp_path / "wd")
    result = _run_main(flags)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    # Bad settings: the same exit status and one line, from main in this process.
    bad = {
        "--config.schedule=nope": "config.schedule must be one of",
        "--config.learning_rate=inf": "learning_rate must be finite",
    }
    for flag, message in bad.items():
        status, err, _ = main_in_process([*flags, flag])
        assert status == 2 and err.startswith("error: ") and message in err, err
        assert len(err.splitlines()) == 1


def test_presets():
    seed, tuned, cpu = (configs.get_config(n) for n in ("seed", "tuned", "cpu"))
    assert (seed.batch_size, seed.learning_rate, seed.epochs, seed.model.width) == (
        32,
        5e-3,
        100,
        1,
    )
    assert (seed.momentum, seed.weight_decay, seed.schedule) == (0.0, 0.0, "constant")
    assert (tuned.momentum, tuned.nesterov, tuned.weight_decay) == (0.9, True, 5e-4)
    assert (tuned.batch_size, tuned.learning_rate, tuned.schedule) == (128, 0.1, "warmup_cosine")
    assert (cpu.model.width, cpu.data.train_subset, cpu.epochs, cpu.plateau.patience) == (
        0.125, 10_000, 15, 1)  # fmt: skip
    for name in ("gpu-short", "gpu_short"):
        g = configs.get_config(name)
        assert (g.model.width, g.batch_size, g.epochs, g.data.train_subset) == (
            1.0,
            128,
            10,
            10_000,
        )
    assert optimizers.lr_update_of(cpu) == "epoch"
    from examples.cifar10 import alr

    assert alr.learning_rates(cpu) == (0.05, 0.025)
    with pytest.raises(ValueError, match="unknown preset"):
        configs.get_config("gpu")


def test_sgd_matches_torch(torch):
    """The example's optimizer, and an ALR child's, is torch.optim.SGD: momentum, Nesterov, wd."""
    import jax.numpy as jnp
    import optax

    from examples.cifar10 import alr

    rng = np.random.default_rng(0)
    p0 = rng.normal(size=6).astype(np.float32)
    grads = rng.normal(size=(8, 6)).astype(np.float32)
    for momentum, nesterov, wd in ((0.9, True, 5e-4), (0.9, False, 1e-2), (0.0, False, 0.0)):
        config = configs.get_config("tuned")
        config.schedule, config.learning_rate = "constant", 0.1
        config.momentum, config.nesterov, config.weight_decay = momentum, nesterov, wd
        tx = optimizers.build_method(config, steps_per_epoch=4).tx
        p = jnp.asarray(p0)
        state = tx.init(p)
        # An ALR child's optimizer: the same SGD at the learning rate the tree injects.
        tree = alr.build_tree(config, loss_fn=lambda p, s, b: (jnp.sum(p), s))
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


@pytest.mark.parametrize("schedule", ["constant", "auto"])
def test_adam_matches_torch(torch, schedule):
    """config.optimizer='adam' is torch.optim.Adam (weight decay added to the gradient); under
    auto_lr too, between probes (every update but the first is not a probe here)."""
    import jax.numpy as jnp
    import optax

    rng = np.random.default_rng(1)
    p0 = rng.normal(size=6).astype(np.float32)
    grads = rng.normal(size=(8, 6)).astype(np.float32)
    config = configs.get_config("cpu")
    config.schedule, config.learning_rate, config.weight_decay = schedule, 0.01, 1e-2
    config.optimizer, config.adam.b1, config.adam.b2, config.adam.eps = "adam", 0.8, 0.99, 1e-6
    config.auto.update({"every": 100, "initial_search": False, "rule": "seed", "budget": "none"})
    tx = optimizers.build_method(config, 4, probe_loss_fn=lambda p, b: jnp.sum(p**2)).tx
    p = jnp.asarray(p0)
    state = tx.init(p)
    tp = torch.tensor(p0, requires_grad=True)
    opt = torch.optim.Adam([tp], lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)
    lrs = []
    for g in grads:
        extra = {"batch": None} if schedule == "auto" else {}
        updates, state = tx.update(jnp.asarray(g), state, p, **extra)
        # The rate this update used (auto_lr's first update is a probe that moves it).
        lrs.append(float(al.current_lr(state)))
        for group in opt.param_groups:
            group["lr"] = lrs[-1]
        p = optax.apply_updates(p, updates)
        tp.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(np.asarray(p), tp.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert lrs[1:] == [lrs[1]] * 7
    assert (schedule == "auto") == (lrs[0] != pytest.approx(0.01))


def test_loop_safe_conv_matches_autodiff():
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
        model = models.ResNet((1, 1), 10, 0.125, rngs=nnx.Rngs(0), loop_safe_conv=loop_safe)

        def loss(model):
            logits = model(x, train=True)
            return train.cross_entropy(logits, labels).mean(), logits

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
        got = jax.jit(jax.grad(partial(f, models.loop_safe_conv), (0, 1)))(xi, w)
        # The custom gradient is the one in use, not the fallback to lax.
        assert "custom_vjp" in str(jax.make_jaxpr(partial(f, models.loop_safe_conv))(xi, w))
        for a, b in zip(want, got, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_augment_crops_and_flips():
    import jax
    import jax.numpy as jnp

    x = jnp.arange(2 * 6 * 6 * 3, dtype=jnp.int32).reshape(2, 6, 6, 3).astype(jnp.uint8)
    outs = [np.asarray(input_pipeline.augment(x, jax.random.PRNGKey(i), pad=2)) for i in range(20)]
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
def test_cpu_preset_on_real_cifar10(tmp_path):
    if not REAL_DATA.is_file():
        pytest.fail(f"CI=true but the real CIFAR-10 copy is missing: {REAL_DATA}")
    config = configs.get_config("cpu")
    config.data.data_dir = str(REAL_DATA)
    config.data.cache_dir = str(tmp_path / "cache")
    config.epochs = 1
    # Half the preset's 10,000 training images: one epoch of 156 updates still learns
    # (0.26 test accuracy against chance 0.10, measured) in half the CI time.
    config.data.train_subset = 5000
    config.data.test_subset = 2000
    config.progress = False
    t = time.time()
    history = train.train_and_evaluate(config, tmp_path / "run")
    elapsed = time.time() - t
    check_outputs(tmp_path / "run", history, 1, width=0.125)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["_data.class_counts"]["train"] == dict.fromkeys(input_pipeline.CLASS_NAMES, 500)
    assert saved["_data.class_counts"]["test"] == dict.fromkeys(input_pipeline.CLASS_NAMES, 200)
    print(f"cpu preset, 1 epoch on real CIFAR-10: {history[-1]}, {elapsed:.0f} s in all")
    # Chance is 0.10 (std 0.007 on 2,000 images); mislabelled or misdecoded data stays there.
    assert history[-1]["test_accuracy"] > 0.18
