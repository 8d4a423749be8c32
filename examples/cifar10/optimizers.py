"""The methods that set the learning rate, behind one small interface.

``build_method(config, steps_per_epoch, probe_loss_fn)`` returns a :class:`Method`:
the Optax transformation to train with, how to read the learning rate from its
state, and the optional hooks the training loop calls. The loop in ``train.py``
uses only these fields; it never looks at the method's name.

Families (``config.schedule`` names the method, ``config.<method>`` holds its
settings):

* fixed schedules (``constant``, ``step``, ``multistep``, ``exponential``,
  ``linear``, ``cosine``, ``warmup_cosine``, ``one_cycle``, ``wsd``): SGD (or Adam,
  ``config.optimizer``) with ``autolr_jax.scale_by_lr_schedule``, PyTorch's values;
* ``plateau``: SGD or Adam with ``autolr_jax.reduce_on_plateau``, fed once per epoch
  with ``report_metric`` (the after-epoch hook);
* ``auto``: ``autolr_jax.auto_lr(optax.sgd, ...)`` (or ``optax.adam``), which probes factors of the
  learning rate inside the jitted step (it needs a probe batch);
* ``null_model``: the rule of the seed's published code, as a baseline: once per
  epoch, the losses of the unchanged model on one random training batch per
  factor, z-scored, ``exp(-z)``, the factors' weighted geometric mean multiplies
  the learning rate (the losses do not depend on the factors: a random walk);
* the learning-rate-free optimizers of ``optax.contrib`` (``prodigy``, ``dog``,
  ``mechanize``, ``schedule_free``): they replace SGD and its schedule.

The ALR tree (``alr``) trains a beam of models, not one: it has its own loop in
``alr.py``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import autolr_jax as al
from autolr_jax._state_utils import _INJECT_TYPES, map_states, with_learning_rate
from autolr_jax.auto import GUARD_SIGNALS


class ConfigError(ValueError):
    """An invalid setting, or a --resume that does not fit the saved run."""


@dataclasses.dataclass(frozen=True)
class Probe:
    """What the auto scheduler's probe needs from the loop: where its batch comes from."""

    every: int  # updates between probes
    batch_size: int  # examples in each probe batch
    source: str  # 'random' (separate random training examples) or 'train' (the batch)
    lookahead: int  # probe batches per probe (k - 1 look-ahead updates, then the score)
    value: bool = False  # the update also takes the training loss as value=


@dataclasses.dataclass(frozen=True)
class EpochProbe:
    """A probe the loop runs once per epoch, after the evaluation, at the current parameters.

    The loop draws ``batches`` random batches of ``batch_size`` un-augmented
    training images, computes the model's loss on each (train-mode forward of a
    discarded copy, as the ``auto`` probe) and hands the losses to ``update``.
    """

    batches: int
    batch_size: int
    update: Callable[[Any, jax.Array], Any]  # (pure opt_state, losses (batches,)) -> opt_state


@dataclasses.dataclass(frozen=True)
class Method:
    """A learning-rate method as the training loop sees it.

    Attributes:
      tx: the transformation ``nnx.Optimizer`` trains with.
      read_lr: ``pure opt_state -> float32``: the learning rate the last update used
        (for the learning-rate-free optimizers, the step size they estimate).
      lr_label: what ``read_lr`` is, for the plots and the first log line.
      probe: set for methods that probe inside the train step (``auto``).
      after_epoch: ``(pure opt_state, epoch metrics) -> pure opt_state``, called
        once per epoch after the evaluation (plateau's ``report_metric``).
      epoch_probe: losses on random batches at the end of each epoch, after
        ``after_epoch`` (the null model).
      eval_params: ``(pure opt_state, params) -> params to evaluate`` when they
        differ from the trained ones (schedule-free's averaged iterate).
      bn_refresh_batches: with ``eval_params``, the training batches run at the
        evaluation parameters to recompute the BatchNorm statistics.
      depends_on_epochs: the schedule's shape is a function of ``config.epochs``
        (cosine's period, one-cycle's length, ...): a resume may not change it.
    """

    tx: optax.GradientTransformation
    read_lr: Callable[[Any], jax.Array] = al.current_lr
    lr_label: str = "last update of the epoch"
    probe: Probe | None = None
    after_epoch: Callable[[Any, dict], Any] | None = None
    epoch_probe: EpochProbe | None = None
    eval_params: Callable[[Any, Any], Any] | None = None
    bn_refresh_batches: int = 0
    depends_on_epochs: bool = False


