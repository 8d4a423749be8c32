"""Training and evaluation of ResNet-18 on CIFAR-10 with any autolr_jax scheduler.

``train_and_evaluate(config, workdir)`` is the whole run: data, model, the
method that sets the learning rate (``optimizers.build_method``), one jitted
train step (augmentation, forward, backward, optimizer update, including the
``auto`` scheduler's probe), a jitted evaluation, per-epoch JSON lines, Orbax
checkpoints, and plots at the end.

How the pieces fit Flax NNX: the model and its ``nnx.Optimizer(model, tx,
wrt=nnx.Param)`` are split once into graph definitions and a pure state; the
jitted functions merge them, run, and split again (the pattern of Flax's
performance guide). The learning rate lives in the optimizer state as an array,
so changing it never recompiles anything.

Data parallel on every device (``sharding.py``): batches sharded over a mesh,
the state replicated, under plain ``jax.jit``.

The ALR tree trains a beam of models instead of one: ``alr.py``.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import autolr_jax as al
from examples.cifar10 import input_pipeline, models, optimizers, run_log
from examples.cifar10.input_pipeline import augment, normalize
from examples.cifar10.optimizers import ConfigError
from examples.cifar10.run_log import RunLog, epoch_record, progress_bar
from examples.cifar10.sharding import Devices

# --------------------------------------------------------------------------------------
# Settings that involve more than one field (the library checks each of its own).


def check_config(config) -> None:
    """Raises ConfigError for settings that contradict each other or the devices."""

    def bad(field, value, allowed):
        raise ConfigError(f"config.{field} must be {allowed}, got {value!r}")

    if config.schedule not in optimizers.METHODS:
        bad("schedule", config.schedule, f"one of {', '.join(optimizers.METHODS)}")
    for name in ("epochs", "batch_size", "eval_batch_size"):
        value = config[name]
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            bad(name, value, "an integer >= 1")
    if not (isinstance(config.learning_rate, (int, float)) and 0 < config.learning_rate < np.inf):
        bad("learning_rate", config.learning_rate, "finite and > 0")
    if not 0 <= config.momentum < 1:
        bad("momentum", config.momentum, "in [0, 1)")
    if config.nesterov and config.momentum == 0:
        bad("nesterov", config.nesterov, "False when momentum is 0 (as torch.optim.SGD)")
    if not config.weight_decay >= 0:
        bad("weight_decay", config.weight_decay, ">= 0")
    if config.schedule == "warmup_cosine" and not (
        0 <= config.warmup_cosine.warmup_epochs < config.epochs
    ):
        bad(
            "warmup_cosine.warmup_epochs",
            config.warmup_cosine.warmup_epochs,
            f"in [0, epochs - 1] = [0, {config.epochs - 1}]",
        )
    n = jax.device_count()
    for name in ("batch_size", "eval_batch_size"):
        if config[name] % n:
            bad(name, config[name], f"a multiple of the {n} devices the batch is split over")
    width = config.model.width
    if not (isinstance(width, (int, float)) and 0 < width < np.inf):
        bad("model.width", width, "finite and > 0")
    stages = config.model.stage_sizes
    if not (stages and all(isinstance(k, int) and k >= 1 for k in stages)):
        bad("model.stage_sizes", stages, "a non-empty tuple of integers >= 1")
    for name in ("train_subset", "test_subset"):
        value = config.data[name]
        if value is not None and not (isinstance(value, int) and value >= 1):
            bad(f"data.{name}", value, "an integer >= 1 or unset")
    check_protocol_options(config, bad)
    optimizers.check_optimizer(config)
    if config.schedule != "alr":  # every library check of the method, before any data
        optimizers.build_method(config, 1, lambda params, batch: 0.0)


BN_MODES = ("train", "frozen_after_first_epoch")


def check_protocol_options(config, bad) -> None:
    """The validation split, augmentation, normalisation and BatchNorm settings."""
    d = config.data
    val = d.validation_size
    if not (isinstance(val, int) and not isinstance(val, bool) and val >= 0):
        bad("data.validation_size", val, "an integer >= 0")
    for name in ("augment", "augment_crop"):
        if not isinstance(d[name], bool):
            bad(f"data.{name}", d[name], "True or False")
    rot = d.augment_rotation
    if isinstance(rot, bool) or not isinstance(rot, (int, float)) or not 0 <= rot <= 180:
        bad("data.augment_rotation", rot, "a number of degrees in [0, 180]")
    if rot > 0 and not d.augment:
        bad("data.augment_rotation", rot, "0 when data.augment is False (it switches all off)")
    if d.normalize not in input_pipeline.NORMALIZATIONS:
        bad("data.normalize", d.normalize, f"one of {', '.join(input_pipeline.NORMALIZATIONS)}")
    if config.bn_mode not in BN_MODES:
        bad("bn_mode", config.bn_mode, f"one of {', '.join(BN_MODES)}")
    if not isinstance(config.select_by_val, bool):
        bad("select_by_val", config.select_by_val, "True or False")
    if config.select_by_val and val == 0:
        bad("select_by_val", True, "False unless data.validation_size > 0 (it reads val_loss)")
    metric = config.plateau.metric
    if config.schedule == "plateau" and str(metric).startswith("val_") and val == 0:
        bad("plateau.metric", metric, "a test or train metric unless data.validation_size > 0")


def bn_trains(config, epoch: int) -> bool:
    """Whether BatchNorm is in train mode in the training forward of ``epoch`` (0-based).

    ``bn_mode='train'``: always (batch statistics, running statistics updated).
    ``'frozen_after_first_epoch'``: in the first epoch only; from the second on, the
    forward uses the running statistics and leaves them as they are, as the
    published code does (it calls ``model.eval()`` to validate after each epoch and
    never ``model.train()`` again).
    """
    return config.bn_mode == "train" or epoch == 0


# --------------------------------------------------------------------------------------
# The model and the jitted computations.


def make_model(config, num_classes: int, loop_safe_conv: bool = False) -> models.ResNet:
    # The 'rbg' generator: with the default threefry, XLA takes ~10 s (on 2 CPU cores)
    # to compile the initialisation of ResNet-18's ~60 arrays; with rbg, ~1 s.
    key = jax.random.key(config.seed, impl="rbg")
    return models.ResNet(
        tuple(config.model.stage_sizes),
        num_classes,
        config.model.width,
        rngs=nnx.Rngs(key),
        loop_safe_conv=loop_safe_conv,
    )


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def make_probe_loss(model_gd: nnx.GraphDef, bn_train: bool = True):
    """The auto scheduler's ``loss_fn(params, batch)``: a pure function of the parameters.

    The model is rebuilt from ``params`` and the batch's copy of the rest of its
    state (BatchNorm statistics) and run in train mode, as the training forward
    (PyTorch's copied model in ``model.train()``); the running statistics it
    updates belong to the discarded copy, so the probe never changes the model.
    ``bn_train=False`` (``bn_mode='frozen_after_first_epoch'`` after the first
    epoch) runs it with the running statistics instead, as that training forward.
    """

    def probe_loss(params, batch):
        images, labels, rest = batch
        model = nnx.merge(model_gd, params, rest)
        return cross_entropy(model(images, train=bn_train), labels).mean()

    return probe_loss


def make_epoch_probe(model_gd: nnx.GraphDef, probe_loss, normalize_=normalize):
    """Jitted ``(model state, images [B, b, ...] uint8, labels [B, b]) -> losses [B]``.

    The losses of the current model on ``B`` batches, one after another
    (``lax.map``), each a forward of a discarded copy (``probe_loss``: train mode, or
    the running statistics with ``bn_mode='frozen_after_first_epoch'``, as the published
    ``get_lr``, which runs after ``model.eval()``), on images normalised by ``normalize_``.
    """

    def losses(model_state, images, labels):
        # Pure arrays: the copies built inside lax.map must not share the outer Variables.
        _, params, rest = nnx.as_pure(nnx.split(nnx.merge(model_gd, model_state), nnx.Param, ...))
        return jax.lax.map(
            lambda b: probe_loss(params, (normalize_(b[0]), b[1], rest)), (images, labels)
        )

    return jax.jit(losses)


def _probe_batch(
    probe: optimizers.Probe, x, labels, probe_images, probe_labels, rest, normalize_=normalize
):
    """The ``batch=`` of ``auto_lr``: 1 scoring batch, or k stacked look-ahead batches."""
    if probe.source == "train":
        images, labels_ = x, labels
    else:
        images, labels_ = normalize_(probe_images), probe_labels
    k = probe.lookahead
    if k == 1:
        return images, labels_, rest
    if probe.source == "train":  # the training batch k times
        images = jnp.broadcast_to(images, (k, *images.shape))
        labels_ = jnp.broadcast_to(labels_, (k, *labels_.shape))
    else:  # k random batches, drawn at once
        images = images.reshape(k, -1, *images.shape[1:])
        labels_ = labels_.reshape(k, -1)
    rest = jax.tree.map(lambda v: jnp.broadcast_to(v, (k, *jnp.shape(v))), rest)
    return images, labels_, rest


def train_metrics() -> nnx.MultiMetric:
    """The running training metrics of an epoch (updated inside the jitted step)."""
    return nnx.MultiMetric(loss=nnx.metrics.Average("loss"), accuracy=nnx.metrics.Accuracy())


def make_train_step(
    model_gd, opt_gd, method: optimizers.Method, augment_, normalize_=normalize,
    bn_train: bool = True,
):  # fmt: skip
    """One jitted function: augmentation, forward, backward, (probe), update, metrics.

    ``state`` is ``{'model', 'opt', 'rng'}``: the model's and the optimizer's pure
    states and the augmentation key. The batches are uint8; the probe batch is
    used by methods that probe only. ``augment_``: ``(images, key) -> images``
    (``input_pipeline.augmenter``), True for the default crop and flip, or
    False/None; ``normalize_``: ``input_pipeline.normalizer``'s function.
    ``bn_train`` is a Python constant of the compiled step: False runs the
    training forward with BatchNorm's running statistics, which it leaves unchanged.
    """
    if augment_ is True:
        augment_ = augment

    metrics_gd = nnx.graphdef(train_metrics())

    def train_step(state, metrics, images, labels, probe_images, probe_labels):
        model = nnx.merge(model_gd, state["model"])
        optimizer = nnx.merge(opt_gd, state["opt"])
        rng, key = jax.random.split(state["rng"])
        if augment_:
            images = augment_(images, key)
        x = normalize_(images)

        def loss_fn(model):
            logits = model(x, train=bn_train)
            return cross_entropy(logits, labels).mean(), logits

        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        kwargs = {}
        if method.probe is not None:
            # They complete the model: train-mode BatchNorm ignores these running statistics,
            # the probe of bn_train=False (make_probe_loss) uses them.
            rest = nnx.state(model, nnx.Not(nnx.Param))
            kwargs["batch"] = _probe_batch(
                method.probe, x, labels, probe_images, probe_labels, rest, normalize_
            )
            if method.probe.value:
                kwargs["value"] = loss
        optimizer.update(model, grads, **kwargs)
        opt_state = nnx.as_pure(optimizer.opt_state)
        out = {"loss": loss, "lr": method.read_lr(opt_state)}
        if method.probe is not None:
            # build_method puts auto_lr last in the chain.
            out["probe"] = opt_state[-1].telemetry._asdict()
        running = nnx.merge(metrics_gd, metrics)
        running.update(loss=loss, logits=logits, labels=labels)
        new_state = {"model": nnx.state(model), "opt": nnx.state(optimizer), "rng": rng}
        return new_state, nnx.state(running), out

    return jax.jit(train_step, donate_argnums=(0, 1))


def make_eval_model(model_gd, opt_gd, method: optimizers.Method, normalize_=normalize):
    """Jitted ``(state, bn_images) -> model state to evaluate``, where the method says so.

    Schedule-free SGD trains at ``y`` but evaluates at ``x``; the BatchNorm
    statistics gathered at ``y`` are recomputed at ``x`` by running ``bn_images``
    (``[n, batch, H, W, 3]`` un-augmented training batches) in train mode, as the
    authors advise. The training state itself is not changed.
    """

    def eval_model(state, bn_images):
        model = nnx.merge(model_gd, state["model"])
        optimizer = nnx.merge(opt_gd, state["opt"])
        params = nnx.as_pure(nnx.state(model, nnx.Param))
        params_x = method.eval_params(nnx.as_pure(optimizer.opt_state), params)
        stats = nnx.as_pure(nnx.state(model, nnx.Not(nnx.Param)))

        def refresh(stats, images):
            m = nnx.merge(model_gd, params_x, stats)
            m(normalize_(images), train=True)
            return nnx.as_pure(nnx.state(m, nnx.Not(nnx.Param))), None

        if bn_images.shape[0]:
            stats, _ = jax.lax.scan(refresh, stats, bn_images)
        return nnx.state(nnx.merge(model_gd, params_x, stats))

    return jax.jit(eval_model)


def make_eval_step(model_gd: nnx.GraphDef, normalize_=normalize):
    """Jitted (summed loss, number correct) of a batch, padding rows masked out."""

    def eval_step(model_state, images, labels, mask):
        model = nnx.merge(model_gd, model_state)
        logits = model(normalize_(images), train=False)
        loss = jnp.sum(cross_entropy(logits, labels) * mask)
        correct = jnp.sum((jnp.argmax(logits, -1) == labels) * mask)
        return loss, correct

    return jax.jit(eval_step)


def evaluate(eval_step, model_state, split, batch_size: int, devices: Devices):
    """(mean loss, accuracy) over a split."""
    sums = [
        eval_step(model_state, *devices.shard(x, y, m))
        for x, y, m in input_pipeline.eval_batches(split, batch_size)
    ]
    loss_sum, correct = 0.0, 0.0
    for loss, corr in jax.device_get(sums):  # in order, in float64
        loss_sum += float(loss)
        correct += float(corr)
    return loss_sum / len(split), correct / len(split)


def evaluate_validation(eval_step, model_state, data, batch_size: int, devices: Devices) -> dict:
    """``{'val_loss', 'val_accuracy'}`` on the validation split; ``{}`` without one."""
    if data.validation is None:
        return {}
    loss, acc = evaluate(eval_step, model_state, data.validation, batch_size, devices)
    return {"val_loss": loss, "val_accuracy": acc}


class Diverged(RuntimeError):
    """A loss, a parameter or a BatchNorm statistic became non-finite: ``history`` holds
    the epochs before it (checkpointed), ``record`` the epoch in which it happened (not
    checkpointed)."""

    def __init__(self, message: str, history: list[dict], record: dict):
        super().__init__(message)
        self.history, self.record = history, record


def load_data(config, workdir, resume: bool = False, overwrite: bool = False):
    """Checks the settings and the workdir, loads the data; returns (data, steps per epoch)."""
    check_config(config)
    run_log.prepare_workdir(workdir, resume, overwrite)
    try:
        data = input_pipeline.load_dataset(config.data)
    except input_pipeline.SplitError as e:
        raise ConfigError(str(e)) from e
    steps_per_epoch = len(data.train) // config.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"batch_size {config.batch_size} exceeds the {len(data.train)} training images"
        )
    return data, steps_per_epoch


def data_summary(data) -> dict:
    return {"source": data.source, "class_counts": data.class_counts()}


def start_line(config, data, steps_per_epoch: int, lr_update: str) -> str:
    def per_class(c: dict) -> str:
        n = set(c.values())
        return (
            f"{n.pop()} per class" if len(n) == 1 else ", ".join(f"{k} {v}" for k, v in c.items())
        )

    counts = {split: per_class(c) for split, c in data.class_counts().items()}
    sizes = " / ".join(
        f"{len(s)} {name}{' images' if name == 'test' else ''} ({counts[name]})"
        for name, s in data.splits()
    )
    return (
        f"CIFAR-10 from {data.source}: {sizes}; "
        f"ResNet-18 width {config.model.width}; schedule {config.schedule} ({lr_update}); "
        f"{steps_per_epoch} steps/epoch on {jax.device_count()} device(s)"
    )


# --------------------------------------------------------------------------------------
# The run.


DECISION_NAMES = {code: name for name, code in al.DECISIONS.items()}


def _probe_records(outs: dict[int, dict], tqdm_write) -> list[dict]:
    """The probes of an epoch, from the train step's outputs at the probing updates."""
    records = []
    for step, out in sorted(outs.items()):
        p = out["probe"]
        records.append(
            {
                "step": step,
                "multiplier": float(p["multiplier"]),
                "lr": float(out["lr"]),
                "level": float(p["level"]),
                "decision": DECISION_NAMES.get(int(p["decision"]), "custom"),
                "loss0": float(p["loss0"]),
                "losses": [float(v) for v in p["losses"]],
                "scores": [float(v) for v in p["scores"]],
            }
        )
        r = records[-1]
        shown = f"losses {np.round(r['losses'], 4).tolist()}"
        if r["decision"].startswith("search"):
            # The first probe's search scores its own grid; the factors' losses stay zeros.
            r["search_losses"] = [float(v) for v in p["search_losses"]]
            shown = (
                f"search losses (largest factor first) {np.round(r['search_losses'], 3).tolist()}"
            )
        tqdm_write(
            f"  probe at update {step}: {shown} -> "
            f"{r['decision']} x{r['multiplier']:.4g}, lr {r['lr']:.4g}"
        )
    return records


def train_epoch(config, data, devices, train_step, method, state, epoch, probe_batch):
    """One epoch of jitted train steps; returns (state, the record's training part, probe batch)."""
    from tqdm.auto import tqdm

    steps_per_epoch = len(data.train) // config.batch_size
    probe = method.probe
    metrics_gd, running = nnx.split(train_metrics())
    running = devices.replicate(running)
    first, probe_outs, last_refresh = None, {}, time.time()
    batches = input_pipeline.train_batches(data.train, config.batch_size, config.seed, epoch)
    # A context manager: the bar is closed on Ctrl-C or an error in mid-epoch too.
    with progress_bar(config, epoch, steps_per_epoch, "step") as bar:
        for i, (x, y) in enumerate(batches):
            step = epoch * steps_per_epoch + i
            is_probe = probe is not None and step % probe.every == 0
            if is_probe and probe.source == "random":
                idx = input_pipeline.probe_indices(
                    len(data.train), probe.batch_size, config.seed, step, probe.lookahead
                )
                probe_batch = devices.replicate((data.train.images[idx], data.train.labels[idx]))
            state, running, out = train_step(state, running, *devices.shard(x, y), *probe_batch)
            first = out if i == 0 else first
            if is_probe:
                probe_outs[step] = out
            bar.update(1)
            if config.progress and time.time() - last_refresh > 0.5:
                # Fetching waits for the step to finish: done twice a second, not every step.
                bar.set_postfix(loss=f"{float(out['loss']):.4f}", lr=f"{float(out['lr']):.4g}")
                last_refresh = time.time()
    first, out, probe_outs, running = jax.device_get((first, out, probe_outs, running))
    train = nnx.merge(metrics_gd, running).compute()
    rec = {
        "train_loss": float(train["loss"]),
        "train_accuracy": float(train["accuracy"]),
        "lr": float(out["lr"]),
        "lr_first": float(first["lr"]),
    }
    if probe is not None:
        rec["probes"] = _probe_records(probe_outs, tqdm.write)
        rec["num_probes"] = int(out["probe"]["num_probes"])
    return state, rec, probe_batch


def run_epoch_probe(config, data, devices, method, epoch_probe, opt_gd, state, epoch, k):
    """``method.epoch_probe`` at the end of ``epoch``: (state, its record for the epoch)."""
    p = method.epoch_probe
    # Batches drawn as the auto probe's, at the next epoch's first update.
    n = len(data.train)
    idx = input_pipeline.probe_indices(n, p.batch_size, config.seed, (epoch + 1) * k, p.batches)
    images = data.train.images[idx].reshape(p.batches, p.batch_size, *data.train.images.shape[1:])
    labels = data.train.labels[idx].reshape(p.batches, p.batch_size)
    losses = epoch_probe(state["model"], *devices.replicate((images, labels)))
    state, opt_pure = with_opt_state(opt_gd, state, lambda s: p.update(s, losses))
    lr_next = float(method.read_lr(opt_pure))
    return state, {"losses": np.asarray(jax.device_get(losses)).tolist(), "lr_next": lr_next}


def with_opt_state(opt_gd, state, fn):
    """``state`` with its optimizer state replaced by ``fn(pure opt_state)``; and that."""
    optimizer = nnx.merge(opt_gd, state["opt"])
    opt_pure = fn(nnx.as_pure(optimizer.opt_state))
    nnx.update(optimizer.opt_state, nnx.state(opt_pure))
    return {**state, "opt": nnx.state(optimizer)}, opt_pure


def check_probe_sizes(method: optimizers.Method, n_train: int) -> None:
    """Refuses probe batches that the training set cannot fill (ConfigError)."""
    probe, ep = method.probe, method.epoch_probe
    if ep and ep.batches * ep.batch_size > n_train:
        raise ConfigError(
            f"the null model's {ep.batches} batches of {ep.batch_size} exceed the "
            f"{n_train} training images"
        )
    n_probe = probe.batch_size * probe.lookahead if probe else 0
    if probe and probe.source == "random" and n_probe > n_train:
        raise ConfigError(
            f"auto.probe_batch_size {probe.batch_size} x auto.lookahead {probe.lookahead} = "
            f"{n_probe} exceeds the {n_train} training images"
        )


def empty_probe_batch(probe: optimizers.Probe | None, image_shape) -> tuple[np.ndarray, ...]:
    """The probe batch's buffers: redrawn at each probe (one dummy image with source 'train')."""
    n = probe.batch_size * probe.lookahead if probe and probe.source == "random" else 1
    return np.zeros((n, *image_shape), np.uint8), np.zeros((n,), np.int32)


def make_train_steps(config, steps_per_epoch, graphdefs, method, model_state, augment_, norm):
    """``{bn_train: jitted train step}``: one per BatchNorm mode the run uses.

    The mode is a Python constant of each step; jit compiles a step when it is first
    called, so a run compiles at most two (``bn_mode='train'``: one).
    """
    model_gd, probe_gd, opt_gd = graphdefs
    steps = {True: make_train_step(model_gd, opt_gd, method, augment_, norm)}
    if config.bn_mode == "frozen_after_first_epoch":
        method_f, opt_gd_f = method, opt_gd
        if method.probe is not None:  # the probe's forward follows the mode too
            method_f = optimizers.build_method(
                config, steps_per_epoch, make_probe_loss(probe_gd, bn_train=False)
            )
            # The same optimizer state; only the transformation in the graph differs.
            opt_gd_f = nnx.split(
                nnx.eval_shape(
                    lambda ms: nnx.Optimizer(nnx.merge(model_gd, ms), method_f.tx, wrt=nnx.Param),
                    model_state,
                )
            )[0]
        steps[False] = make_train_step(model_gd, opt_gd_f, method_f, augment_, norm, bn_train=False)
    return steps


def train_and_evaluate(
    config, workdir: str | Path, resume: bool = False, overwrite: bool = False
) -> list[dict]:
    """Trains and evaluates; writes metrics, checkpoints and plots to ``workdir``.

    Args:
      config: an ``ml_collections.ConfigDict`` like ``configs/default.py``'s.
      workdir: the run's directory: ``metrics.jsonl`` (one JSON object per
        epoch), ``checkpoints/`` (Orbax), ``plots/*.png``, ``config.json``.
      resume: continue the run whose checkpoints are in ``workdir``.
      overwrite: delete the outputs of a run already in ``workdir`` and start
        afresh. Without it or ``resume``, such a workdir is a ConfigError.

    Returns:
      The per-epoch records (as written to ``metrics.jsonl``).

    Raises:
      ConfigError: a bad setting or workdir. Diverged: a loss or the model became
      non-finite (the epoch is not checkpointed). run_log.Interrupted (a
      KeyboardInterrupt): Ctrl-C, after the pending checkpoint was written.
    """
    if config.schedule == "alr":  # a beam of models: its own loop
        from examples.cifar10 import alr

        return alr.train_and_evaluate(config, workdir, resume, overwrite)

    data, steps_per_epoch = load_data(config, workdir, resume, overwrite)
    devices = Devices.all()
    n_classes = len(data.class_names)
    model_gd = nnx.split(nnx.eval_shape(lambda: make_model(config, n_classes)))[0]
    # A look-ahead probe takes gradients inside lax.map; on CPU, XLA runs those 20-50x
    # slower unless the convolution gradients are written out (models.loop_safe_conv).
    probe_gd = model_gd
    if config.auto.lookahead > 1 and jax.default_backend() == "cpu":
        probe_gd = nnx.split(nnx.eval_shape(lambda: make_model(config, n_classes, True)))[0]
    probe_loss = make_probe_loss(probe_gd)
    method = optimizers.build_method(config, steps_per_epoch, probe_loss)
    check_probe_sizes(method, len(data.train))

    # Initialised inside jit: eagerly, every initializer call would compile on its own.
    model_state = jax.jit(lambda: nnx.state(make_model(config, n_classes)))()

    def make_optimizer(model_state):
        return nnx.Optimizer(nnx.merge(model_gd, model_state), method.tx, wrt=nnx.Param)

    opt_gd = nnx.split(nnx.eval_shape(make_optimizer, model_state))[0]
    # Some optimizers keep the initial parameters in their state (prodigy, dog, mechanize);
    # jit may hand back those very buffers, which the donating train step must not get twice.
    opt_state = jax.tree.map(
        jnp.copy, jax.jit(lambda ms: nnx.state(make_optimizer(ms)))(model_state)
    )
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
    log = RunLog(config, workdir, resume, method.depends_on_epochs, data_summary(data), overwrite)
    state = log.restore(
        {"model": model_state, "opt": opt_state, "rng": rng}, finite_part=lambda s: s["model"]
    )
    state = devices.replicate(state)
    lr_update = (
        "step size estimated by the optimizer at every update"
        if config.schedule in optimizers.LR_FREE
        else f"lr updated per {optimizers.lr_update_of(config)}"
    )
    print(start_line(config, data, steps_per_epoch, lr_update))
    augment_ = input_pipeline.augmenter(config.data)
    normalize_ = input_pipeline.normalizer(config.data)
    train_steps = make_train_steps(
        config, steps_per_epoch, (model_gd, probe_gd, opt_gd), method, model_state, augment_,
        normalize_,
    )  # fmt: skip
    eval_step = make_eval_step(model_gd, normalize_)
    eval_model = (
        make_eval_model(model_gd, opt_gd, method, normalize_) if method.eval_params else None
    )
    epoch_probe = None
    if method.epoch_probe:
        bn_train = config.bn_mode == "train"
        epoch_probe = make_epoch_probe(model_gd, make_probe_loss(model_gd, bn_train), normalize_)
    probe_batch = devices.replicate(empty_probe_batch(method.probe, data.train.images.shape[1:]))

    try:
        for epoch in range(log.start_epoch, config.epochs):
            t0 = time.time()
            train_step = train_steps[bn_trains(config, epoch)]
            state, rec, probe_batch = train_epoch(
                config, data, devices, train_step, method, state, epoch, probe_batch
            )
            train_time = time.time() - t0

            t1 = time.time()
            eval_state = state["model"]
            if eval_model is not None:
                bn = input_pipeline.bn_batches(
                    data.train, config.batch_size, config.seed, epoch, method.bn_refresh_batches
                )
                eval_state = eval_model(state, devices.replicate(bn))
            test_loss, test_acc = evaluate(
                eval_step, eval_state, data.test, config.eval_batch_size, devices
            )
            eval_bs = config.eval_batch_size
            rec.update(evaluate_validation(eval_step, eval_state, data, eval_bs, devices))
            eval_time = time.time() - t1
            if method.after_epoch is not None:
                epoch_metrics = {
                    "test_loss": test_loss,
                    "test_accuracy": test_acc,
                    "train_loss": rec["train_loss"],
                    **{k: rec[k] for k in ("val_loss", "val_accuracy") if k in rec},
                }
                after = functools.partial(method.after_epoch, metrics=epoch_metrics)
                state, _ = with_opt_state(opt_gd, state, after)
            epoch_losses = None
            if method.epoch_probe is not None:
                state, epoch_losses = run_epoch_probe(
                    config,
                    data,
                    devices,
                    method,
                    epoch_probe,
                    opt_gd,
                    state,
                    epoch,
                    steps_per_epoch,
                )

            rec = epoch_record(
                epoch,
                steps_per_epoch,
                rec,
                (test_loss, test_acc),
                (t0, train_time, eval_time),
                log.wall_time(),
            )
            if epoch_losses is not None:
                rec["epoch_probe"] = epoch_losses
            check_finite(log, state, rec)
            log.end_epoch(state, rec)
            if config.stop_after_epoch is not None and epoch + 1 >= config.stop_after_epoch:
                break

    except KeyboardInterrupt:
        # One line and exit status 130 (main.py), once the pending checkpoint is written.
        raise log.interrupted() from None
    return log.finish(method.lr_label)


def check_finite(log: RunLog, state, rec: dict) -> None:
    """Raises Diverged, before the epoch is checkpointed, if its losses or its model
    (parameters, BatchNorm statistics) are non-finite.

    The losses alone miss a model that has blown up: train-mode BatchNorm keeps the
    training loss finite, and an evaluation can too, while most arrays are inf or NaN.
    """
    epoch = rec["epoch"]
    if math.isfinite(rec["train_loss"]) and math.isfinite(rec["test_loss"]):
        bad = run_log.nonfinite_arrays(state["model"])
        if not bad:
            return
        n = len(jax.tree.leaves(state["model"]))
        what = (
            f"the model became non-finite in epoch {epoch} ({len(bad)} of its {n} arrays "
            f"hold NaN or inf, e.g. {bad[0]}; losses train {rec['train_loss']:.4g}, test "
            f"{rec['test_loss']:.4g})"
        )
    else:
        what = (
            f"the loss became non-finite in epoch {epoch} (train {rec['train_loss']}, "
            f"test {rec['test_loss']})"
        )
    log.close()
    raise Diverged(
        f"{what}; not checkpointed: the last good checkpoint is epoch {epoch - 1} "
        "(lower config.learning_rate)",
        log.history,
        rec,
    )
