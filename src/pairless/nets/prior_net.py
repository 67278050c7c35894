"""The trained Gaussian denoiser prior's network (issue 23): a bias-free DRUNet-lite taking a σ map.

DRANFT: numbers filled in after the architecture benchmark.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _ResBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` with bias-free 3×3 convolutions (DRUNet's block, no activation after the
    sum)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class PriorNet(nn.Module):
    """Bias-free DRUNet-lite: ``forward(y, sigma_map)`` maps ``(B, 1, H, W)`` noisy images and their
    per-pixel noise σ (same shape, same intensity units) to ``(B, 1, H, W)`` denoised images.

    Parameters
    ----------
    widths : channels of each scale, finest first; every further scale halves the resolution.
    blocks : residual blocks per scale, on the way down, at the bottom and on the way up.
    """

    ndim = 2

    def __init__(self, *, widths: tuple[int, ...] = (32, 64, 128, 256), blocks: int = 1):
        super().__init__()
        if len(widths) < 2 or blocks < 1:
            raise ValueError(
                f"need at least two scales and one block per scale, not widths={widths}, blocks={blocks}"
            )
        self.widths, self.blocks = tuple(widths), blocks
        self.head = nn.Conv2d(2, widths[0], 3, padding=1, bias=False)
        self.encoders = nn.ModuleList([self._stage(w) for w in widths[:-1]])
        self.downs = nn.ModuleList(
            [nn.Conv2d(a, b, 2, stride=2, bias=False) for a, b in zip(widths[:-1], widths[1:])]
        )
        self.bottom = self._stage(widths[-1])
        self.ups = nn.ModuleList(
            [nn.ConvTranspose2d(b, a, 2, stride=2, bias=False) for a, b in zip(widths[:-1], widths[1:])]
        )
        self.decoders = nn.ModuleList([self._stage(w) for w in widths[:-1]])
        self.tail = nn.Conv2d(widths[0], 1, 3, padding=1, bias=False)

    def _stage(self, channels: int) -> nn.Sequential:
        return nn.Sequential(*[_ResBlock(channels) for _ in range(self.blocks)])

    @property
    def multiple(self) -> int:
        """Every spatial size fed to the network must be a multiple of this."""
        return 2 ** (len(self.widths) - 1)

    def forward(self, y: torch.Tensor, sigma_map: torch.Tensor) -> torch.Tensor:
        h = self.head(torch.cat([y, sigma_map], dim=1))
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            h = encoder(h)
            skips.append(h)
            h = down(h)
        h = self.bottom(h)
        for k in reversed(range(len(self.ups))):
            h = self.decoders[k](self.ups[k](h) + skips[k])
        return y - self.tail(h)
