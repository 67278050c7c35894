"""Blind-spot network with the Bayesian posterior step (Laine, Karras, Lehtinen & Aila, NeurIPS 2019).

The network (:class:`pairless.nets.blindspot.BlindSpotNet`) sees every pixel's surroundings but not
the pixel, so it can only predict a prior over the clean value ``x`` from the context Ω:
``p(x | Ω) = N(μ, σₓ²)``.  The noisy value ``y = x + n`` with ``n ~ N(0, σₙ²)`` is then distributed as
``N(μ, σₓ² + σₙ²)``, and training maximises that likelihood over every pixel (Laine et al., Eq. 4):

    L = ½ (y − μ)² / (σₓ² + σₙ²) + ½ log(σₓ² + σₙ²)

At test time the centre pixel, which the blind spot threw away, is put back by Bayes' rule: the
posterior mean of ``x`` given the prior and ``y`` is (Eq. 6, one channel)

    E[x | y, Ω] = (μ σₙ² + y σₓ²) / (σₓ² + σₙ²)

For Poisson-Gaussian noise, ``σₙ² = a·x + b`` is evaluated at the prior mean (``a·μ + b``), the
paper's approximation of the signal-dependent likelihood.  ``σₙ`` comes from the configuration or is
fitted from the training images before training (:mod:`pairless.noise`); with ``noise="none"`` the
network predicts ``μ`` alone with the MSE loss, ``E[(μ − y)²] = E[(μ − x)²] + σₙ²``.
"""

from __future__ import annotations

import warnings
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pairless.errors import PairlessError
from pairless.nets.blindspot import BlindSpotNet
from pairless.training import selfsup
from pairless.training.selfsup import SelfSupervisedConfig


class BSNConfig(SelfSupervisedConfig):
    """Blind-spot network by construction (Laine et al. 2019), every pixel a target.

    ``noise`` picks the Bayesian posterior step: ``gaussian`` (σ from ``sigma`` in image units, or
    estimated from the images), ``poisson-gaussian`` (variance ``a·x + b`` fitted from the images) or
    ``none`` (the blind-spot mean alone, trained with MSE).  ``batch_norm`` adds batch norm to the
    network's branch (see :mod:`pairless.nets.blindspot`).
    """

    PROFILES: ClassVar[dict[str, dict]] = {
        "quick": {"lr": 1e-3},
        "paper": {
            "batch_size": 4,
            "patch_size": 256,
            "steps": 100_000,
            "val_every": 1000,
            "lr": 3e-4,
            "filters": 48,
            "depth": 4,
        },
    }

    noise: Literal["gaussian", "poisson-gaussian", "none"] = "gaussian"
    sigma: float | None = Field(None, gt=0)
    batch_norm: bool = False


MIN_VARIANCE = 1e-6  # in normalised units: keeps the likelihood finite where the prior is certain


class BSN(selfsup.Objective):
    """Every pixel a target through a blind spot built into the network; posterior mean at inference."""

    name = "bsn"
    title = "blind-spot network"
    config_class = BSNConfig

    def __init__(self, config: BSNConfig, *, noise_model: dict | None = None):
        super().__init__(config)
        if config.ndim != 2:
            raise PairlessError(
                "the blind-spot network is 2D only; train with ndim 2 (a ZYX volume is denoised slice by"
                " slice)"
            )
        self.noise_model = noise_model  # {"a": …, "b": …} in normalised units, set by prepare()

    def make_net(self) -> BlindSpotNet:
        c = self.config
        return BlindSpotNet(
            depth=c.depth,
            filters=c.filters,
            out_channels=1 if c.noise == "none" else 2,
            batch_norm=c.batch_norm,
        )

    def prepare(self, stacks: list[np.ndarray], *, mean: float, std: float) -> dict:
        if self.config.noise == "none":
            return {}
        a, b = fit_noise(stacks, noise=self.config.noise, sigma=self.config.sigma)
        self.noise_model = normalised_noise(a, b, mean=mean, std=std)
        return {"noise_model": {"a": a, "b": b}}

    def loss(self, net, batch, *, generator, progress):
        out = net(batch).float()
        y = batch.float()
        if self.config.noise == "none":
            return ((out - y) ** 2).mean()
        mu, prior_var = split(out)
        total = prior_var + noise_variance(mu, self.noise_model)
        return (0.5 * (y - mu) ** 2 / total + 0.5 * torch.log(total)).mean()

    def denoiser(self, net: nn.Module, settings: dict, **prediction_options) -> selfsup.NetDenoiser:
        norm = settings["normalisation"]
        if self.config.noise != "none":
            model = settings["noise_model"]
            net = PosteriorMean(
                net, normalised_noise(model["a"], model["b"], mean=norm["mean"], std=norm["std"])
            )
        return selfsup.NetDenoiser(net, normalisation=norm, **prediction_options)


