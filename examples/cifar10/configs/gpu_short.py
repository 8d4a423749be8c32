"""Full-width ResNet-18 on one H100, sized for a whole comparison protocol in minutes.

The seed's optimizer (plain SGD, no momentum, no weight decay; schedulers at
PyTorch's defaults, stepped per epoch) on the full-width ResNet-18, shortened so
that each of the comparison benchmark's runs (12-16 schedules x 2 seeds) takes
about half a minute on one H100: a class-balanced 10,000-image subset of the
training set, batch 128 (78 updates per epoch), 10 epochs (780 updates), the
full 10,000-image test set.

The learning rate is 0.1: the seed's 0.005 at batch 32 is far too small for 780
updates (see the ``cpu`` preset: 0.05 at batch 32 for 4,680 updates), and batch
128 takes a proportionally larger step. Schedule durations shrink with the
epochs as in ``cpu``: StepLR every 3 epochs, LinearLR over 1 epoch, warmup 1
epoch, plateau patience 1; multistep milestones default to 50% and 75% of the
epochs, cosine's period to all of them.

Timing assumptions (no GPU was at hand to measure them when this preset was
written; check ``steps_per_s`` and ``wall_time_s`` in ``metrics.jsonl``):

* training at about 8,000-12,000 images/s (float32 with XLA's default TF32
  convolutions, batch 128, ~100 updates/s): about 1 s per epoch, 0.3 s per
  evaluation, so ~15 s of training per run;
* compilation of the train step, the evaluation and the initialisation: about
  15-25 s per run, more than the training itself. Setting
  ``JAX_COMPILATION_CACHE_DIR`` lets runs that differ only in ``--seed`` reuse it;
* the ``alr`` schedule trains ``M * N`` children per epoch (6 with the defaults,
  vmapped on a GPU): about 6x the training time, ~1.5-2 minutes per run;
* decoding the JPEG archive once (~10 s on a fast CPU), then the cached arrays.
"""

from examples.cifar10.configs import default


def get_config():
    config = default.get_config()
    config.data.train_subset = 10_000
    config.epochs = 10
    config.step.step_size = 3
    config.linear.total_iters = 1
    config.warmup_cosine.warmup_epochs = 1
    config.plateau.patience = 1
    return config
