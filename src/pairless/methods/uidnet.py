"""UIDNet: end-to-end unpaired image denoising with conditional adversarial networks (Hong, Fan, Jiang,
Feng, AAAI 2020).

A conditional generator G learns to make noise like the noisy set's on clean images; a denoiser R learns
from the pseudo pairs it makes.  x is a noisy image, y an *unpaired* clean one, z ~ U(-1, 1) per pixel,
s(u) = [u, u - mean₃(u)] the critic's "sharpened" input (:mod:`pairless.nets.uidnet`).  Losses as the
official code (github.com/zhwhong/UIDNet ``model.py``, ``--model_name wgan-gp``; the paper's own text
was not available to check them against):

    x̃ = y + G(z, y)                                              pseudo-noisy image
    L_D = -mean D(s(x)) + mean D(s(x̃)) + λ·mean_b (‖∇_u D(s(u_b))‖₂ - 1)²     WGAN-GP, λ = 10
          u_b = ε_b·x_b + (1 - ε_b)·x̃_b,  ε_b ~ U(0, 1)
    L_G = -mean D(s(x̃))
    L_R = (1/2B) Σ_pixels (R(x̃) - y)²                            R a DnCNN; R(x̃) is its clean estimate

Per batch: a D step, a G step, then an R step on x̃ made again by the updated G without dropout; z and
the batches are the same for all three.  The Wasserstein estimate mean D(s(x)) - mean D(s(x̃)) is 0
at chance.  The denoised image is R(x).

The gradient penalty is the standard one of Gulrajani et al. (one ε per sample, the norm over the
whole input image).  The official code draws one ε per batch and takes the norm over the image rows
only (``reduce_sum(axis=1)`` of an NHWC tensor), with respect to s(u); here it is over all of C×H×W
of the image u.  The official code also keeps the checkpoint of the best PSNR on a paired validation
set; an unpaired method has no such pairs, so the last weights are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from pairless.methods.adversarial import (
    AdversarialConfig,
    AdversarialModule,
    load_two_sets,
    train_two_sets,
)
from pairless.methods.iscl.losses import eval_mode, frozen
from pairless.nets.dncnn import DnCNN
from pairless.nets.uidnet import Critic, NoiseGenerator, init_official_

SIGNED = (-1.0, 1.0)  # the official intensities: x / 127.5 - 1


class UIDNetConfig(AdversarialConfig):
    """UIDNet; the defaults are the official networks and optimiser at the ISCL demo's budget (``paper``)."""

    # quick: narrower G and critic, the quick DnCNN (10 layers of 32, as the supervised quick rows), fp32
    # (the gradient penalty's double backward), ISCL quick's optimiser schedule; 600 steps, so that the
    # study's row fits 20 min on 2 cores (measured 0.58 s a step on one core, ISCL quick 0.78)
    PROFILES: ClassVar[dict[str, dict]] = {
        "quick": {
            "generator_width": 16,
            "critic_width": 16,
            "denoiser_depth": 10,
            "denoiser_channels": 32,
            "batch_size": 8,
            "steps": 600,
            "lr": 5e-4,
            "warmup_steps": 100,
            "decay_start": 0.5,
            "augmentation": "flips",
            "val_every": 100,
        },
        "paper": {},
    }

    patch_size: int = Field(64, ge=64, le=64)  # the critic's linear layer takes 64×64 inputs only
    generator_width: int = Field(32, ge=1)
    critic_width: int = Field(64, ge=1)
    denoiser_depth: int = Field(17, ge=2)
    denoiser_channels: int = Field(64, ge=1)
    gp_weight: float = Field(10.0, ge=0)  # λ


class UIDNetModule(AdversarialModule):
    def __init__(self, config: UIDNetConfig, *, seed: int = 0):
        super().__init__(config, method="uidnet", seed=seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.G = NoiseGenerator(config.generator_width)
            self.D = Critic(config.critic_width)
            self.R = DnCNN(depth=config.denoiser_depth, channels=config.denoiser_channels)
            init_official_(self.G, self.D, self.R)

    def parameter_groups(self):
        return [list(self.D.parameters()), list(self.G.parameters()), list(self.R.parameters())]

    def gradient_penalty(self, x: Tensor, fake: Tensor) -> Tensor:
        eps = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)
        u = (eps * x + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.D(u).sum(), u, create_graph=True)
        return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()

    def iterate(self, x, y, optimizers, backward):
        opt_d, opt_g, opt_r = optimizers
        z = torch.rand_like(y) * 2 - 1
        with torch.no_grad():
            fake = y + self.G(z, y)  # G as the official D step runs it: dropout on
        wasserstein = self.D(x).mean() - self.D(fake).mean()
        penalty = self.gradient_penalty(x, fake)
        loss_d = -wasserstein + self.config.gp_weight * penalty
        opt_d.zero_grad()
        backward(loss_d)
        opt_d.step()
        with frozen(self.D):
            loss_g = -self.D(y + self.G(z, y)).mean()
            opt_g.zero_grad()
            backward(loss_g)
            opt_g.step()
        with torch.no_grad(), eval_mode(self.G):
            fake = y + self.G(z, y)
        loss_r = ((self.R(fake) - y) ** 2).sum() / (2 * x.shape[0])
        opt_r.zero_grad()
        backward(loss_r)
        opt_r.step()
        return {"loss_d": loss_d, "wasserstein": wasserstein, "gradient_penalty": penalty, "loss_g": loss_g,
                "loss_r": loss_r}  # fmt: skip

    def monitor(self, x, y):
        """R's mean squared error on pseudo pairs, the G of the moment making them."""
        with eval_mode(self.G, self.R):
            fake = y + self.G(torch.rand_like(y) * 2 - 1, y)
            return ((self.R(fake) - y) ** 2).mean()


def train(
    noisy: list[np.ndarray],
    clean: list[np.ndarray],
    *,
    config: UIDNetConfig,
    out: Path,
    seed: int = 0,
    progress: bool = True,
    resume: bool | None = None,
    overwrite: bool = False,
) -> tuple[dict, dict[str, Tensor]]:
    """Train UIDNet on unpaired noisy and clean 2D images into the model folder ``out``; return what it
    holds (both sets mapped to [-1, 1] by the clean set's range; the denoiser R's last weights kept)."""
    return train_two_sets(
        UIDNetModule,
        noisy,
        clean,
        method="uidnet",
        config=config,
        intensities=SIGNED,
        paired=False,
        denoiser_net=lambda module: module.R,
        out=out,
        seed=seed,
        progress=progress,
        resume=resume,
        overwrite=overwrite,
    )


def load(config: dict, weights: dict[str, Tensor], *, tile=None, overlap: int = 32, tta: bool = False):
    """The denoiser of a model folder: R, tiled (batch norm with running statistics acts locally)."""
    cfg = UIDNetConfig.from_dict(config["uidnet"])
    return load_two_sets(
        DnCNN(depth=cfg.denoiser_depth, channels=cfg.denoiser_channels),
        config,
        weights,
        method="uidnet",
        intensities=SIGNED,
        multiple=1,
        whole_image=False,
        tile=tile,
        overlap=overlap,
        tta=tta,
    )


CONFIG = UIDNetConfig
