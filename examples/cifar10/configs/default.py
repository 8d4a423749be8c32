"""The defaults of a CIFAR-10 run: every setting, its default and its meaning.

``get_config()`` returns an ``ml_collections.ConfigDict``. The presets beside
this file (``seed``, ``seed_published``, ``tuned``, ``cpu``, ``gpu_short``) start from
it and set only what they change. Any setting is overridden on the command line::

  python -m examples.cifar10.main --config=examples/cifar10/configs/cpu.py \\
      --config.schedule=auto --config.auto.factors='(4., 1., 0.25)' --workdir=/tmp/run

Durations of the fixed schedules (``step.step_size``, ``multistep.milestones``,
``cosine.t_max``, ``warmup_cosine.warmup_epochs``, ``linear.total_iters``) are in
epochs. ``lr_update`` says how often a fixed schedule changes the learning rate:
``'epoch'`` (PyTorch's protocol, ``scheduler.step()`` once per epoch) or
``'step'`` (the same schedule evaluated at every update); unset, ``'step'`` for
``one_cycle`` and ``wsd`` and ``'epoch'`` otherwise.

Each method's settings live in the sub-config of its name (``config.auto``,
``config.plateau``, ``config.alr``, ``config.prodigy``, ...). The allowed values
are those of the library function each method calls; ``train.py`` adds only the
checks that involve two settings.
"""

from ml_collections import config_dict

placeholder = config_dict.placeholder


