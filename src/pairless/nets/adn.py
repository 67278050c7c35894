"""ADN's networks (Liao et al., IEEE TMI 2020), as the official code builds them (github.com/liaohaofu/adn
``adn/networks/{adn,blocks}.py``, ``config/adn.yaml``).

Three encoders of one architecture, E_l (noisy image → content), E_h (clean image → content) and E_a
(noisy image → artifact features), and two decoders of one architecture, G_h (content → clean image)
and G_l (content + E_a's features → noisy image); none share weights.  Every padding is reflect; the
encoders use instance norm and ReLU, the decoders' up-sampling stages a layer norm over (C, H, W) and
LeakyReLU(0.2).  The critics are PatchGAN discriminators with instance norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

MULTIPLE = 4  # two stride-2 down-samplings


class LayerNorm(nn.Module):
    """Normalise each sample over (C, H, W), then a per-channel affine with γ ~ U(0, 1), β = 0 (the
    official ``LayerNorm``, MUNIT's)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.rand(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x = nnf.layer_norm(x, x.shape[1:], eps=self.eps)
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


def _stage(cin: int, cout: int, kernel: int, *, stride: int = 1, norm: str, act: str) -> nn.Sequential:
    """Reflect padding, convolution, normalization, activation."""
    layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2 if stride == 1 else 1)]
    layers.append(nn.Conv2d(cin, cout, kernel, stride))
    if norm == "instance":
        layers.append(nn.InstanceNorm2d(cout))
    elif norm == "layer":
        layers.append(LayerNorm(cout))
    if act == "relu":
        layers.append(nn.ReLU())
    elif act == "lrelu":
        layers.append(nn.LeakyReLU(0.2))
    elif act == "tanh":
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, act: str):
        super().__init__()
        self.body = nn.Sequential(
            _stage(channels, channels, 3, norm="instance", act=act),
            _stage(channels, channels, 3, norm="instance", act="none"),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Encoder(nn.Module):
    """7×7 conv, two 4×4 stride-2 convs, ``blocks`` residual blocks; also returns the features of the
    first three stages (full, ½ and ¼ size), the side inputs E_a gives G_l."""

    def __init__(self, width: int = 64, blocks: int = 4):
        super().__init__()
        self.stages = nn.ModuleList(
            [
                _stage(1, width, 7, norm="instance", act="relu"),
                _stage(width, 2 * width, 4, stride=2, norm="instance", act="relu"),
                _stage(2 * width, 4 * width, 4, stride=2, norm="instance", act="relu"),
            ]
        )
        self.blocks = nn.Sequential(*[ResidualBlock(4 * width, "relu") for _ in range(blocks)])

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        sides = []
        for stage in self.stages:
            x = stage(x)
            sides.append(x)
        return self.blocks(x), sides[::-1]  # sides: ¼, ½, full size, the order the decoder meets them


class Decoder(nn.Module):
    """``blocks`` residual blocks, two [nearest ×2, 5×5 conv, layer norm] stages, 7×7 conv to one channel,
    tanh.  With ``fuse`` (G_l) the three side features are concatenated before the last three stages and
    merged by a 1×1 conv, as the official ``fuse=True`` decoder does."""

    def __init__(self, width: int = 64, blocks: int = 4, *, fuse: bool = False):
        super().__init__()
        self.blocks = nn.Sequential(*[ResidualBlock(4 * width, "lrelu") for _ in range(blocks)])
        self.stages = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    _stage(4 * width, 2 * width, 5, norm="layer", act="lrelu"),
                ),
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    _stage(2 * width, width, 5, norm="layer", act="lrelu"),
                ),
                _stage(width, 1, 7, norm="none", act="tanh"),
            ]
        )
        channels = (4 * width, 2 * width, width)  # what enters each of the three stages
        self.fuse = nn.ModuleList(nn.Conv2d(2 * c, c, 1) for c in channels) if fuse else None

    def forward(self, code: Tensor, sides: list[Tensor] | None = None) -> Tensor:
        x = self.blocks(code)
        for i, stage in enumerate(self.stages):
            if self.fuse is not None:
                x = self.fuse[i](torch.cat([x, sides[i]], 1))
            x = stage(x)
        return x


def patch_discriminator(width: int = 64) -> nn.Sequential:
    """PatchGAN with two down-samplings (``NLayerDiscriminator(n_layers=2)``, instance norm): a 64² patch
    gives a 14×14 map of logits, each seeing 34 px."""
    return nn.Sequential(
        nn.Conv2d(1, width, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 4, 2, 1),
        nn.InstanceNorm2d(2 * width),
        nn.LeakyReLU(0.2),
        nn.Conv2d(2 * width, 4 * width, 4, 1, 1),
        nn.InstanceNorm2d(4 * width),
        nn.LeakyReLU(0.2),
        nn.Conv2d(4 * width, 1, 4, 1, 1),
    )


class ADNNets(nn.Module):
    """E_l, E_h, E_a, G_h, G_l and the critics D_h (clean domain) and D_l (noisy domain)."""

    def __init__(self, width: int = 64, blocks: int = 4, discriminator_width: int = 64):
        super().__init__()
        self.E_l, self.E_h, self.E_a = (Encoder(width, blocks) for _ in range(3))
        self.G_h = Decoder(width, blocks)
        self.G_l = Decoder(width, blocks, fuse=True)
        self.D_h = patch_discriminator(discriminator_width)
        self.D_l = patch_discriminator(discriminator_width)


class ADNOutput(nn.Module):
    """The denoised image x_lh = G_h(E_l(x)), for any size (replicate-padded to a multiple of 4)."""

    def __init__(self, E_l: Encoder, G_h: Decoder):
        super().__init__()
        self.E_l, self.G_h = E_l, G_h

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % MULTIPLE, -w % MULTIPLE
        if ph or pw:
            x = nnf.pad(x, (0, pw, 0, ph), mode="replicate")
        return self.G_h(self.E_l(x)[0])[..., :h, :w]
