"""The trained Gaussian denoiser prior's network (issue 23): a bias-free DRUNet-lite fed a σ map.

Architecture (DRUNet of Zhang et al. 2021, slimmed): a 3×3 convolution lifts the noisy image and its
σ map (2 channels) to 32 channels; four scales of 32-64-128-256 channels, each with one residual block
(``x + conv3×3(relu(conv3×3(x)))``) on the way down, at the bottom and on the way up; strided 2×2
convolutions down, transposed 2×2 convolutions up, skips added (not concatenated); a 3×3 convolution
to one channel is the noise estimate, subtracted from the input.  With the defaults: 2,298,720
parameters (9.2 MB in float32) and 142 kMAC (multiply-accumulates) per pixel.

Every convolution is bias-free and there is no normalisation (Mohan et al., ICLR 2020): with ReLU
the network is positively homogeneous, ``f(α·y, α·σ) = α·f(y, σ)`` for α > 0, so any intensity
scale works as long as the σ map is in the same units (training used [0, 1] images; offsets are not
removed, so keep the background near 0).  The σ map is the noise standard deviation per pixel: a
constant for Gaussian noise, ``√(a·u + b)`` for a fitted Poisson–Gaussian model with ``u`` a smoothed
copy of the noisy image.

Why this one (``benchmarks/prior_architecture.py``, each candidate trained 12 CPU-minutes on one core
with the same data and noise, held-out BSD400 images 381-400 and W2S FOVs 026-030): PSNR at σ = 15 /
25 / 50 (σ given) 30.00 / 27.50 / 24.52 dB against 29.83 / 27.24 / 24.09 for the bias-free U-Net
(pairless's layout, depth 3, 1.37 M parameters, 120 kMAC/pixel) and 26.11 / 22.07 / 16.36 for a
bias-free FFDNet (15 plain layers of 64 at half resolution, which without batch norm barely trained);
W2S real noise through a fitted σ map 27.41 dB (U-Net 26.94; BM3D + VST 27.52).  It costs 17 %
more per pixel than the U-Net yet trained faster per CPU-second, and its residual blocks keep it
trainable without normalisation.  One thread, fp32 / bf16 autocast, channels-last: 0.90-0.97 /
0.41-0.43 s for 512², 17-20 / 8.7-9.0 s for 2048² (two timings on a loaded machine); bf16 inference
changed the σ = 25 PSNR by −0.002 dB.  bf16 autocast training runs twice the steps per CPU-second and,
at equal steps (1097 vs 1145), scored within 0.01 dB of fp32 at every σ and on W2S.
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
