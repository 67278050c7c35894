"""UIDNet's networks (Hong et al., AAAI 2020), as the official code builds them (github.com/zhwhong/UIDNet
``model.py``, the CT model with ``--model_name wgan-gp``).

* :class:`NoiseGenerator` G: a two-level U-Net on [z, y] (z uniform noise of the image's shape, y a clean
  image) whose output is a noise map n̂; y + n̂ is a pseudo-noisy image.
* :class:`Critic` D: the WGAN-GP critic on the "sharpened" pair [u, u - mean₃(u)]: four 5×5 stride-2
  convolutions, no normalization, a linear layer on the flattened 4×4 map (so 64×64 inputs only).
* The denoiser R is a DnCNN (:class:`pairless.nets.dncnn.DnCNN`) trained on the pseudo pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

CRITIC_INPUT = 64  # the critic's linear layer fixes its input size


def _same(cin: int, cout: int, kernel: int) -> nn.Sequential:
    """Keras ``padding='same'`` at stride 1: an even kernel's extra padding goes right and bottom."""
    lo, hi = (kernel - 1) // 2, kernel // 2
    return nn.Sequential(nn.ZeroPad2d((lo, hi, lo, hi)), nn.Conv2d(cin, cout, kernel))


def _double(cin: int, cout: int) -> list[nn.Module]:
    return [_same(cin, cout, 3), nn.ReLU(), _same(cout, cout, 3), nn.ReLU()]


class NoiseGenerator(nn.Module):
    """G(z, y): widths w, 2w, 4w; dropout 0.5 at the bottom; nearest up-sampling + 2×2 conv; 3×3 conv to one
    channel with ReLU, then 1×1 conv and tanh (the official head, ReLU included)."""

    multiple = 4

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.down1 = nn.Sequential(*_double(2, w))
        self.down2 = nn.Sequential(*_double(w, 2 * w))
        self.bottom = nn.Sequential(*_double(2 * w, 4 * w), nn.Dropout(0.5))
        self.up2 = nn.Sequential(nn.Upsample(scale_factor=2), _same(4 * w, 2 * w, 2), nn.ReLU())
        self.merge2 = nn.Sequential(*_double(4 * w, 2 * w))
        self.up1 = nn.Sequential(nn.Upsample(scale_factor=2), _same(2 * w, w, 2), nn.ReLU())
        self.merge1 = nn.Sequential(
            *_double(2 * w, w), _same(w, 1, 3), nn.ReLU(), nn.Conv2d(1, 1, 1), nn.Tanh()
        )

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        a = self.down1(torch.cat([z, y], 1))
        b = self.down2(nnf.max_pool2d(a, 2))
        c = self.bottom(nnf.max_pool2d(b, 2))
        d = self.merge2(torch.cat([b, self.up2(c)], 1))
        return self.merge1(torch.cat([a, self.up1(d)], 1))


def sharpen(u: Tensor) -> Tensor:
    """[u, u - mean₃(u)], the 3×3 mean not counting the zero padding (TF SAME average pooling)."""
    return torch.cat([u, u - nnf.avg_pool2d(u, 3, 1, 1, count_include_pad=False)], 1)


class Critic(nn.Module):
    def __init__(self, width: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 2
        for i in range(4):
            layers += [nn.Conv2d(cin, width * 2**i, 5, 2, 2), nn.LeakyReLU(0.2)]
            cin = width * 2**i
        self.conv = nn.Sequential(*layers)
        self.linear = nn.Linear(cin * (CRITIC_INPUT // 16) ** 2, 1)

    def forward(self, u: Tensor) -> Tensor:
        return self.linear(self.conv(sharpen(u)).flatten(1))


def init_official_(generator: NoiseGenerator, critic: Critic, denoiser: nn.Module) -> None:
    """The official initialisers: He normal for G's convolutions but its last 1×1 (Keras' default, Glorot
    uniform), truncated normal (σ 0.02) for D's convs and normal (σ 0.02) for its linear layer, Glorot
    uniform for the DnCNN; zero biases."""
    convs = [m for m in generator.modules() if isinstance(m, nn.Conv2d)]
    for layer in convs[:-1]:
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    for layer in [convs[-1], *(m for m in denoiser.modules() if isinstance(m, nn.Conv2d))]:
        nn.init.xavier_uniform_(layer.weight)
    for layer in [*convs, *denoiser.modules()]:
        if isinstance(layer, nn.Conv2d) and layer.bias is not None:
            nn.init.zeros_(layer.bias)
    for layer in critic.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.trunc_normal_(layer.weight, 0.0, 0.02, -0.04, 0.04)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            nn.init.zeros_(layer.bias)
