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

import torch

from pairless import selfsup
from pairless.config import N2NConfig
from pairless.errors import PairlessError
from pairless.nets.context import SliceContextNet
from pairless.nets.unet import UNet


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
                raise PairlessError(f"context {c.context} (neighbouring slices) needs volumes: train with ndim 3 (--3d) "
                                    f"on ZYX images, or set context 0")
            return SliceContextNet(context=c.context, depth=c.depth, filters=c.filters, batch_norm=c.batch_norm,
                                   residual=c.residual)
        return UNet(ndim=c.ndim, depth=c.depth, filters=c.filters, batch_norm=c.batch_norm, residual=c.residual)

    def loss(self, net, batch, *, generator, progress):
        if not self.config.symmetric:
            return ((net(batch[:, :1]).float() - batch[:, 1:]) ** 2).mean()
        # eq. (1) both ways in one pass: inputs (A, B), targets (B, A)
        inputs = torch.cat([batch[:, :1], batch[:, 1:]])
        targets = torch.cat([batch[:, 1:], batch[:, :1]])
        return ((net(inputs).float() - targets) ** 2).mean()

