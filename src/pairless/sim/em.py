"""Electron-microscopy noise: charge noise (scanning EM) and film noise (TEM support film).

The seed paper's noisy EM sets were made by combining captured noise-only images with clean
sections; those images are not public (notes/iscl.md §4), so these are procedural proxies with the
same ingredients.  Both take a clean image in [0, 1] and return a noisy float image in [0, 1]:

* **charge** ``x = y·g + b + t + n``: a smooth gain drift ``g``, scan-anisotropic offsets ``b``
  (per-row AR(1) streaks along the scan direction x, bands blurred much more along x than along
  y, and line jumps), charging tails ``t`` trailing bright structures along +x, and
  Poisson–Gaussian shot noise ``n``;
* **film** ``x = y·t``: multiplicative band-pass grain and mottling, soft stains, dark folds
  (Bézier curves), thin scratches, and rare bright holes where the film is torn.

Defaults are calibrated so that the noisy images of ISBI-2012 slices are at about 20 dB PSNR
(data range 1); Table 2 of the seed paper gives no input row, so that level is our choice.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field
from scipy import ndimage, signal

from pairless.config import Config
from pairless.errors import PairlessError
from pairless.sim.noise import as_rng, poisson_gaussian_noise

NOISE_TYPES = ("charge", "film")


class ChargeNoise(Config):
    """Parameters of :func:`charge_noise`; intensities are in units of the [0, 1] image range."""

    gain_sd: float = Field(0.08, ge=0, description="sd of the relative gain drift")
    gain_scale: float = Field(0.25, gt=0, description="gain drift blur σ, as a fraction of the image size")
    streak_sd: float = Field(0.045, ge=0, description="sd of the per-row AR(1) offsets")
    streak_rho: float = Field(0.97, ge=0, lt=1, description="AR(1) coefficient along the scan (x)")
    band_sd: float = Field(0.04, ge=0, description="sd of the scan bands")
    band_sigma: tuple[float, float] = Field((2.0, 120.0), description="band blur σ (y, x) in pixels")
    jump_rate: float = Field(0.02, ge=0, le=1, description="fraction of rows with a line jump")
    jump_sd: float = Field(0.08, ge=0, description="sd of a line jump's offset")
    tail_amplitude: float = Field(0.25, description="charging-tail strength (negative: dark tails)")
    tail_length: float = Field(12.0, gt=0, description="decay length of a charging tail in pixels")
    tail_quantile: float = Field(0.85, ge=0, lt=1, description="structures above this intensity quantile charge")
    peak: float = Field(120.0, gt=0, description="expected counts at intensity 1 (shot noise)")
    read_sd: float = Field(0.02, ge=0, description="sd of the Gaussian read noise")


class FilmNoise(Config):
    """Parameters of :func:`film_noise`; counts are per megapixel so they scale with the image."""

    grain_sd: float = Field(0.17, ge=0, description="sd of the relative band-pass grain")
    grain_sigma: tuple[float, float] = Field((0.8, 3.0), description="band-pass (difference of Gaussians) σ in px")
    mottle_sd: float = Field(0.08, ge=0, description="sd of the relative mottling")
    mottle_sigma: float = Field(40.0, gt=0, description="mottling blur σ in pixels")
    stains: float = Field(60.0, ge=0, description="expected stains per megapixel")
    stain_radius: tuple[float, float] = Field((3.0, 30.0), description="stain radius range in pixels")
    stain_depth: tuple[float, float] = Field((0.1, 0.35), description="relative darkening at a stain's centre")
    folds: float = Field(4.0, ge=0, description="expected folds per megapixel")
    fold_width: tuple[float, float] = Field((1.0, 3.0), description="fold width range in pixels")
    fold_depth: tuple[float, float] = Field((0.3, 0.6), description="relative darkening along a fold")
    scratches: float = Field(8.0, ge=0, description="expected scratches per megapixel")
    scratch_contrast: float = Field(0.25, ge=0, description="relative contrast of a scratch (either sign)")
    holes: float = Field(1.0, ge=0, description="expected bright holes per megapixel")
    hole_radius: tuple[float, float] = Field((4.0, 15.0), description="hole radius range in pixels")


def charge_noise(
    image: np.ndarray, *, params: ChargeNoise | None = None, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Scanning-EM charge noise on a clean 2D image in [0, 1]; rows are scan lines (fast axis x)."""
    y = _check(image)
    p = params or ChargeNoise()
    rng = as_rng(rng)
    h, w = y.shape
    gain = 1.0 + p.gain_sd * _smooth_field(rng, y.shape, p.gain_scale * max(h, w))
    x = y * gain + _scan_offsets(rng, y.shape, p) + _charging_tails(y, p)
    x = poisson_gaussian_noise(np.clip(x, 0.0, None), peak=p.peak, sigma=p.read_sd, rng=rng)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def film_noise(
    image: np.ndarray, *, params: FilmNoise | None = None, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """TEM support-film noise on a clean 2D image in [0, 1]: ``x = y·t`` plus rare bright holes."""
    y = _check(image)
    p = params or FilmNoise()
    rng = as_rng(rng)
    shape = y.shape
    megapixels = y.size / 1e6
    white = rng.standard_normal(shape)
    grain = ndimage.gaussian_filter(white, p.grain_sigma[0]) - ndimage.gaussian_filter(white, p.grain_sigma[1])
    t = 1.0 + p.grain_sd * _unit(grain) + p.mottle_sd * _smooth_field(rng, shape, p.mottle_sigma)
    for _ in range(rng.poisson(p.stains * megapixels)):
        radius, depth = rng.uniform(*p.stain_radius), rng.uniform(*p.stain_depth)
        t *= 1.0 - depth * _blob(shape, rng.uniform((0, 0), shape), radius)
    for _ in range(rng.poisson(p.folds * megapixels)):
        width, depth = rng.uniform(*p.fold_width), rng.uniform(*p.fold_depth)
        t *= 1.0 - depth * _curve(rng, shape, width, bend=0.4)
    for _ in range(rng.poisson(p.scratches * megapixels)):
        t *= 1.0 + rng.choice((-1.0, 1.0)) * p.scratch_contrast * _curve(rng, shape, 0.7, bend=0.0)
    x = y * np.clip(t, 0.0, None)
    for _ in range(rng.poisson(p.holes * megapixels)):
        hole = _blob(shape, rng.uniform((0, 0), shape), rng.uniform(*p.hole_radius), hard=True)
        x = x * (1.0 - hole) + hole * rng.uniform(0.85, 1.0)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def em_noise(
    image: np.ndarray,
    *,
    kind: Literal["charge", "film"],
    params: ChargeNoise | FilmNoise | None = None,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Charge or film noise by name (what the command line and the study call)."""
    if kind == "charge":
        return charge_noise(image, params=params, rng=rng)
    if kind == "film":
        return film_noise(image, params=params, rng=rng)
    raise PairlessError(f"unknown EM noise {kind!r}; use one of {', '.join(NOISE_TYPES)}")


def noise_figure(clean: np.ndarray, *, charge: np.ndarray, film: np.ndarray, zoom: int = 192):
    """A matplotlib figure: clean / charge / film, whole image above and a centre crop below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = clean.shape
    zoom = min(zoom, h, w)
    crop = (slice((h - zoom) // 2, (h + zoom) // 2), slice((w - zoom) // 2, (w + zoom) // 2))
    fig, axes = plt.subplots(2, 3, figsize=(9, 6.2), constrained_layout=True)
    for col, (title, img) in enumerate((("clean", clean), ("charge noise", charge), ("film noise", film))):
        axes[0, col].imshow(img, cmap="gray", vmin=0, vmax=1)
        axes[0, col].set_title(title)
        axes[1, col].imshow(img[crop], cmap="gray", vmin=0, vmax=1)
        axes[1, col].set_title(f"centre {zoom}×{zoom}", fontsize=9)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig


def _check(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise PairlessError(f"EM noise works on 2D images, got shape {image.shape}; pass one slice at a time")
    if image.size == 0 or not np.isfinite(image).all():
        raise PairlessError("the clean image is empty or contains NaN/Inf; pass a finite image in [0, 1]")
    if image.min() < -1e-6 or image.max() > 1 + 1e-6:
        raise PairlessError(
            f"the clean image must be scaled to [0, 1] (range is {image.min():.4g}..{image.max():.4g}); "
            f"divide 8-bit images by 255"
        )
    return image.astype(np.float64)


def _unit(field: np.ndarray) -> np.ndarray:
    """Zero mean, unit sd (so the parameters are sds, whatever the blur)."""
    field = field - field.mean()
    sd = field.std()
    return field / sd if sd > 0 else field


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    return _unit(ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap"))


def _scan_offsets(rng: np.random.Generator, shape: tuple[int, int], p: ChargeNoise) -> np.ndarray:
    h, w = shape
    # AR(1) along each row, independent between rows: streaks follow the scan direction.
    innovations = rng.standard_normal(shape) * np.sqrt(1.0 - p.streak_rho**2)
    innovations[:, 0] = rng.standard_normal(h)
    streaks = signal.lfilter([1.0], [1.0, -p.streak_rho], innovations, axis=1)
    bands = _unit(ndimage.gaussian_filter(rng.standard_normal(shape), p.band_sigma, mode="wrap"))
    jumps = np.zeros(shape)
    for row in np.flatnonzero(rng.random(h) < p.jump_rate):
        jumps[row, rng.integers(0, w):] = rng.normal(0.0, p.jump_sd)
    return p.streak_sd * streaks + p.band_sd * bands + jumps


def _charging_tails(y: np.ndarray, p: ChargeNoise) -> np.ndarray:
    """Charge built up on bright structures decays along the scan: a one-sided exponential in +x."""
    excess = np.clip(y - np.quantile(y, p.tail_quantile), 0.0, None)
    decay = np.exp(-1.0 / p.tail_length)
    return p.tail_amplitude * signal.lfilter([1.0 - decay], [1.0, -decay], excess, axis=1)


def _blob(shape: tuple[int, int], centre: np.ndarray, radius: float, *, hard: bool = False) -> np.ndarray:
    """A soft disc (Gaussian profile, or a smooth-edged disc when ``hard``) with peak 1."""
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    d2 = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / radius**2
    if hard:
        return 1.0 / (1.0 + np.exp(np.clip((np.sqrt(d2) - 1.0) * radius, -50, 50)))
    return np.exp(-d2)


def _curve(rng: np.random.Generator, shape: tuple[int, int], width: float, *, bend: float) -> np.ndarray:
    """A quadratic Bézier line across the image, drawn with a Gaussian cross-section of peak ≈ 1."""
    h, w = shape
    start, end = rng.uniform((0, 0), shape), rng.uniform((0, 0), shape)
    while np.hypot(*(end - start)) < 0.3 * min(h, w):  # a fold or scratch crosses a good part of the field
        end = rng.uniform((0, 0), shape)
    control = (start + end) / 2 + bend * rng.normal(0.0, 1.0, 2) * np.hypot(*(end - start)) / 2
    s = np.linspace(0.0, 1.0, int(4 * (h + w)))[:, None]
    points = np.rint((1 - s) ** 2 * start + 2 * s * (1 - s) * control + s**2 * end).astype(int)
    inside = (points[:, 0] >= 0) & (points[:, 0] < h) & (points[:, 1] >= 0) & (points[:, 1] < w)
    line = np.zeros(shape)
    line[points[inside, 0], points[inside, 1]] = 1.0
    sigma = width / 2.0
    return np.clip(ndimage.gaussian_filter(line, sigma) * (2 * np.pi * sigma**2) ** 0.5, 0.0, 1.0)
