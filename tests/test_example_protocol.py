"""The published protocol's options of the CIFAR-10 example (``configs/seed_published.py``).

The validation split (sizes, class balance, disjoint from the training and test
images, the training subset unchanged by it, the same for every seed), the random
rotation against PIL's and SciPy's, the 'half' normalisation, the selection by
validation loss read from a history, BatchNorm frozen after the first epoch, and
the errors for bad values. One tiny run of the ``seed_published`` options checks
that the pieces fit together in the training loop.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _plateau_oracle import plateau_lrs
from test_cifar10_example import TINY_STAGES

from examples.cifar10 import configs, input_pipeline, run_log, train
from examples.cifar10.input_pipeline import Split

ROOT = Path(__file__).resolve().parents[1]


def old_balanced_subset(split: Split, n: int, num_classes: int = 10) -> Split:
    """``balanced_subset`` as it was before the validation split (its committed code)."""
    if n is None or n >= len(split):
        return split
    order = np.random.default_rng(0).permutation(len(split))
    per_class = [order[split.labels[order] == c] for c in range(num_classes)]
    take, i = [], 0
    while len(take) < n:
        for idx in per_class:
            if i < len(idx) and len(take) < n:
                take.append(idx[i])
        i += 1
    take = np.sort(np.asarray(take))
    return Split(split.images[take], split.labels[take])


def numbered_split(labels) -> Split:
    """A split whose image ``i`` holds the number ``i`` (so images can be told apart)."""
    labels = np.asarray(labels, np.int32)
    n = len(labels)
    ids = np.arange(n, dtype=np.int64)
    images = np.zeros((n, 2, 2, 3), np.uint8)
    images.reshape(n, -1)[:, :4] = np.stack([(ids >> (8 * k)) & 255 for k in range(4)], 1)
    return Split(images, labels)


def ids(split: Split) -> np.ndarray:
    flat = split.images.reshape(len(split), -1)[:, :4].astype(np.int64)
    return sum(flat[:, k] << (8 * k) for k in range(4))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    # 60 train (6 per class) / 20 test images
    return input_pipeline.write_synthetic_folder(tmp_path_factory.mktemp("data") / "c", 6, 2)


def tiny_config(data_dir, **data):
    config = configs.get_config("seed_published")
    config.data.data_dir = str(data_dir)
    config.model.width = 0.0625
    config.model.stage_sizes = TINY_STAGES
    config.batch_size = 8
    config.eval_batch_size = 16
    config.epochs = 2
    config.progress = False
    config.plots = False
    config.data.validation_size = 20
    for k, v in data.items():
        config.data[k] = v
    return config


# --------------------------------------------------------------------------------------
# The validation split.


def test_balanced_subset_is_unchanged():
    """The committed cpu-protocol runs trained on these subsets: they must not move."""
    rng = np.random.default_rng(3)
    balanced = np.repeat(np.arange(10), 30)
    unbalanced = rng.choice(10, 300, p=np.linspace(1, 3, 10) / np.linspace(1, 3, 10).sum())
    for labels in (balanced, rng.permutation(balanced), unbalanced):
        split = numbered_split(labels)
        for n in (1, 7, 10, 95, 150, 299):
            a, b = input_pipeline.balanced_subset(split, n), old_balanced_subset(split, n)
            np.testing.assert_array_equal(a.images, b.images)
            np.testing.assert_array_equal(a.labels, b.labels)
        # the full order is a permutation whose prefixes are the subsets
        order = input_pipeline.balanced_order(split.labels)
        assert sorted(order.tolist()) == list(range(len(labels)))


@pytest.mark.parametrize(
    "train_subset, validation_size, n_train, carved_first",
    [
        (100, 50, 100, False),  # enough outside the subset: validation from outside it
        (None, 100, 400, True),  # the full training set: validation carved out first
        (450, 100, 400, True),  # too few outside the subset: carved out first
        (500, 100, 400, True),  # a subset as large as the set is the full set
    ],
)
def test_validation_split(train_subset, validation_size, n_train, carved_first):
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 50))
    split = numbered_split(labels)
    train_, val = input_pipeline.train_validation_split(split, train_subset, validation_size)
    assert (len(train_), len(val)) == (n_train, validation_size)
    np.testing.assert_array_equal(
        np.bincount(val.labels, minlength=10), [validation_size // 10] * 10
    )
    np.testing.assert_array_equal(np.bincount(train_.labels, minlength=10), [n_train // 10] * 10)
    t, v = ids(train_), ids(val)
    assert len(np.intersect1d(t, v)) == 0 and len(set(t)) == len(t) and len(set(v)) == len(v)
    # labels travel with their images; both keep the order of the source split
    np.testing.assert_array_equal(train_.labels, labels[t])
    np.testing.assert_array_equal(val.labels, labels[v])
    assert np.all(np.diff(t) > 0) and np.all(np.diff(v) > 0)
    plain = input_pipeline.balanced_subset(split, train_subset)
    if carved_first:
        # the validation images are the subset of that size; training comes from the rest
        np.testing.assert_array_equal(
            v, ids(input_pipeline.balanced_subset(split, validation_size))
        )
    else:
        # exactly the training subset of a run without a validation split
        np.testing.assert_array_equal(train_.images, plain.images)
        np.testing.assert_array_equal(train_.labels, plain.labels)
    assert input_pipeline.train_validation_split(split, train_subset, 0)[1] is None


def test_validation_split_in_a_run_is_disjoint_and_independent_of_the_seed(tiny_folder, tmp_path):
    full = input_pipeline.load_image_folder(tiny_folder)
    got = {}
    for seed in (0, 1):
        config = tiny_config(tiny_folder)
        config.seed = seed
        data, steps = train.load_data(config, tmp_path / f"s{seed}")
        got[seed] = data
        assert (len(data.train), len(data.validation), len(data.test)) == (40, 20, 20)
        assert steps == 5
        assert data.class_counts()["validation"] == dict.fromkeys(input_pipeline.CLASS_NAMES, 2)
    a, b = got[0], got[1]
    np.testing.assert_array_equal(a.validation.images, b.validation.images)
    np.testing.assert_array_equal(a.train.images, b.train.images)

    def rows(x):
        return {im.tobytes() for im in x}

    train_rows, val_rows = rows(a.train.images), rows(a.validation.images)
    assert len(val_rows) == 20 and not (train_rows & val_rows)
    assert train_rows | val_rows == rows(full.train.images)  # all from the training set
    assert not (val_rows & rows(full.test.images))
    # with a train subset and room outside it, the training images do not change
    config = tiny_config(tiny_folder, train_subset=30, validation_size=20)
    with_val = train.load_data(config, tmp_path / "sub")[0]
    config.data.validation_size, config.select_by_val = 0, False
    without = train.load_data(config, tmp_path / "sub0")[0]
    assert without.validation is None and len(with_val.validation) == 20
    np.testing.assert_array_equal(with_val.train.images, without.train.images)
    assert not (rows(with_val.train.images) & rows(with_val.validation.images))


# --------------------------------------------------------------------------------------
# Augmentation and normalisation.


def old_augment(images, key, pad=4):
    """``input_pipeline.augment`` as committed before the rotation and the crop switch."""
    import jax
    import jax.numpy as jnp

    b, h, w, c = images.shape
    k_y, k_x, k_flip = jax.random.split(key, 3)
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy = jax.random.randint(k_y, (b,), 0, 2 * pad + 1)
    dx = jax.random.randint(k_x, (b,), 0, 2 * pad + 1)
    crop = jax.vmap(lambda im, y, x: jax.lax.dynamic_slice(im, (y, x, 0), (h, w, c)))(
        padded, dy, dx
    )
    flip = jax.random.bernoulli(k_flip, 0.5, (b,))
    return jnp.where(flip[:, None, None, None], crop[:, :, ::-1], crop)


def test_rotation_matches_pil_and_scipy():
    import jax.numpy as jnp
    from PIL import Image
    from scipy import ndimage

    rng = np.random.default_rng(1)
    x = rng.integers(1, 256, (4, 32, 32, 3)).astype(np.uint8)  # no zero pixel: fill shows
    angles = np.array([7.3, -9.1, 10.0, -33.3], np.float32)
    got = np.asarray(input_pipeline.rotate(jnp.asarray(x), jnp.asarray(angles)))
    interior = np.zeros((32, 32), bool)
    interior[4:-4, 4:-4] = True
    for im, out, a in zip(x, got, angles, strict=True):
        # PIL's rotate is what torchvision's RandomRotation runs on a PIL image
        pil = np.asarray(Image.fromarray(im).rotate(float(a), resample=Image.NEAREST, fillcolor=0))
        same = (out == pil).all(-1)
        assert same.mean() >= 0.99, (a, same.mean())  # float ties may round either way
        assert (out == 0).all(-1).sum() > 10  # the corners are filled with zeros
        sp = ndimage.rotate(im, float(a), axes=(1, 0), reshape=False, order=0, cval=0)
        assert (out == sp).all(-1)[interior].mean() >= 0.97  # SciPy's edges differ
        # the other direction does not match: the test can tell the sign
        other = np.asarray(Image.fromarray(im).rotate(-float(a), resample=Image.NEAREST))
        assert (out == other).all(-1).mean() < 0.5
    # angle 0 is the identity
    same = input_pipeline.rotate(jnp.asarray(x), jnp.zeros(4))
    np.testing.assert_array_equal(np.asarray(same), x)


def test_augment_flip_rotation_without_crop_and_default_unchanged():
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(np.random.default_rng(2).integers(1, 256, (8, 12, 12, 3)), jnp.uint8)
    for i in range(4):
        key = jax.random.PRNGKey(i)
        # the default (crop and flip) draws what it drew before the new options
        np.testing.assert_array_equal(input_pipeline.augment(x, key), old_augment(x, key))
        flip_only = np.asarray(input_pipeline.augment(x, key, crop=False))
        for b in range(8):
            assert np.array_equal(flip_only[b], x[b]) or np.array_equal(flip_only[b], x[b, :, ::-1])
        rotated = np.asarray(input_pipeline.augment(x, key, crop=False, rotation=10.0))
        angles = input_pipeline.rotation_angles(jax.random.fold_in(key, 3), 8, 10.0)
        want = input_pipeline.rotate(jnp.asarray(flip_only), angles)
        np.testing.assert_array_equal(rotated, np.asarray(want))
        assert not np.array_equal(rotated, flip_only)
    a = np.asarray(input_pipeline.rotation_angles(jax.random.PRNGKey(0), 4000, 10.0))
    assert -10 <= a.min() < -9.9 and 9.9 < a.max() <= 10
    np.testing.assert_allclose(a.std(), 20 / np.sqrt(12), rtol=0.05)  # uniform
    # the config switches
    config = configs.get_config("seed_published")
    aug = input_pipeline.augmenter(config.data)
    key = jax.random.PRNGKey(5)
    np.testing.assert_array_equal(
        aug(x, key), input_pipeline.augment(x, key, crop=False, rotation=10.0)
    )
    config.data.augment, config.data.augment_rotation = False, 0.0
    assert input_pipeline.augmenter(config.data) is None


def test_normalize_half():
    import jax.numpy as jnp

    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1)
    half = np.asarray(input_pipeline.normalize(jnp.asarray(x), "half"))
    np.testing.assert_allclose(half, (x / 255.0 - 0.5) / 0.5, atol=1e-6)
    assert half.min() == -1.0 and half.max() == 1.0
    cifar = np.asarray(input_pipeline.normalize(jnp.asarray(x)))
    np.testing.assert_allclose(cifar, (x - input_pipeline.MEAN) / input_pipeline.STD, rtol=1e-6)
    published = configs.get_config("seed_published")
    fn = input_pipeline.normalizer(published.data)
    np.testing.assert_array_equal(np.asarray(fn(jnp.asarray(x))), half)
    seed_fn = input_pipeline.normalizer(configs.get_config("seed").data)
    np.testing.assert_array_equal(np.asarray(seed_fn(jnp.asarray(x))), cifar)
    with pytest.raises(ValueError, match="normalize mode"):
        input_pipeline.normalize(jnp.asarray(x), "imagenet")


# --------------------------------------------------------------------------------------
# Selection by validation loss.


def test_select_by_val_reads_the_min_validation_loss_epoch():
    val = [1.0, 0.7, 0.8, 0.7, 0.9]
    history = [
        {"epoch": i + 1, "val_loss": v, "test_loss": 2.0 + i, "test_accuracy": 0.1 * i}
        for i, v in enumerate(val)
    ]
    got = run_log.select_by_val(history)
    # epoch 2: the first of the two minima (a checkpoint is kept only on a strict improvement)
    assert got == {"best_val_epoch": 2, "best_val_loss": 0.7, "best_val_test_loss": 3.0,
                   "best_val_test_accuracy": 0.1}  # fmt: skip
    assert run_log.select_by_val(history[:1])["best_val_epoch"] == 1
    history[0]["val_loss"] = float("nan")
    history[1]["val_loss"] = 0.95
    assert run_log.select_by_val(history)["best_val_epoch"] == 4  # NaN is never the best
    with pytest.raises(ValueError, match="val_loss"):
        run_log.select_by_val([])


# --------------------------------------------------------------------------------------
# BatchNorm frozen after the first epoch, and the whole protocol in one tiny run.


def test_probe_loss_follows_the_bn_mode():
    import jax
    from flax import nnx

    config = tiny_config("unused")
    # Built and run under jit, as in the train step (eagerly, each op would dispatch alone).
    gd = nnx.graphdef(nnx.eval_shape(lambda: train.make_model(config, 10)))
    params, rest = jax.jit(
        lambda: nnx.as_pure(nnx.split(train.make_model(config, 10), nnx.Param, ...)[1:])
    )()
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 8, 8, 3)) * 3 + 1
    y = np.arange(8) % 10

    @jax.jit
    def forward_losses(params, rest):  # the model itself, in eval and in train mode
        model = nnx.merge(gd, params, rest)
        return [train.cross_entropy(model(x, train=t), y).mean() for t in (False, True)]

    want_eval, want_train = forward_losses(params, rest)
    frozen = jax.jit(train.make_probe_loss(gd, bn_train=False))(params, (x, y, rest))
    trains = jax.jit(train.make_probe_loss(gd))(params, (x, y, rest))
    np.testing.assert_allclose(float(frozen), float(want_eval), rtol=1e-5)
    np.testing.assert_allclose(float(trains), float(want_train), rtol=1e-5)
    assert abs(float(frozen) - float(trains)) > 1e-3
    assert [train.bn_trains(config, e) for e in range(3)] == [True, False, False]
    config.bn_mode = "train"
    assert [train.bn_trains(config, e) for e in range(3)] == [True, True, True]


def _checkpoint(workdir: Path, epoch: int) -> dict:
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore((workdir / "checkpoints" / str(epoch) / "state").absolute())


def _stats(state) -> list[np.ndarray]:
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(state["model"])[0]
    return [np.asarray(v) for k, v in leaves if "mean" in str(k) or "var" in str(k)]


def test_published_protocol_run(tiny_folder, tmp_path, capsys):
    """seed_published's options on 40 train / 20 validation / 20 test images, 2 epochs,
    the auto scheduler (its probe follows the BatchNorm mode)."""
    from flax import nnx

    config = tiny_config(tiny_folder)
    config.schedule = "auto"
    config.auto.probe_batch_size = 8
    history = train.train_and_evaluate(config, tmp_path)
    out = capsys.readouterr().out
    assert (
        "40 train (4 per class) / 20 validation (2 per class) / 20 test images (2 per class)" in out
    )
    for r in history:
        assert 0 <= r["val_accuracy"] <= 1 and np.isfinite(r["val_loss"])
        assert list(r)[:8] == ["epoch", "steps", "train_loss", "train_accuracy", "val_loss",
                               "val_accuracy", "test_loss", "test_accuracy"]  # fmt: skip
        assert r["best_val_epoch"] == run_log.select_by_val(history[: r["epoch"]])["best_val_epoch"]
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == (
        history
    )
    best = min(history, key=lambda r: r["val_loss"])
    assert history[-1]["best_val_test_accuracy"] == best["test_accuracy"]
    assert f"selected by validation loss: epoch {best['epoch']}" in out
    assert "| val loss " in out

    # BatchNorm: the first epoch moved the running statistics away from their initial
    # values (mean 0, var 1); the second epoch trained the weights but left them unchanged.
    s1, s2 = _checkpoint(tmp_path, 1), _checkpoint(tmp_path, 2)
    stats1, stats2 = _stats(s1), _stats(s2)
    assert len(stats1) >= 10
    assert all(not (np.allclose(a, 0) or np.allclose(a, 1)) for a in stats1)
    for a, b in zip(stats1, stats2, strict=True):
        np.testing.assert_array_equal(a, b)
    k1 = np.asarray(s1["model"]["conv"]["kernel"]["value"])
    k2 = np.asarray(s2["model"]["conv"]["kernel"]["value"])
    assert not np.allclose(k1, k2)

    # val_loss is the eval step's loss on the validation split of the epoch's model
    data, _ = train.load_data(config, tmp_path / "again")
    abstract = nnx.state(nnx.eval_shape(lambda: train.make_model(config, 10)))

    def pure(d):  # Orbax keeps each Variable as {'value': array}
        if isinstance(d, dict):
            return d["value"] if set(d) == {"value"} else {k: pure(v) for k, v in d.items()}
        return d

    nnx.replace_by_pure_dict(abstract, pure(s2["model"]))
    eval_step = train.make_eval_step(
        nnx.graphdef(nnx.eval_shape(lambda: train.make_model(config, 10))),
        input_pipeline.normalizer(config.data),
    )
    from examples.cifar10.sharding import Devices

    loss, acc = train.evaluate(eval_step, abstract, data.validation, 16, Devices.all())
    np.testing.assert_allclose([loss, acc], [history[-1]["val_loss"], history[-1]["val_accuracy"]],
                               rtol=1e-5)  # fmt: skip


# --------------------------------------------------------------------------------------
# Bad values.


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data.validation_size": -1}, "data.validation_size must be an integer >= 0"),
        ({"data.augment_rotation": -5.0}, "data.augment_rotation must be a number of degrees"),
        ({"data.augment": False}, "data.augment_rotation .* 0 when data.augment is False"),
        ({"data.normalize": "imagenet"}, "data.normalize must be one of cifar, half"),
        ({"bn_mode": "eval"}, "bn_mode must be one of train, frozen_after_first_epoch"),
        ({"data.validation_size": 0}, "select_by_val must be False unless data.validation_size"),
        ({"select_by_val": False, "data.validation_size": 0, "schedule": "plateau",
          "plateau.metric": "val_loss"}, "plateau.metric .* unless data.validation_size > 0"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_before_any_data_is_read(tmp_path, overrides, message):
    config = tiny_config(tmp_path / "no_data")
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[last] = value
    with pytest.raises(train.ConfigError, match=message):
        train.train_and_evaluate(config, tmp_path / "wd")


def test_validation_size_that_leaves_no_training_images(tiny_folder, tmp_path):
    config = tiny_config(tiny_folder, validation_size=60)
    with pytest.raises(train.ConfigError, match="validation_size 60 leaves no training images"):
        train.train_and_evaluate(config, tmp_path / "a")
    # the command line: error: ... and exit status 2, no traceback
    result = subprocess.run(
        [sys.executable, "-m", "examples.cifar10.main",
         f"--config={configs.path('seed_published')}", f"--config.data.data_dir={tiny_folder}",
         "--config.data.validation_size=60", "--config.progress=False",
         f"--workdir={tmp_path / 'b'}"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: config.data.validation_size 60 leaves no training images" in result.stderr
    assert "Traceback" not in result.stderr


def test_presets_seed_and_seed_published():
    seed, pub = configs.get_config("seed"), configs.get_config("seed_published")
    assert (seed.data.validation_size, seed.data.augment_crop, seed.data.augment_rotation) == (
        0, True, 0.0)  # fmt: skip
    assert (seed.data.normalize, seed.select_by_val, seed.bn_mode) == ("cifar", False, "train")
    assert (pub.data.validation_size, pub.data.augment, pub.data.augment_crop) == (
        10_000, True, False)  # fmt: skip
    assert (pub.data.augment_rotation, pub.data.normalize) == (10.0, "half")
    assert (pub.select_by_val, pub.bn_mode) == (True, "frozen_after_first_epoch")
    # everything else is seed's
    differs = {k for k, v in run_log.flat_config(pub).items()
               if run_log.flat_config(seed).get(k) != v}  # fmt: skip
    assert differs == {"data.validation_size", "data.augment_crop", "data.augment_rotation",
                       "data.normalize", "select_by_val", "bn_mode"}  # fmt: skip
    cpu = configs.get_config("cpu")  # the committed cpu protocol keeps today's behaviour
    assert (cpu.data.validation_size, cpu.data.augment_crop, cpu.bn_mode) == (0, True, "train")


def test_plateau_on_the_validation_loss_and_the_null_model_in_the_published_protocol(
    tiny_folder, tmp_path
):
    # plateau fed val_loss: ReduceLROnPlateau(mode='min', patience=0, threshold 1e-4 rel),
    # written out, on the recorded validation losses.
    lr, factor = 0.05, 0.5
    config = tiny_config(tiny_folder)
    config.epochs = 3
    config.schedule, config.learning_rate = "plateau", lr
    config.plateau.metric, config.plateau.patience, config.plateau.factor = "val_loss", 0, factor
    history = train.train_and_evaluate(config, tmp_path / "plateau")
    want = plateau_lrs([r["val_loss"] for r in history], lr, factor)
    np.testing.assert_allclose([r["lr"] for r in history], want, rtol=1e-6)
    # The null model under the published protocol: its per-epoch losses are finite and the
    # learning rate moves by their z-scored weights (normalised as the training images).
    config = tiny_config(tiny_folder)
    config.schedule, config.learning_rate = "null_model", lr
    config.null_model.batch_size = 8
    history = train.train_and_evaluate(config, tmp_path / "null")
    for r in history:
        losses = r["epoch_probe"]["losses"]
        assert len(losses) == 3 and all(np.isfinite(losses)) and len(set(losses)) == 3
    assert history[0]["epoch_probe"]["lr_next"] == pytest.approx(history[1]["lr"], rel=1e-6)
