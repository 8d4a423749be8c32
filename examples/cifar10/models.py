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

``loop_safe_conv=True`` swaps the convolution for :func:`loop_safe_conv`: the same
forward and the same gradients, computed by convolutions in the canonical
NHWC/HWIO form. XLA's CPU backend leaves the gradient convolutions that autodiff
emits inside a while loop (``lax.scan``, ``lax.map``) in a non-canonical layout
and runs them with a naive kernel, about 20-50x slower than the same step
outside a loop; the ALR tree scans over an epoch's batches, so it uses this
on CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
_NHWC = ("NHWC", "HWIO", "NHWC")


def _canonical(dimension_numbers) -> bool:
    want = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
    return dimension_numbers is not None and (
        lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), dimension_numbers) == want
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_nhwc(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


def _conv_nhwc_fwd(x, w, strides, padding):
    return _conv_nhwc(x, w, strides, padding), (x, w)


def _conv_nhwc_bwd(strides, padding, res, dy):
    x, w = res
    k_hw = w.shape[:2]
    pad_x, pad_w = [], []
    for d, (k, s, (lo, _)) in enumerate(zip(k_hw, strides, padding, strict=True)):
        n_in, n_out = x.shape[1 + d], dy.shape[1 + d]
        # Input gradient: dy dilated by the stride, convolved with the flipped kernel.
        lo_x = k - 1 - lo
        pad_x.append((lo_x, n_in + k - 2 - (n_out - 1) * s - lo_x))
        # Kernel gradient: x (channels as batch) convolved with dy (batch as input channels).
        pad_w.append((lo, (n_out - 1) * s + k - n_in - lo))
    w_t = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
    dx = lax.conv_general_dilated(
        dy, w_t, (1, 1), pad_x, lhs_dilation=strides, dimension_numbers=_NHWC
    )
    dw = lax.conv_general_dilated(
        x.transpose(3, 1, 2, 0),
        dy.transpose(1, 2, 0, 3),
        (1, 1),
        pad_w,
        rhs_dilation=strides,
        dimension_numbers=_NHWC,
    ).transpose(1, 2, 0, 3)
    return dx, dw


_conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


def loop_safe_conv(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    **kwargs,
):
    """``lax.conv_general_dilated`` whose gradients are canonical NHWC/HWIO convolutions.

    For the plain case this model uses (NHWC/HWIO, explicit padding, no dilation,
    one group) the forward is the same convolution and the backward computes the
    input and kernel gradients as two explicit convolutions (what XLA's CPU
    backend rewrites autodiff's gradients into outside loops, but not inside
    them). Anything else goes to ``lax.conv_general_dilated`` unchanged.
    """
    plain = (
        _canonical(dimension_numbers)
        and not isinstance(padding, str)
        and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
        and feature_group_count == 1
        and precision is None
        and all(v is None for v in kwargs.values())
    )
    if not plain:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            precision=precision,
            **kwargs,
        )
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv_nhwc(lhs, rhs, tuple(int(s) for s in window_strides), padding)


def _conv(
    in_ch: int, out_ch: int, kernel: int, stride: int, rngs: nnx.Rngs, loop_safe: bool = False
) -> nnx.Conv:
    pad = kernel // 2
    # Explicit symmetric padding, as PyTorch's padding=1: 'SAME' pads (0, 1) at stride 2.
    kw = {"conv_general_dilated": loop_safe_conv} if loop_safe else {}
    return nnx.Conv(
        in_ch,
        out_ch,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=_conv_init,
        rngs=rngs,
        **kw,
    )


def _bn(ch: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(ch, momentum=0.9, epsilon=1e-5, rngs=rngs)


class BasicBlock(nnx.Module):
    """Two 3x3 convolutions with a residual connection (1x1 projection when the shape changes)."""

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, *, rngs: nnx.Rngs, loop_safe: bool = False
    ):
        self.conv1 = _conv(in_ch, out_ch, 3, stride, rngs, loop_safe)
        self.bn1 = _bn(out_ch, rngs)
        self.conv2 = _conv(out_ch, out_ch, 3, 1, rngs, loop_safe)
        self.bn2 = _bn(out_ch, rngs)
        if stride != 1 or in_ch != out_ch:
            self.proj = _conv(in_ch, out_ch, 1, stride, rngs, loop_safe)
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
      loop_safe_conv: use :func:`loop_safe_conv` (same values, fast gradients inside
        ``lax.scan`` on CPU); the parameters are the same either way.
    """

    def __init__(
        self,
        stage_sizes: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        width: float = 1.0,
        *,
        rngs: nnx.Rngs,
        loop_safe_conv: bool = False,
    ):
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        base = max(1, round(64 * width))
        self.conv = _conv(3, base, 3, 1, rngs, loop_safe_conv)
        self.bn = _bn(base, rngs)
        blocks = []
        in_ch = base
        for i, n in enumerate(stage_sizes):
            out_ch = base * 2**i
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(
                    BasicBlock(in_ch, out_ch, stride, rngs=rngs, loop_safe=loop_safe_conv)
                )
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
