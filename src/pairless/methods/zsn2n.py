"""Zero-Shot Noise2Noise (Mansour & Heckel, CVPR 2023): one image, a tiny network, seconds.

The image is split by two fixed 2×2 filters into half-size images ``D₁(y)`` (mean of the diagonal)
and ``D₂(y)`` (mean of the anti-diagonal) that show the same signal with independent noise.  The
network ``f`` learns to map each to the other, and to commute with the split (Eqs. 2-3):

    L = ½ (‖D₁(y) − f(D₂(y))‖² + ‖D₂(y) − f(D₁(y))‖²)
      + ½ (‖f(D₁(y)) − D₁(f(y))‖² + ‖f(D₂(y)) − D₂(f(y))‖²)

The first line is the residual (Noise2Noise) loss, the second the consistency loss; both carry
gradient, as in the official code.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from pairless.errors import PairlessError
from pairless.nets.zsn2n import ZSN2NNet
from pairless.training import selfsup
from pairless.training.selfsup import SelfSupervisedConfig


class ZSN2NConfig(SelfSupervisedConfig):
    """Zero-Shot Noise2Noise (Mansour & Heckel 2023): a two-layer network fitted to one image in seconds.

    ``filters`` is the hidden width (the paper's 48); ``depth`` is unused (the network does not pool).
    """

    PROFILES: ClassVar[dict[str, dict]] = {
        "quick": {},
        "paper": {"steps": 2000},
    }

    filters: int = Field(48, ge=1)
    patch_size: int = Field(128, ge=8)
    batch_size: int = Field(4, ge=1)
    steps: int = Field(300, ge=1)
    val_every: int = Field(50, ge=1)
    lr: float = Field(1e-3, gt=0)
    lr_schedule: Literal["cosine", "plateau", "constant", "step"] = "step"


def pair_downsampler(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(D₁(x), D₂(x))``: each 2×2 cell's diagonal mean and anti-diagonal mean, ``(B, 1, H/2, W/2)``."""
    diagonal = x.new_tensor([[[[0.5, 0.0], [0.0, 0.5]]]])
    anti = x.new_tensor([[[[0.0, 0.5], [0.5, 0.0]]]])
    return F.conv2d(x, diagonal, stride=2), F.conv2d(x, anti, stride=2)


class ZSN2N(selfsup.Objective):
    """Zero-Shot Noise2Noise's residual + consistency loss on patches of the image(s)."""

    name = "zsn2n"
    title = "Zero-Shot Noise2Noise"
    config_class = ZSN2NConfig

    def __init__(self, config: ZSN2NConfig):
        super().__init__(config)
        if config.ndim != 2:
            raise PairlessError(
                "Zero-Shot Noise2Noise is 2D only; train with ndim 2 (a ZYX volume is denoised slice by"
                " slice)"
            )

    def make_net(self) -> ZSN2NNet:
        return ZSN2NNet(filters=self.config.filters)

    def loss(self, net, batch, *, generator, progress):
        y = batch.float()
        d1, d2 = pair_downsampler(y)
        f1, f2 = net(d1).float(), net(d2).float()
        residual = 0.5 * (F.mse_loss(f2, d1) + F.mse_loss(f1, d2))
        c1, c2 = pair_downsampler(net(y).float())
        consistency = 0.5 * (F.mse_loss(f1, c1) + F.mse_loss(f2, c2))
        return residual + consistency

    def check_patch(self, patch, multiple):
        if any(p % 2 for p in patch):
            raise PairlessError(
                f"patch size {patch} must be even (the image is split into 2×2 cells); change patch_size"
            )
