"""Classical noise models: additive Gaussian, Poisson (shot) and Poisson–Gaussian.

Each function takes a clean image first and returns a new float array of the same shape; the
randomness comes in through ``rng`` (a :class:`numpy.random.Generator`, an integer seed, or
``None`` for fresh entropy), never from numpy's global state.  Nothing is clipped: whether the
noisy values may leave the clean range is the caller's choice.
"""

from __future__ import annotations

import numpy as np

from pairless.errors import PairlessError


def as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A numpy ``Generator`` from a generator, a seed or ``None``."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _float(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.size == 0:
        raise PairlessError("the image is empty (size 0); pass an image with at least one pixel")
    image = image.astype(np.float64 if image.dtype == np.float64 else np.float32, copy=False)
    if not np.isfinite(image).all():
        raise PairlessError("the image contains NaN or Inf; replace those pixels before adding noise")
    return image


def gaussian_noise(
    image: np.ndarray, *, sigma: float, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """``image + n`` with ``n ~ N(0, sigma²)`` i.i.d. per pixel (``sigma`` in image units)."""
    image = _float(image)
    if sigma < 0:
        raise PairlessError(f"sigma must be >= 0, got {sigma}")
    return (image + as_rng(rng).normal(0.0, sigma, image.shape)).astype(image.dtype)


def poisson_noise(
    image: np.ndarray, *, peak: float, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Shot noise: ``Poisson(peak · image) / peak``, so an intensity of 1 is ``peak`` expected counts.

    The variance at intensity ``v`` is ``v / peak``; the image must be non-negative.
    """
    image = _float(image)
    if not peak > 0:
        raise PairlessError(f"peak (expected counts at intensity 1) must be positive, got {peak}")
    if image.min() < 0:
        raise PairlessError(
            f"Poisson noise needs a non-negative image (minimum is {image.min():.4g}); shift or clip it first"
        )
    return (as_rng(rng).poisson(image * peak) / peak).astype(image.dtype)


def poisson_gaussian_noise(
    image: np.ndarray, *, peak: float, sigma: float, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Poisson shot noise followed by additive Gaussian read noise: variance ``v / peak + sigma²``."""
    rng = as_rng(rng)
    return gaussian_noise(poisson_noise(image, peak=peak, rng=rng), sigma=sigma, rng=rng)