# config.auto.probe_step -> auto_lr's probe_optimizer. 'auto' (auto_lr's default): with
# momentum the probes scale SGD's step without momentum at 1 / (1 - momentum) times the level
# (the momentum update's steady step), except under rule='seed'; 'update': SGD's own update;
# 'matched': the step without momentum, rescaled to the length of the update.
PROBE_STEPS = {
    "auto": "auto",
    "update": None,
    "momentum_free": "momentum_free",
    "matched": "matched",
}


# config.optimizer: the direction the learning rate scales, as PyTorch computes it.
OPTIMIZERS = ("sgd", "adam")
# The methods that use it; the learning-rate-free optimizers and the ALR tree are SGD's.
_TAKES_OPTIMIZER = ("plateau", "auto", "null_model")


def check_optimizer(config) -> None:
    """``config.optimizer`` known, used by this method, and not mixed with SGD's momentum."""
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"config.optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}")
    if config.optimizer == "sgd":
        return
    if config.schedule not in (*FIXED_SCHEDULES, *_TAKES_OPTIMIZER):
        raise ConfigError(
            f"config.optimizer={config.optimizer!r} needs a fixed schedule or one of "
            f"{_TAKES_OPTIMIZER}; config.schedule={config.schedule!r} brings its own optimizer "
            "(SGD's)"
        )
    if config.momentum or config.nesterov:
        raise ConfigError(
            "config.momentum and config.nesterov are SGD's; with config.optimizer='adam' the "
            f"momentum is config.adam.b1, got momentum={config.momentum!r}, "
            f"nesterov={config.nesterov!r}"
        )


def _direction(config) -> list[optax.GradientTransformation]:
    """The update before the learning rate: torch.optim.SGD's or torch.optim.Adam's.

    Weight decay is added to the gradient (PyTorch's ``weight_decay`` for both), then
    SGD's momentum (dampening 0) or Adam's moment estimates (``config.adam``).
    """
    check_optimizer(config)
    pre = []
    if config.weight_decay:
        pre.append(optax.add_decayed_weights(config.weight_decay))
    if config.optimizer == "adam":
        b = config.adam
        pre.append(optax.scale_by_adam(b1=b.b1, b2=b.b2, eps=b.eps))
    elif config.momentum:
        pre.append(optax.trace(decay=config.momentum, nesterov=config.nesterov))
    return pre


def lr_update_of(config) -> str:
    """'epoch' or 'step': how often the learning rate of a fixed schedule changes."""
    if config.lr_update is not None:
        return config.lr_update
    return "step" if config.schedule in ("one_cycle", "wsd") else "epoch"


def _one_cycle(c, lr, epochs, k):
    o = c.one_cycle
    return al.one_cycle_lr(
        lr,
        epochs * k,
        pct_start=o.pct_start,
        anneal_strategy=o.anneal_strategy,
        div_factor=o.div_factor,
        final_div_factor=o.final_div_factor,
        three_phase=o.three_phase,
    )


def _warmup_cosine(c, lr, epochs, k):
    w = c.warmup_cosine
    kw = {} if w.warmup_start_factor is None else {"warmup_start_factor": w.warmup_start_factor}
    return al.warmup_cosine(lr, w.warmup_epochs * k, epochs * k, eta_min=w.eta_min, **kw)


