"""ADN: the artifact disentanglement network (Liao, Lin, Zhou, Luo, IEEE TMI 2020), unpaired.

x_l is a noisy ("low quality") image, x_h an *unpaired* clean ("high quality") one.  Encoders split an
image into content (E_l for noisy, E_h for clean images) and artifact features (E_a, noisy images only);
G_h decodes content into a clean image, G_l content plus artifact features into a noisy one
(:mod:`pairless.nets.adn`).  The losses and their weights are those of the official code
(github.com/liaohaofu/adn, ``ADNTrain.optimize`` with ``config/adn.yaml``; the paper's own text was not
available to check them against):

    x_ll = G_l(E_l(x_l), E_a(x_l))    x_lh = G_h(E_l(x_l))         noisy → noisy, noisy → clean
    x_hl = G_l(E_h(x_h), E_a(x_l))    x_hh = G_h(E_h(x_h))         clean + x_l's artifact, clean → clean
    x_hlh = G_h(E_l(x_hl))                                          the made-noisy image cleaned again

    L_G = LS(D_h(x_lh)) + LS(D_l(x_hl))                             adversarial, LS(d) = mean (d - 1)²
        + λ(|x_ll - x_l| + |x_hh - x_h|)                            reconstruction
        + λ|x_hlh - x_h|                                            self-reduction
        + λ|(x_l - x_lh) - (x_hl - x_h)|                            artifact consistency
    L_D = ½[mean (D_h(x_h) - 1)² + mean D_h(x_lh)²] + ½[mean (D_l(x_l) - 1)² + mean D_l(x_hl)²]

with λ = 20, |·| the mean absolute difference and D_h, D_l PatchGAN critics of the clean and the noisy
domain (LSGAN).  At chance (D = ½ everywhere) L_D = 0.5.  The denoised image is x_lh = G_h(E_l(x)),
computed on the whole image (instance and layer norm take statistics over their input).

Deviations from the official code: per batch, a G step with the current critics and then a D step on
the same (detached) fakes; the official order (D steps first, then a G step whose graph was built
before them) only runs on PyTorch 1.0 (issue #21 of the official repository).  Training is on 64²
patches (the official code trains on whole 256² images, batch 2), so instance and layer norm see patch
statistics in training and whole-image statistics at test, as ISCL's ``optimized`` preset does.
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
from pairless.methods.iscl.losses import frozen
from pairless.nets.adn import MULTIPLE, ADNNets, ADNOutput, Decoder, Encoder

SIGNED = (-1.0, 1.0)  # the decoders end in tanh


class ADNConfig(AdversarialConfig):
    """ADN; the defaults are the official networks and optimiser at the ISCL demo's budget (``paper``)."""

    # quick: base width 8 and bf16 (width 16 costs 3.6 times as much), ISCL quick's optimiser schedule;
    # 600 steps, so that the study's row (3 folds x 2 noises) fits 20 min on 2 cores (measured 0.51 s a
    # step on one core, where ISCL quick takes 0.78)
    PROFILES: ClassVar[dict[str, dict]] = {
        "quick": {
            "width": 8,
            "discriminator_width": 8,
            "precision": "bf16-mixed",
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

    width: int = Field(64, ge=1)  # the first encoder stage's; the code has 4·width channels
    residual_blocks: int = Field(4, ge=0)
    discriminator_width: int = Field(64, ge=1)
    weight_decay: float = Field(1e-4, ge=0)
    adversarial_weight: float = Field(1.0, ge=0)
    loss_weight: float = Field(20.0, ge=0)  # λ of the reconstruction, self-reduction and artifact terms


def _l1(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).abs().mean()


class ADNModule(AdversarialModule):
    def __init__(self, config: ADNConfig, *, seed: int = 0):
        super().__init__(config, method="adn", seed=seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.nets = ADNNets(config.width, config.residual_blocks, config.discriminator_width)

    def parameter_groups(self):
        n = self.nets
        generators = [p for m in (n.E_l, n.E_h, n.E_a, n.G_h, n.G_l) for p in m.parameters()]
        return [generators, [*n.D_h.parameters(), *n.D_l.parameters()]]

    def translations(self, x_l: Tensor, x_h: Tensor) -> dict[str, Tensor]:
        n = self.nets
        code_l, _ = n.E_l(x_l)
        _, sides = n.E_a(x_l)
        code_h, _ = n.E_h(x_h)
        x_hl = n.G_l(code_h, sides)
        return {
            "ll": n.G_l(code_l, sides),
            "lh": n.G_h(code_l),
            "hl": x_hl,
            "hh": n.G_h(code_h),
            "hlh": n.G_h(n.E_l(x_hl)[0]),
        }

    def content_terms(self, x_l: Tensor, x_h: Tensor, t: dict[str, Tensor]) -> dict[str, Tensor]:
        return {
            "reconstruction": _l1(t["ll"], x_l) + _l1(t["hh"], x_h),
            "self_reduction": _l1(t["hlh"], x_h),
            "artifact": _l1(x_l - t["lh"], t["hl"] - x_h),
        }

    def iterate(self, x_l, x_h, optimizers, backward):
        cfg, n = self.config, self.nets
        opt_g, opt_d = optimizers
        with frozen(n.D_h, n.D_l):
            t = self.translations(x_l, x_h)
            adversarial = ((n.D_h(t["lh"]) - 1) ** 2).mean() + ((n.D_l(t["hl"]) - 1) ** 2).mean()
            terms = self.content_terms(x_l, x_h, t)
            loss_g = cfg.adversarial_weight * adversarial + cfg.loss_weight * sum(terms.values())
            opt_g.zero_grad()
            backward(loss_g)
            opt_g.step()
        fake_h, fake_l = t["lh"].detach(), t["hl"].detach()
        loss_d = 0.5 * (((n.D_h(x_h) - 1) ** 2).mean() + (n.D_h(fake_h) ** 2).mean()) + 0.5 * (
            ((n.D_l(x_l) - 1) ** 2).mean() + (n.D_l(fake_l) ** 2).mean()
        )
        opt_d.zero_grad()
        backward(loss_d)
        opt_d.step()
        return {"loss_d": loss_d, "loss_g": loss_g, "adversarial_g": adversarial, **terms}

    def monitor(self, x_l, x_h):
        t = self.translations(x_l, x_h)
        return sum(self.content_terms(x_l, x_h, t).values())


def train(
    noisy: list[np.ndarray],
    clean: list[np.ndarray],
    *,
    config: ADNConfig,
    out: Path,
    seed: int = 0,
    progress: bool = True,
    resume: bool | None = None,
    overwrite: bool = False,
) -> tuple[dict, dict[str, Tensor]]:
    """Train ADN on unpaired noisy and clean 2D images into the model folder ``out``; return what it holds
    (both sets mapped to [-1, 1] by the clean set's range, the last weights kept)."""
    return train_two_sets(
        ADNModule,
        noisy,
        clean,
        method="adn",
        config=config,
        intensities=SIGNED,
        paired=False,
        denoiser_net=lambda module: ADNOutput(module.nets.E_l, module.nets.G_h),
        out=out,
        seed=seed,
        progress=progress,
        resume=resume,
        overwrite=overwrite,
    )


def load(config: dict, weights: dict[str, Tensor], *, tile=None, overlap: int = 32, tta: bool = False):
    """The denoiser of a model folder: G_h(E_l(x)) on whole images."""
    cfg = ADNConfig.from_dict(config["adn"])
    return load_two_sets(
        ADNOutput(Encoder(cfg.width, cfg.residual_blocks), Decoder(cfg.width, cfg.residual_blocks)),
        config,
        weights,
        method="adn",
        intensities=SIGNED,
        multiple=MULTIPLE,
        whole_image=True,
        tile=tile,
        overlap=overlap,
        tta=tta,
    )


CONFIG = ADNConfig
