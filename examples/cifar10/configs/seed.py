"""The seed's protocol (``../shared/seeds/001_4778ad85a348ad01.txt``).

ResNet-18 on the full CIFAR-10, batch 32, initial learning rate 0.005, 100 epochs,
and everything else at PyTorch's defaults: plain SGD (no momentum, no weight
decay) and each scheduler with PyTorch's default hyperparameters, stepped once
per epoch. The seed does not state its augmentation; this preset uses the
standard random crop and flip (``--no-augment`` turns it off).
"""

from configs import default


def get_config() -> default.Config:
    config = default.get_config()
    config.width = 1.0
    config.batch_size = 32
    config.learning_rate = 0.005
    config.epochs = 100
    config.momentum = 0.0
    config.nesterov = False
    config.weight_decay = 0.0
    config.schedule = "constant"
    return config