def split(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The prior mean ``μ`` and variance ``σₓ²`` from the network's two output channels."""
    return out[:, :1], F.softplus(out[:, 1:2]) + MIN_VARIANCE


def noise_variance(mu: torch.Tensor, model: dict) -> torch.Tensor:
    """``σₙ² = a·μ + b`` (normalised units), never below :data:`MIN_VARIANCE`."""
    return (model["a"] * mu + model["b"]).clamp_min(MIN_VARIANCE)


def normalised_noise(a: float, b: float, *, mean: float, std: float) -> dict:
    """``a·x + b`` in image units as ``a'·x' + b'`` for ``x' = (x − mean) / std``."""
    return {"a": a / std, "b": (a * mean + b) / std**2}


def fit_noise(stacks: list[np.ndarray], *, noise: str, sigma: float | None) -> tuple[float, float]:
    """``(a, b)`` of ``variance = a·x + b`` in image units: from ``sigma`` if given, else fitted on the
    images.

    Each 2D image is fitted on its own and the fits are averaged, weighted by pixel count.  Images
    with too few smooth regions to fit are left out, with a warning (a set of small textured crops
    can have some); if no image can be fitted, the error says so.
    """
    from pairless.noise import fit_poisson_gaussian

    if noise == "gaussian" and sigma is not None:
        return 0.0, float(sigma) ** 2
    fits, weights, failures = [], [], []
    for stack in stacks:
        for image in stack.reshape(-1, *stack.shape[-2:]):
            try:
                fit = fit_poisson_gaussian(image, model=noise)
            except PairlessError as err:
                failures.append(str(err))
                continue
            fits.append((fit.a, fit.b))
            weights.append(image.size)
    if not fits:
        raise PairlessError(
            f"the noise could not be measured on any of the {len(failures)} training images (first: "
            f"{failures[0]}); give --sigma, or use noise 'none'"
        )
    if failures:
        warnings.warn(
            f"the noise was measured on {len(fits)} of {len(fits) + len(failures)} training images; "
            f"{len(failures)} could not be fitted (first: {failures[0]})",
            stacklevel=2,
        )
    a, b = np.average(np.array(fits), axis=0, weights=weights)
    if noise == "gaussian":
        a = 0.0
    if a < 0 or (a == 0 and b <= 0):
        raise PairlessError("the fitted noise variance is not positive; give --sigma, or use noise 'none'")
    return float(a), float(b)


class PosteriorMean(nn.Module):
    """Wraps a two-channel blind-spot net: ``y`` → ``E[x | y, Ω]`` (the posterior mean above)."""

    def __init__(self, net: BlindSpotNet, noise_model: dict):
        super().__init__()
        self.net, self.noise_model = net, noise_model
        self.ndim, self.multiple = net.ndim, net.multiple

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        mu, prior_var = split(self.net(y).float())
        noise_var = noise_variance(mu, self.noise_model)
        return ((mu * noise_var + y.float() * prior_var) / (prior_var + noise_var)).to(y.dtype)
