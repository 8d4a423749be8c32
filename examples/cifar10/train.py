"""Training and evaluation of ResNet-18 on CIFAR-10 with any autolr_jax scheduler.

``train_and_evaluate(config, workdir)`` is the whole run: data, model, optimizer,
one jitted train step (augmentation, forward, backward and optimizer update,
including the ``auto`` scheduler's probe), a jitted evaluation, per-epoch JSON
lines, Orbax checkpoints, and plots at the end.

How the pieces fit Flax NNX: the model and its ``nnx.Optimizer(model, tx,
wrt=nnx.Param)`` are split once into a graph definition and a pure state; the
jitted functions merge them, run, and split again (the pattern of Flax's
performance guide). The learning rate lives in the optimizer state as an array,
so changing it never recompiles anything.

Two schedules take other paths. ``alr`` (the ALR tree, ``autolr_jax.alr_tree``)
has no ``nnx.Optimizer``: the beam's ``M`` members (parameters, BatchNorm
statistics, SGD state) are stacked pytrees, and each epoch is one jitted call
that trains the ``M * N`` children over the epoch's stacked batches and keeps
the best. The learning-rate-free optimizers (``prodigy``, ``dog``,
``mechanize``, ``schedule_free``; ``optax.contrib``) replace SGD and its
schedule in the usual train step; their logged learning rate is the step size
each one estimates (see :func:`make_lr_reader`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import autolr_jax as al

import input_pipeline
import models
from configs.default import LR_FREE, SCHEDULES, Config

# Per-channel statistics of the CIFAR-10 training set (official binary release).
MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32) * 255.0
STD = np.array([0.2470, 0.2435, 0.2616], np.float32) * 255.0

METRICS_FILE = "metrics.jsonl"


class ConfigError(ValueError):
    """An invalid setting, or a --resume that does not fit the saved run."""


# Settings that may change when a run is resumed; any other difference is an error,
# since the optimizer state saved in the checkpoint would not fit.
_RESUMABLE_CHANGES = {
    "epochs",
    "progress",
    "checkpoint",
    "stop_after_epoch",
    "plots",
    "resume",
    "data_dir",
    "tfds_data_dir",
    "cache_dir",
}


# --------------------------------------------------------------------------------------
# Schedules and optimizers.


def _check_config(config: Config) -> None:
    def bad(field, value, allowed):
        raise ConfigError(f"config.{field} must be {allowed}, got {value!r}")

    if config.schedule not in SCHEDULES:
        bad("schedule", config.schedule, f"one of {', '.join(SCHEDULES)}")
    if config.lr_update not in (None, "epoch", "step"):
        bad("lr_update", config.lr_update, "'epoch', 'step' or unset")
    if config.probe_source not in ("random", "train"):
        bad("probe_source", config.probe_source, "'random' or 'train'")
    if config.plateau_metric not in ("test_loss", "test_accuracy", "train_loss"):
        bad("plateau_metric", config.plateau_metric, "test_loss, test_accuracy or train_loss")
    for name in ("epochs", "batch_size", "eval_batch_size", "probe_batch_size"):
        if not (isinstance(getattr(config, name), int) and getattr(config, name) >= 1):
            bad(name, getattr(config, name), "an integer >= 1")
    if not config.learning_rate > 0:
        bad("learning_rate", config.learning_rate, "> 0")
    if not 0 <= config.momentum < 1:
        bad("momentum", config.momentum, "in [0, 1)")
    if config.nesterov and config.momentum == 0:
        bad("nesterov", config.nesterov, "False when momentum is 0 (as torch.optim.SGD)")
    if config.weight_decay < 0:
        bad("weight_decay", config.weight_decay, ">= 0")
    if config.schedule == "warmup_cosine" and not 0 <= config.warmup_epochs < config.epochs:
        bad("warmup_epochs", config.warmup_epochs, f"in [0, epochs - 1] = [0, {config.epochs - 1}]")
    # alr_tree validates the rest of the ALR settings (factors, rates, beam size, chunk size).
    if config.alr_rank_by not in ("mean", "last"):
        bad("alr_rank_by", config.alr_rank_by, "'mean' or 'last'")
    if config.alr_strategy not in ("auto", "map", "vmap"):
        bad("alr_strategy", config.alr_strategy, "'auto', 'map' or 'vmap'")
    if config.lr_free_learning_rate is not None and not config.lr_free_learning_rate > 0:
        bad("lr_free_learning_rate", config.lr_free_learning_rate, "> 0 or unset")
    if not config.dog_init_alpha > 0:
        bad("dog_init_alpha", config.dog_init_alpha, "> 0")
    if not config.mechanize_weight_decay >= 0:
        bad("mechanize_weight_decay", config.mechanize_weight_decay, ">= 0")
    if not 0 < config.schedule_free_b1 <= 1:
        bad("schedule_free_b1", config.schedule_free_b1, "in (0, 1] (optax needs b1 > 0)")
    warmup = config.schedule_free_warmup_steps
    if warmup is not None and not (isinstance(warmup, int) and warmup >= 1):
        bad("schedule_free_warmup_steps", warmup, "an integer >= 1 or unset")
    n_bn = config.schedule_free_bn_batches
    if not (isinstance(n_bn, int) and n_bn >= 0):
        bad("schedule_free_bn_batches", n_bn, "an integer >= 0")
    k = config.auto_lookahead
    if not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
        bad("auto_lookahead", k, "an integer >= 1")
    if config.auto_score is not None:
        auto_score(config.auto_score)


def auto_score(text: str):
    """The ``score=`` of ``auto_lr`` named by ``config.auto_score``.

    ``minmax_exp``, ``softmax`` and ``rank_exp`` are the library's names;
    ``softmax:T`` is ``autolr_jax.softmax_score(T)``.
    """
    name, _, arg = str(text).partition(":")
    if name in ("minmax_exp", "softmax", "rank_exp") and not arg:
        return name
    if name == "softmax" and arg:
        try:
            return al.softmax_score(float(arg))
        except ValueError as e:
            raise ConfigError(f"config.auto_score {text!r}: {e}") from None
    raise ConfigError(
        f"config.auto_score must be minmax_exp, softmax, softmax:T (a temperature T > 0) or "
        f"rank_exp, got {text!r}"
    )


def lr_update_of(config: Config) -> str:
    """'epoch' or 'step': how often the learning rate of ``config`` changes."""
    if config.lr_update is not None:
        return config.lr_update
    return "step" if config.schedule == "one_cycle" else "epoch"


def build_schedule(config: Config, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate as a function of the update count, for the fixed schedules.

    Durations in ``config`` are in epochs. With ``lr_update == 'epoch'`` the
    schedule is built in epochs and wrapped in ``autolr_jax.per_epoch`` (PyTorch's
    ``scheduler.step()`` once per epoch); with ``'step'`` it is built in updates.
    """
    lr = config.learning_rate
    epochs = config.epochs
    per_step = lr_update_of(config) == "step"
    k = steps_per_epoch if per_step else 1  # updates per schedule unit

    name = config.schedule
    if name == "constant":
        schedule = optax.constant_schedule(lr)
    elif name == "step":
        gamma = 0.1 if config.gamma is None else config.gamma
        schedule = al.step_lr(lr, config.step_size * k, gamma)
    elif name == "multistep":
        gamma = 0.1 if config.gamma is None else config.gamma
        milestones = config.milestones
        if milestones is None:
            milestones = (epochs // 2, (3 * epochs) // 4)
        schedule = al.multistep_lr(lr, [m * k for m in milestones], gamma)
    elif name == "exponential":
        gamma = 0.95 if config.gamma is None else config.gamma
        schedule = al.exponential_lr(lr, gamma ** (1.0 / k))
    elif name == "linear":
        schedule = al.linear_lr(
            lr, config.linear_start_factor, config.linear_end_factor, config.linear_total_iters * k
        )
    elif name == "cosine":
        schedule = al.cosine_annealing_lr(lr, (config.t_max or epochs) * k, config.eta_min)
    elif name == "warmup_cosine":
        kw = {}
        if config.warmup_start_factor is not None:
            kw["warmup_start_factor"] = config.warmup_start_factor
        schedule = al.warmup_cosine(
            lr, config.warmup_epochs * k, epochs * k, eta_min=config.eta_min, **kw
        )
    elif name == "one_cycle":
        schedule = al.one_cycle_lr(
            lr,
            epochs * k,
            pct_start=config.one_cycle_pct_start,
            anneal_strategy=config.one_cycle_anneal_strategy,
            div_factor=config.one_cycle_div_factor,
            final_div_factor=config.one_cycle_final_div_factor,
            three_phase=config.one_cycle_three_phase,
        )
    else:
        raise ValueError(f"{name!r} is not a fixed schedule")
    if not per_step:
        schedule = al.per_epoch(schedule, steps_per_epoch)
    return schedule


def build_optimizer(
    config: Config, steps_per_epoch: int, probe_loss_fn=None
) -> optax.GradientTransformation:
    """SGD (momentum, Nesterov and weight decay as ``torch.optim.SGD``) with the schedule.

    Weight decay is added to the gradient before momentum, as ``torch.optim.SGD``
    does; ``optax.trace`` is PyTorch's momentum buffer (dampening 0). The last
    stage sets the learning rate: ``scale_by_lr_schedule`` for the fixed
    schedules, ``reduce_on_plateau`` for plateau (fed once per epoch with
    ``report_metric``), ``auto_lr(optax.sgd, ...)`` for auto (which owns the
    momentum too).
    """
    pre = []
    if config.weight_decay:
        pre.append(optax.add_decayed_weights(config.weight_decay))
    momentum = config.momentum or None
    name = config.schedule
    if name == "alr":
        raise ValueError("alr trains a beam of optimizers: use build_alr_tree")
    if name in LR_FREE:
        return build_lr_free_optimizer(config)
    if name == "auto":
        if probe_loss_fn is None:
            raise ValueError("the auto schedule needs probe_loss_fn")
        kw = {}
        if config.auto_score is not None:
            kw["score"] = auto_score(config.auto_score)
        if momentum is not None:
            kw.update(momentum=momentum, nesterov=config.nesterov)
        last = al.auto_lr(
            optax.sgd,
            learning_rate=config.learning_rate,
            loss_fn=probe_loss_fn,
            factors=tuple(config.auto_factors),
            every=config.auto_every or steps_per_epoch,
            min_lr=config.auto_min_lr,
            max_lr=config.auto_max_lr,
            strategy=config.auto_strategy,
            chunk_size=config.auto_chunk_size,
            lookahead=config.auto_lookahead,
            **kw,
        )
        return optax.chain(*pre, last)
    if momentum is not None:
        pre.append(optax.trace(decay=momentum, nesterov=config.nesterov))
    if name == "plateau":
        last = al.reduce_on_plateau(
            config.learning_rate,
            mode=config.plateau_mode,
            factor=config.plateau_factor,
            patience=config.plateau_patience,
            threshold=config.plateau_threshold,
            threshold_mode=config.plateau_threshold_mode,
            cooldown=config.plateau_cooldown,
            min_lr=config.plateau_min_lr,
        )
    else:
        last = al.scale_by_lr_schedule(build_schedule(config, steps_per_epoch))
    return optax.chain(*pre, last)


def build_lr_free_optimizer(config: Config) -> optax.GradientTransformation:
    """The learning-rate-free optimizers of ``optax.contrib``, with their recommended settings.

    * ``prodigy``: ``prodigy(learning_rate=lr_free_learning_rate or 1.0,
      weight_decay=weight_decay)`` (Adam-based; decoupled, AdamW-style decay).
    * ``dog``: ``dog(learning_rate=lr_free_learning_rate or 1.0,
      init_step=('heuristic', dog_init_alpha), weight_decay=weight_decay or None)``
      (plain SGD directions; L2 decay added to the gradient).
    * ``mechanize``: ``mechanize(SGD(learning_rate, momentum, nesterov, weight_decay),
      weight_decay=mechanize_weight_decay)``: Mechanic learns a scale ``s`` of the
      base SGD's updates, so ``learning_rate`` only sets the base step.
    * ``schedule_free``: ``schedule_free_sgd(learning_rate,
      warmup_steps=schedule_free_warmup_steps, b1=schedule_free_b1,
      weight_decay=weight_decay or None)``; evaluate at
      ``schedule_free_eval_params`` (see :func:`make_eval_state`).

    ``momentum`` applies to ``mechanize``'s base SGD only: prodigy has Adam's
    betas, DoG is momentum-free, and schedule-free replaces momentum by its
    interpolation (``b1``); :func:`train_and_evaluate` prints a note when it is set.
    """
    name = config.schedule
    scale = 1.0 if config.lr_free_learning_rate is None else config.lr_free_learning_rate
    wd = config.weight_decay or None
    contrib = optax.contrib
    if name == "prodigy":
        return contrib.prodigy(learning_rate=scale, weight_decay=config.weight_decay)
    if name == "dog":
        return contrib.dog(
            learning_rate=scale, init_step=("heuristic", config.dog_init_alpha), weight_decay=wd
        )
    if name == "mechanize":
        base = optax.sgd(
            config.learning_rate, momentum=config.momentum or None, nesterov=config.nesterov
        )
        if wd:
            base = optax.chain(optax.add_decayed_weights(wd), base)
        return contrib.mechanize(base, weight_decay=config.mechanize_weight_decay)
    if name == "schedule_free":
        return contrib.schedule_free_sgd(
            config.learning_rate,
            warmup_steps=config.schedule_free_warmup_steps,
            b1=config.schedule_free_b1,
            weight_decay=wd,
        )
    raise ValueError(f"{name!r} is not a learning-rate-free optimizer")


def _find_state(tree: Any, cls: type) -> Any:
    """The one node of type ``cls`` in a (pure) optimizer state."""
    found = [
        n for n in jax.tree.leaves(tree, is_leaf=lambda n: isinstance(n, cls)) if isinstance(n, cls)
    ]
    if len(found) != 1:
        raise ValueError(f"expected one {cls.__name__} in the optimizer state, found {len(found)}")
    return found[0]


def make_lr_reader(config: Config):
    """``opt_state -> float32 lr`` for the logs, from the pure optimizer state after an update.

    ``autolr_jax.current_lr`` for SGD with a schedule, plateau and auto. The
    learning-rate-free optimizers hold no learning rate; what is logged is the
    step size each one has estimated:

    * ``prodigy``: ``d * learning_rate`` after the update, the step the next
      update takes before Adam's bias correction (PyTorch's Prodigy logs
      ``d * lr`` likewise); ``d`` starts at 1e-6 and never decreases.
    * ``dog``: ``learning_rate * max_dist / sqrt(sum of squared gradient norms
      + eps)``, exactly the step size of the last update.
    * ``mechanize``: ``sum(s) * learning_rate``, Mechanic's learned scale times
      the base SGD's learning rate (the scale the last update applied).
    * ``schedule_free``: the SGD learning rate of the last update (constant, or
      its warmup value).
    """
    name = config.schedule
    scale = 1.0 if config.lr_free_learning_rate is None else config.lr_free_learning_rate
    contrib = optax.contrib
    f32 = jnp.float32
    if name == "prodigy":
        return lambda s: (_find_state(s, contrib.ProdigyState).estim_lr * scale).astype(f32)

    if name == "dog":

        def dog_lr(s):
            d = _find_state(s, contrib.DoGState)
            return (scale * d.max_dist / jnp.sqrt(d.sum_sq_norm_grads + 1e-8)).astype(f32)

        return dog_lr
    if name == "mechanize":
        lr = config.learning_rate
        return lambda s: (jnp.sum(_find_state(s, contrib.MechanicState).s) * lr).astype(f32)
    if name == "schedule_free":
        return lambda s: _find_state(s, contrib.ScheduleFreeState).max_lr.astype(f32)
    return al.current_lr


def alr_learning_rates(config: Config) -> tuple[float, ...]:
    """The ALR beam's initial learning rates: ``alr_learning_rates`` or ``(lr, lr / 2)``.

    The default ``M = 2`` beam starts its best member at the configured rate, so
    the first epoch's children with factors (2, 1, 0.5) span ``lr / 4 .. 2 lr``:
    leaning low, because too large a rate diverges while too small a one only
    trains slower.
    """
    if config.alr_learning_rates is not None:
        return tuple(config.alr_learning_rates)
    return (config.learning_rate, config.learning_rate / 2)


def _check_alr_settings(config: Config) -> None:
    """The ALR settings as alr_tree checks them, before any data or model is loaded."""
    tree = build_alr_tree(config, None, loss_fn=lambda p, s, b: (jnp.sum(p), s))
    try:
        jax.eval_shape(lambda: tree.init(jnp.zeros(()), alr_learning_rates(config), 0))
    except ValueError as e:
        raise ConfigError(f"invalid schedule/optimizer setting for 'alr': {e}") from e


def build_alr_tree(config: Config, model_gd: nnx.GraphDef, loss_fn=None) -> al.ALRTree:
    """``autolr_jax.alr_tree`` over the ResNet, each child with the example's SGD.

    A child's optimizer is ``torch.optim.SGD`` as in :func:`build_optimizer`
    (weight decay added to the gradient, then momentum), at the learning rate
    the tree injects. The model state a child carries is
    ``{'batch_stats': BatchNorm statistics, 'correct': int32}``: the second
    counts the child's correct training predictions during the epoch (reset
    before each epoch), for the logged training accuracy.
    """
    momentum = config.momentum or None
    wd = config.weight_decay

    def sgd(learning_rate):
        # Only learning_rate is injected; momentum and nesterov stay Python constants.
        tx = optax.sgd(learning_rate, momentum=momentum, nesterov=config.nesterov)
        return optax.chain(optax.add_decayed_weights(wd), tx) if wd else tx

    try:
        return al.alr_tree(
            loss_fn or make_alr_loss(model_gd, config),
            sgd,
            factors=tuple(config.alr_factors),
            beam_size=config.alr_beam_size,
            rank_by=config.alr_rank_by,
            strategy=config.alr_strategy,
            chunk_size=config.alr_chunk_size,
            has_aux=True,
        )
    except ValueError as e:  # autolr_jax names the argument, the value and the range
        raise ConfigError(f"invalid schedule/optimizer setting for 'alr': {e}") from e


# --------------------------------------------------------------------------------------
# The jitted computations.


def normalize(images: jax.Array) -> jax.Array:
    """uint8 NHWC -> float32, standardised per channel."""
    return (images.astype(jnp.float32) - MEAN) / STD


def augment(images: jax.Array, key: jax.Array, pad: int = 4) -> jax.Array:
    """Random crop after zero-padding by ``pad`` pixels, and random horizontal flip.

    torchvision's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``, on
    device: a crop offset and a coin per image.
    """
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


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def make_probe_loss(model_gd: nnx.GraphDef):
    """The auto scheduler's ``loss_fn(params, batch)``: a pure function of the parameters.

    The model is rebuilt from ``params`` and the batch's copy of the rest of its
    state (BatchNorm statistics) and run in train mode, as the training forward
    (PyTorch's copied model in ``model.train()``); the running statistics it
    updates belong to the discarded copy, so the probe never changes the model.
    """

    def probe_loss(params, batch):
        images, labels, rest = batch
        model = nnx.merge(model_gd, params, rest)
        return cross_entropy(model(images, train=True), labels).mean()

    return probe_loss


def make_alr_loss(model_gd: nnx.GraphDef, config: Config):
    """The ALR tree's ``loss_fn(params, model_state, batch) -> (loss, new_model_state)``.

    ``batch`` is ``(uint8 images, labels, key)``: the augmentation key travels
    with the batch, so every child sees the same augmented images. The model
    runs in train mode and its updated BatchNorm statistics are the new model
    state, as in the ordinary train step.
    """

    def loss_fn(params, model_state, batch):
        images, labels, key = batch
        if config.augment:
            images = augment(images, key)
        model = nnx.merge(model_gd, params, model_state["batch_stats"])
        logits = model(normalize(images), train=True)
        loss = cross_entropy(logits, labels).mean()
        correct = jnp.sum(jnp.argmax(logits, -1) == labels).astype(jnp.int32)
        return loss, {
            "batch_stats": nnx.as_pure(nnx.state(model, nnx.Not(nnx.Param))),
            "correct": model_state["correct"] + correct,
        }

    return loss_fn


def make_train_step(model_gd: nnx.GraphDef, opt_gd: nnx.GraphDef, config: Config):
    """One jitted function: augmentation, forward, backward, (probe), update.

    ``state`` is ``{'model': ..., 'opt': ..., 'rng': ...}``: the model's and the
    optimizer's pure states and the augmentation key. The batches are uint8; the
    probe batch is used by the auto scheduler only.
    """
    uses_probe = config.schedule == "auto"
    read_lr = make_lr_reader(config)

    def train_step(state, images, labels, probe_images, probe_labels):
        model = nnx.merge(model_gd, state["model"])
        optimizer = nnx.merge(opt_gd, state["opt"])
        rng, key = jax.random.split(state["rng"])
        if config.augment:
            images = augment(images, key)
        x = normalize(images)

        def loss_fn(model):
            logits = model(x, train=True)
            return cross_entropy(logits, labels).mean(), logits

        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        kwargs = {}
        if uses_probe:
            # Train-mode BatchNorm ignores these running statistics; they complete the model.
            rest = nnx.state(model, nnx.Not(nnx.Param))
            if config.probe_source == "train":
                batch = (x, labels, rest)
            else:
                batch = (normalize(probe_images), probe_labels, rest)
            k = config.auto_lookahead
            if k > 1:
                # auto_lr wants the k batches stacked: k random ones, or the training
                # batch k times; the model state is the same for all of them.
                if config.probe_source == "train":
                    images_k = jnp.broadcast_to(x, (k, *x.shape))
                    labels_k = jnp.broadcast_to(labels, (k, *labels.shape))
                else:
                    images_k = batch[0].reshape(k, -1, *batch[0].shape[1:])
                    labels_k = probe_labels.reshape(k, -1)
                rest_k = jax.tree.map(lambda v: jnp.broadcast_to(v, (k, *jnp.shape(v))), rest)
                batch = (images_k, labels_k, rest_k)
            kwargs["batch"] = batch
        optimizer.update(model, grads, **kwargs)
        opt_state = nnx.as_pure(optimizer.opt_state)
        metrics = {
            "loss": loss,
            "correct": jnp.sum(jnp.argmax(logits, -1) == labels),
            "lr": read_lr(opt_state),
        }
        if uses_probe:
            # build_optimizer puts auto_lr last in the chain.
            metrics["probe"] = opt_state[-1].telemetry._asdict()
        return {"model": nnx.state(model), "opt": nnx.state(optimizer), "rng": rng}, metrics

    return jax.jit(train_step, donate_argnums=0)


def make_eval_state(model_gd: nnx.GraphDef, opt_gd: nnx.GraphDef, config: Config):
    """Jitted ``(state, bn_images) -> model state to evaluate``, for ``schedule_free`` only.

    Schedule-free SGD trains at ``y`` but its iterate to evaluate is ``x``
    (``optax.contrib.schedule_free_eval_params``). The BatchNorm statistics were
    gathered at ``y``; as the authors advise, they are recomputed at ``x`` by
    running ``bn_images`` (``[n, batch, H, W, 3]`` un-augmented training
    batches; ``n = 0`` keeps the training statistics) through the model in
    train mode. The training state itself is not changed.
    """

    def eval_state(state, bn_images):
        model = nnx.merge(model_gd, state["model"])
        optimizer = nnx.merge(opt_gd, state["opt"])
        sf = _find_state(nnx.as_pure(optimizer.opt_state), optax.contrib.ScheduleFreeState)
        params = nnx.as_pure(nnx.state(model, nnx.Param))
        params_x = optax.contrib.schedule_free_eval_params(sf, params)
        stats = nnx.as_pure(nnx.state(model, nnx.Not(nnx.Param)))

        def refresh(stats, images):
            m = nnx.merge(model_gd, params_x, stats)
            m(normalize(images), train=True)
            return nnx.as_pure(nnx.state(m, nnx.Not(nnx.Param))), None

        if bn_images.shape[0]:
            stats, _ = jax.lax.scan(refresh, stats, bn_images)
        return nnx.state(nnx.merge(model_gd, params_x, stats))

    return jax.jit(eval_state)


def make_eval_step(model_gd: nnx.GraphDef):
    """Jitted (summed loss, number correct) of a batch, padding rows masked out."""

    def eval_step(model_state, images, labels, mask):
        model = nnx.merge(model_gd, model_state)
        logits = model(normalize(images), train=False)
        loss = jnp.sum(cross_entropy(logits, labels) * mask)
        correct = jnp.sum((jnp.argmax(logits, -1) == labels) * mask)
        return loss, correct

    return jax.jit(eval_step)


def evaluate(eval_step, model_state, split: input_pipeline.Split, batch_size: int):
    """(mean loss, accuracy) over a split."""
    loss_sum, correct = 0.0, 0.0
    sums = [
        eval_step(model_state, x, y, m)
        for x, y, m in input_pipeline.eval_batches(split, batch_size)
    ]
    for loss, corr in jax.device_get(sums):
        loss_sum += float(loss)
        correct += float(corr)
    return loss_sum / len(split), correct / len(split)


# --------------------------------------------------------------------------------------
# Checkpoints: the pure state as a flat dict of arrays (robust to Orbax's key handling),
# plus JSON metadata.


def _flat_keys(tree) -> list[str]:
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    keys = []
    for path, _ in paths:
        key = re.sub(r"[^A-Za-z0-9_.]+", "_", jax.tree_util.keystr(path)).strip("_")
        keys.append(f"{len(keys):04d}_{key}"[:120])
    return keys


def _to_flat(tree) -> dict[str, jax.Array]:
    return dict(zip(_flat_keys(tree), jax.tree.leaves(tree), strict=True))


def _from_flat(flat: dict[str, Any], like) -> Any:
    keys = _flat_keys(like)
    if set(keys) != set(flat):
        raise ValueError(
            "the checkpoint does not fit this model/optimizer (different structure); "
            "resume with the configuration the run was started with"
        )
    treedef = jax.tree.structure(like)
    return jax.tree.unflatten(treedef, [jnp.asarray(flat[k]) for k in keys])


class _Checkpoints:
    def __init__(self, directory: Path, enabled: bool):
        self.enabled = enabled
        self.manager = None
        if enabled:
            import orbax.checkpoint as ocp

            self._ocp = ocp
            self.manager = ocp.CheckpointManager(
                directory.absolute(),
                # Asynchronous: the next epoch trains while the last one is written.
                options=ocp.CheckpointManagerOptions(max_to_keep=2),
            )

    def latest(self) -> int | None:
        return self.manager.latest_step() if self.manager else None

    def save(self, epoch: int, state, meta: dict) -> None:
        if not self.manager:
            return
        ocp = self._ocp
        self.manager.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_to_flat(state)), meta=ocp.args.JsonSave(meta)
            ),
        )

    def restore_meta(self, epoch: int) -> dict:
        ocp = self._ocp
        args = ocp.args.Composite(meta=ocp.args.JsonRestore())
        return self.manager.restore(epoch, args=args)["meta"]

    def restore_state(self, epoch: int, like):
        ocp = self._ocp
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _to_flat(like))
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        return _from_flat(self.manager.restore(epoch, args=args)["state"], like)

    def close(self) -> None:
        if self.manager:
            self.manager.wait_until_finished()
            self.manager.close()


