"""ResNet-18 on CIFAR-10 with any autolr_jax scheduler: ``python -m examples.cifar10.main``."""
