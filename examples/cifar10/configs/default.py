"""The configuration of a CIFAR-10 run: every field, its default and its meaning.

Presets (``seed``, ``tuned``, ``cpu``) start from :func:`get_config` and change a
few fields; ``main.py`` exposes every field as a command-line flag
(``--field-name``), so any hyperparameter can be set without editing a file.

Durations of the schedules (``step_size``, ``milestones``, ``t_max``,
``warmup_epochs``, ``linear_total_iters``) are always given in epochs.
``lr_update`` says how often the learning rate changes: ``'epoch'`` (PyTorch's
usual protocol, ``scheduler.step()`` once per epoch, via ``autolr_jax.per_epoch``)
or ``'step'`` (the same schedule evaluated at every update, durations converted
to updates).

``alr`` (the ALR tree, ``autolr_jax.alr_tree``) trains ``M * N`` copies of the model
per epoch; ``prodigy``, ``dog``, ``mechanize`` and ``schedule_free`` are Optax's
learning-rate-free optimizers (``optax.contrib``), used in place of SGD and its
schedule; see ``examples/cifar10/README.md`` for what each takes from this config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field

SCHEDULES = (
    "constant",
    "step",
    "multistep",
    "exponential",
    "linear",
    "cosine",
    "warmup_cosine",
    "one_cycle",
    "plateau",
    "auto",
    "alr",
    "prodigy",
    "dog",
    "mechanize",
    "schedule_free",
)
# The learning-rate-free optimizers (optax.contrib): they replace SGD and its schedule.
LR_FREE = ("prodigy", "dog", "mechanize", "schedule_free")


def _h(text: str, default=dataclasses.MISSING, default_factory=dataclasses.MISSING):
    kw = {"metadata": {"help": text}}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, **kw)
    return field(default=default, **kw)


@dataclasses.dataclass
class Config:
    """All settings of a run (see the module docstring; ``main.py --help`` lists them)."""

    # ---- model
    width: float = _h("channel multiplier of ResNet-18 (stage widths 64w, 128w, 256w, 512w)", 1.0)
    stage_sizes: tuple[int, ...] = _h("basic blocks per stage; 2,2,2,2 is ResNet-18", (2, 2, 2, 2))

    # ---- data
    data_dir: str | None = _h(
        "image folder or .tar.gz (train/<class>/*.jpg|png, test/<class>/...); "
        "unset: tensorflow-datasets' cifar10",
        None,
    )
    tfds_data_dir: str | None = _h(
        "data_dir for tfds (default: TFDS_DATA_DIR or ~/tensorflow_datasets)", None
    )
    cache_dir: str | None = _h(
        "where decoded arrays are cached when the data's own directory is read-only "
        "(default: $AUTOLR_JAX_CACHE or ~/.cache/autolr_jax)",
        None,
    )
    train_subset: int | None = _h("train on a class-balanced subset of this many images", None)
    test_subset: int | None = _h("evaluate on a class-balanced subset of this many images", None)
    augment: bool = _h("random crop (4-pixel padding) and horizontal flip, on device", True)

    # ---- optimisation
    epochs: int = _h("training epochs", 100)
    batch_size: int = _h("training batch size (the last partial batch of an epoch is dropped)", 128)
    eval_batch_size: int = _h("evaluation batch size", 1000)
    learning_rate: float = _h("initial (peak for one_cycle) learning rate", 0.1)
    momentum: float = _h("SGD momentum (0: plain SGD, PyTorch's default)", 0.0)
    nesterov: bool = _h("Nesterov momentum", False)
    weight_decay: float = _h("L2 weight decay added to the gradient, as torch.optim.SGD", 0.0)

    # ---- schedule
    schedule: str = _h("learning-rate schedule: " + ", ".join(SCHEDULES), "constant")
    lr_update: str | None = _h(
        "'epoch' (change the lr once per epoch, PyTorch's protocol) or 'step' (every "
        "update); unset: 'step' for one_cycle, 'epoch' otherwise",
        None,
    )
    step_size: int = _h("step: epochs between decays (PyTorch has no default; 30 is common)", 30)
    gamma: float | None = _h(
        "step/multistep/exponential decay factor; unset: 0.1 (PyTorch's default for "
        "step and multistep), 0.95 for exponential (PyTorch has no default)",
        None,
    )
    milestones: tuple[int, ...] | None = _h(
        "multistep: epochs at which the lr is multiplied by gamma; unset: 50%% and 75%% of epochs",
        None,
    )
    linear_start_factor: float = _h("linear: start factor (PyTorch's default 1/3)", 1.0 / 3.0)
    linear_end_factor: float = _h("linear: end factor (PyTorch's default 1.0)", 1.0)
    linear_total_iters: int = _h("linear: epochs of the ramp (PyTorch's default 5)", 5)
    t_max: int | None = _h("cosine: half-period in epochs; unset: all epochs", None)
    eta_min: float = _h("cosine/warmup_cosine: minimum lr (PyTorch's default 0)", 0.0)
    warmup_epochs: int = _h("warmup_cosine: epochs of linear warmup", 5)
    warmup_start_factor: float | None = _h(
        "warmup_cosine: lr factor at the first update; unset: the library's default", None
    )
    one_cycle_pct_start: float = _h("one_cycle: fraction of the cycle spent rising", 0.3)
    one_cycle_anneal_strategy: str = _h("one_cycle: 'cos' or 'linear'", "cos")
    one_cycle_div_factor: float = _h("one_cycle: initial lr = max lr / div_factor", 25.0)
    one_cycle_final_div_factor: float = _h(
        "one_cycle: final lr = initial lr / final_div_factor", 1e4
    )
    one_cycle_three_phase: bool = _h("one_cycle: three-phase variant", False)
    plateau_metric: str = _h(
        "plateau: the once-per-epoch metric fed to reduce_on_plateau: test_loss (what "
        "PyTorch users pass to scheduler.step(val_loss)), test_accuracy, train_loss",
        "test_loss",
    )
    plateau_mode: str = _h("plateau: 'min' or 'max'", "min")
    plateau_factor: float = _h("plateau: lr multiplier on a plateau (PyTorch's default 0.1)", 0.1)
    plateau_patience: int = _h("plateau: epochs without improvement tolerated (default 10)", 10)
    plateau_threshold: float = _h("plateau: improvement threshold (default 1e-4)", 1e-4)
    plateau_threshold_mode: str = _h("plateau: 'rel' or 'abs'", "rel")
    plateau_cooldown: int = _h("plateau: epochs to wait after a cut (default 0)", 0)
    plateau_min_lr: float = _h("plateau: lower bound of the lr (default 0)", 0.0)
    auto_factors: tuple[float, ...] = _h("auto: candidate lr factors", (2.0, 1.0, 0.5))
    auto_every: int | None = _h("auto: updates between probes; unset: once per epoch", None)
    auto_score: str | None = _h(
        "auto: score function: minmax_exp, softmax, softmax:T (temperature T), rank_exp; "
        "unset: the library's default (minmax_exp)",
        None,
    )
    auto_lookahead: int = _h(
        "auto: updates each candidate takes before it is scored: 1 is the seed's one-step "
        "probe; k > 1 takes k - 1 more updates on fresh probe batches (the training batch "
        "with probe_source 'train') and scores on the k-th",
        1,
    )
    auto_strategy: str = _h("auto: 'auto', 'map' or 'vmap' evaluation of the candidates", "auto")
    auto_chunk_size: int | None = _h("auto: candidates evaluated together under 'map'", None)
    auto_min_lr: float = _h("auto: lower bound of the lr", 0.0)
    auto_max_lr: float = _h("auto: upper bound of the lr", float("inf"))
    probe_batch_size: int = _h("auto: examples in the probe's scoring batch", 32)
    probe_source: str = _h(
        "auto: 'random' (a separate random batch of probe_batch_size training images) "
        "or 'train' (the current training batch)",
        "random",
    )

    alr_learning_rates: tuple[float, ...] | None = _h(
        "alr: the beam's initial learning rates (M of them, best first); unset: "
        "(learning_rate, learning_rate / 2)",
        None,
    )
    alr_factors: tuple[float, ...] = _h("alr: the N branch factors r_n", (2.0, 1.0, 0.5))
    alr_beam_size: int | None = _h(
        "alr: children kept after each epoch (K, in [1, M*N]); unset: M", None
    )
    alr_rank_by: str = _h(
        "alr: children ranked by their 'mean' training loss over the epoch, or the loss on "
        "the epoch's 'last' batch (the seed's pseudo-code read literally)",
        "mean",
    )
    alr_strategy: str = _h(
        "alr: 'auto', 'map' (children one after another) or 'vmap' (all at once)", "auto"
    )
    alr_chunk_size: int | None = _h("alr: children vmapped together under 'map'", None)
    lr_free_learning_rate: float | None = _h(
        "prodigy/dog: their learning_rate argument, a multiplier of the step size they "
        "estimate; unset: 1.0 (the authors' recommendation). mechanize and schedule_free "
        "use learning_rate (the base SGD's)",
        None,
    )
    dog_init_alpha: float = _h(
        "dog: initial distance r_eps = alpha * (1 + |x0|) (optax's 'heuristic' init_step; "
        "the authors suggest 1e-4 for models with BatchNorm, 1e-6 otherwise)",
        1e-4,
    )
    mechanize_weight_decay: float = _h(
        "mechanize: Mechanic's own weight decay (optax's default 1e-2; not weight_decay)", 1e-2
    )
    schedule_free_b1: float = _h("schedule_free: interpolation/averaging beta_1 (0.9)", 0.9)
    schedule_free_warmup_steps: int | None = _h(
        "schedule_free: updates of linear warmup from 0 to learning_rate; unset: none", None
    )
    schedule_free_bn_batches: int = _h(
        "schedule_free: training batches run in train mode at the evaluation parameters to "
        "recompute the BatchNorm statistics before each evaluation (as the authors advise; "
        "0: evaluate with the statistics gathered during training)",
        50,
    )

    # ---- run
    resume: bool = _h("continue the run whose checkpoints are in the workdir", False)
    seed: int = _h("random seed: initialisation, data order, augmentation, probe batches", 0)
    progress: bool = _h("show a progress bar per epoch", True)
    checkpoint: bool = _h("write an Orbax checkpoint after every epoch", True)
    stop_after_epoch: int | None = _h(
        "stop after this epoch as if interrupted (continue with --resume)", None
    )
    plots: bool = _h("write PNG plots at the end", True)


def get_config() -> Config:
    """The defaults: ResNet-18, batch 128, lr 0.1, constant schedule, plain SGD."""
    return Config()
