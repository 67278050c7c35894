"""The prior fitted to one image's noise: its intensity scale and a σ map from the measured noise model.

The prior was trained on images in [0, 1] (black near 0) with the noise standard deviation per pixel as
its second input.  A user's image is brought there by an affine map ``u = gain·x + offset`` found from the
image (:func:`calibrate`: its robust range), and its noise, ``Var = a·E[x] + b`` in the image's units
(:func:`pairless.noise.fit_poisson_gaussian`, or a Gaussian σ), becomes in prior units

    Var_u = a_u·E[u] + b_u,   a_u = a·gain,   b_u = (b − a·offset/gain)·gain²,

so the σ map is ``√max(a_u·ū + b_u, 0)`` with ``ū`` the 5×5 box-smoothed ``u``: exactly what the prior saw
in training (:func:`pairless.methods.prior.recipe.sigma_map`).  :class:`CalibratedPrior` holds that map and
the noise model as buffers, so one module runs zero-shot, tiled, through the inference engines, is fine-tuned
by a self-supervised loss and is saved and loaded with its model folder.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor, nn

from pairless.errors import PairlessError
from pairless.methods.prior.recipe import SMOOTH, sigma_map
from pairless.nets.prior_net import PriorNet
from pairless.noise import PoissonGaussian

NOISE_MODELS = ("poisson-gaussian", "gaussian")
RANGE_PERCENTILES = (0.1, 99.9)  # of the smoothed image: its black and white, robust to outliers


@dataclasses.dataclass(frozen=True)
class Calibration:
    """``u = gain·x + offset`` takes the image to the prior's [0, 1]; its noise there is ``a·E[u] + b``."""

    gain: float
    offset: float
    a: float
    b: float

    @property
    def sigma(self) -> float:
        """The noise σ in prior units at the mid-grey 0.5 (for reports)."""
        return math.sqrt(max(self.a * 0.5 + self.b, 0.0))


def measure_noise(
    image: np.ndarray, *, noise: str = "poisson-gaussian", sigma: float | None = None
) -> PoissonGaussian:
    """The noise model of ``image`` in its own units: ``sigma`` (Gaussian) if given, else fitted from the
    image.

    ``noise="poisson-gaussian"`` fits ``Var = a·E[x] + b`` (``a`` is 0 when the image shows no signal
    dependence); ``"gaussian"`` fits σ alone.  An image too small or too textured for the fit falls back to
    scikit-image's wavelet estimate of a Gaussian σ.
    """
    from pairless.methods.classical import _estimate_sigma
    from pairless.noise import fit_poisson_gaussian

    if noise not in NOISE_MODELS:
        raise PairlessError(f"unknown noise model {noise!r}; use one of {', '.join(NOISE_MODELS)}")
    if sigma is not None:
        if not 0 < sigma < float("inf"):
            raise PairlessError(
                f"the noise σ must be a positive finite number, got {sigma}; leave it out to measure it"
            )
        return PoissonGaussian(0.0, float(sigma) ** 2)
    try:
        return fit_poisson_gaussian(image, model=noise)
    except PairlessError:
        return PoissonGaussian(0.0, _estimate_sigma(image) ** 2)


def calibrate(image: np.ndarray, model: PoissonGaussian) -> Calibration:
    """The affine map of ``image`` to the prior's range and its noise ``model`` in those units."""
    image = np.asarray(image, dtype=np.float64)
    low, high = np.percentile(ndimage.uniform_filter(image, SMOOTH, mode="reflect"), RANGE_PERCENTILES)
    spread = high - low
    if not spread > 0:  # a flat image: any scale will do, one that keeps the noise at a level the prior knows
        spread = max(math.sqrt(max(model.b, 0.0)), abs(low), 1.0)
    gain = 1.0 / spread
    offset = -low * gain
    return Calibration(gain, offset, model.a * gain, (model.b - model.a * offset / gain) * gain * gain)


def check_sigma_map(sigma: Tensor, y: Tensor) -> None:
    """A σ map given with an image must be that image's shape, finite and non-negative."""
    if sigma.shape != y.shape:
        raise PairlessError(
            f"the σ map has shape {tuple(sigma.shape)} but the image {tuple(y.shape)}; give one σ per pixel"
        )
    if not bool(torch.isfinite(sigma).all()) or bool((sigma < 0).any()):
        raise PairlessError("the σ map has negative, NaN or Inf values; a noise σ is >= 0 and finite")


class CalibratedPrior(nn.Module):
    """The prior network on ``x`` in some units: ``u = gain·x + offset``, denoised with its σ map, mapped
    back.

    ``gain``, ``offset``, ``a`` and ``b`` are buffers (a :class:`Calibration`), so they travel with the
    weights; calling the module with ``sigma`` (a σ map in ``x``'s units) uses that instead.  Bias-free, like
    the network: with ``offset`` 0, scaling ``x`` and the noise together scales the output.
    """

    ndim = 2

    def __init__(self, net: PriorNet, calibration: Calibration | None = None):
        super().__init__()
        self.net = net
        c = calibration or Calibration(1.0, 0.0, 0.0, 0.0)
        for name in ("gain", "offset", "a", "b"):
            self.register_buffer(name, torch.tensor(float(getattr(c, name))))

    @property
    def multiple(self) -> int:
        return self.net.multiple

    @property
    def calibration(self) -> Calibration:
        return Calibration(*(float(getattr(self, n)) for n in ("gain", "offset", "a", "b")))

    def set_calibration(self, calibration: Calibration) -> None:
        for name in ("gain", "offset", "a", "b"):
            getattr(self, name).fill_(float(getattr(calibration, name)))

    def forward(self, x: Tensor, sigma: Tensor | None = None) -> Tensor:
        u = x * self.gain + self.offset
        if sigma is None:
            noise = sigma_map(u, a=self.a, b=self.b)
        else:
            check_sigma_map(sigma, x)
            noise = sigma * self.gain
        return (self.net(u, noise.to(u.dtype)) - self.offset) / self.gain
