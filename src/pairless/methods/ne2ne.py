"""Neighbor2Neighbor (Huang et al., CVPR 2021): two sub-sampled halves of one noisy image train each other.

Each 2×2 cell (2×2×2 in 3D) of a noisy patch ``y`` gives one pixel to ``g₁(y)`` and an adjacent one
to ``g₂(y)``, chosen at random per cell.  The two half-size images show the same signal with
independent noise, so a network trained to map ``g₁(y)`` to ``g₂(y)`` learns to denoise, and every
pixel of the half image is a target.  The two halves are not exactly the same signal (they are one
pixel apart); the regulariser pulls the network towards being consistent with its own full-size
output, sub-sampled the same way (Eq. 6 of the paper):

    L = ‖f(g₁(y)) − g₂(y)‖² + γ ‖f(g₁(y)) − g₂(y) − (g₁(f(y)) − g₂(f(y)))‖²

where ``f(y)`` is computed without gradient and ``γ`` ramps linearly from 0 to its final value over
the run (the official code's ``Lambda = epoch / n_epoch * increase_ratio``).

``init: prior`` (``--init prior``) fine-tunes the prior calibrated to the training images instead of
training the U-Net from random weights (:mod:`pairless.methods.prior.finetune`); the loss is the same, the
prior sees the half-size images with the σ map of their (unchanged) per-pixel noise.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from pairless.errors import PairlessError
from pairless.methods.prior import finetune
from pairless.nets.unet import UNet
from pairless.training import selfsup
from pairless.training.selfsup import SelfSupervisedConfig


class Ne2NeConfig(SelfSupervisedConfig, finetune.PriorInit):
    """Neighbor2Neighbor (Huang et al. 2021): ``gamma`` is the regulariser's final weight, ramped up from 0.

    Patches are sub-sampled to half their size for the loss, so they must be multiples of ``2**(depth+1)``
    (16 with ``init: prior``, :class:`~pairless.methods.prior.finetune.PriorInit`).
    """

    PROFILES: ClassVar[dict[str, dict]] = {
        "quick": {},
        # the official recipe: 100 epochs at lr 3e-4 halved every 20, batch 4 of 256², 48-channel U-Net
        "paper": {
            "batch_size": 4,
            "patch_size": 256,
            "steps": 100_000,
            "val_every": 1000,
            "lr": 3e-4,
            "filters": 48,
        },
    }

    gamma: float = Field(2.0, ge=0)

    @classmethod
    def profile_settings(cls, profile: str, overrides: dict) -> dict:
        return finetune.profile_settings(super().profile_settings(profile, overrides), overrides)


def neighbour_subsampler(
    shape: tuple[int, ...], *, generator: torch.Generator, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of ``g₁`` and ``g₂`` for a batch of ``shape`` ``(B, 1, *spatial)`` with even sides.

    In every cell, the first pixel is uniform among the cell's ``2**ndim`` and the second is its
    neighbour along a uniformly chosen axis: every ordered pair of adjacent pixels is equally likely
    (the 8 pairs of the paper's 2×2 cell in 2D), and the two are never the same pixel.
    """
    batch, _, *spatial = shape
    ndim = len(spatial)
    half = [n // 2 for n in spatial]
    cells = batch * int(np.prod(half))
    first = torch.randint(2, (cells, ndim), generator=generator, device=device)
    axis = torch.randint(ndim, (cells,), generator=generator, device=device)
    second = first.clone()
    second[torch.arange(cells, device=device), axis] ^= 1
    grid = torch.stack(torch.meshgrid(*[torch.arange(h, device=device) for h in half], indexing="ij"), dim=-1)
    corner = (2 * grid.reshape(-1, ndim)).repeat(batch, 1)
    b = torch.arange(batch, device=device).repeat_interleave(int(np.prod(half)))
    strides = torch.tensor([int(np.prod(spatial[k + 1 :])) for k in range(ndim)], device=device)
    base = b * int(np.prod(spatial))
    return base + ((corner + first) * strides).sum(1), base + ((corner + second) * strides).sum(1)


def subsample(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The half-size image ``(B, 1, *spatial/2)`` of ``x`` at flat ``index`` (one pixel per cell)."""
    half = [n // 2 for n in x.shape[2:]]
    return x.reshape(-1)[index].reshape(x.shape[0], 1, *half)


class Ne2Ne(selfsup.Objective):
    """Neighbor2Neighbor with the default U-Net; every pixel of the sub-sampled patch is a target."""

    name = "ne2ne"
    title = "Neighbor2Neighbor"
    config_class = Ne2NeConfig

    def __init__(self, config: Ne2NeConfig, *, prior=None):
        """``prior``: the ``pairless pretrain`` folder ``init: prior`` starts from (default: the shipped
        one)."""
        super().__init__(config)
        self.prior, self.start = prior, None

    def make_net(self):
        c = self.config
        if c.init == "prior":
            return finetune.make_prior_net(c, self.start)
        return UNet(ndim=c.ndim, depth=c.depth, filters=c.filters)

    def prepare(self, stacks, *, mean, std):
        if self.config.init != "prior":
            return {}
        self.start, learned = finetune.prepare_start(
            self.config, stacks, mean=mean, std=std, source=self.prior
        )
        return learned

    def loss(self, net, batch, *, generator, progress):
        i1, i2 = neighbour_subsampler(tuple(batch.shape), generator=generator, device=batch.device)
        with torch.no_grad():
            full = net(batch)
        g1, g2 = subsample(batch, i1), subsample(batch, i2)
        prediction = net(g1).float()
        diff = prediction - g2
        exp_diff = (subsample(full, i1) - subsample(full, i2)).float()
        gamma = self.config.gamma * progress
        return (diff**2).mean() + gamma * ((diff - exp_diff) ** 2).mean()

    def check_patch(self, patch, multiple):
        if any(p % (2 * multiple) for p in patch):
            raise PairlessError(
                f"patch size {patch} must be a multiple of {2 * multiple}: Neighbor2Neighbor halves it and"
                f" the network needs multiples of {multiple}; change patch_size/patch_depth in the"
                " configuration"
            )
