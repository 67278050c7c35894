"""Noise2Noise (Lehtinen et al., ICML 2018) from two independent acquisitions of the same object.

With ``A = s + n_A`` and ``B = s + n_B``, the noises independent and ``B`` unbiased given ``s``,

    E‖f(A) − B‖² = E‖f(A) − E[B | s]‖² + E‖B − E[B | s]‖²                     (1)

so minimising the loss against the other acquisition minimises the error against its expectation
(the second term does not depend on ``f``).  The same identity makes the held-out loss ‖f(A) − B‖²
a criterion that ranks models, and picks the best checkpoint, without any clean image.  Both
directions are trained (A → B and B → A): the halves are exchangeable.

PET list-mode data gives such pairs for free: splitting the counts of one frame in two
(:func:`pairless.sim.pet.split_counts`) gives two independent half-count acquisitions.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from pairless.errors import PairlessError
from pairless.nets.context import SliceContextNet
from pairless.nets.unet import UNet
from pairless.training import selfsup
from pairless.training.selfsup import SelfSupervisedConfig


class N2NConfig(SelfSupervisedConfig):
    """Noise2Noise (Lehtinen et al. 2018) on pairs of independent acquisitions of one object.

    The schedule and U-Net are the other methods'.  ``context`` > 0 (with ``ndim`` 3) makes the
    network 2.5D: a 2D U-Net that sees that many neighbouring slices on each side
    (:mod:`pairless.nets.context`); ``residual`` adds the input to the output; ``batch_norm`` off
    suits patches whose slices are too alike for batch statistics (measured in the PET study).
    """

    PROFILES: ClassVar[dict[str, dict]] = {
        "quick": {},
        # the paper's recipe for its Gaussian/Poisson experiments: batch 4 of 256², Adam 3e-4, ~300k steps
        "paper": {
            "batch_size": 4,
            "patch_size": 256,
            "steps": 300_000,
            "val_every": 1000,
            "lr": 3e-4,
            "filters": 48,
        },
    }

    context: int = Field(
        0, ge=0, le=8, description="neighbouring slices on each side a 2D network sees (ndim 3)"
    )
    batch_norm: bool = True
    residual: bool = False
    # both ways (A → B and B → A) for exchangeable halves; one way when the first image of each pair is
    # the better input (the larger share of an unequal split: closer to the full frame's noise)
    symmetric: bool = True


class N2N(selfsup.Objective):
    """Noise2Noise with the default U-Net on pairs of registered, independently noisy images."""

    name = "n2n"
    title = "Noise2Noise (pairs)"
    config_class = N2NConfig
    views = 2

    def make_net(self) -> UNet | SliceContextNet:
        c = self.config
        if c.context:
            if c.ndim != 3:
                raise PairlessError(
                    f"context {c.context} (neighbouring slices) needs volumes: train with ndim 3 (--3d) "
                    "on ZYX images, or set context 0"
                )
            return SliceContextNet(
                context=c.context,
                depth=c.depth,
                filters=c.filters,
                batch_norm=c.batch_norm,
                residual=c.residual,
            )
        return UNet(
            ndim=c.ndim, depth=c.depth, filters=c.filters, batch_norm=c.batch_norm, residual=c.residual
        )

    def loss(self, net, batch, *, generator, progress):
        if not self.config.symmetric:
            return ((net(batch[:, :1]).float() - batch[:, 1:]) ** 2).mean()
        # eq. (1) both ways in one pass: inputs (A, B), targets (B, A)
        inputs = torch.cat([batch[:, :1], batch[:, 1:]])
        targets = torch.cat([batch[:, 1:], batch[:, :1]])
        return ((net(inputs).float() - targets) ** 2).mean()
