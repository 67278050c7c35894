"""The U-Net of CSBDeep / Noise2Void, 2D or 3D, with the N2V2 variants (blur-pool, no top skip).

With the defaults (depth 2, 32 first-layer filters, 3×3 convolutions, batch norm, ReLU) the 2D
network has the anchors' 333,729 parameters and 166,528 forward FLOPs per pixel: each level has two
convolutions, the bottleneck and each decoder level end with a convolution that halves the width
(CSBDeep's layout), and a 1×1 convolution maps to the output.  Inputs must be a multiple of
``2**depth`` in every spatial dimension (:attr:`UNet.multiple`); prediction pads to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _layers(ndim: int):
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, not {ndim}")
    return (
        (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d) if ndim == 2 else (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d)
    )


class _ConvBlock(nn.Sequential):
    """Two 3×3 convolutions, each followed by batch norm and ReLU; the second has ``out2`` filters."""

    def __init__(self, ndim: int, cin: int, out1: int, out2: int, batch_norm: bool):
        conv, norm, _ = _layers(ndim)
        layers: list[nn.Module] = []
        for a, b in ((cin, out1), (out1, out2)):
            layers.append(conv(a, b, 3, padding=1, bias=True))
            if batch_norm:
                layers.append(norm(b))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class MaxBlurPool(nn.Module):
    """N2V2's anti-aliased down-sampling: max over 2×2 at stride 1, then a [1,2,1] binomial blur at stride 2.

    Plain stride-2 max-pooling aliases and leaves the checkerboard artefacts N2V2 (Höck et al. 2022)
    removes; the fixed blur kernel is a buffer, not a trained weight.
    """

    def __init__(self, ndim: int, channels: int):
        super().__init__()
        self.ndim = ndim
        k1 = torch.tensor([1.0, 2.0, 1.0])
        kernel = k1[:, None] * k1[None, :] if ndim == 2 else k1[:, None, None] * k1[None, :, None] * k1
        kernel = kernel / kernel.sum()
        self.register_buffer(
            "kernel", kernel.expand(channels, 1, *kernel.shape).contiguous(), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = F.max_pool2d if self.ndim == 2 else F.max_pool3d
        conv = F.conv2d if self.ndim == 2 else F.conv3d
        x = pool(F.pad(x, (0, 1) * self.ndim, mode="replicate"), 2, stride=1)
        x = F.pad(x, (1, 1) * self.ndim, mode="replicate")
        return conv(x, self.kernel.to(x.dtype), stride=2, groups=x.shape[1])


class UNet(nn.Module):
    """U-Net mapping ``(B, in_channels, *spatial)`` to ``(B, out_channels, *spatial)``.

    Parameters
    ----------
    ndim : 2 or 3 spatial dimensions (3D pools all three axes).
    depth : number of down-sampling steps.
    filters : width of the first level; level ``k`` has ``filters * 2**k``.
    residual : add the input to the output (needs ``in_channels == out_channels``).
    blur_pool : N2V2's :class:`MaxBlurPool` instead of max-pooling.
    skip_top : keep the skip connection at full resolution (N2V2 removes it).
    """

    def __init__(
        self,
        *,
        ndim: int = 2,
        depth: int = 2,
        filters: int = 32,
        in_channels: int = 1,
        out_channels: int = 1,
        batch_norm: bool = True,
        residual: bool = False,
        blur_pool: bool = False,
        skip_top: bool = True,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        if residual and in_channels != out_channels:
            raise ValueError("a residual U-Net needs in_channels == out_channels")
        conv, _, pool = _layers(ndim)
        self.ndim, self.depth, self.residual, self.skip_top = ndim, depth, residual, skip_top
        widths = [filters * 2**k for k in range(depth)]
        self.down = nn.ModuleList()
        self.pools = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(_ConvBlock(ndim, cin, w, w, batch_norm))
            self.pools.append(MaxBlurPool(ndim, w) if blur_pool else pool(2))
            cin = w
        self.bottom = _ConvBlock(ndim, cin, filters * 2**depth, widths[-1], batch_norm)
        self.up = nn.ModuleList()
        for k in reversed(range(depth)):
            skip = widths[k] if (k > 0 or skip_top) else 0
            self.up.append(_ConvBlock(ndim, widths[k] + skip, widths[k], widths[max(k - 1, 0)], batch_norm))
        self.head = conv(widths[0], out_channels, 1)

    @property
    def multiple(self) -> int:
        """Every spatial size fed to the network must be a multiple of this."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for block, pool in zip(self.down, self.pools):
            h = block(h)
            skips.append(h)
            h = pool(h)
        h = self.bottom(h)
        mode = "bilinear" if self.ndim == 2 else "trilinear"
        for k, block in zip(reversed(range(self.depth)), self.up):
            h = F.interpolate(h, scale_factor=2, mode=mode, align_corners=False)
            if k > 0 or self.skip_top:
                h = torch.cat([h, skips[k]], dim=1)
            h = block(h)
        out = self.head(h)
        return out + x if self.residual else out