# --------------------------------------------------------------------------------------
# Reporting.


def _config_dict(config: Config) -> dict:
    d = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _summary_line(rec: dict, epochs: int) -> str:
    line = (
        f"epoch {rec['epoch']:>{len(str(epochs))}}/{epochs} | "
        f"train loss {rec['train_loss']:.4f} acc {100 * rec['train_accuracy']:5.2f}% | "
        f"test loss {rec['test_loss']:.4f} acc {100 * rec['test_accuracy']:5.2f}% | "
        f"lr {rec['lr']:.4g} | {rec['epoch_time_s']:.1f} s ({rec['steps_per_s']:.1f} steps/s)"
    )
    if rec.get("probes"):
        mults = ", ".join(f"x{p['multiplier']:.3g}" for p in rec["probes"])
        line += f" | probe {mults}"
    if "alr" in rec:
        line += f" | alr: {rec['child_epochs']} child-epochs"
    return line


_LR_LABELS = {
    "alr": "the beam's best child",
    "prodigy": "d * lr after the epoch's last update (prodigy)",
    "dog": "DoG step size, last update of the epoch",
    "mechanize": "sum(s) * lr, last update of the epoch (Mechanic)",
}


def write_plots(
    history: list[dict], plot_dir: Path, lr_label: str = "last update of the epoch"
) -> list[Path]:
    """PNG plots of the learning rate, the training loss and the test accuracy per epoch."""
    # Figure objects without pyplot: no GUI backend, no global state (Agg renders the PNG).
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    plot_dir.mkdir(parents=True, exist_ok=True)
    epochs = [r["epoch"] for r in history]

    def series(key, scale=1.0):
        return [r[key] * scale for r in history]

    figures = {
        "lr.png": ("learning rate", [(lr_label, series("lr"))]),
        "train_loss.png": (
            "loss",
            [("train", series("train_loss")), ("test", series("test_loss"))],
        ),
        "test_accuracy.png": (
            "accuracy (%)",
            [("test", series("test_accuracy", 100)), ("train", series("train_accuracy", 100))],
        ),
    }
    if any(r["lr_first"] != r["lr"] for r in history):  # the lr moved within epochs
        figures["lr.png"][1].insert(0, ("first update of the epoch", series("lr_first")))
    paths = []
    for fname, (ylabel, lines) in figures.items():
        fig = Figure(figsize=(6, 4), dpi=100)
        ax = fig.subplots()
        for label, ys in lines:
            ax.plot(epochs, ys, marker="o", markersize=3, label=label)
        if fname == "lr.png":
            lrs = [v for _, ys in lines for v in ys]
            if min(lrs) > 0 and max(lrs) / min(lrs) > 20:
                ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = plot_dir / fname
        fig.savefig(path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------
# The run.


def train_and_evaluate(config: Config, workdir: str | Path) -> list[dict]:
    """Trains and evaluates; writes metrics, checkpoints and plots to ``workdir``.

    Args:
      config: a :class:`configs.default.Config`.
      workdir: the run's directory: ``metrics.jsonl`` (one JSON object per
        epoch), ``checkpoints/`` (Orbax), ``plots/*.png``, ``config.json``.

    Returns:
      The per-epoch records (as written to ``metrics.jsonl``).
    """
    _check_config(config)
    if config.schedule == "alr":
        _check_alr_settings(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    data = input_pipeline.load_dataset(config)
    n_train = len(data.train)
    steps_per_epoch = n_train // config.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"batch_size {config.batch_size} exceeds the {n_train} training images")
    probe_size = config.probe_batch_size * config.auto_lookahead
    if config.schedule == "auto" and config.probe_source == "random" and probe_size > n_train:
        raise ConfigError(
            f"probe_batch_size {config.probe_batch_size} x auto_lookahead "
            f"{config.auto_lookahead} = {probe_size} exceeds the {n_train} training images"
        )
    is_alr = config.schedule == "alr"
    if config.schedule in ("prodigy", "dog", "schedule_free") and config.momentum:
        print(
            f"note: {config.schedule} does not use --momentum {config.momentum} (prodigy has "
            "Adam's betas, DoG is momentum-free, schedule-free replaces momentum by its b1)"
        )

    # alr scans over the epoch's batches; on CPU, XLA runs autodiff's convolution gradients
    # inside a loop 20-50x slower unless they are written out (see models.loop_safe_conv).
    loop_safe = is_alr and jax.default_backend() == "cpu"

    def make_model(loop_safe=loop_safe):
        # The 'rbg' generator: with the default threefry, XLA takes ~10 s (on 2 CPU cores)
        # to compile the initialisation of ResNet-18's ~60 arrays; with rbg, ~1 s.
        key = jax.random.key(config.seed, impl="rbg")
        return models.ResNet(
            tuple(config.stage_sizes),
            len(data.class_names),
            config.width,
            rngs=nnx.Rngs(key),
            loop_safe_conv=loop_safe,
        )

    model_gd = nnx.split(nnx.eval_shape(make_model))[0]
    # A look-ahead probe takes gradients inside lax.map: the probe's copy of the model
    # (same parameters and state) uses the loop-safe convolution on CPU too.
    probe_gd = model_gd
    if config.auto_lookahead > 1 and jax.default_backend() == "cpu":
        probe_gd = nnx.split(nnx.eval_shape(lambda: make_model(True)))[0]
    # Initialised inside jit: eagerly, every initializer call would compile on its own.
    model_state = jax.jit(lambda: nnx.state(make_model()))()
    opt_gd = tree = None
    try:
        if is_alr:
            tree = build_alr_tree(config, model_gd)
            lrs = alr_learning_rates(config)

            def init_beam(model_state):
                model = nnx.merge(model_gd, model_state)
                params = nnx.as_pure(nnx.state(model, nnx.Param))
                stats = nnx.as_pure(nnx.state(model, nnx.Not(nnx.Param)))
                aux = {"batch_stats": stats, "correct": jnp.zeros((), jnp.int32)}
                return tree.init(params, lrs, aux)

            # tree.init validates the rates while tracing, before anything runs.
            state = {"alr": jax.jit(init_beam)(model_state)}
        else:
            tx = build_optimizer(config, steps_per_epoch, make_probe_loss(probe_gd))
    except ValueError as e:  # autolr_jax names the argument, the value and the range
        raise ConfigError(f"invalid schedule/optimizer setting for {config.schedule!r}: {e}") from e

    if not is_alr:

        def make_optimizer(model_state):
            return nnx.Optimizer(nnx.merge(model_gd, model_state), tx, wrt=nnx.Param)

        opt_gd = nnx.split(nnx.eval_shape(make_optimizer, model_state))[0]
        opt_state = jax.jit(lambda ms: nnx.state(make_optimizer(ms)))(model_state)
        # Some optimizers keep the initial parameters in their state (prodigy, dog,
        # mechanize); jit may hand back those very buffers, which the donating train step
        # must not receive twice.
        opt_state = jax.tree.map(jnp.copy, opt_state)
        state = {
            "model": model_state,
            "opt": opt_state,
            "rng": jax.random.fold_in(jax.random.PRNGKey(config.seed), 1),
        }

    ckpts = _Checkpoints(workdir / "checkpoints", config.checkpoint)
    metrics_path = workdir / METRICS_FILE
    history: list[dict] = []
    start_epoch, wall_before = 0, 0.0
    latest = ckpts.latest()
    if latest is not None and not config.resume:
        ckpts.close()
        raise ConfigError(
            f"{workdir} already holds checkpoints (epoch {latest}); pass --resume to continue "
            "that run, or choose an empty --workdir"
        )
    if config.resume and latest is not None:
        meta = ckpts.restore_meta(latest)
        # Fields added after a run was saved count as unchanged while they keep the default.
        defaults = _config_dict(Config())
        changed = {
            k: (meta["config"].get(k, defaults[k]), v)
            for k, v in _config_dict(config).items()
            if k not in _RESUMABLE_CHANGES and meta["config"].get(k, defaults[k]) != v
        }
        if changed:
            ckpts.close()
            diffs = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ConfigError(f"--resume with a different configuration ({diffs})")
        like = state
        if is_alr and meta["epoch"] > 0:
            # With beam_size K != M the beam has K members after the first epoch.
            abstract = _alr_batches_abstract(data, config, steps_per_epoch)
            like = jax.eval_shape(lambda s: {"alr": tree.epoch(s["alr"], abstract)[0]}, state)
        state = ckpts.restore_state(latest, like)
        history = meta["history"]
        start_epoch = meta["epoch"]
        wall_before = meta["wall_time_s"]
        print(f"resuming {workdir} after epoch {start_epoch}")
    elif config.resume:
        print(f"--resume: no checkpoint in {workdir}, starting from scratch")
    # The metrics file always equals the checkpointed history plus what this run adds.
    with open(metrics_path, "w") as f:
        for rec in history:
            f.write(json.dumps(rec) + "\n")
    (workdir / "config.json").write_text(json.dumps(_config_dict(config), indent=2) + "\n")

    from tqdm.auto import tqdm

    if is_alr:
        lr_update = "lr: the beam's best child, chosen per epoch"
    elif config.schedule in LR_FREE:
        lr_update = "step size estimated by the optimizer at every update"
    else:
        lr_update = f"lr updated per {lr_update_of(config)}"
    print(
        f"CIFAR-10 from {data.source}: {n_train} train / {len(data.test)} test images; "
        f"ResNet-18 width {config.width}; schedule {config.schedule} "
        f"({lr_update}); {steps_per_epoch} steps/epoch"
    )
    if is_alr:
        run_epoch = _alr_epoch_runner(config, data, model_gd, tree, steps_per_epoch, tqdm)
    else:
        run_epoch = _sgd_epoch_runner(config, data, model_gd, opt_gd, steps_per_epoch, tqdm)
    eval_step = make_eval_step(model_gd)

    stopped_early = False
    for epoch in range(start_epoch, config.epochs):
        t0 = time.time()
        state, rec, eval_model_state = run_epoch(state, epoch, history)
        train_time = time.time() - t0

        t1 = time.time()
        test_loss, test_acc = evaluate(
            eval_step, eval_model_state, data.test, config.eval_batch_size
        )
        eval_time = time.time() - t1

        if config.schedule == "plateau":
            metric = {
                "test_loss": test_loss,
                "test_accuracy": test_acc,
                "train_loss": rec["train_loss"],
            }[config.plateau_metric]
            optimizer = nnx.merge(opt_gd, state["opt"])
            opt_state = al.report_metric(nnx.as_pure(optimizer.opt_state), jnp.float32(metric))
            nnx.update(optimizer.opt_state, nnx.state(opt_state))
            state = {**state, "opt": nnx.state(optimizer)}

        epoch_time = time.time() - t0
        extra = rec
        rec = {
            "epoch": epoch + 1,
            "steps": (epoch + 1) * steps_per_epoch,
            "train_loss": extra.pop("train_loss"),
            "train_accuracy": extra.pop("train_accuracy"),
            "test_loss": test_loss,
            "test_accuracy": test_acc,
            "lr": extra.pop("lr"),
            "lr_first": extra.pop("lr_first"),
            "epoch_time_s": epoch_time,
            "train_time_s": train_time,
            "eval_time_s": eval_time,
            "steps_per_s": steps_per_epoch / train_time,
            "wall_time_s": wall_before + time.time() - t_start,
        }
        if is_alr:
            rec["child_steps_per_s"] = extra["child_epochs"] * steps_per_epoch / train_time
        rec.update(extra)
        history.append(rec)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        tqdm.write(_summary_line(rec, config.epochs))
        ckpts.save(
            epoch + 1,
            state,
            {
                "epoch": epoch + 1,
                "history": history,
                "wall_time_s": rec["wall_time_s"],
                "config": _config_dict(config),
            },
        )
        if config.stop_after_epoch is not None and epoch + 1 >= config.stop_after_epoch:
            stopped_early = epoch + 1 < config.epochs
            break
    ckpts.close()

    if config.plots and history:
        label = _LR_LABELS.get(config.schedule, "last update of the epoch")
        paths = write_plots(history, workdir / "plots", label)
        print(f"plots: {', '.join(str(p) for p in paths)}")
    if history and not stopped_early:
        last = history[-1]
        print(
            f"done: test accuracy {100 * last['test_accuracy']:.2f}% after {last['epoch']} "
            f"epochs, {last['wall_time_s']:.0f} s"
        )
    elif stopped_early:
        print(f"stopped after epoch {history[-1]['epoch']}; continue with --resume")
    return history


def _progress_bar(tqdm, config: Config, epoch: int, total: int, unit: str, desc: str = ""):
    return tqdm(
        total=total,
        desc=f"epoch {epoch + 1}/{config.epochs}{desc}",
        unit=unit,
        disable=not config.progress,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )


def _sgd_epoch_runner(config, data, model_gd, opt_gd, steps_per_epoch, tqdm):
    """``run_epoch(state, epoch, history) -> (state, partial record, model state to evaluate)``
    for every schedule but alr: one jitted train step per batch."""
    train_step = make_train_step(model_gd, opt_gd, config)
    uses_probe = config.schedule == "auto"
    n_train = len(data.train)
    # k look-ahead batches of probe_batch_size are drawn at once (k = 1: the scoring batch).
    probe_size = config.probe_batch_size * config.auto_lookahead
    every = config.auto_every or steps_per_epoch
    rng_probe_dummy = (
        np.zeros((probe_size, *data.train.images.shape[1:]), np.uint8),
        np.zeros((probe_size,), np.int32),
    )
    if not uses_probe or config.probe_source == "train":
        probe = rng_probe_dummy[0][:1], rng_probe_dummy[1][:1]  # unused by the step
    else:
        probe = rng_probe_dummy
    eval_state = None
    if config.schedule == "schedule_free":
        eval_state = make_eval_state(model_gd, opt_gd, config)

    compiled = None
    # The probe's cost: each probe step's time minus the next (ordinary) step's, both
    # timed between synchronisations. Not measurable when every update probes.
    time_probes = uses_probe and every > 1

    def run_epoch(state, epoch, history):
        nonlocal probe, compiled
        bar = _progress_bar(tqdm, config, epoch, steps_per_epoch, "step")
        step_metrics, fetched = [], []
        probe_times, probe_step_time = [], None
        last_refresh = time.time()
        batches = input_pipeline.train_batches(data.train, config.batch_size, config.seed, epoch)
        for i, (x, y) in enumerate(batches):
            step = epoch * steps_per_epoch + i
            if uses_probe and config.probe_source == "random" and step % every == 0:
                idx = input_pipeline.probe_indices(
                    n_train, config.probe_batch_size, config.seed, step, config.auto_lookahead
                )
                probe = (data.train.images[idx], data.train.labels[idx])
            if compiled is None:
                # Compiled ahead of the first step, so that no timed step includes compiling.
                compiled = train_step.lower(state, x, y, *probe).compile()
            timed = time_probes and step % every in (0, 1)
            if timed:
                jax.block_until_ready(state)
                t = time.perf_counter()
            state, m = compiled(state, x, y, *probe)
            if timed:
                jax.block_until_ready(state)
                dt = time.perf_counter() - t
                if step % every == 0:
                    probe_step_time = dt
                elif probe_step_time is not None:
                    probe_times.append(probe_step_time - dt)
                    probe_step_time = None
            step_metrics.append(m)
            bar.update(1)
            if config.progress and (time.time() - last_refresh > 0.5 or i + 1 == steps_per_epoch):
                # Fetching waits for the step to finish: done twice a second, not every step.
                fetched.extend(jax.device_get(step_metrics[len(fetched) :]))
                n_seen = len(fetched) * config.batch_size
                bar.set_postfix(
                    loss=f"{np.mean([f['loss'] for f in fetched]):.4f}",
                    acc=f"{100 * sum(int(f['correct']) for f in fetched) / n_seen:.2f}%",
                    lr=f"{float(fetched[-1]['lr']):.4g}",
                )
                last_refresh = time.time()
        fetched.extend(jax.device_get(step_metrics[len(fetched) :]))
        bar.close()
        rec = {
            "train_loss": float(np.mean([f["loss"] for f in fetched])),
            "train_accuracy": sum(int(f["correct"]) for f in fetched)
            / (len(fetched) * config.batch_size),
            "lr": float(fetched[-1]["lr"]),
            "lr_first": float(fetched[0]["lr"]),
        }

        if uses_probe:
            probes = []
            before = int(history[-1]["num_probes"]) if history else 0
            for i, f in enumerate(fetched):
                p = f["probe"]
                if int(p["num_probes"]) != before:
                    before = int(p["num_probes"])
                    probes.append(
                        {
                            "step": epoch * steps_per_epoch + i,
                            "multiplier": float(p["multiplier"]),
                            "lr": float(f["lr"]),
                            "losses": [float(v) for v in p["losses"]],
                            "scores": [float(v) for v in p["scores"]],
                        }
                    )
                    tqdm.write(
                        f"  probe at update {probes[-1]['step']}: losses "
                        f"{np.round(probes[-1]['losses'], 4).tolist()} -> multiplier "
                        f"x{probes[-1]['multiplier']:.4g}, lr {probes[-1]['lr']:.4g}"
                    )
            rec["probes"] = probes
            rec["num_probes"] = int(fetched[-1]["probe"]["num_probes"])
            rec["probe_time_s"] = float(np.sum(probe_times)) if probe_times else None

        if eval_state is None:
            return state, rec, state["model"]
        n_bn = min(config.schedule_free_bn_batches, steps_per_epoch)
        bn_images = _bn_batches(data, config, epoch, n_bn)
        return state, rec, eval_state(state, bn_images)

    return run_epoch


def _bn_batches(data, config: Config, epoch: int, n: int) -> np.ndarray:
    """``n`` un-augmented training batches ``[n, batch, H, W, 3]`` (a function of seed, epoch)."""
    perm = np.random.default_rng([config.seed, 2, epoch]).permutation(len(data.train))
    idx = np.sort(perm[: n * config.batch_size].reshape(n, config.batch_size), axis=1)
    return data.train.images[idx]


def _alr_batches(data, config: Config, epoch: int, steps_per_epoch: int):
    """The epoch's batches stacked on a leading axis, with one augmentation key per step.

    The same batches, in the same order, as the other schedules' epoch; the keys
    are a function of the seed and the epoch, so a resumed run repeats them.
    """
    pairs = list(input_pipeline.train_batches(data.train, config.batch_size, config.seed, epoch))
    images = np.stack([x for x, _ in pairs])
    labels = np.stack([y for _, y in pairs])
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), 2), epoch)
    return images, labels, jax.random.split(key, steps_per_epoch)