def _milestones(c, epochs):
    m = c.multistep.milestones
    return (epochs // 2, (3 * epochs) // 4) if m is None else tuple(m)


# Each fixed schedule: (config, lr, epochs, k updates per schedule unit) -> optax.Schedule.
FIXED_SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    "constant": lambda c, lr, epochs, k: optax.constant_schedule(lr),
    "step": lambda c, lr, epochs, k: al.step_lr(lr, c.step.step_size * k, c.step.gamma),
    "multistep": lambda c, lr, epochs, k: al.multistep_lr(
        lr, [m * k for m in _milestones(c, epochs)], c.multistep.gamma
    ),
    "exponential": lambda c, lr, epochs, k: al.exponential_lr(lr, c.exponential.gamma ** (1 / k)),
    "linear": lambda c, lr, epochs, k: al.linear_lr(
        lr, c.linear.start_factor, c.linear.end_factor, c.linear.total_iters * k
    ),
    "cosine": lambda c, lr, epochs, k: al.cosine_annealing_lr(
        lr, (c.cosine.t_max or epochs) * k, c.cosine.eta_min
    ),
    "warmup_cosine": _warmup_cosine,
    "one_cycle": _one_cycle,
    # warmup-stable-decay: constant, then a cooldown over the last decay_fraction of the run.
    "wsd": lambda c, lr, epochs, k: al.warmup_stable_decay(
        lr,
        epochs * k,
        warmup_steps=c.wsd.warmup_epochs * k,
        decay_fraction=c.wsd.decay_fraction,
        decay_shape=c.wsd.decay_shape,
    ),
}


def build_schedule(config, steps_per_epoch: int) -> optax.Schedule:
    """A fixed schedule as a function of the update count (durations in epochs).

    With ``lr_update == 'epoch'`` the schedule counts epochs (``per_epoch``:
    PyTorch's ``scheduler.step()`` once per epoch); with ``'step'`` it counts updates.
    """
    if lr_update_of(config) not in ("epoch", "step"):
        raise ConfigError(
            f"config.lr_update must be 'epoch', 'step' or unset, got {config.lr_update!r}"
        )
    per_step = lr_update_of(config) == "step"
    k = steps_per_epoch if per_step else 1
    schedule = FIXED_SCHEDULES[config.schedule](config, config.learning_rate, config.epochs, k)
    return schedule if per_step else al.per_epoch(schedule, steps_per_epoch)


def _depends_on_epochs(config) -> bool:
    name = config.schedule
    return (
        name in ("warmup_cosine", "one_cycle", "wsd")
        or (name == "cosine" and config.cosine.t_max is None)
        or (name == "multistep" and config.multistep.milestones is None)
    )


def _fixed(config, steps_per_epoch, probe_loss_fn) -> Method:
    schedule = build_schedule(config, steps_per_epoch)
    tx = optax.chain(*_direction(config), al.scale_by_lr_schedule(schedule))
    return Method(tx, depends_on_epochs=_depends_on_epochs(config))


PLATEAU_METRICS = ("test_loss", "test_accuracy", "train_loss", "val_loss", "val_accuracy")


def _plateau(config, steps_per_epoch, probe_loss_fn) -> Method:
    p = config.plateau
    if p.metric not in PLATEAU_METRICS:
        raise ConfigError(
            f"config.plateau.metric must be one of {PLATEAU_METRICS}, got {p.metric!r}"
        )
    last = al.reduce_on_plateau(
        config.learning_rate,
        mode=p.mode,
        factor=p.factor,
        patience=p.patience,
        threshold=p.threshold,
        threshold_mode=p.threshold_mode,
        cooldown=p.cooldown,
        min_lr=p.min_lr,
    )

    def after_epoch(opt_state, metrics):
        return al.report_metric(opt_state, jnp.float32(metrics[p.metric]))

    return Method(optax.chain(*_direction(config), last), after_epoch=after_epoch)


