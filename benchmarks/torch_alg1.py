"""The peer: Algorithm 1 of Kim and Yu's slides in PyTorch, copying the model once per factor.

Used by ``probe_overhead`` (not a benchmark of its own). This is how the slides
("Automated learning rate scheduling with in-training information") describe the
scheduler (line 4: ``θ' = copy(θ)``; line 6: ``θ' ← θ' − f·η·∇L``; line 7: loss
of ``θ'`` on the scoring batch), run on the same CPU and the same architectures as
the JAX benchmark, so that the ratio *probe time / training-step time* can be
compared between the two.

To keep the reference fair (not a straw man) the gradient is computed once, by
the training step's own backward pass, and reused for every factor (the slides'
line 5 sits inside the loop, but the gradient does not depend on the factor),
and each candidate forward runs under ``torch.no_grad()``.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convolutions, identity or 1x1-conv shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18, CIFAR variant: 3x3 stem with stride 1 and no max-pool.

    Args:
      widths: channel counts of the stem and the four stages (64, 128, 256,
        512 at full width); pass the JAX model's widths so both are the same net.
      num_classes: size of the output layer.
    """

    def __init__(self, widths=(64, 128, 256, 512), num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, cin = [], widths[0]
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


class SmallCNN(nn.Module):
    """Two 3x3 convolutions (the second with stride 2), global mean pool, dense."""

    def __init__(self, c1: int, c2: int, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, c1, 3, 1, 1)
        self.conv2 = nn.Conv2d(c1, c2, 3, 2, 1)
        self.fc = nn.Linear(c2, num_classes)

    def forward(self, x):
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        return self.fc(out.mean(dim=(2, 3)))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x, y) -> float:
    """One plain training step: forward, backward, SGD step."""
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.detach()


def alg1_probe(model: nn.Module, x, y, lr: float, factors) -> tuple[float, list[float]]:
    """Algorithm 1 of the seed: one deep copy of the model per factor.

    Uses the gradients already stored in ``model``'s ``.grad`` (from the last
    backward pass). Candidates are scored with the default of the JAX library:
    min-max normalised losses, score ``exp(-x)``, non-finite losses score 0,
    all non-finite backs off to the smallest factor.

    Returns:
      ``(new_lr, candidate_losses)``.
    """
    losses = []
    for f in factors:
        cand = copy.deepcopy(model)
        with torch.no_grad():
            for p, p0 in zip(cand.parameters(), model.parameters(), strict=True):
                p.sub_(f * lr * p0.grad)
            losses.append(float(F.cross_entropy(cand(x), y)))
    L = np.asarray(losses, np.float64)
    finite = np.isfinite(L)
    if not finite.any():
        return lr * min(factors), losses
    lo, hi = L[finite].min(), L[finite].max()
    xs = np.where(finite, (L - lo) / (hi - lo) if hi > lo else 0.0, 0.0)
    s = np.where(finite, np.exp(-xs), 0.0)
    m = math.exp(float(np.sum(s * np.log(np.asarray(factors))) / np.sum(s)))
    return lr * m, losses
