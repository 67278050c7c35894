"""ISCL's five networks as in the official TF code (leekanggeun/ISCL ``models/network.py``).

F (noisy→clean) and G (clean→noisy) are :class:`Generator`; H is the noise :class:`Extractor`;
D_X and D_Y are :class:`Discriminator`.  Each network takes its normalization by name
(:mod:`pairless.nets.norms`); :data:`PRESETS` are the rows of seed 002's Table 2.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as nnf
from torch import nn

from pairless.nets.norms import make_norm, wrap_conv

SLOPE = 0.2
MULTIPLE = 4  # the generator halves the size twice


# layers whose eval-mode output at a pixel depends only on its neighbourhood: a model made only of
# these gives the same result tiled or whole; every other layer takes statistics over the whole input
LOCAL_NORMS = frozenset({"batch", "spectral", "none"})


class NormPreset(NamedTuple):
    generator: str
    discriminator: str
    extractor: str


PRESETS: dict[str, NormPreset] = {
    # original ISCL: the official BIN, batch moments also at inference (one whole image: InstanceNorm)
    "bin": NormPreset("batch_instance_iscl", "batch_instance_iscl", "batch_instance_iscl"),
    "optimized": NormPreset("instance", "spectral", "switchable"),  # seed 002's proposal
    "bn": NormPreset("batch", "batch", "batch"),
    "ln": NormPreset("layer", "layer", "layer"),
    "gn": NormPreset("group", "group", "group"),
    "sn": NormPreset("switchable", "switchable", "switchable"),
    "in": NormPreset("instance", "instance", "instance"),
}


def symmetric_pad(x: torch.Tensor, p: int) -> torch.Tensor:
    """TF ``SYMMETRIC`` padding of the last two dims: mirror including the edge pixel."""
    if p == 0:
        return x
    x = torch.cat([x[..., :p].flip(-1), x, x[..., -p:].flip(-1)], dim=-1)
    return torch.cat([x[..., :p, :].flip(-2), x, x[..., -p:, :].flip(-2)], dim=-2)


class _SymmetricPad(nn.Module):
    def __init__(self, p: int):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return symmetric_pad(x, self.p)


def _act() -> nn.Module:
    return nn.LeakyReLU(SLOPE)


def _block(conv: nn.Module, norm: str, channels: int, *, act: bool = True, pad: int = 0) -> nn.Sequential:
    layers = [_SymmetricPad(pad)] if pad else []
    layers += [wrap_conv(norm, conv), make_norm(norm, channels)]
    return nn.Sequential(*layers, _act()) if act else nn.Sequential(*layers)


class ResBlock(nn.Module):
    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            _block(nn.Conv2d(channels, channels, 3), norm, channels, pad=1),
            _block(nn.Conv2d(channels, channels, 3), norm, channels, pad=1, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """7×7 conv, two stride-2 4×4 convs, 3 residual blocks, two transposed convs, 7×7 conv, tanh.

    Any input size works: it is padded (symmetric) to a multiple of 4 and the output cropped back.
    """

    def __init__(self, norm: str = "instance", width: int = 32, blocks: int = 3):
        super().__init__()
        w1, w2, w4 = width, 2 * width, 4 * width
        self.net = nn.Sequential(
            _block(nn.Conv2d(1, w1, 7), norm, w1, pad=3),
            _block(nn.Conv2d(w1, w2, 4, stride=2), norm, w2, pad=1),
            _block(nn.Conv2d(w2, w4, 4, stride=2), norm, w4, pad=1),
            *[ResBlock(w4, norm) for _ in range(blocks)],
            # Keras Conv2DTranspose(3, strides=2, padding="same") doubles the size exactly
            _block(nn.ConvTranspose2d(w4, w2, 3, stride=2, padding=1, output_padding=1), norm, w2),
            _block(nn.ConvTranspose2d(w2, w1, 3, stride=2, padding=1, output_padding=1), norm, w1),
            _SymmetricPad(3),
            wrap_conv(norm, nn.Conv2d(w1, 1, 7)),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % MULTIPLE, -w % MULTIPLE
        if ph or pw:
            x = nnf.pad(x, (0, pw, 0, ph), mode="replicate")
        return self.net(x)[..., :h, :w]


class Extractor(nn.Module):
    """H: ``depth`` 3×3 convs (zero 'same' padding), no norm on the first, linear last = noise map."""

    def __init__(self, norm: str = "switchable", width: int = 32, depth: int = 20):
        super().__init__()
        layers = [wrap_conv(norm, nn.Conv2d(1, width, 3, padding=1)), _act()]
        layers += [_block(nn.Conv2d(width, width, 3, padding=1), norm, width) for _ in range(depth - 2)]
        layers += [wrap_conv(norm, nn.Conv2d(width, 1, 3, padding=1))]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Discriminator(nn.Module):
    """Five 4×4 conv stages (four stride 2, one valid) and a 1×1 logit; 64×64 in → 1×1 out."""

    def __init__(self, norm: str = "spectral", width: int = 32):
        super().__init__()
        ch = [width * 2**i for i in range(5)]
        self.net = nn.Sequential(
            wrap_conv(norm, nn.Conv2d(1, ch[0], 4, stride=2, padding=1)),
            _act(),
            *[_block(nn.Conv2d(ch[i], ch[i + 1], 4, stride=2, padding=1), norm, ch[i + 1]) for i in range(3)],
            _block(nn.Conv2d(ch[3], ch[4], 4), norm, ch[4]),
            wrap_conv(norm, nn.Conv2d(ch[4], 1, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ISCLNets(nn.Module):
    """The five networks: ``F``, ``G`` (generators), ``H`` (extractor), ``D_X``, ``D_Y``."""

    def __init__(
        self,
        norms: NormPreset,
        *,
        generator_width: int = 32,
        extractor_width: int = 32,
        extractor_depth: int = 20,
        discriminator_width: int = 32,
    ):
        super().__init__()
        self.F = Generator(norms.generator, generator_width)
        self.G = Generator(norms.generator, generator_width)
        self.H = Extractor(norms.extractor, extractor_width, extractor_depth)
        self.D_X = Discriminator(norms.discriminator, discriminator_width)
        self.D_Y = Discriminator(norms.discriminator, discriminator_width)


def init_weights_(module: nn.Module, generator: torch.Generator | None = None, std: float = 0.05) -> None:
    """The official initializer: truncated normal (0, std) cut at ±2 std on every conv, zero bias."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            spectral = hasattr(layer, "parametrizations")
            weight = layer.parametrizations.weight.original if spectral else layer.weight
            with torch.no_grad():
                nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std, generator=generator)
                if layer.bias is not None:
                    layer.bias.zero_()
