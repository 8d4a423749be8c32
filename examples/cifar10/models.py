"""ResNet-18, CIFAR variant, in Flax NNX.

The CIFAR variant of He et al. (2016) as commonly trained on 32x32 images: a 3x3
stride-1 stem and no max-pool (the ImageNet stem's 7x7 stride-2 convolution and
max-pool would shrink a 32x32 image to 8x8 before the first block), then four
stages of two basic blocks with 64, 128, 256 and 512 channels, global average
pooling and a linear classifier. ``width`` multiplies every channel count, so the
same code trains a narrow copy on a CPU. The network is fully convolutional, so
it accepts any image size of at least 8x8.

Initialisation follows torchvision's ResNet: Kaiming-normal (fan-out) convolution
kernels, BatchNorm scale 1 and bias 0; BatchNorm momentum 0.9 in Flax's convention
(0.1 in PyTorch's) and epsilon 1e-5, as PyTorch. The classifier keeps Flax's default
initialisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int, rngs: nnx.Rngs) -> nnx.Conv:
    pad = kernel // 2
    # Explicit symmetric padding, as PyTorch's padding=1: 'SAME' pads (0, 1) at stride 2.
    return nnx.Conv(
        in_ch,
        out_ch,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=_conv_init,
        rngs=rngs,
    )


def _bn(ch: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(ch, momentum=0.9, epsilon=1e-5, rngs=rngs)


class BasicBlock(nnx.Module):
    """Two 3x3 convolutions with a residual connection (1x1 projection when the shape changes)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = _conv(in_ch, out_ch, 3, stride, rngs)
        self.bn1 = _bn(out_ch, rngs)
        self.conv2 = _conv(out_ch, out_ch, 3, 1, rngs)
        self.bn2 = _bn(out_ch, rngs)
        if stride != 1 or in_ch != out_ch:
            self.proj = _conv(in_ch, out_ch, 1, stride, rngs)
            self.proj_bn = _bn(out_ch, rngs)
        else:
            self.proj = None
            self.proj_bn = None

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        ura = not train
        y = nnx.relu(self.bn1(self.conv1(x), use_running_average=ura))
        y = self.bn2(self.conv2(y), use_running_average=ura)
        if self.proj is not None:
            x = self.proj_bn(self.proj(x), use_running_average=ura)
        return nnx.relu(x + y)


class ResNet(nnx.Module):
    """ResNet with basic blocks, CIFAR stem (3x3 stride 1, no max-pool).

    Args:
      stage_sizes: blocks per stage; ``(2, 2, 2, 2)`` is ResNet-18.
      num_classes: outputs of the classifier.
      width: channel multiplier; stage widths are ``round(64*width) * (1, 2, 4, 8)``.
      rngs: ``nnx.Rngs`` for the parameter initialisation.
    """

    def __init__(
        self,
        stage_sizes: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        width: float = 1.0,
        *,
        rngs: nnx.Rngs,
    ):
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        base = max(1, round(64 * width))
        self.conv = _conv(3, base, 3, 1, rngs)
        self.bn = _bn(base, rngs)
        blocks = []
        in_ch = base
        for i, n in enumerate(stage_sizes):
            out_ch = base * 2**i
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_ch, out_ch, stride, rngs=rngs))
                in_ch = out_ch
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(in_ch, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits for a batch of NHWC float images.

        Args:
          x: images, shape ``(batch, height, width, 3)``, already normalised.
          train: ``True`` normalises with the batch's statistics and updates the
            running ones (training); ``False`` uses the running statistics.
        """
        x = nnx.relu(self.bn(self.conv(x), use_running_average=not train))
        for block in self.blocks:
            x = block(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return self.head(x)


def resnet18(num_classes: int = 10, width: float = 1.0, *, rngs: nnx.Rngs) -> ResNet:
    """ResNet-18, CIFAR variant (11.2 M parameters at ``width=1``)."""
    return ResNet((2, 2, 2, 2), num_classes, width, rngs=rngs)
