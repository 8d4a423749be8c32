"""The seed's protocol in miniature: a run in minutes on a 2-core CPU.

A narrow ResNet-18 (width 1/8: stage widths 8, 16, 32, 64; 176k parameters) on a
class-balanced 10,000-image subset of the training set, evaluated on the full
test set, batch 32, plain SGD as the ``seed`` preset. Schedule durations are
scaled to the shorter run. See examples/cifar10/README.md for measured times.
"""

from configs import default


def get_config() -> default.Config:
    config = default.get_config()
    config.width = 0.125
    config.train_subset = 10_000
    config.test_subset = None
    config.batch_size = 32
    config.learning_rate = 0.005
    config.epochs = 10
    config.momentum = 0.0
    config.weight_decay = 0.0
    config.schedule = "constant"
    config.step_size = 3
    config.warmup_epochs = 1
    config.linear_total_iters = 2
    config.plateau_patience = 1
    return config
