"""The power spectral density (PSD) of stationary, additive, spatially correlated noise, estimated without
clean/noisy pairs, for BM3D's colour-noise mode (Mäkinen, Azzari, Foi, IEEE TIP 2020).

The estimator is a correlogram (Blackman–Tukey): the pooled, unbiased autocovariance c(τ) of the images
up to a lag L in each axis, multiplied by a separable Tukey lag window (flat to L/2, a raised cosine to 0
at L), placed on the DFT torus of the image to denoise and Fourier transformed.  That gives the density S
on exactly the grid the image has (mean of S over the grid = the noise variance), for images of any size
larger than 2L + 1, from images of any sizes.  L must exceed the noise's correlation length (an AR(1)
along x with ρ = 0.9 needs L ≈ 48 for 2.4 % band errors; L = 16 gives 21 %).  Welch's method with a
Hann window is *not* used: on the same data its band errors reach 28-35 % at 64² blocks (window
smoothing, block-mean removal, a coarse grid).

Two ways to get c(τ) of the noise alone:

* :func:`from_sets` — a noisy set and an **unpaired clean set** of the same kind of images: with noise
  additive and independent of the signal, c_noise = c(noisy set) - c(clean set), and the noise's mean is
  mean(noisy set) - mean(clean set) (BM3D keeps the mean, so it must be subtracted before).  Accurate
  where the noise dominates the spectrum; where the signal dominates (low frequencies of EM images) the
  error is the difference between the clean set's spectrum and the noisy set's hidden one, which
  shrinks as 1/√(number of images).
* :func:`from_background` — the noisy images alone, from flat regions (background): pixels whose local
  variance is what pure noise of the current estimate gives (a simulated null, iterated from the
  lowest-variance fifth).  It needs images with a background (empty resin, a dark field); on images
  textured everywhere it mistakes low-contrast texture for noise and overestimates the PSD (2.5-4.8×
  measured on EM slices), and the background's mean is not the noise's mean, so no offset is removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.fft import fft2, ifft2

from pairless.errors import PairlessError

DEFAULT_LAG = 48


@dataclass(frozen=True)
class NoisePSD:
    """A stationary noise model: its autocovariance up to lag ``(len - 1) / 2`` (centre = lag 0) and mean."""

    acov: np.ndarray
    offset: float = 0.0
    source: str = ""  # how it was estimated, for provenance

    @property
    def max_lag(self) -> int:
        return (self.acov.shape[0] - 1) // 2

    @property
    def variance(self) -> float:
        return float(self.acov[self.max_lag, self.max_lag])

    def density(self, shape: tuple[int, int], *, flat: float = 0.5, floor: float = 1e-4) -> np.ndarray:
        """S on the DFT grid of ``shape`` (DC at [0, 0]); lags beyond what the grid holds are left out, and S
        is clipped below at ``floor`` × its mean (a PSD is positive; BM3D divides by it)."""
        M, N = shape
        L = min(self.max_lag, (min(M, N) - 1) // 2)
        centre = self.max_lag
        c = self.acov[centre - L : centre + L + 1, centre - L : centre + L + 1]
        taper = tukey(L, flat)
        grid = np.zeros((M, N))
        lags = np.arange(-L, L + 1)
        grid[np.ix_(lags % M, lags % N)] = c * np.outer(taper, taper)
        S = np.real(fft2(grid))
        return np.maximum(S, floor * max(float(S.mean()), 1e-30))

    def bm3d_psd(self, shape: tuple[int, int]) -> np.ndarray:
        """The ``sigma_psd`` array the ``bm3d`` package takes for an image of ``shape``: E|fft2(noise)|² =
        M·N·S (its unnormalised DFT, not shifted)."""
        return self.density(shape) * shape[0] * shape[1]


def tukey(L: int, flat: float = 0.5) -> np.ndarray:
    """The lag window on -L..L: 1 up to ``flat``·L, a raised cosine to 0 at L."""
    if L == 0:
        return np.ones(1)
    t = np.abs(np.arange(-L, L + 1)) / L
    w = np.ones_like(t)
    far = t > flat
    w[far] = 0.5 * (1 + np.cos(np.pi * (t[far] - flat) / (1 - flat)))
    return w


def autocovariance(
    images: Iterable[np.ndarray], max_lag: int = DEFAULT_LAG, masks: Iterable[np.ndarray] | None = None
) -> tuple[np.ndarray, float, int]:
    """Pooled unbiased autocovariance c(τ), |τ_y|, |τ_x| ≤ ``max_lag``, as a (2L+1)² array; with the pixels'
    mean and count.

    Each image's own mean (over its mask) is removed; sums of products and numbers of pixel pairs are
    pooled over the images (so sizes may differ), and with ``masks`` only pairs with both pixels inside
    the mask count.
    """
    L = max_lag
    total = np.zeros((2 * L + 1, 2 * L + 1))
    pairs = np.zeros_like(total)
    pixel_sum, pixels = 0.0, 0
    mask_iter = iter(masks) if masks is not None else None
    for image in images:
        x = np.asarray(image, np.float64)
        m = np.ones_like(x) if mask_iter is None else np.asarray(next(mask_iter), np.float64)
        inside = m.sum()
        if inside < 1:
            continue
        pixel_sum += float((x * m).sum())
        pixels += int(inside)
        x = (x - (x * m).sum() / inside) * m
        padded = (x.shape[0] + L, x.shape[1] + L)  # zero padding: no wrap-around products
        rows, cols = np.arange(-L, L + 1) % padded[0], np.arange(-L, L + 1) % padded[1]
        total += np.real(ifft2(np.abs(fft2(x, s=padded)) ** 2))[np.ix_(rows, cols)]
        pairs += np.rint(np.real(ifft2(np.abs(fft2(m, s=padded)) ** 2)))[np.ix_(rows, cols)]
    if pixels == 0:
        raise PairlessError("no pixels to estimate the noise spectrum from; pass non-empty images")
    return total / np.maximum(pairs, 1), pixel_sum / pixels, pixels


def _slices(images: Iterable[np.ndarray], name: str, max_lag: int) -> Iterable[np.ndarray]:
    """The 2D images of a set (axes before YX are split off), each checked to hold lags up to ``max_lag``."""
    found = False
    for image in images:
        image = np.asarray(image)
        if image.ndim < 2:
            raise PairlessError(f"a {name} image has shape {image.shape}; pass 2D images (or stacks of them)")
        for plane in image.reshape(-1, *image.shape[-2:]):
            if min(plane.shape) <= max_lag:
                raise PairlessError(
                    f"a {name} image is {plane.shape[0]}×{plane.shape[1]}, too small for noise correlations "
                    f"up to {max_lag} px; use larger images or a smaller max_lag"
                )
            if not np.isfinite(plane).all():
                raise PairlessError(
                    f"a {name} image contains NaN or Inf; replace them before estimating the noise"
                )
            found = True
            yield plane
    if not found:
        raise PairlessError(f"the {name} set is empty; pass at least one {name} image")


def from_sets(
    noisy: Iterable[np.ndarray], clean: Iterable[np.ndarray], *, max_lag: int = DEFAULT_LAG
) -> NoisePSD:
    """The noise of ``noisy`` from an unpaired ``clean`` set of the same kind of images (see the module)."""
    c_noisy, mean_noisy, _ = autocovariance(_slices(noisy, "noisy", max_lag), max_lag)
    c_clean, mean_clean, _ = autocovariance(_slices(clean, "clean", max_lag), max_lag)
    acov = c_noisy - c_clean
    if acov[max_lag, max_lag] <= 0:
        raise PairlessError(
            "the noisy images vary less than the clean ones, so no noise variance is left to estimate; check "
            "that the clean set shows the same kind of images in the same units"
        )
    return NoisePSD(acov, offset=mean_noisy - mean_clean, source=f"noisy set - clean set, lags ≤ {max_lag}")


def _local_variance(image: np.ndarray, window: int) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    mean = uniform_filter(image, window, mode="reflect")
    return uniform_filter(image * image, window, mode="reflect") - mean * mean


def from_background(
    noisy: Iterable[np.ndarray],
    *,
    max_lag: int = DEFAULT_LAG,
    window: int = 16,
    start: float = 0.2,
    level: float = 0.99,
    rounds: int = 3,
    min_fraction: float = 0.02,
    seed: int = 0,
) -> NoisePSD:
    """The noise of ``noisy`` from its flat regions alone (see the module for when this fails).

    Start from the ``start`` fraction of pixels with the lowest local variance (``window``²); estimate the
    PSD from them (pairs of pixels both inside); simulate pure noise of that PSD and keep every pixel
    whose local variance is below the ``level`` quantile of the simulated ones; repeat ``rounds`` times.
    Fewer than ``min_fraction`` of the pixels left means there is no background to use.
    """
    images = [np.asarray(im, np.float64) for im in _slices(noisy, "noisy", max_lag)]
    variances = [_local_variance(im, window) for im in images]
    threshold = float(np.quantile(np.concatenate([v.ravel() for v in variances]), start))
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        masks = [v <= threshold for v in variances]
        fraction = float(np.mean([m.mean() for m in masks]))
        if fraction < min_fraction:
            raise PairlessError(
                f"only {fraction:.1%} of the pixels look like flat background, too few to estimate the noise "
                "from; pass a clean set of the same kind of images instead (--psd-clean DIR)"
            )
        acov, _, _ = autocovariance(images, max_lag, masks)
        psd = NoisePSD(acov)
        simulated = [
            _local_variance(_stationary_noise(psd.density(im.shape), rng), window).ravel()
            for im in images[:4]
        ]
        threshold = float(np.quantile(np.concatenate(simulated), level))
    masks = [v <= threshold for v in variances]
    acov, _, _ = autocovariance(images, max_lag, masks)
    fraction = float(np.mean([m.mean() for m in masks]))
    return NoisePSD(acov, source=f"flat regions ({fraction:.0%} of the pixels), lags ≤ {max_lag}")


def _stationary_noise(density: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with spectral density ``density`` (circular, exact second moments)."""
    return np.real(ifft2(fft2(rng.standard_normal(density.shape)) * np.sqrt(density)))