def _alr_batches_abstract(data, config: Config, steps_per_epoch: int):
    shape = (steps_per_epoch, config.batch_size)
    return (
        jax.ShapeDtypeStruct(shape + data.train.images.shape[1:], jnp.uint8),
        jax.ShapeDtypeStruct(shape, jnp.int32),
        jax.ShapeDtypeStruct((steps_per_epoch, 2), jnp.uint32),
    )


def _alr_epoch_runner(config, data, model_gd, tree, steps_per_epoch, tqdm):
    """``run_epoch`` for alr: the whole epoch of all ``M * N`` children is one jitted call."""

    def alr_epoch(alr_state, batches):
        aux = alr_state.model_state
        aux = {**aux, "correct": jnp.zeros_like(aux["correct"])}
        return tree.epoch(alr_state._replace(model_state=aux), batches)

    # Donating the beam saves a copy of it, but only fits when the beam keeps its size
    # (beam_size K = M); the first epoch of a K != M beam takes the plain version.
    alr_epoch_donating = jax.jit(alr_epoch, donate_argnums=0)
    alr_epoch_plain = jax.jit(alr_epoch)

    @jax.jit
    def best_model(beam):
        """The best member as the model state the evaluation takes."""
        stats = al.best_model_state(beam)["batch_stats"]
        return nnx.state(nnx.merge(model_gd, al.best_params(beam), stats))

    n_factors = len(config.alr_factors)

    def run_epoch(state, epoch, history):
        beam = state["alr"]
        children = int(beam.learning_rates.shape[0]) * n_factors
        # One call trains every child over the whole epoch: the bar completes at its end.
        desc = f" (alr: {children} children in one call)"
        bar = _progress_bar(tqdm, config, epoch, children * steps_per_epoch, "child-step", desc)
        batches = _alr_batches(data, config, epoch, steps_per_epoch)
        m = int(beam.learning_rates.shape[0])
        same_size = config.alr_beam_size in (None, m)
        beam, info = (alr_epoch_donating if same_size else alr_epoch_plain)(beam, batches)
        info, lrs, correct = jax.device_get(
            (info, beam.learning_rates, beam.model_state["correct"][0])
        )
        bar.update(children * steps_per_epoch)
        bar.close()

        all_diverged = bool(info.all_diverged)
        if all_diverged:
            train_loss, train_acc = float("nan"), float("nan")
            tqdm.write(f"  alr: every child diverged in epoch {epoch + 1}; the beam is unchanged")
        else:
            best = info.batch_losses[int(info.parents[0]), int(info.branches[0])]
            train_loss = float(np.mean(best))
            train_acc = int(correct) / (steps_per_epoch * config.batch_size)
        finite = np.isfinite(info.losses)
        rec = {
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "lr": float(lrs[0]),
            "lr_first": float(lrs[0]),
            "child_epochs": children,
            "child_epochs_total": (history[-1]["child_epochs_total"] if history else 0) + children,
            "alr": {
                "child_learning_rates": info.learning_rates.astype(float).tolist(),
                # JSON has no NaN: a diverged child's loss is null.
                "losses": [
                    [float(v) if ok else None for v, ok in zip(row, oks, strict=True)]
                    for row, oks in zip(info.losses, finite, strict=True)
                ],
                "diverged": info.diverged.tolist(),
                "parents": info.parents.tolist(),
                "branches": info.branches.tolist(),
                "beam_learning_rates": lrs.astype(float).tolist(),
                "all_diverged": all_diverged,
            },
        }
        tqdm.write(
            "  alr: children lr "
            f"{np.round(info.learning_rates.astype(float), 6).tolist()} losses "
            f"{np.round(info.losses.astype(float), 4).tolist()} -> best lr {lrs[0]:.4g} "
            f"(parent {int(info.parents[0])}, factor index {int(info.branches[0])})"
        )
        return {"alr": beam}, rec, best_model(beam)

    return run_epoch
