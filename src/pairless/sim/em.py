"""Electron-microscopy noise: charge noise (scanning EM) and film noise (TEM support film).

The seed paper's noisy EM sets were made by combining captured noise-only images ("images of
lacking tissue sections") with clean sections; those images are not public (the ISCL repository's
data/README.md), so these are procedural proxies with the same ingredients.  Every length is in pixels
and every defect count is per megapixel of image area, so a parameter set gives the same noise
statistics on a 256² crop as on a 512² slice (a field is drawn on a margin around the image, so its blur
never sees an edge, and is scaled by its kernel's energy, not by its own sample sd).

Two ways to apply the noise to a clean image ``y`` in [0, 1] (the result is clipped to [0, 1]):

* ``mode="structural"`` (default): the noise acts on the specimen.
  - **charge** ``x = y·g + b + t + n``: a smooth gain drift ``g``, scan-anisotropic offsets ``b``
    (per-row AR(1) streaks along the scan direction x, bands blurred much more along x than along
    y, and line jumps), charging tails ``t`` trailing bright structures along +x, and
    Poisson–Gaussian shot noise ``n``;
  - **film** ``x = y·t``: multiplicative band-pass grain and mottling, soft stains, dark folds
    (Bézier curves), thin scratches, and rare bright holes where the film is torn.
* ``mode="additive"``: the paper's recipe.  A noise-only image ``z`` of an empty field at intensity
  ``background`` is simulated (:func:`noise_only`: the same ingredients minus what needs a specimen,
  i.e. no charging tails) and pasted: ``x = y + (z - background)``.  The noise is then independent
  of the image.

Defaults are calibrated so that the noisy images of ISBI-2012 slices are at about 20 dB PSNR
(data range 1) in either mode; Table 2 of the seed paper gives no input row, so that level is our
choice.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field
from scipy import ndimage, signal

from pairless.config import Config
from pairless.errors import PairlessError
from pairless.sim.noise import as_rng, poisson_gaussian_noise

NOISE_TYPES = ("charge", "film")
MODES = ("structural", "additive")
Mode = Literal["structural", "additive"]


class ChargeNoise(Config):
    """Parameters of :func:`charge_noise`; intensities in units of the [0, 1] range, lengths in pixels."""

    gain_sd: float = Field(0.08, ge=0, description="sd of the relative gain drift")
    gain_sigma: float = Field(128.0, gt=0, description="gain drift blur σ in pixels")
    streak_sd: float = Field(0.045, ge=0, description="sd of the per-row AR(1) offsets")
    streak_rho: float = Field(0.97, ge=0, lt=1, description="AR(1) coefficient along the scan (x), per pixel")
    band_sd: float = Field(0.04, ge=0, description="sd of the scan bands")
    band_sigma: tuple[float, float] = Field((2.0, 120.0), description="band blur σ (y, x) in pixels")
    jump_rate: float = Field(0.02, ge=0, le=1, description="fraction of rows with a line jump")
    jump_sd: float = Field(0.08, ge=0, description="sd of a line jump's offset")
    tail_amplitude: float = Field(
        0.25, description="charging-tail strength (negative: dark tails; structural only)"
    )
    tail_length: float = Field(12.0, gt=0, description="decay length of a charging tail in pixels")
    tail_quantile: float = Field(
        0.85, ge=0, lt=1, description="structures above this intensity quantile charge"
    )
    peak: float = Field(120.0, gt=0, description="expected counts at intensity 1 (shot noise)")
    read_sd: float = Field(0.02, ge=0, description="sd of the Gaussian read noise")
    background: float = Field(
        0.5, ge=0, le=1, description="intensity of the empty field a noise-only image shows"
    )


class FilmNoise(Config):
    """Parameters of :func:`film_noise`; lengths in pixels, counts per megapixel of image area."""

    grain_sd: float = Field(0.17, ge=0, description="sd of the relative band-pass grain")
    grain_sigma: tuple[float, float] = Field(
        (0.8, 3.0), description="band-pass (difference of Gaussians) σ in px"
    )
    mottle_sd: float = Field(0.08, ge=0, description="sd of the relative mottling")
    mottle_sigma: float = Field(40.0, gt=0, description="mottling blur σ in pixels")
    stains: float = Field(60.0, ge=0, description="expected stains per megapixel")
    stain_radius: tuple[float, float] = Field((3.0, 30.0), description="stain radius range in pixels")
    stain_depth: tuple[float, float] = Field(
        (0.1, 0.35), description="relative darkening at a stain's centre"
    )
    folds: float = Field(4.0, ge=0, description="expected folds per megapixel")
    fold_width: tuple[float, float] = Field((1.0, 3.0), description="fold width range in pixels")
    fold_depth: tuple[float, float] = Field((0.3, 0.6), description="relative darkening along a fold")
    fold_length: tuple[float, float] = Field((150.0, 600.0), description="fold length range in pixels")
    scratches: float = Field(8.0, ge=0, description="expected scratches per megapixel")
    scratch_contrast: float = Field(0.25, ge=0, description="relative contrast of a scratch (either sign)")
    scratch_length: tuple[float, float] = Field((150.0, 600.0), description="scratch length range in pixels")
    holes: float = Field(1.0, ge=0, description="expected bright holes per megapixel")
    hole_radius: tuple[float, float] = Field((4.0, 15.0), description="hole radius range in pixels")
    background: float = Field(
        0.5, ge=0, le=1, description="intensity of the empty field a noise-only image shows"
    )


def charge_noise(
    image: np.ndarray,
    *,
    params: ChargeNoise | None = None,
    mode: Mode = "structural",
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Scanning-EM charge noise on a clean 2D image in [0, 1]; rows are scan lines (fast axis x)."""
    y = _check(image)
    p = params or ChargeNoise()
    rng = as_rng(rng)
    if _mode(mode) == "additive":
        return _paste(y, _charge_field(y.shape, p, rng), p.background)
    gain = 1.0 + p.gain_sd * _smooth_field(rng, y.shape, p.gain_sigma)
    x = y * gain + _scan_offsets(rng, y.shape, p) + _charging_tails(y, p)
    x = poisson_gaussian_noise(np.clip(x, 0.0, None), peak=p.peak, sigma=p.read_sd, rng=rng)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def film_noise(
    image: np.ndarray,
    *,
    params: FilmNoise | None = None,
    mode: Mode = "structural",
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """TEM support-film noise on a clean 2D image in [0, 1]: ``x = y·t`` plus rare bright holes."""
    y = _check(image)
    p = params or FilmNoise()
    rng = as_rng(rng)
    if _mode(mode) == "additive":
        return _paste(y, _film_field(np.full(y.shape, p.background), p, rng), p.background)
    return np.clip(_film_field(y, p, rng), 0.0, 1.0).astype(np.float32)


def noise_only(
    shape: tuple[int, int],
    *,
    kind: Literal["charge", "film"],
    params: ChargeNoise | FilmNoise | None = None,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """A simulated noise-only image (an empty field at ``params.background``), float64, not clipped.

    ``mode="additive"`` pastes exactly this onto a clean image: ``clip(y + z - background, 0, 1)``.
    """
    rng = as_rng(rng)
    if kind == "charge":
        return _charge_field(tuple(shape), params or ChargeNoise(), rng)
    if kind == "film":
        p = params or FilmNoise()
        return _film_field(np.full(tuple(shape), p.background), p, rng)
    raise PairlessError(f"unknown EM noise {kind!r}; use one of {', '.join(NOISE_TYPES)}")


def em_noise(
    image: np.ndarray,
    *,
    kind: Literal["charge", "film"],
    params: ChargeNoise | FilmNoise | None = None,
    mode: Mode = "structural",
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Charge or film noise by name (what the command line and the study call)."""
    if kind == "charge":
        return charge_noise(image, params=params, mode=mode, rng=rng)
    if kind == "film":
        return film_noise(image, params=params, mode=mode, rng=rng)
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


def _mode(mode: str) -> str:
    if mode not in MODES:
        raise PairlessError(f"unknown EM noise mode {mode!r}; use one of {', '.join(MODES)}")
    return mode


def _check(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise PairlessError(f"EM noise works on 2D images, got shape {image.shape}; pass one slice at a time")
    if image.size == 0 or not np.isfinite(image).all():
        raise PairlessError("the clean image is empty or contains NaN/Inf; pass a finite image in [0, 1]")
    if image.min() < -1e-6 or image.max() > 1 + 1e-6:
        raise PairlessError(
            f"the clean image must be scaled to [0, 1] (range is {image.min():.4g}..{image.max():.4g}); "
            "divide 8-bit images by 255"
        )
    return image.astype(np.float64)


def _paste(y: np.ndarray, field: np.ndarray, background: float) -> np.ndarray:
    """The paper's synthesis: a noise-only image, less its empty-field level, added to the clean image."""
    return np.clip(y + (field - background), 0.0, 1.0).astype(np.float32)


def _charge_field(shape: tuple[int, int], p: ChargeNoise, rng: np.random.Generator) -> np.ndarray:
    """An empty field scanned with charging: gain drift, scan offsets, shot noise; no tails (no specimen)."""
    gain = 1.0 + p.gain_sd * _smooth_field(rng, shape, p.gain_sigma)
    x = p.background * gain + _scan_offsets(rng, shape, p)
    return poisson_gaussian_noise(np.clip(x, 0.0, None), peak=p.peak, sigma=p.read_sd, rng=rng)


def _film_field(y: np.ndarray, p: FilmNoise, rng: np.random.Generator) -> np.ndarray:
    """``y`` seen through the film (``y·t``, bright holes where it is torn), not clipped."""
    shape = y.shape
    white = rng.standard_normal(shape)

    # wrap: a periodic blur of white noise is stationary, so the grain has the same sd at the edges
    def dog(a):
        return ndimage.gaussian_filter(a, p.grain_sigma[0], mode="wrap") - ndimage.gaussian_filter(
            a, p.grain_sigma[1], mode="wrap"
        )

    grain = dog(white) / math.sqrt(_energy(dog, max(p.grain_sigma)))
    t = 1.0 + p.grain_sd * grain + p.mottle_sd * _smooth_field(rng, shape, p.mottle_sigma)
    for centre in _centres(rng, shape, p.stains, margin=p.stain_radius[1] * 3):
        radius, depth = rng.uniform(*p.stain_radius), rng.uniform(*p.stain_depth)
        t *= 1.0 - depth * _blob(shape, centre, radius)
    for centre in _centres(rng, shape, p.folds, margin=p.fold_length[1] / 2):
        width, depth = rng.uniform(*p.fold_width), rng.uniform(*p.fold_depth)
        t *= 1.0 - depth * _curve(rng, shape, centre, rng.uniform(*p.fold_length), width, bend=0.4)
    for centre in _centres(rng, shape, p.scratches, margin=p.scratch_length[1] / 2):
        line = _curve(rng, shape, centre, rng.uniform(*p.scratch_length), 0.7, bend=0.0)
        t *= 1.0 + rng.choice((-1.0, 1.0)) * p.scratch_contrast * line
    x = y * np.clip(t, 0.0, None)
    for centre in _centres(rng, shape, p.holes, margin=p.hole_radius[1] * 2):
        hole = _blob(shape, centre, rng.uniform(*p.hole_radius), hard=True)
        x = x * (1.0 - hole) + hole * rng.uniform(0.85, 1.0)
    return x


def _centres(rng: np.random.Generator, shape: tuple[int, int], per_megapixel: float, *, margin: float):
    """Defect centres, ``per_megapixel`` per 10⁶ px², uniform over the image grown by ``margin``.

    Defects centred outside the image but reaching into it are drawn too, so the density of defect
    pixels is the same near the edges as in the middle, and the same on a small crop as on a slice.
    """
    lo = np.array([-margin, -margin])
    hi = np.array(shape, dtype=float) + margin
    count = rng.poisson(per_megapixel * float(np.prod(hi - lo)) / 1e6)
    return rng.uniform(lo, hi, size=(count, 2))


def _energy(linear_filter, radius: float) -> float:
    """Σ k² of a linear filter's 2D kernel: the variance it gives unit white noise."""
    r = int(math.ceil(4 * radius)) + 1
    delta = np.zeros((2 * r + 1, 2 * r + 1))
    delta[r, r] = 1.0
    return float((linear_filter(delta) ** 2).sum())


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma) -> np.ndarray:
    """Gaussian-blurred white noise with unit variance, σ in pixels (one value or (y, x)).

    Drawn on a grid coarser by ⌊σ/4⌋ (cheap for σ of hundreds of pixels) with a 4σ margin, so the
    blur never reaches an edge, then interpolated to the pixels.  It is scaled by the kernel's
    energy: dividing by the sample sd instead would make a crop much smaller than σ as rough as a
    whole slice, which is why the noise used to depend on the crop size.
    """
    sigma = np.broadcast_to(np.asarray(sigma, dtype=float), (2,))
    factor = np.maximum(1, np.floor(sigma / 4)).astype(int)
    s = sigma / factor
    margin = np.ceil(4 * s).astype(int) + 2
    coarse = -(-np.asarray(shape) // factor) + 2 * margin + 1
    kernel = [
        ndimage.gaussian_filter1d(np.eye(1, 2 * m + 1, m)[0], si, mode="constant") for si, m in zip(s, margin)
    ]
    energy = float(np.prod([(k**2).sum() for k in kernel]))
    field = ndimage.gaussian_filter(
        rng.standard_normal(tuple(coarse)), tuple(s), mode="constant"
    ) / math.sqrt(energy)
    if (factor == 1).all():
        return field[margin[0] : margin[0] + shape[0], margin[1] : margin[1] + shape[1]]
    coords = [m + (np.arange(n) + 0.5) / f - 0.5 for n, m, f in zip(shape, margin, factor)]
    grid = np.meshgrid(*coords, indexing="ij")
    return ndimage.map_coordinates(field, grid, order=1)


def _scan_offsets(rng: np.random.Generator, shape: tuple[int, int], p: ChargeNoise) -> np.ndarray:
    h, w = shape
    # AR(1) along each row, independent between rows, started from its stationary law: streaks
    # follow the scan direction and have the same statistics at every column
    innovations = rng.standard_normal(shape) * np.sqrt(1.0 - p.streak_rho**2)
    innovations[:, 0] = rng.standard_normal(h)
    streaks = signal.lfilter([1.0], [1.0, -p.streak_rho], innovations, axis=1)
    bands = _smooth_field(rng, shape, p.band_sigma)
    jumps = np.zeros(shape)
    for row in np.flatnonzero(rng.random(h) < p.jump_rate):
        jumps[row, rng.integers(0, w) :] = rng.normal(0.0, p.jump_sd)
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


def _curve(
    rng: np.random.Generator,
    shape: tuple[int, int],
    centre: np.ndarray,
    length: float,
    width: float,
    *,
    bend: float,
) -> np.ndarray:
    """A quadratic Bézier line of ``length`` px through ``centre`` at a random angle, Gaussian cross-section
    of peak ≈ 1."""
    angle = rng.uniform(0.0, np.pi)
    half = 0.5 * length * np.array([np.sin(angle), np.cos(angle)])
    start, end = centre - half, centre + half
    control = centre + bend * rng.normal(0.0, 1.0, 2) * length / 2
    s = np.linspace(0.0, 1.0, int(3 * length) + 2)[:, None]
    points = np.rint((1 - s) ** 2 * start + 2 * s * (1 - s) * control + s**2 * end).astype(int)
    inside = (points[:, 0] >= 0) & (points[:, 0] < shape[0]) & (points[:, 1] >= 0) & (points[:, 1] < shape[1])
    line = np.zeros(shape)
    line[points[inside, 0], points[inside, 1]] = 1.0
    sigma = width / 2.0
    return np.clip(ndimage.gaussian_filter(line, sigma) * (2 * np.pi * sigma**2) ** 0.5, 0.0, 1.0)