def auto_score(text: str | None):
    """The ``score=`` of ``auto_lr`` named by ``config.auto.score``.

    ``minmax_exp``, ``softmax`` and ``rank_exp`` are the library's names;
    ``softmax:T`` is ``autolr_jax.softmax_score(T)``; unset is the library's default.
    """
    if text is None:
        return {}
    name, _, arg = str(text).partition(":")
    if name in ("minmax_exp", "softmax", "rank_exp") and not arg:
        return {"score": name}
    if name == "softmax" and arg:
        try:
            return {"score": al.softmax_score(float(arg))}
        except ValueError as e:
            raise ConfigError(f"config.auto.score {text!r}: {e}") from None
    raise ConfigError(
        "config.auto.score must be minmax_exp, softmax, softmax:T (a temperature T > 0) or "
        f"rank_exp, got {text!r}"
    )


PROBE_SOURCES = ("random", "train")


def _auto(config, steps_per_epoch, probe_loss_fn) -> Method:
    a = config.auto
    if a.probe_source not in PROBE_SOURCES:
        raise ConfigError(
            f"config.auto.probe_source must be one of {PROBE_SOURCES}, got {a.probe_source!r}"
        )
    if not (isinstance(a.probe_batch_size, int) and a.probe_batch_size >= 1):
        raise ConfigError(
            f"config.auto.probe_batch_size must be an integer >= 1, got {a.probe_batch_size!r}"
        )
    check_optimizer(config)
    pre = [optax.add_decayed_weights(config.weight_decay)] if config.weight_decay else []
    # auto_lr owns the momentum: the candidates are factors of the optimizer's whole update.
    if config.optimizer == "adam":
        factory = optax.adam
        inner = {"b1": config.adam.b1, "b2": config.adam.b2, "eps": config.adam.eps}
        has_momentum = bool(config.adam.b1)
    else:
        factory = optax.sgd
        inner = (
            {"momentum": config.momentum, "nesterov": config.nesterov} if config.momentum else {}
        )
        has_momentum = bool(config.momentum)
    every = steps_per_epoch if a.every is None else a.every
    if a.budget not in (None, "none", "wsd"):
        raise ConfigError(f"config.auto.budget must be 'wsd' or 'none', got {a.budget!r}")
    # Checked here too: with rule='seed' the value never reaches auto_lr.
    if a.guard_on not in GUARD_SIGNALS:
        raise ConfigError(
            f"config.auto.guard_on must be one of {GUARD_SIGNALS}, got {a.guard_on!r}"
        )
    if a.probe_step not in PROBE_STEPS:
        raise ConfigError(
            f"config.auto.probe_step must be one of {tuple(PROBE_STEPS)}, got {a.probe_step!r}"
        )
    # 'momentum_free' without momentum: the update is the momentum-free step already.
    twin = {"probe_optimizer": PROBE_STEPS[a.probe_step] if has_momentum else None}
    # rule='seed' has no guard (auto_lr's guard=None), so nothing for guard_on to choose.
    guard_on = "probe" if a.rule == "seed" else a.guard_on
    rule = a.rule
    if a.armijo_c is not None:
        if a.rule != "armijo":
            raise ConfigError(f"config.auto.armijo_c needs auto.rule='armijo', got {a.rule!r}")
        rule = al.armijo_rule(c=a.armijo_c)
    shape = None
    if a.budget == "wsd":  # the shape of the fixed wsd schedule (config.wsd), peak 1, no warmup
        shape = al.warmup_stable_decay(
            1.0,
            steps_per_epoch * config.epochs,
            decay_fraction=config.wsd.decay_fraction,
            decay_shape=config.wsd.decay_shape,
        )
    last = al.auto_lr(
        factory,
        learning_rate=config.learning_rate,
        loss_fn=probe_loss_fn,
        factors=tuple(a.factors),
        every=every,
        min_lr=a.min_lr,
        max_lr=a.max_lr,
        strategy=a.strategy,
        chunk_size=a.chunk_size,
        lookahead=a.lookahead,
        rule=rule,
        initial_search=a.initial_search,
        schedule=shape,
        guard_tolerance=a.guard_tolerance,
        guard_memory=a.guard_memory,
        guard_on=guard_on,
        **auto_score(a.score),
        **inner,
        **twin,
    )
    probe = Probe(every, a.probe_batch_size, a.probe_source, a.lookahead, value=guard_on == "value")
    # The budget shape spans config.epochs: a resume may not change it.
    return Method(optax.chain(*pre, last), probe=probe, depends_on_epochs=shape is not None)


