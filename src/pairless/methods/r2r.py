"""Recorrupted-to-Recorrupted (Pang et al., CVPR 2021), generalised (GR2R, Monroy et al., CVPR 2025).

R2R, Gaussian noise ``y = x + n``, ``n ~ N(0, σ²I)``: two copies of one noisy image are made with the same
extra noise ``z ~ N(0, I)``, added to one and subtracted (scaled) from the other,

    ŷ = y + α·σ·z,        ỹ = y − σ·z / α,

so that ``ŷ − x = n + ασz`` and ``ỹ − x = n − σz/α`` are independent (jointly Gaussian, covariance
``σ² − σ² = 0``) with mean zero; the loss

    L(θ) = E‖f_θ(ŷ) − ỹ‖²  =  E‖f_θ(ŷ) − x‖² + const

is then an unbiased estimate of the supervised loss of a denoiser of ``ŷ`` (noise ``σ²(1 + α²)``), at full
resolution and without a blind spot (Pang et al., Eq. 9 with ``D = αI``).  A network fed ``y`` itself
(``ỹ``'s noise is not its input's) cannot learn the identity, which Noise2Noise on the same noisy image would.

GR2R writes the same split as ``y₁ = y + √(α'/(1−α')) ω``, ``y₂ = (y − (1−α') y₁) / α'`` with
``ω ~ N(0, σ²I)`` (so ``α = √(α'/(1−α'))``: deepinv's default ``α' = 0.15`` is ``α ≈ 0.42``) and shows
(Theorem 1) that ``E‖f(y₁) − y₂‖²`` is unbiased whenever ``E[y₁|x] = E[y₂|x] = x`` and ``y₁``, ``y₂`` are
independent given ``x``; for a natural exponential family it draws ``y₁`` from the same family (Poisson:
a binomial thinning of the counts).  Poisson-Gaussian noise, ``Var = a·x + b`` with a pedestal, is no such
family and its counts are not observed, so pairless recorrupts with Gaussian noise of the local variance
(the heteroscedastic-Gaussian model of the noise that pairless fits,
:func:`pairless.noise.fit_poisson_gaussian`):

    s² = max(a·ȳ + b, ε),   ŷ = y + α·s·z,   ỹ = y − s·z / α,

with ``ȳ`` the 5×5 box mean of ``y`` (the σ map the prior sees), which gives, per pixel,

    E[ŷ | x] = E[ỹ | x] = x,   Cov[ŷ − x, ỹ − x | x] = (a·x + b) − E[s² | x] ≈ 0,
    Var[ŷ | x] = (1 + α²)(a·x + b),   Var[ỹ | x] = (1 + 1/α²)(a·x + b)

(exact where ``x`` is locally flat; ``tests/methods/test_r2r.py`` checks them numerically).  The two are
uncorrelated but only approximately independent (the Poisson part is skewed and ``s`` sees ``n`` through
``ȳ``, one 25th of it).  With ``a = 0`` (Gaussian noise, or ``--sigma``) this is R2R exactly.  The noise
is fitted on the training images before training, in image units, and used in the normalised units
``x' = (x − mean)/std`` the loss sees: ``a' = a/std``, ``b' = (a·mean + b)/std²``.

Inference: the U-Net saw noise ``σ²(1 + α²)`` in training, so like deepinv's ``R2RModel`` the denoiser
averages it over ``samples`` recorrupted inputs, ``x̂ = (1/K) Σ_k f(y + α s z_k)``, with the draws fixed
(seeded) so that a model gives the same output every time; ``samples: 1`` is ``f(y)`` instead (measured on
camera 512², σ = 25, in benchmarks/prior_finetune.py's notes: see :data:`R2RConfig` ``samples``).  With
``init: prior`` the network is told the noise level of its input (σ map ``√(1+α²)·s`` in training, ``s``
at inference), so it denoises ``y`` itself: one pass, no averaging.
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pairless.methods.prior import finetune
from pairless.methods.prior.calibrated import CalibratedPrior
from pairless.nets.unet import UNet
from pairless.training import selfsup
from pairless.training.selfsup import SelfSupervisedConfig

NOISELESS_WARNING = 0.05  # of the pixels without noise in the fitted model: R2R says it will fail there
MIN_VARIANCE = 1e-6  # in normalised units: where a·ȳ + b ≤ 0 (below a pedestal), a tiny recorruption
SMOOTH = 5  # box width of the local mean the noise variance is evaluated on


class R2RConfig(SelfSupervisedConfig, finetune.PriorInit):
    """Recorrupted-to-Recorrupted (Pang et al. 2021; GR2R, Monroy et al. 2025) on the default U-Net.

    ``noise``: ``poisson-gaussian`` (``Var = a·x + b`` fitted on the training images; Gaussian when the fit
    finds no signal dependence) or ``gaussian`` (σ fitted, or ``sigma`` in image units).  ``alpha``: R2R's
    α, the recorruption's scale.  ``samples``: recorrupted inputs the U-Net's output is averaged over at
    inference (1: the network on the image itself).  ``init: prior`` fine-tunes the prior instead
    (:class:`~pairless.methods.prior.finetune.PriorInit`).
    """

    PROFILES: ClassVar[dict[str, dict]] = {
        "quick": {},
        # a GPU schedule for the same U-Net: the Neighbor2Neighbor paper's (R2R's own trains a DnCNN on
        # BSD400 patches); α = 0.5
        "paper": {
            "batch_size": 4,
            "patch_size": 256,
            "steps": 100_000,
            "val_every": 1000,
            "lr": 3e-4,
            "filters": 48,
        },
    }

    noise: Literal["poisson-gaussian", "gaussian"] = "poisson-gaussian"
    sigma: float | None = Field(None, gt=0)
    alpha: float = Field(0.5, gt=0, le=10)
    samples: int = Field(8, ge=1, le=256)

    @classmethod
    def profile_settings(cls, profile: str, overrides: dict) -> dict:
        return finetune.profile_settings(super().profile_settings(profile, overrides), overrides)


def noiseless_fraction(stacks: list[np.ndarray], a: float, b: float) -> float:
    """The share of pixels whose fitted variance ``a·x + b`` is not positive (below a negative fit's
    pedestal, e.g. 8-bit frames clipped at an offset: W2S's fit gives b = −150, 22 % of its pixels)."""
    values = sum(int(np.count_nonzero(a * s + b <= 0)) for s in stacks)
    return values / sum(s.size for s in stacks)


def local_std(y: torch.Tensor, noise: dict) -> torch.Tensor:
    """``s = √max(a·ȳ + b, ε)`` per pixel of ``y`` ``(B, 1, *spatial)``, ``ȳ`` its 5-wide box mean."""
    if noise["a"] == 0:
        return torch.full_like(y, math.sqrt(max(noise["b"], MIN_VARIANCE)))
    ndim = y.ndim - 2
    pool = F.avg_pool2d if ndim == 2 else F.avg_pool3d
    mean = pool(F.pad(y, (SMOOTH // 2,) * (2 * ndim), mode="reflect"), SMOOTH, stride=1)
    return (noise["a"] * mean + noise["b"]).clamp_min(MIN_VARIANCE).sqrt()


def recorrupt(
    y: torch.Tensor, noise: dict, *, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ŷ, ỹ, s)``: the input and target copies of ``y`` and its local noise σ (module notes)."""
    s = local_std(y, noise)
    z = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    return y + alpha * s * z, y - s * z / alpha, s


def normalised_noise(a: float, b: float, *, mean: float, std: float) -> dict:
    """``a·x + b`` in image units as ``a'·x' + b'`` for ``x' = (x − mean) / std``."""
    return {"a": a / std, "b": (a * mean + b) / std**2}


class R2R(selfsup.Objective):
    """Recorrupted-to-Recorrupted with the fitted noise model; every pixel of the full patch is a target."""

    name = "r2r"
    title = "Recorrupted-to-Recorrupted"
    config_class = R2RConfig

    def __init__(self, config: R2RConfig, *, noise_model: dict | None = None, prior=None):
        """``noise_model``: ``{"a", "b"}`` in normalised units (else fitted by :meth:`prepare`); ``prior``:
        the ``pairless pretrain`` folder ``init: prior`` starts from (default: the shipped one)."""
        super().__init__(config)
        self.noise_model, self.prior, self.start = noise_model, prior, None

    def make_net(self) -> nn.Module:
        c = self.config
        if c.init == "prior":
            return finetune.make_prior_net(c, self.start)
        return UNet(ndim=c.ndim, depth=c.depth, filters=c.filters)

    def prepare(self, stacks: list[np.ndarray], *, mean: float, std: float) -> dict:
        c = self.config
        model = finetune.training_noise(stacks, noise=c.noise, sigma=c.sigma)
        silent = noiseless_fraction(stacks, model.a, model.b)
        if silent > NOISELESS_WARNING:
            warnings.warn(
                f"the fitted noise model (variance {model.a:.3g}·x {model.b:+.3g}) gives no noise on"
                f" {silent:.0%} of the pixels, where R2R learns the identity; pass --noise gaussian or"
                " --sigma, or use ne2ne",
                stacklevel=2,
            )
        self.noise_model = normalised_noise(model.a, model.b, mean=mean, std=std)
        learned = {"noise_model": {"a": model.a, "b": model.b}}  # image units
        if c.init == "prior":
            self.start, start = finetune.prepare_start(
                c, stacks, mean=mean, std=std, source=self.prior, noise=model
            )
            learned.update(start)
        return learned

    def loss(self, net, batch, *, generator, progress):
        y = batch.float()
        noisier, target, s = recorrupt(y, self.noise_model, alpha=self.config.alpha, generator=generator)
        out = finetune.run(net, noisier, s * math.sqrt(1 + self.config.alpha**2))
        return ((out.float() - target) ** 2).mean()

    def denoiser(self, net: nn.Module, settings: dict, **prediction_options) -> selfsup.NetDenoiser:
        norm = settings["normalisation"]
        if self.config.samples > 1 and not isinstance(net, CalibratedPrior):
            model = settings["noise_model"]
            noise = normalised_noise(model["a"], model["b"], mean=norm["mean"], std=norm["std"])
            net = RecorruptedMean(net, noise, alpha=self.config.alpha, samples=self.config.samples)
        return selfsup.NetDenoiser(net, normalisation=norm, **prediction_options)


class RecorruptedMean(nn.Module):
    """``(1/K) Σ_k f(y + α s z_k)``: the network averaged over ``samples`` fixed recorruptions of its input.

    The draws come from a generator seeded anew at every call, so the output is a function of the input.
    """

    def __init__(self, net: nn.Module, noise: dict, *, alpha: float, samples: int, seed: int = 0):
        super().__init__()
        self.net, self.noise, self.alpha, self.samples, self.seed = net, noise, alpha, samples, seed
        self.ndim = net.ndim

    @property
    def multiple(self) -> int:
        return self.net.multiple

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator(device=y.device).manual_seed(self.seed)
        s = local_std(y.float(), self.noise)
        total = torch.zeros_like(y, dtype=torch.float32)
        for _ in range(self.samples):
            z = torch.randn(y.shape, generator=generator, device=y.device, dtype=torch.float32)
            total += self.net((y.float() + self.alpha * s * z).to(y.dtype)).float()
        return (total / self.samples).to(y.dtype)
