"""The ALR tree (``autolr_jax.alr_tree``) on the ResNet: a beam of models, its own loop.

The beam's ``M`` members (parameters, BatchNorm statistics, SGD state) are
stacked pytrees; each epoch is one jitted call that trains the ``M * N``
children over the epoch's stacked batches (the same batches, in the same order,
as the other methods' epoch) and keeps the best. The model evaluated is the
beam's best member; its learning rate is the one logged.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import autolr_jax as al
from examples.cifar10 import input_pipeline, run_log, sharding, train
from examples.cifar10.optimizers import ConfigError


def learning_rates(config) -> tuple[float, ...]:
    """The beam's initial learning rates: ``alr.learning_rates`` or ``(lr, lr / 2)``.

    The default ``M = 2`` beam starts its best member at the configured rate, so
    the first epoch's children with factors (2, 1, 0.5) span ``lr / 4 .. 2 lr``:
    leaning low, because too large a rate diverges while too small a one only
    trains slower.
    """
    if config.alr.learning_rates is not None:
        return tuple(config.alr.learning_rates)
    return (config.learning_rate, config.learning_rate / 2)


def make_loss(
    model_gd: nnx.GraphDef, augment, normalize=input_pipeline.normalize, bn_train: bool = True
):
    """The tree's ``loss_fn(params, model_state, batch) -> (loss, new_model_state)``.

    ``batch`` is ``(uint8 images, labels, key)``: the augmentation key travels
    with the batch, so every child sees the same augmented images. The model
    state is ``{'batch_stats', 'correct'}``: the second counts the child's correct
    training predictions during the epoch (reset before each epoch). ``augment``:
    ``input_pipeline.augmenter``'s function, True (crop and flip) or False/None;
    ``bn_train=False``: BatchNorm uses, and keeps, the running statistics.
    """
    if augment is True:
        augment = input_pipeline.augment

    def loss_fn(params, model_state, batch):
        images, labels, key = batch
        if augment:
            images = augment(images, key)
        model = nnx.merge(model_gd, params, model_state["batch_stats"])
        logits = model(normalize(images), train=bn_train)
        loss = train.cross_entropy(logits, labels).mean()
        correct = jnp.sum(jnp.argmax(logits, -1) == labels).astype(jnp.int32)
        return loss, {
            "batch_stats": nnx.as_pure(nnx.state(model, nnx.Not(nnx.Param))),
            "correct": model_state["correct"] + correct,
        }

    return loss_fn


def build_tree(config, loss_fn) -> al.ALRTree:
    """``alr_tree`` with the example's SGD (as ``torch.optim.SGD``) for every child."""
    momentum = config.momentum or None
    wd = config.weight_decay

    def sgd(learning_rate):
        # Only learning_rate is injected; momentum and nesterov stay Python constants.
        tx = optax.sgd(learning_rate, momentum=momentum, nesterov=config.nesterov)
        return optax.chain(optax.add_decayed_weights(wd), tx) if wd else tx

    a = config.alr
    try:
        tree = al.alr_tree(
            loss_fn,
            sgd,
            factors=tuple(a.factors),
            beam_size=a.beam_size,
            rank_by=a.rank_by,
            strategy=a.strategy,
            chunk_size=a.chunk_size,
            has_aux=True,
        )
        # tree.init validates the rates while tracing, before any data is read.
        jax.eval_shape(lambda: tree.init(jnp.zeros(()), learning_rates(config), 0))
    except ValueError as e:  # autolr_jax names the argument, the value and the range
        raise ConfigError(f"invalid setting for 'alr': {e}") from e
    return tree


def epoch_batches(data, config, epoch: int, steps_per_epoch: int):
    """The epoch's batches stacked on a leading axis, with one augmentation key per step.

    The keys are a function of the seed and the epoch, so a resumed run repeats them.
    """
    pairs = list(input_pipeline.train_batches(data.train, config.batch_size, config.seed, epoch))
    images = np.stack([x for x, _ in pairs])
    labels = np.stack([y for _, y in pairs])
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), 2), epoch)
    return images, labels, jax.random.split(key, steps_per_epoch)


