"""The prior applied to images: each image's noise measured, the prior calibrated to it, tiled prediction.

Per image (each 2D slice of a stack): the noise model is fitted (:func:`~pairless.methods.prior.calibrated.
measure_noise`, or the σ the user gives), then one of three routes to the Gaussian-noise prior:

- ``vst="gat"`` (default): signal-dependent noise (a > 0) is stabilised by the generalized Anscombe transform,
  denoised at σ = 1 and mapped back by the exact unbiased inverse (Mäkitalo & Foi 2013), as BM3D + VST does;
  for Gaussian noise (a = 0) the transform is a scaling and this is the σ-map route;
- ``vst="none"``: the prior sees a σ map ``√(a·ū + b)`` of the fitted model (spatially varying);
- ``vst="learned"``: a monotone spline learned on the image itself with the prior frozen (Noise2VST,
  :mod:`pairless.methods.prior.vst`), for noise the Poisson-Gaussian model misfits.

``vst_iterations``: how long the learned VST trains (default :data:`pairless.methods.prior.vst.ITERATIONS`).
``adapt`` (seconds) first fine-tunes a copy of the prior on the image itself with a self-supervised loss
(:mod:`pairless.methods.prior.adapt`), within that time.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from pairless.denoiser import Denoiser
from pairless.errors import PairlessError
from pairless.inference.tiling import DEFAULT_TILE, predict_tiled
from pairless.methods.prior.calibrated import (
    NOISE_MODELS,
    CalibratedPrior,
    Calibration,
    calibrate,
    check_sigma_map,
    measure_noise,
)
from pairless.noise import PoissonGaussian, gat, gat_inverse

VSTS = ("gat", "none", "learned")
Vst = Literal["gat", "none", "learned"]


class PriorDenoiser(Denoiser):
    """The prior on any image, calibrated per image (the module notes); ``noise_models`` holds the noise model
    used per image of the last call, in the image's units."""

    spatial_ndim = 2

    def __init__(
        self,
        prior: CalibratedPrior,
        *,
        noise: str = "poisson-gaussian",
        sigma: float | None = None,
        vst: Vst = "gat",
        vst_iterations: int | None = None,
        adapt: float | None = None,
        tile: int = DEFAULT_TILE,
        overlap: int = 32,
        tta: bool = False,
        precision: str = "auto",
        seed: int = 0,
    ):
        super().__init__()
        if noise not in NOISE_MODELS:
            raise PairlessError(f"unknown noise model {noise!r}; use one of {', '.join(NOISE_MODELS)}")
        if vst not in VSTS:
            raise PairlessError(f"unknown --vst {vst!r} for the prior; use one of {', '.join(VSTS)}")
        if sigma is not None and not 0 < sigma < float("inf"):
            raise PairlessError(
                f"--sigma must be a positive finite noise σ, got {sigma}; leave it out to measure it"
            )
        if sigma is not None and vst == "learned":
            raise PairlessError(
                "--sigma and --vst learned exclude each other: the learned VST sets the noise level itself"
            )
        if vst_iterations is not None and (
            isinstance(vst_iterations, bool) or not isinstance(vst_iterations, int) or vst_iterations < 1
        ):
            raise PairlessError(f"vst_iterations must be a positive whole number, got {vst_iterations!r}")
        if vst_iterations is not None and vst != "learned":
            raise PairlessError("vst_iterations sets the learned VST's fit; use it with vst='learned'")
        if adapt is not None and not 0 < adapt < float("inf"):
            raise PairlessError(f"--adapt takes a positive time budget in seconds, got {adapt}")
        self.prior = prior.eval()
        self.noise, self.sigma, self.vst, self.adapt = noise, sigma, vst, adapt
        self.vst_iterations = vst_iterations
        self.tile, self.overlap, self.tta, self.precision, self.seed = tile, overlap, tta, precision, seed
        self.noise_models: list[PoissonGaussian] = []

    def forward(self, y: torch.Tensor, sigma: float | torch.Tensor | None = None) -> torch.Tensor:
        """``sigma``: the Gaussian noise σ (a number), a σ map of ``y``'s shape, or ``None`` to measure it."""
        if y.ndim != 4 or y.shape[1] != 1:
            raise PairlessError(f"the prior denoises (B, 1, Y, X) images, got shape {tuple(y.shape)}")
        if isinstance(sigma, torch.Tensor):
            check_sigma_map(sigma, y)
        elif sigma is not None and not 0 < sigma < float("inf"):
            raise PairlessError(
                f"the noise σ must be a positive finite number, got {sigma}; leave it out to measure it"
            )
        images = y.detach().to("cpu", torch.float32)
        out = torch.empty_like(images)
        self.noise_models = []
        for i in range(images.shape[0]):
            given = sigma[i : i + 1].detach().cpu().float() if isinstance(sigma, torch.Tensor) else sigma
            out[i : i + 1] = self._denoise_one(images[i : i + 1], given)
        return out.to(y.device, y.dtype)

    def _denoise_one(self, x: torch.Tensor, sigma: float | torch.Tensor | None) -> torch.Tensor:
        image = x[0, 0].numpy().astype(np.float64)
        if isinstance(sigma, torch.Tensor):  # a σ map: no model to fit, the prior takes it as it is
            calibration = calibrate(image, PoissonGaussian(0.0, float(sigma.pow(2).mean())))
            self.noise_models.append(PoissonGaussian(0.0, float(sigma.pow(2).mean())))
            return self._run(x, calibration, sigma_map=sigma)
        model = measure_noise(image, noise=self.noise, sigma=self.sigma if sigma is None else sigma)
        self.noise_models.append(model)
        if self.vst == "learned":
            return self._learned_vst(x)
        if self.vst == "gat" and model.a > 0:
            stabilised = gat(image, model)  # unit-variance noise
            unit = PoissonGaussian(0.0, 1.0)
            z = torch.from_numpy(stabilised.astype(np.float32))[None, None]
            denoised = self._run(z, calibrate(stabilised, unit))[0, 0].numpy()
            return torch.from_numpy(gat_inverse(denoised, model).astype(np.float32))[None, None]
        return self._run(x, calibrate(image, model))

    def _run(
        self, x: torch.Tensor, calibration: Calibration, sigma_map: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The prior on ``x`` calibrated by ``calibration`` (adapted first when asked), tiled.

        The affine map to prior units is applied here in float32, so a compute dtype of bf16 never sees
        the image's own (e.g. 16-bit camera) values."""
        prior = self._calibrated(calibration)
        if self.adapt is not None:
            from pairless.methods.prior.adapt import adapt

            prior = adapt(prior, x, seconds=self.adapt, seed=self.seed)
        c = prior.calibration
        u = x * c.gain + c.offset
        if sigma_map is not None:
            net = _FixedSigma(prior.net, sigma_map * c.gain)
            return (net(u) - c.offset) / c.gain  # a given map is not tiled: it has the image's size
        in_units = CalibratedPrior(prior.net, Calibration(1.0, 0.0, c.a, c.b))
        out = predict_tiled(
            in_units,
            u,
            tile=self.tile,
            overlap=self.overlap,
            tta=self.tta,
            multiple=prior.multiple,
            precision=self.precision,
        )
        return (out - c.offset) / c.gain

    def _calibrated(self, calibration: Calibration) -> CalibratedPrior:
        return CalibratedPrior(self.prior.net, calibration)

    def _learned_vst(self, x: torch.Tensor) -> torch.Tensor:
        from pairless.methods.prior.vst import ITERATIONS, denoise_with_learned_vst

        return denoise_with_learned_vst(
            x,
            self.prior.net,
            tile=self.tile,
            overlap=self.overlap,
            tta=self.tta,
            seed=self.seed,
            iterations=self.vst_iterations or ITERATIONS,
        )


class _FixedSigma(torch.nn.Module):
    """The network with a σ map of the whole image (no tiling)."""

    def __init__(self, net, sigma_map: torch.Tensor):
        super().__init__()
        self.net, self.sigma_map = net, sigma_map

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        pad = [(-s) % self.net.multiple for s in u.shape[-2:]]
        padded = torch.nn.functional.pad(u, (0, pad[1], 0, pad[0]), mode="reflect")
        sigma = torch.nn.functional.pad(self.sigma_map, (0, pad[1], 0, pad[0]), mode="reflect")
        with torch.no_grad():
            return self.net(padded, sigma)[..., : u.shape[-2], : u.shape[-1]]
