"""The seed's protocol in miniature: one run in about four minutes on a 2-core CPU.

A narrow ResNet-18 (width 1/8: stage widths 8, 16, 32, 64; 176k parameters) on a
class-balanced 10,000-image subset of the training set for 15 epochs (4,680
updates), evaluated on the full test set, batch 32, plain SGD (no momentum, no
weight decay) as the ``seed`` preset.

Two things are scaled to the 50x shorter run. The learning rate is 0.05 rather
than the seed's 0.005: at 0.005 the short run stays far from convergence (25%
test accuracy after 2 epochs), so every decaying schedule would lose to the
constant one for want of training rather than for its shape. Schedule durations
shrink with the epochs (100 -> 15): StepLR every 5 epochs (30 -> 4.5), LinearLR
over 1 epoch (5 -> 0.75), warmup 1 epoch, plateau patience 1 (10 -> 1.5);
multistep milestones default to 50% and 75% of the epochs, cosine's period to
all of them. See examples/cifar10/README.md for measured times and accuracies.
"""

from examples.cifar10.configs import default


def get_config():
    config = default.get_config()
    config.model.width = 0.125
    config.data.train_subset = 10_000
    config.batch_size = 32
    config.learning_rate = 0.05
    config.epochs = 15
    config.step.step_size = 5
    config.linear.total_iters = 1
    config.warmup_cosine.warmup_epochs = 1
    config.plateau.patience = 1
    return config
