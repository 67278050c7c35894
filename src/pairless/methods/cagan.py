"""CaGAN: a cycle-consistent GAN with criss-cross and channel attention (Huang et al., IEEE TCI 2020),
trained with paired supervision as in seed 002's Table 2.

x is a noisy image and y **its own** clean image (aligned pairs).  G1 maps noisy → clean, G2 clean →
noisy; D1 judges the noisy domain, D2 the clean one (:mod:`pairless.nets.cagan`).  No official code
exists; losses and weights follow the unofficial TF port by K. Lee (github.com/leekanggeun/CaGAN
``models/trainer.py``), whose structural term uses the aligned clean image (hence "paired"):

    L_D = mean (D1(x) - 1)² + mean D1(G2(y))² + mean (D2(y) - 1)² + mean D2(G1(x))²     LSGAN
    L_G = mean (D1(G2(y)) - 1)² + mean (D2(G1(x)) - 1)²                                  adversarial
        + α(|x - G2(G1(x))| + |y - G1(G2(y))|)                                           cycle, α = 0.1
        + β(|G2(x) - x| + |G1(y) - y|)                                                   identity, β = 0.1
        + μ(0.84·|G1(x) - y| + 0.16·(1 - SSIM(y, G1(x))))                                structural, μ = 10

|·| is the mean absolute difference; SSIM uses an 11×11 Gaussian window (σ 1.5) over valid positions,
k₁ = 0.01 and k₂ = 0.02 (the port's; the usual k₂ is 0.03), data range 1.  At chance (D = ½) L_D = 1.
Per batch a D step, then one step of G1 and G2 together; Adam β = (0.5, 0.9).  The denoised image is
G1(x) on the whole image (channel and criss-cross attention take their input whole), clipped to [0, 1].

Differences from the port: the criss-cross attention is the published one (the port's is inert, see
:mod:`pairless.nets.cagan`); the learning rate holds constant in the ``paper`` profile (the port
multiplies it by 0.995 every 400 steps, 0.905 after the 8k steps here); default PyTorch initialisation
(the port: truncated normal, σ 0.05, for its convolutions).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as nnf
from pydantic import Field
from torch import Tensor

from pairless.methods.adversarial import (
    AdversarialConfig,
    AdversarialModule,
    load_two_sets,
    train_two_sets,
)
from pairless.methods.iscl.losses import frozen
from pairless.nets.cagan import Discriminator, Generator

UNIT = (0.0, 1.0)  # the port's intensities (SSIM with L = 1, outputs clipped to [0, 1])


class CaGANConfig(AdversarialConfig):
    """CaGAN; the defaults are the port's networks and optimiser at the ISCL demo's budget (``paper``)."""

    # quick: width 8, six feature convs, bf16, batch 8, ISCL quick's optimiser schedule; 250 steps, so that
    # the study's row fits 20 min on 2 cores: a step costs 1.49 s on one core, 1.9 of ISCL quick's (eight
    # generator passes, each with three criss-cross attentions at full resolution, whose cost hardly
    # shrinks with the width)
    PROFILES: ClassVar[dict[str, dict]] = {
        "quick": {
            "width": 8,
            "feature_depth": 6,
            "discriminator_width": 8,
            "batch_size": 8,
            "steps": 250,
            "lr": 5e-4,
            "warmup_steps": 50,
            "decay_start": 0.5,
            "augmentation": "flips",
            "val_every": 100,
            "precision": "bf16-mixed",
        },
        "paper": {},
    }

    patch_size: int = Field(64, ge=32, multiple_of=8)  # the port's 64; the discriminators take this size only
    betas: tuple[float, float] = (0.5, 0.9)
    width: int = Field(64, ge=8)
    feature_depth: int = Field(12, ge=1)
    discriminator_width: int = Field(64, ge=8)
    cycle_weight: float = Field(0.1, ge=0)  # α
    identity_weight: float = Field(0.1, ge=0)  # β
    structural_weight: float = Field(10.0, ge=0)  # μ
    ssim_share: float = Field(0.16, ge=0, le=1)


def ssim(a: Tensor, b: Tensor, *, k1: float = 0.01, k2: float = 0.02, window: int = 11, sigma: float = 1.5):
    """Mean SSIM of two [0, 1] batches, Gaussian window over valid positions (the port's loss)."""
    r = torch.arange(window, device=a.device, dtype=a.dtype) - window // 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = torch.outer(g, g)
    g = (g / g.sum()).view(1, 1, window, window)
    mu_a, mu_b = nnf.conv2d(a, g), nnf.conv2d(b, g)
    var_a = nnf.conv2d(a * a, g) - mu_a**2
    var_b = nnf.conv2d(b * b, g) - mu_b**2
    cov = nnf.conv2d(a * b, g) - mu_a * mu_b
    c1, c2 = k1**2, k2**2
    return (
        ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    ).mean()


class CaGANModule(AdversarialModule):
    def __init__(self, config: CaGANConfig, *, seed: int = 0):
        super().__init__(config, method="cagan", seed=seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.G1 = Generator(config.width, config.feature_depth)
            self.G2 = Generator(config.width, config.feature_depth)
            self.D1 = Discriminator(config.discriminator_width, config.patch_size)
            self.D2 = Discriminator(config.discriminator_width, config.patch_size)

    def parameter_groups(self):
        return [
            [*self.D1.parameters(), *self.D2.parameters()],
            [*self.G1.parameters(), *self.G2.parameters()],
        ]

    def structural(self, y_hat: Tensor, y: Tensor) -> Tensor:
        s = self.config.ssim_share
        return (1 - s) * (y_hat - y).abs().mean() + s * (1 - ssim(y.float(), y_hat.float()))

    def iterate(self, x, y, optimizers, backward):
        cfg = self.config
        opt_d, opt_g = optimizers
        with torch.no_grad():
            fake_x, fake_y = self.G2(y), self.G1(x)
        loss_d1 = ((self.D1(x) - 1) ** 2).mean() + (self.D1(fake_x) ** 2).mean()  # noisy domain
        loss_d2 = ((self.D2(y) - 1) ** 2).mean() + (self.D2(fake_y) ** 2).mean()  # clean domain
        loss_d = loss_d1 + loss_d2
        opt_d.zero_grad()
        backward(loss_d)
        opt_d.step()
        with frozen(self.D1, self.D2):
            y_hat, x_hat = self.G1(x), self.G2(y)
            adversarial = ((self.D1(x_hat) - 1) ** 2).mean() + ((self.D2(y_hat) - 1) ** 2).mean()
            cycle = (x - self.G2(y_hat)).abs().mean() + (y - self.G1(x_hat)).abs().mean()
            identity = (self.G2(x) - x).abs().mean() + (self.G1(y) - y).abs().mean()
            structural = self.structural(y_hat, y)
            loss_g = (
                adversarial
                + cfg.cycle_weight * cycle
                + cfg.identity_weight * identity
                + cfg.structural_weight * structural
            )
            opt_g.zero_grad()
            backward(loss_g)
            opt_g.step()
        return {"loss_d": loss_d, "loss_d1": loss_d1, "loss_d2": loss_d2, "loss_g": loss_g,
                "adversarial_g": adversarial, "cycle": cycle, "identity": identity,
                "structural": structural}  # fmt: skip

    def monitor(self, x, y):
        """The structural term of G1 on the pairs."""
        return self.structural(self.G1(x), y)


def train(
    noisy: list[np.ndarray],
    clean: list[np.ndarray],
    *,
    config: CaGANConfig,
    out: Path,
    seed: int = 0,
    progress: bool = True,
    resume: bool | None = None,
    overwrite: bool = False,
) -> tuple[dict, dict[str, Tensor]]:
    """Train CaGAN on aligned pairs (``noisy[i]`` and ``clean[i]`` show the same field of view) into the
    model folder ``out``; return what it holds (both mapped to [0, 1] by the clean set's range; G1's last
    weights kept)."""
    return train_two_sets(
        CaGANModule,
        noisy,
        clean,
        method="cagan",
        config=config,
        intensities=UNIT,
        paired=True,
        denoiser_net=lambda module: module.G1,
        out=out,
        seed=seed,
        progress=progress,
        resume=resume,
        overwrite=overwrite,
    )


def load(config: dict, weights: dict[str, Tensor], *, tile=None, overlap: int = 32, tta: bool = False):
    """The denoiser of a model folder: G1 on whole images, clipped to the clean range."""
    cfg = CaGANConfig.from_dict(config["cagan"])
    return load_two_sets(
        Generator(cfg.width, cfg.feature_depth),
        config,
        weights,
        method="cagan",
        intensities=UNIT,
        multiple=1,
        whole_image=True,
        tile=tile,
        overlap=overlap,
        tta=tta,
    )


CONFIG = CaGANConfig
