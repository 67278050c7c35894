"""A blind-spot network by construction (Laine et al., NeurIPS 2019), 2D.

A U-Net whose every layer only looks up: each 3×3 convolution and each pooling reads its input
shifted down by one row, so an output pixel's receptive field is the half-plane on and above its
own row; a final one-row shift makes it strictly above.  The same branch runs on the four 90°
rotations of the image, its outputs are rotated back and concatenated, and 1×1 convolutions
combine them: the union of the four half-planes is every pixel except the centre, so the output at
a pixel never depends on that pixel's noise, and every pixel can be a training target at once.

Up-sampling is nearest-neighbour: a bilinear one would mix in the row below.  Batch norm is off by
default, as in the paper: its training statistics carry each pixel's value into every output (with
weight 1/(batch·pixels)), and its running statistics at inference differ from the batch ones the
prior variance was learned under (measured: on a tiny image with BN the posterior step gained
nothing over the prior mean; without it, > 0.3 dB).  On one 512² image BN helped the prior mean
early (+0.7 dB after 300 steps), so it stays an option.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def shift_down(x: torch.Tensor, rows: int = 1) -> torch.Tensor:
    """Move the image down by ``rows`` (zeros enter at the top): row ``i`` of the output is ``i - rows``."""
    return F.pad(x, (0, 0, rows, 0))[..., : x.shape[-2], :]


class UpwardConv(nn.Conv2d):
    """A 3×3 convolution whose receptive field at row ``i`` is rows ``i-2 … i`` (its input shifted down one
    row)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 3, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # pad two rows on top and none below: the centred 3×3 of the shifted input, in one pad
        return super().forward(F.pad(x, (1, 1, 2, 0)))


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int, batch_norm: bool):
        layers: list[nn.Module] = []
        for a, b in ((cin, cout), (cout, cout)):
            layers.append(UpwardConv(a, b))
            if batch_norm:
                layers.append(nn.BatchNorm2d(b))
            layers.append(nn.LeakyReLU(0.1, inplace=True))
        super().__init__(*layers)


class UpwardUNet(nn.Module):
    """The branch: a U-Net of :class:`UpwardConv` blocks; at every layer row ``i`` sees rows ``≤ i`` only."""

    def __init__(self, *, depth: int, filters: int, batch_norm: bool, in_channels: int = 1):
        super().__init__()
        self.depth = depth
        widths = [filters * 2**k for k in range(depth + 1)]
        self.down = nn.ModuleList(
            [_Block(in_channels if k == 0 else widths[k - 1], widths[k], batch_norm) for k in range(depth)]
        )
        self.bottom = _Block(widths[depth - 1], widths[depth], batch_norm)
        self.up = nn.ModuleList(
            [_Block(widths[k + 1] + widths[k], widths[k], batch_norm) for k in reversed(range(depth))]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            # shift before pooling: pooled row j then covers rows 2j-1 and 2j, and after nearest
            # up-sampling rows 2j and 2j+1 see nothing below themselves
            x = F.max_pool2d(shift_down(x), 2)
        x = self.bottom(x)
        for block, skip in zip(self.up, reversed(skips)):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return x


class BlindSpotNet(nn.Module):
    """``(B, 1, H, W)`` → ``(B, out_channels, H, W)``, the output at each pixel blind to that pixel's input.

    ``H`` and ``W`` must be multiples of :attr:`multiple`.  Square inputs run the four rotations as
    one batch; others run them one after the other.
    """

    ndim = 2

    def __init__(self, *, depth: int = 2, filters: int = 32, out_channels: int = 1, batch_norm: bool = False):
        super().__init__()
        self.depth = depth
        self.branch = UpwardUNet(depth=depth, filters=filters, batch_norm=batch_norm)
        width = 4 * filters
        self.combine = nn.Sequential(
            nn.Conv2d(width, width, 1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(width, filters, 1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(filters, out_channels, 1),
        )

    @property
    def multiple(self) -> int:
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == x.shape[-2]:
            rotated = torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])
            features = shift_down(self.branch(rotated)).chunk(4)
        else:
            features = [shift_down(self.branch(torch.rot90(x, k, dims=(-2, -1)))) for k in range(4)]
        back = [torch.rot90(f, -k, dims=(-2, -1)) for k, f in enumerate(features)]
        return self.combine(torch.cat(back, dim=1))