def with_injected_lr(tree: Any, lr: jax.Array) -> Any:
    """``tree`` (a pure optimizer state) with every injected ``learning_rate`` set to ``lr``."""
    return map_states(
        tree, lambda n: isinstance(n, _INJECT_TYPES), lambda s: with_learning_rate(s, lr)
    )


def null_model_multiplier(losses: jax.Array, factors: tuple[float, ...]) -> jax.Array:
    """The published code's multiplier: factors' geometric mean weighted by z-scored losses."""
    losses = jnp.asarray(losses, jnp.float32)
    scores = al.zscore_exp_score(losses, jnp.isfinite(losses))
    logs = jnp.log(jnp.asarray(factors, jnp.float32))
    total = jnp.sum(scores)
    # No finite loss: keep the learning rate (the published code would turn it into NaN).
    return jnp.where(total > 0, jnp.exp(jnp.sum(scores * logs) / jnp.maximum(total, 1e-30)), 1.0)


def _null_model(config, steps_per_epoch, probe_loss_fn) -> Method:
    """The null model: the seed's published rule, whose losses ignore the factors.

    In ``loss_informed_scheduler.get_lr`` (colin31472/CSED538-POSTECH-2024S,
    ``code/new_scheduler.py``) each factor's loss is the copied model's loss on
    its own random batch computed *before* the copy's step, so it is the
    unchanged model's loss: the multiplier is a weighted geometric mean of the
    factors with random weights. Applied once per epoch (``scheduler.step()``),
    from the end of the first epoch.
    """
    n = config.null_model
    factors = tuple(float(f) for f in n.factors)
    if len(factors) < 2 or not all(math.isfinite(f) and f > 0 for f in factors):
        raise ConfigError(
            f"config.null_model.factors must be two or more finite numbers > 0, got {n.factors!r}"
        )
    size = config.batch_size if n.batch_size is None else n.batch_size
    if not (isinstance(size, int) and size >= 1):
        raise ConfigError(f"config.null_model.batch_size must be an integer >= 1, got {size!r}")
    inject = optax.inject_hyperparams(optax.sgd)(learning_rate=config.learning_rate)
    tx = optax.chain(*_direction(config), inject)

    def update(opt_state, losses):
        lr = al.current_lr(opt_state)
        return with_injected_lr(opt_state, lr * null_model_multiplier(losses, factors))

    return Method(tx, epoch_probe=EpochProbe(len(factors), size, update))


def _find_state(tree: Any, cls: type) -> Any:
    """The one node of type ``cls`` in a (pure) optimizer state."""
    found = [
        n for n in jax.tree.leaves(tree, is_leaf=lambda n: isinstance(n, cls)) if isinstance(n, cls)
    ]
    if len(found) != 1:
        raise ValueError(f"expected one {cls.__name__} in the optimizer state, found {len(found)}")
    return found[0]


_F32 = jnp.float32


def _prodigy(config, steps_per_epoch, probe_loss_fn) -> Method:
    """Prodigy (Adam-based; decoupled weight decay). The lr read is ``d * learning_rate``
    after the update: the step the next update takes before Adam's bias correction."""
    scale = config.prodigy.learning_rate
    tx = optax.contrib.prodigy(learning_rate=scale, weight_decay=config.weight_decay)

    def read_lr(s):
        return (_find_state(s, optax.contrib.ProdigyState).estim_lr * scale).astype(_F32)

    return Method(tx, read_lr, "d * lr after the epoch's last update (prodigy)")


