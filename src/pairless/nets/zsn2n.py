"""The two-layer network of Zero-Shot Noise2Noise (Mansour & Heckel, CVPR 2023), 2D.

Two 3×3 convolutions of ``filters`` channels with leaky ReLUs and a 1×1 output predict the noise; the
denoised image is the input minus it (the paper's residual form).  About 21k parameters at 48
channels: small enough to fit one image in seconds, and too small to memorise its noise.
"""

from __future__ import annotations

import torch
from torch import nn


class ZSN2NNet(nn.Module):
    ndim = 2
    multiple = 1

    def __init__(self, *, filters: int = 48):
        super().__init__()
        self.noise = nn.Sequential(
            nn.Conv2d(1, filters, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(filters, filters, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(filters, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.noise(x)