def get_config() -> config_dict.ConfigDict:
    """ResNet-18, batch 128, lr 0.1, constant schedule, plain SGD (PyTorch's defaults)."""
    c = config_dict.ConfigDict()

    # ---- model: ResNet-18 (CIFAR variant); stage widths 64w, 128w, 256w, 512w
    c.model = config_dict.ConfigDict({"width": 1.0, "stage_sizes": (2, 2, 2, 2)})

    # ---- data: an image folder or .tar.gz (train/<class>/*.jpg, test/<class>/...); unset
    # data_dir: tensorflow-datasets' cifar10. Subsets are class-balanced.
    c.data = config_dict.ConfigDict(
        {
            "data_dir": placeholder(str),
            "tfds_data_dir": placeholder(str),
            "cache_dir": placeholder(str),
            "train_subset": placeholder(int),
            "test_subset": placeholder(int),
            # Images held out of the training set as a validation split (0: none),
            # class-balanced and the same for every config.seed. With train_subset set and
            # enough images outside it, the training subset is the one without a validation
            # split and the validation images come from outside it; otherwise they are
            # carved out first and the training images come from the rest. Each epoch then
            # also records val_loss and val_accuracy.
            "validation_size": 0,
            # Augmentation, on device: the horizontal flip, the random crop (4-pixel zero
            # padding) unless augment_crop is False, and a random rotation by an angle
            # uniform in [-augment_rotation, augment_rotation] degrees (0: none; nearest
            # neighbour, zero fill: torchvision's RandomRotation). augment=False: none.
            "augment": True,
            "augment_crop": True,
            "augment_rotation": 0.0,
            # 'cifar': per-channel CIFAR-10 mean and std; 'half': (x / 255 - 0.5) / 0.5.
            "normalize": "cifar",
        }
    )

    # ---- optimisation: torch.optim.SGD (weight decay added to the gradient, then momentum)
    c.epochs = 100
    c.batch_size = 128  # global: split over every device; the last partial batch is dropped
    c.eval_batch_size = 1000
    c.learning_rate = 0.1  # initial (peak for one_cycle) learning rate
    c.momentum = 0.0
    c.nesterov = False
    c.weight_decay = 0.0
    # 'sgd' (torch.optim.SGD, as above) or 'adam' (torch.optim.Adam: weight decay added to
    # the gradient, then Adam's moments with config.adam's betas and eps; momentum unset).
    # Used by the fixed schedules, plateau, auto and null_model.
    c.optimizer = "sgd"
    c.adam = config_dict.ConfigDict({"b1": 0.9, "b2": 0.999, "eps": 1e-8})

    # ---- the method that sets the learning rate (optimizers.METHODS lists them)
    c.schedule = "constant"
    c.lr_update = placeholder(str)
    c.step = config_dict.ConfigDict({"step_size": 30, "gamma": 0.1})
    c.multistep = config_dict.ConfigDict({"milestones": placeholder(tuple), "gamma": 0.1})
    c.exponential = config_dict.ConfigDict({"gamma": 0.95})
    c.linear = config_dict.ConfigDict({"start_factor": 1 / 3, "end_factor": 1.0, "total_iters": 5})
    c.cosine = config_dict.ConfigDict({"t_max": placeholder(int), "eta_min": 0.0})
    c.warmup_cosine = config_dict.ConfigDict(
        {"warmup_epochs": 5, "warmup_start_factor": placeholder(float), "eta_min": 0.0}
    )
    # warmup-stable-decay (Hägele et al. 2024): updated per step unless lr_update says otherwise
    c.wsd = config_dict.ConfigDict(
        {"warmup_epochs": 0, "decay_fraction": 0.2, "decay_shape": "linear"}
    )
    c.one_cycle = config_dict.ConfigDict(
        {
            "pct_start": 0.3,
            "anneal_strategy": "cos",
            "div_factor": 25.0,
            "final_div_factor": 1e4,
            "three_phase": False,
        }
    )
    # reduce_on_plateau, fed once per epoch with `metric`: test_loss, test_accuracy, train_loss
    # (or val_loss, val_accuracy with data.validation_size > 0)
    c.plateau = config_dict.ConfigDict(
        {
            "metric": "test_loss",
            "mode": "min",
            "factor": 0.1,
            "patience": 10,
            "threshold": 1e-4,
            "threshold_mode": "rel",
            "cooldown": 0,
            "min_lr": 0.0,
        }
    )
    # auto_lr around SGD. every unset: once per epoch. score: minmax_exp, softmax, softmax:T,
    # rank_exp (unset: the library's default). probe_source: 'random' (a separate random batch
    # of probe_batch_size training images) or 'train' (the training batch itself).
    c.auto = config_dict.ConfigDict(
        {
            "factors": (2.0, 1.0, 0.5),
            "every": placeholder(int),
            "score": placeholder(str),
            "lookahead": 1,
            "strategy": "auto",
            "chunk_size": placeholder(int),
            "min_lr": 0.0,
            "max_lr": float("inf"),
            "probe_batch_size": 32,
            # 'train': Armijo's condition is about the batch the gradient came from.
            "probe_source": "train",
            # The rule that sets the level: 'armijo' (the library's default), 'seed'
            # (Algorithm 1: with initial_search=False, probe_source='random' and no budget,
            # the former default) or 'parabola'.
            "rule": "armijo",
            # Armijo's sufficient-decrease constant c in (0, 1) (unset: the library's 0.5;
            # smaller accepts longer steps: up to 2 (1 - c) / h on a quadratic).
            "armijo_c": placeholder(float),
            # A wide first probe (four decades either side of learning_rate).
            "initial_search": True,
            # 'wsd': the level times warmup_stable_decay(1.0, total updates) as the budget
            # shape, with config.wsd's decay_fraction and decay_shape; 'none': no shape.
            "budget": "wsd",
            # The relative rise of the loss the guard tolerates, and the probes for which it
            # remembers a level it undid (0: no memory; unset: auto_lr's default, 5 where
            # there is a guard).
            "guard_tolerance": 0.05,
            "guard_memory": placeholder(int),
            # What the guard compares: 'value' (the mean training loss of the updates since
            # the last probe against the interval before: many batches, like with like) or
            # 'probe' (the probe batch's loss at successive probes: two batches, noisy).
            # Ignored with rule='seed', which has no guard.
            "guard_on": "value",
            # What the probes scale: 'auto' (auto_lr's default: with momentum > 0 and a rule
            # other than 'seed', SGD without momentum at 1 / (1 - momentum) times the level, the
            # momentum update's steady step), 'momentum_free' (the same under every rule) or
            # 'update' (SGD's own update). On digits the probes of a momentum update accepted
            # levels 5-6x the best rate (benchmarks/README.md).
            "probe_step": "auto",
        }
    )
    # The null model (the seed's published rule): once per epoch, the losses of the unchanged
    # model on one random training batch per factor (batch_size unset: config.batch_size).
    c.null_model = config_dict.ConfigDict(
        {"factors": (2.0, 1.0, 0.5), "batch_size": placeholder(int)}
    )
    # The ALR tree: M beam members (learning_rates unset: (lr, lr / 2)) x N factors per epoch.
    c.alr = config_dict.ConfigDict(
        {
            "learning_rates": placeholder(tuple),
            "factors": (2.0, 1.0, 0.5),
            "beam_size": placeholder(int),
            "rank_by": "mean",
            "strategy": "auto",
            "chunk_size": placeholder(int),
        }
    )
    # The learning-rate-free optimizers of optax.contrib (they replace SGD and its schedule).
    # prodigy/dog: learning_rate multiplies the step size they estimate (1.0: the authors'
    # advice); mechanize and schedule_free use config.learning_rate (the base SGD's).
    c.prodigy = config_dict.ConfigDict({"learning_rate": 1.0})
    c.dog = config_dict.ConfigDict({"learning_rate": 1.0, "init_alpha": 1e-4})
    c.mechanize = config_dict.ConfigDict({"weight_decay": 1e-2})
    # bn_batches: training batches run at the evaluation parameters to refresh BatchNorm.
    c.schedule_free = config_dict.ConfigDict(
        {"b1": 0.9, "warmup_steps": placeholder(int), "bn_batches": 50}
    )

    # ---- BatchNorm in the training forward: 'train' (batch statistics, running ones
    # updated) or 'frozen_after_first_epoch' (train mode in epoch 1 only; then the training
    # forward, and the auto probe's, use the running statistics and never update them: the
    # published code's model.eval() without a model.train() after it).
    c.bn_mode = "train"

    # ---- the run
    # select_by_val (needs data.validation_size > 0): each epoch's record also names the
    # epoch with the lowest validation loss so far (best_val_epoch) and its test metrics
    # (best_val_test_accuracy, best_val_test_loss): the test accuracy of the checkpoint that
    # validation selects, read from the history (no checkpoint is kept for it).
    c.select_by_val = False
    c.seed = 0  # initialisation, data order, augmentation, probe batches
    c.progress = True  # a progress bar per epoch
    c.checkpoint = True  # an Orbax checkpoint after every epoch
    c.stop_after_epoch = placeholder(int)  # stop as if interrupted (continue with --resume)
    c.plots = True  # PNG plots at the end
    return c