def _dog(config, steps_per_epoch, probe_loss_fn) -> Method:
    """DoG (plain SGD directions); the lr read is exactly the last update's step size."""
    d = config.dog
    tx = optax.contrib.dog(
        learning_rate=d.learning_rate,
        init_step=("heuristic", d.init_alpha),
        weight_decay=config.weight_decay or None,
    )

    def read_lr(s):
        st = _find_state(s, optax.contrib.DoGState)
        return (d.learning_rate * st.max_dist / jnp.sqrt(st.sum_sq_norm_grads + 1e-8)).astype(_F32)

    return Method(tx, read_lr, "DoG step size, last update of the epoch")


def _mechanize(config, steps_per_epoch, probe_loss_fn) -> Method:
    """Mechanic learns a scale ``s`` of the base SGD's updates; the lr read is ``sum(s) * lr``."""
    base = optax.sgd(
        config.learning_rate, momentum=config.momentum or None, nesterov=config.nesterov
    )
    if config.weight_decay:
        base = optax.chain(optax.add_decayed_weights(config.weight_decay), base)
    tx = optax.contrib.mechanize(base, weight_decay=config.mechanize.weight_decay)
    lr = config.learning_rate

    def read_lr(s):
        return (jnp.sum(_find_state(s, optax.contrib.MechanicState).s) * lr).astype(_F32)

    return Method(tx, read_lr, "sum(s) * lr, last update of the epoch (Mechanic)")


def _schedule_free(config, steps_per_epoch, probe_loss_fn) -> Method:
    """Schedule-free SGD trains at ``y`` and is evaluated at ``x`` (its averaged iterate)."""
    sf = config.schedule_free
    if not (isinstance(sf.bn_batches, int) and sf.bn_batches >= 0):
        raise ConfigError(
            f"config.schedule_free.bn_batches must be an integer >= 0, got {sf.bn_batches!r}"
        )
    tx = optax.contrib.schedule_free_sgd(
        config.learning_rate,
        warmup_steps=sf.warmup_steps,
        b1=sf.b1,
        weight_decay=config.weight_decay or None,
    )

    def read_lr(s):
        return _find_state(s, optax.contrib.ScheduleFreeState).max_lr.astype(_F32)

    def eval_params(s, params):
        return optax.contrib.schedule_free_eval_params(
            _find_state(s, optax.contrib.ScheduleFreeState), params
        )

    return Method(
        tx, read_lr, eval_params=eval_params, bn_refresh_batches=min(sf.bn_batches, steps_per_epoch)
    )


# Every method the example trains with one model, by its config.schedule name.
BUILDERS: dict[str, Callable[..., Method]] = {
    **dict.fromkeys(FIXED_SCHEDULES, _fixed),
    "plateau": _plateau,
    "auto": _auto,
    "null_model": _null_model,
    "prodigy": _prodigy,
    "dog": _dog,
    "mechanize": _mechanize,
    "schedule_free": _schedule_free,
}
LR_FREE = ("prodigy", "dog", "mechanize", "schedule_free")
# All the names config.schedule accepts: alr has its own loop (alr.py).
METHODS = (*BUILDERS, "alr")


def build_method(config, steps_per_epoch: int, probe_loss_fn=None) -> Method:
    """The :class:`Method` that ``config.schedule`` names.

    Raises:
      ConfigError: an unknown name, or a setting the library refuses (its message
        names the argument, its value and the allowed range).
    """
    if config.schedule not in BUILDERS:
        raise ConfigError(
            f"config.schedule must be one of {', '.join(METHODS)}, got {config.schedule!r}"
        )
    check_optimizer(config)
    try:
        return BUILDERS[config.schedule](config, steps_per_epoch, probe_loss_fn)
    except ConfigError:
        raise
    except ValueError as e:  # autolr_jax / optax name the argument, the value and the range
        raise ConfigError(f"invalid setting for {config.schedule!r}: {e}") from e
