"""A well-known strong recipe: about 93-95% test accuracy in 100 epochs at full width.

SGD with Nesterov momentum 0.9, weight decay 5e-4, batch 128, peak learning rate
0.1, 5 epochs of linear warmup then cosine annealing to 0, updated every step,
random crop and flip.
"""

from examples.cifar10.configs import default


def get_config():
    config = default.get_config()
    config.momentum = 0.9
    config.nesterov = True
    config.weight_decay = 5e-4
    config.schedule = "warmup_cosine"
    config.lr_update = "step"
    return config
