"""The protocol of "Automated learning rate scheduling with in-training information".

ResNet-18 on the full CIFAR-10, batch 32, initial learning rate 0.005, 100 epochs,
and everything else at PyTorch's defaults: plain SGD (no momentum, no weight
decay) and each scheduler with PyTorch's default hyperparameters, stepped once
per epoch. The slides do not state the augmentation; this preset uses the
standard random crop and flip (``--config.data.augment=False`` turns it off).
"""

from examples.cifar10.configs import default


def get_config():
    config = default.get_config()
    config.batch_size = 32
    config.learning_rate = 0.005
    return config