def _record(info, lrs, correct, children, steps_per_epoch, config, history) -> dict:
    all_diverged = bool(info.all_diverged)
    if all_diverged:
        train_loss, train_acc = float("nan"), float("nan")
    else:
        best = info.batch_losses[int(info.parents[0]), int(info.branches[0])]
        train_loss = float(np.mean(best))
        train_acc = int(correct) / (steps_per_epoch * config.batch_size)
    finite = np.isfinite(info.losses)
    return {
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


def train_and_evaluate(
    config, workdir: str | Path, resume: bool = False, overwrite: bool = False
) -> list[dict]:
    """``train.train_and_evaluate`` for ``config.schedule == 'alr'``."""
    from tqdm.auto import tqdm

    # Every setting alr_tree checks, before any data is read.
    build_tree(config, lambda params, state, batch: (jnp.sum(params), state))
    data, steps_per_epoch = train.load_data(config, workdir, resume, overwrite)
    n_classes = len(data.class_names)
    # alr scans over the epoch's batches; on CPU, XLA runs autodiff's convolution gradients
    # inside a loop 20-50x slower unless they are written out (models.loop_safe_conv).
    loop_safe = jax.default_backend() == "cpu"
    model_gd = nnx.split(nnx.eval_shape(lambda: train.make_model(config, n_classes, loop_safe)))[0]
    augment = input_pipeline.augmenter(config.data)
    normalize = input_pipeline.normalizer(config.data)
    tree = build_tree(config, make_loss(model_gd, augment, normalize))
    # bn_mode 'frozen_after_first_epoch': the children of later epochs train with BatchNorm's
    # running statistics, a second tree whose epoch compiles when first used (train.bn_trains).
    trees = {True: tree}
    if config.bn_mode == "frozen_after_first_epoch":
        trees[False] = build_tree(config, make_loss(model_gd, augment, normalize, bn_train=False))

    @jax.jit
    def init_beam():
        model = train.make_model(config, n_classes, loop_safe)
        params = nnx.as_pure(nnx.state(model, nnx.Param))
        stats = nnx.as_pure(nnx.state(model, nnx.Not(nnx.Param)))
        aux = {"batch_stats": stats, "correct": jnp.zeros((), jnp.int32)}
        return tree.init(params, learning_rates(config), aux)

    def alr_epoch(beam, batches, bn_train=True):
        aux = {**beam.model_state, "correct": jnp.zeros_like(beam.model_state["correct"])}
        return trees[bn_train].epoch(beam._replace(model_state=aux), batches)

    abstract_batches = jax.eval_shape(lambda: epoch_batches(data, config, 0, steps_per_epoch))

    def like(meta):
        beam = init_beam()
        if meta.get("epoch", 0) > 0:  # with beam_size K != M the beam has K members now
            return jax.eval_shape(lambda: alr_epoch(beam, abstract_batches)[0])
        return beam

    log = run_log.RunLog(
        config, workdir, resume, data_summary=train.data_summary(data), overwrite=overwrite
    )
    # No finiteness check of the beam: a diverged child may fill a place the finite ones
    # leave (alr_tree ranks it last), and the digests verify the bytes.
    beam = log.restore(like)
    # Donating the beam saves a copy of it, but only fits when the beam keeps its size.
    epoch_donating = jax.jit(alr_epoch, donate_argnums=0, static_argnames="bn_train")
    epoch_plain = jax.jit(alr_epoch, static_argnames="bn_train")

    @jax.jit
    def best_model(beam):
        stats = al.best_model_state(beam)["batch_stats"]
        return nnx.state(nnx.merge(model_gd, al.best_params(beam), stats))

    print(
        train.start_line(
            config, data, steps_per_epoch, "lr: the beam's best child, chosen per epoch"
        )
    )
    eval_step, devices = train.make_eval_step(model_gd, normalize), sharding.Devices.all()
    try:
        for epoch in range(log.start_epoch, config.epochs):
            t0 = time.time()
            m = int(beam.learning_rates.shape[0])
            children = m * len(config.alr.factors)
            # One call trains every child over the whole epoch: the bar completes at its end.
            bar = run_log.progress_bar(
                config,
                epoch,
                children * steps_per_epoch,
                "child-step",
                f" (alr: {children} children in one call)",
            )
            batches = epoch_batches(data, config, epoch, steps_per_epoch)
            same_size = config.alr.beam_size in (None, m)
            bn_train = train.bn_trains(config, epoch)
            beam, info = (epoch_donating if same_size else epoch_plain)(
                beam, batches, bn_train=bn_train
            )
            info, lrs, correct = jax.device_get(
                (info, beam.learning_rates, beam.model_state["correct"][0])
            )
            bar.update(children * steps_per_epoch)
            bar.close()
            rec = _record(info, lrs, correct, children, steps_per_epoch, config, log.history)
            if rec["alr"]["all_diverged"]:
                tqdm.write(
                    f"  alr: every child diverged in epoch {epoch + 1}; the beam is unchanged"
                )
            tqdm.write(
                "  alr: children lr "
                f"{np.round(info.learning_rates.astype(float), 6).tolist()} losses "
                f"{np.round(info.losses.astype(float), 4).tolist()} -> best lr {lrs[0]:.4g} "
                f"(parent {int(info.parents[0])}, factor index {int(info.branches[0])})"
            )
            train_time = time.time() - t0
            t1 = time.time()
            best = best_model(beam)
            test_loss, test_acc = train.evaluate(
                eval_step, best, data.test, config.eval_batch_size, devices
            )
            rec.update(
                train.evaluate_validation(eval_step, best, data, config.eval_batch_size, devices)
            )
            eval_time = time.time() - t1
            rec["child_steps_per_s"] = children * steps_per_epoch / train_time
            rec = run_log.epoch_record(
                epoch,
                steps_per_epoch,
                rec,
                (test_loss, test_acc),
                (t0, train_time, eval_time),
                log.wall_time(),
            )
            log.end_epoch(beam, rec)
            if config.stop_after_epoch is not None and epoch + 1 >= config.stop_after_epoch:
                break
    except KeyboardInterrupt:  # as train.py's loop
        raise log.interrupted() from None
    return log.finish("the beam's best child")
