"""The protocol of "Automated learning rate scheduling with in-training information".

ResNet-18 on the full CIFAR-10, batch 32, initial learning rate 0.005, 100 epochs,
and everything else at PyTorch's defaults: plain SGD (no momentum, no weight
decay) and each scheduler with PyTorch's default hyperparameters, stepped once
per epoch. The slides do not state the augmentation; this preset uses the
standard random crop and flip (``--config.data.augment=False`` turns it off).

This preset keeps the example's defaults for everything the slides leave open (no
validation split, crop and flip, CIFAR-10 mean/std normalisation, BatchNorm in
train mode, the last epoch's test accuracy). ``seed_published`` is this preset with
the published code's choices instead (a 40k/10k validation split, flip and
rotation, normalisation by 0.5, selection by validation loss, BatchNorm frozen
after the first epoch).
"""

from examples.cifar10.configs import default


def get_config():
    config = default.get_config()
    config.batch_size = 32
    config.learning_rate = 0.005
    return config
