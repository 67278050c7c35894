"""Noise-model estimation from one noisy image, and the generalized Anscombe transform.

Simulating noise lives in :mod:`pairless.sim.noise`; this module goes the other way: it *measures*
the noise of an image that has no clean counterpart.

The model is the Poisson–Gaussian one of fluorescence, X-ray and raw camera data,

    z = α·p + n,   p ~ Poisson(y),   n ~ N(μ, σ²)      ⇒   Var[z] = a·E[z] + b,

with ``a = α`` and ``b = σ² − α·μ`` (Foi, Trimeche, Katkovnik & Egiazarian, "Practical
Poissonian-Gaussian noise modeling and fitting for single-image raw-data", IEEE TIP 17(10), 2008).
Pure Gaussian noise is ``a = 0, b = σ²``; pure (scaled) Poisson noise is ``b = 0``.

:func:`fit_poisson_gaussian` follows Foi et al.'s recipe, simplified:

1. One level of the separable Haar transform over blocks of 2×2 (2×2×2 in 3D).  The detail
   coefficient ``d = Σ sᵢ zᵢ / √(2ᵏ)`` with signs ``sᵢ = ±1`` (the product of the per-axis Haar
   high-pass signs) cancels any signal that is constant, linear, or a sum of functions of fewer than
   all axes over the block; its variance is ``(1/2ᵏ)·Σ Var[zᵢ] = a·ȳ + b`` *exactly* under the
   linear model, ȳ being the block's mean signal.  The approximation ``m = mean(zᵢ)`` estimates ȳ.
2. Local means of ``m`` over a window of blocks (5×5, or 3×3×3 in 3D) give each block's intensity.
   Blocks on edges or texture are dropped: a block is kept only when the variance of ``m`` in its
   window is at most twice what the noise explains (``Var_window[m] ≤ 2·v/2ᵏ``) and, from the second
   pass on, the window's mean ``d²`` is at most 1.6·v.  In the first pass v is the window's own mean
   ``d²``; in passes 2 and 3 it is the model fitted by the pass before at the window's intensity, which
   texture cannot inflate.  The window's ``d²`` is always taken without the block's own coefficient,
   so whether a block is kept does not depend on its own detail.  Blocks that touch a clipped end of
   the range are dropped too (the minimum or maximum value when it is a spike in the histogram:
   clipping or saturation, which Foi et al. 2008 §V model and we only avoid).
3. The kept blocks are split by intensity into equal-count bins ("level sets"); in each bin the
   variance of ``d`` is a trimmed second moment (|d| ≤ 4 σ̂, iterated once from the MAD).
4. ``Var = a·m + b`` is fitted to the bins by iteratively reweighted least squares, each bin
   weighted by the inverse variance of its variance estimate, ``n / ((κ − 1)·v̂²)`` with v̂ from the
   current fit and κ the coefficients' measured kurtosis (a Gaussian has κ = 3, i.e. 2v²/n), with
   Huber weights on the residuals for bins that texture still contaminates.  When the slope is not
   distinguishable from zero (t < 3, the standard error scaled by the residuals' reduced χ² when it
   exceeds 1) — pure Gaussian noise, or intensities spanning too little to tell the components
   apart, as in a nearly constant image — the model is Gaussian (a = 0, b = the bins' weighted mean
   variance): the variance is then right for the intensities present, only their split is not.

:func:`gat` is the generalized Anscombe transform (Starck, Murtagh & Bijaoui 1998) and
:func:`gat_inverse` the closed-form approximation of its exact unbiased inverse (Mäkitalo & Foi,
"Optimal inversion of the generalized Anscombe transformation for Poisson-Gaussian noise", IEEE TIP
22(1), 2013; the Poisson part from Mäkitalo & Foi, IEEE TIP 20(9), 2011).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from scipy import ndimage

from pairless.errors import PairlessError

NOISE_MODELS = ("poisson-gaussian", "gaussian")
MIN_BLOCKS = 800  # kept blocks needed for a fit: 4 bins of 200 detail coefficients
_BIN_SIZE = 300  # coefficients per intensity bin (relative error of a bin variance ≈ √(2/300) ≈ 8 %)
_MAX_BINS = 64
_SMOOTH_RATIO = 2.0  # window variance of m allowed, in units of the noise's own contribution
_DETAIL_RATIO = (
    1.6  # window mean d² allowed (others), relative to the fitted variance (≈ 2 sd of a 24-sample mean)
)
_T_SLOPE = 3.0  # slope t-statistic below which the noise is taken as signal-independent


@dataclasses.dataclass(frozen=True)
class PoissonGaussian:
    """A fitted noise model: ``Var[z] = a·E[z] + b`` in the image's intensity units.

    ``bins`` holds the fit's data for inspection: per intensity bin its mean intensity, measured
    variance and number of detail coefficients.
    """

    a: float
    b: float
    bins: tuple[tuple[float, float, int], ...] = dataclasses.field(default=(), compare=False, repr=False)

    def variance(self, signal):
        """The noise variance at intensity ``signal`` (a number or an array), never below 0."""
        return np.maximum(self.a * np.asarray(signal, dtype=np.float64) + self.b, 0.0)

    @property
    def gaussian(self) -> bool:
        """True when the noise does not depend on the signal (``a == 0``)."""
        return self.a == 0.0

    @property
    def sigma(self) -> float:
        """The Gaussian σ (``√b``); only defined for signal-independent noise (``a == 0``)."""
        if not self.gaussian:
            raise PairlessError(
                f"this noise depends on the signal (variance = {self.a:.4g}·signal + {self.b:.4g}), so it "
                "has no single σ; use variance(signal), or fit with model='gaussian'"
            )
        return math.sqrt(max(self.b, 0.0))


def fit_poisson_gaussian(
    image, *, model: str = "poisson-gaussian", window: int | None = None
) -> PoissonGaussian:
    """Fit ``Var[z] = a·E[z] + b`` to one noisy image (2D or 3D), without clean data.

    :param image: the noisy image; axes of length 1 are ignored, so ``(1, Y, X)`` is a 2D image.
    :param model: ``"poisson-gaussian"`` (a ≥ 0 and b fitted; a is 0 when the data show no
        signal dependence) or ``"gaussian"`` (a = 0, b = σ²).
    :param window: width, in 2-pixel blocks, of the window for local means (default 5 in 1D/2D, 3 in 3D).
    :raises PairlessError: for an unknown model, an image too small or too textured to fit, a
        constant (noise-free) image, or NaN/Inf values.
    """
    if model not in NOISE_MODELS:
        raise PairlessError(f"unknown noise model {model!r}; use one of {', '.join(NOISE_MODELS)}")
    z = _as_float64(image)
    shape = z.shape
    z = z.reshape([s for s in z.shape if s > 1])
    if z.ndim == 0 or z.size < 4 * MIN_BLOCKS:
        raise PairlessError(
            f"the image ({'×'.join(map(str, shape))}) is too small to fit a noise model from: it needs "
            f"at least {4 * MIN_BLOCKS} pixels of mostly smooth content (e.g. 64×64); pass a larger image"
        )
    if z.max() == z.min():
        raise PairlessError("the image is constant: it has no noise to fit; pass a noisy image")
    k = z.ndim
    z = z[tuple(slice(0, s - s % 2) for s in z.shape)]  # whole 2-pixel blocks only
    low, high = z, z
    for axis in range(k):  # separable Haar step: mean and normalised difference along each axis
        even = [slice(None)] * k
        odd = [slice(None)] * k
        even[axis], odd[axis] = slice(0, None, 2), slice(1, None, 2)
        low = 0.5 * (low[tuple(even)] + low[tuple(odd)])
        high = (high[tuple(even)] - high[tuple(odd)]) / math.sqrt(2.0)
    touches_extreme = _clipped(z)
    for axis in range(k):
        touches_extreme = np.logical_or.reduceat(
            touches_extreme, np.arange(0, touches_extreme.shape[axis], 2), axis=axis
        )

    if not np.any(high):
        raise PairlessError(
            "the image shows no noise (its fine-scale detail is zero everywhere): it is noise-free or "
            "piecewise constant; pass the noisy image"
        )
    w = window if window is not None else (5 if k <= 2 else 3)
    if w < 1:
        raise PairlessError(f"window must be a positive number of blocks, got {w}")
    n_win = w**k
    mean = ndimage.uniform_filter(low, w, mode="reflect")
    spread = np.maximum(ndimage.uniform_filter(low * low, w, mode="reflect") - mean * mean, 0.0)
    d2 = high * high
    # the window's mean d² without the block's own coefficient (so selection is independent of it)
    others = (ndimage.uniform_filter(d2, w, mode="reflect") * n_win - d2) / max(n_win - 1, 1)
    # pass 1: the noise level of a window is judged from its own detail coefficients; passes 2-3:
    # from the model fitted so far, which texture (raising the window's d² with it) cannot loosen
    noise_level = others
    for _ in range(3):
        keep = ~touches_extreme
        if n_win > 1:
            keep &= spread <= _SMOOTH_RATIO * noise_level / 2**k
        if noise_level is not others:
            keep &= others <= _DETAIL_RATIO * noise_level
        m, d = mean[keep], high[keep]
        if m.size < MIN_BLOCKS:
            raise PairlessError(
                f"only {m.size} of {mean.size} 2-pixel blocks of the image are smooth enough to measure the"
                f" noise on (at least {MIN_BLOCKS} are needed); pass a larger image or one with more uniform"
                " regions"
            )
        bins = _level_sets(m, d)
        means, variances, counts, kurtosis = (np.array(c, dtype=np.float64) for c in zip(*bins))
        if not np.any(variances > 0):
            raise PairlessError("the image's smooth regions show no noise; pass the noisy image")
        a, b = _fit_line(means, variances, counts, kurtosis, gaussian=model == "gaussian")
        noise_level = np.maximum(a * mean + b, 1e-3 * float(np.max(variances)))
    return PoissonGaussian(
        float(a), float(b), tuple(zip(means.tolist(), variances.tolist(), counts.astype(int).tolist()))
    )


def _clipped(z: np.ndarray) -> np.ndarray:
    """Pixels at a clipped (saturated) end of the range: the minimum or maximum value when it is a
    spike in the histogram, i.e. more than 3× as frequent as the next value in (and not a lone pixel).
    Low-count data, where the minimum (0 counts) is frequent but no spike, keep their dark pixels."""
    out = np.zeros(z.shape, dtype=bool)
    values, counts = np.unique(z, return_counts=True)
    if values.size >= 2:
        for end, inner in ((0, 1), (-1, -2)):
            if counts[end] > 1 and counts[end] > 3 * counts[inner]:
                out |= z == values[end]
    return out


def _as_float64(image) -> np.ndarray:
    z = np.asarray(image)
    if z.dtype.kind not in "buif":
        raise PairlessError(f"cannot fit a noise model to an image of type {z.dtype}; pass real numbers")
    z = z.astype(np.float64)
    if z.size == 0:
        raise PairlessError("the image is empty (size 0); pass an image with pixels")
    if not np.isfinite(z).all():
        raise PairlessError(
            "the image contains NaN or Inf; replace those pixels before fitting a noise model"
        )
    return z


def _level_sets(m: np.ndarray, d: np.ndarray) -> list[tuple[float, float, int, float]]:
    """Equal-count intensity bins: (mean intensity, trimmed variance of d, count, kurtosis of d)."""
    order = np.argsort(m, kind="stable")
    n_bins = int(min(_MAX_BINS, max(4, m.size // _BIN_SIZE)))
    out = []
    for idx in np.array_split(order, n_bins):
        dd = d[idx]
        scale = 1.4826 * np.median(np.abs(dd))  # MAD; on strongly quantised data it can be 0
        if not scale > 0:
            scale = float(np.sqrt(np.mean(dd * dd)))
        for _ in range(
            2
        ):  # trim outliers (texture leaking into d) at 4σ, once from the MAD, once from the trim
            kept = dd[np.abs(dd) <= 4.0 * scale] if scale > 0 else dd
            var = float(np.mean(kept * kept)) if kept.size else 0.0
            scale = math.sqrt(var)
        kurt = float(np.mean(kept**4) / var**2) if var > 0 else 3.0
        out.append((float(np.mean(m[idx])), var, int(kept.size), kurt))
    return out


def _fit_line(x, v, n, kurt, *, gaussian: bool) -> tuple[float, float]:
    """IRLS fit of v ≈ a·x + b with weights n / ((κ−1)·v_fit²) and Huber weights on the residuals."""
    excess = float(np.clip(np.median(kurt) - 1.0, 0.5, 20.0))  # Var[sample variance] = (κ − 1)·v²/n

    def constant() -> tuple[float, float]:
        # one level for every bin, so the weights n/((κ−1)·c²) reduce to n (with Huber on residuals)
        c = float(np.average(v, weights=n))
        for _ in range(5):
            r = (v - c) * np.sqrt(n / (excess * c * c))
            c = float(np.average(v, weights=n * np.minimum(1.0, 2.5 / np.maximum(np.abs(r), 1e-12))))
        return 0.0, c

    if gaussian:
        return constant()
    design = np.stack([x, np.ones_like(x)], axis=1)
    fit_v = np.full_like(v, np.average(v, weights=n))
    huber = np.ones_like(v)
    a = b = 0.0
    for _ in range(10):
        w = huber * n / (excess * fit_v**2)
        coef, *_ = np.linalg.lstsq(design * np.sqrt(w)[:, None], v * np.sqrt(w), rcond=None)
        a, b = float(coef[0]), float(coef[1])
        fit_v = np.maximum(a * x + b, 1e-3 * np.max(v))  # a weight, so never 0
        r = (v - fit_v) * np.sqrt(n / (excess * fit_v**2))  # standardised residuals
        huber = np.minimum(1.0, 2.5 / np.maximum(np.abs(r), 1e-12))
    w = huber * n / (excess * fit_v**2)
    cov = np.linalg.pinv(design.T @ (design * w[:, None]))
    chi2 = float(np.sum(w * (v - (a * x + b)) ** 2)) / max(len(v) - 2, 1)  # > 1: more scatter than sampling
    se_a = math.sqrt(max(cov[0, 0] * max(chi2, 1.0), 0.0))
    if not a > 0 or a < _T_SLOPE * se_a:
        return constant()
    return a, b


# ----------------------------------------------------------------------------- variance stabilisation


def _model(model_or_a, b):
    if isinstance(model_or_a, PoissonGaussian):
        return model_or_a.a, model_or_a.b
    if b is None:
        raise PairlessError("pass a PoissonGaussian model, or both a and b")
    return float(model_or_a), float(b)


def gat(z, model: PoissonGaussian | float, b: float | None = None) -> np.ndarray:
    """Generalized Anscombe transform: noise of variance ``a·E[z] + b`` becomes ≈ unit variance.

    ``f(z) = (2/a)·√(max(a·z + 3/8·a² + b, 0))`` (Starck, Murtagh & Bijaoui 1998; in Mäkitalo & Foi 2013
    notation ``2/α·√(α z + 3/8 α² + σ² − α μ)`` with ``b = σ² − αμ``), 0 where the root's argument is
    negative.  For Gaussian noise (``a = 0``) the limit is, up to a constant, ``z / √b``.
    Computed in float64.  ``gat(z, model)`` or ``gat(z, a, b)``.
    """
    a, b = _model(model, b)
    z = np.asarray(z, dtype=np.float64)
    if a < 0:
        raise PairlessError(f"the Poisson gain a must be >= 0, got {a}")
    if a == 0:
        if not b > 0:
            raise PairlessError(f"Gaussian noise (a = 0) needs a positive variance b, got {b}")
        return z / math.sqrt(b)
    return (2.0 / a) * np.sqrt(np.maximum(a * z + 0.375 * a * a + b, 0.0))


def gat_inverse(
    d, model: PoissonGaussian | float, b: float | None = None, *, method: str = "unbiased"
) -> np.ndarray:
    """Map a denoised, stabilised image ``d ≈ E[f(z)]`` back to intensities ``E[z]``.

    ``method="unbiased"`` (default) is Mäkitalo & Foi's closed-form approximation of the exact unbiased
    inverse.  With ``z̃ = (z − μ)/α`` (Poisson of unit gain plus N(0, σ̃²), σ̃ = σ/α)::

        I(D) = D²/4 + (1/4)·√(3/2)·D⁻¹ − (11/8)·D⁻² + (5/8)·√(3/2)·D⁻³ − 1/8 − σ̃²,   E[z] = α·max(I, 0) + μ

    (their 2013 eq. for the Poisson–Gaussian case; the Poisson part is their 2011 closed form, which
    is 0 at D = 2·√(3/8) = f(0) and is used only above it: below, where the series turns back up, the
    Poisson part is 0).  Only ``b = σ² − αμ`` is known from a fit, so the split is taken as μ = 0,
    σ² = b when b ≥ 0 and σ = 0, μ = −b/α (a pedestal) when b < 0; both give the same forward transform.

    ``method="algebraic"`` is the naive inverse of :func:`gat`, ``((a·D/2)² − 3/8·a² − b)/a``, which is
    biased low at low counts (E[f(z)] < f(E[z]) by Jensen's inequality); ``"asymptotic"`` adds the
    first-order correction, ``(D/2)² − 1/8 − σ̃²``.  For ``a = 0`` every method is ``D·√b``.
    """
    a, b = _model(model, b)
    d = np.asarray(d, dtype=np.float64)
    if method not in ("unbiased", "algebraic", "asymptotic"):
        raise PairlessError(f"unknown inverse {method!r}; use unbiased, algebraic or asymptotic")
    if a < 0:
        raise PairlessError(f"the Poisson gain a must be >= 0, got {a}")
    if a == 0:
        if not b > 0:
            raise PairlessError(f"Gaussian noise (a = 0) needs a positive variance b, got {b}")
        return d * math.sqrt(b)
    if method == "algebraic":
        return ((0.5 * a * d) ** 2 - 0.375 * a * a - b) / a
    sigma2 = max(b, 0.0) / (a * a)  # σ̃² = σ²/α²
    mu = -min(b, 0.0) / a  # pedestal μ when b < 0
    if method == "asymptotic":
        poisson = np.where(d >= 2.0 * math.sqrt(0.375), 0.25 * d * d - 0.125, 0.0)
    else:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            s = math.sqrt(1.5)
            poisson = 0.25 * d * d + 0.25 * s / d - 1.375 / d**2 + 0.625 * s / d**3 - 0.125
        poisson = np.where(d >= 2.0 * math.sqrt(0.375), poisson, 0.0)
    return a * np.maximum(poisson - sigma2, 0.0) + mu


def estimate_sigma(image) -> float:
    """Gaussian noise σ by the wavelet MAD estimate (Donoho & Johnstone 1994; scikit-image's
    ``estimate_sigma``): robust and the field's default for "σ known" filters.  0 for images too
    small to estimate from."""
    from skimage.restoration import estimate_sigma as skimage_estimate_sigma

    with warnings.catch_warnings():  # tiny images warn (channel axis? empty slice) and give NaN
        warnings.simplefilter("ignore")
        sigma = float(skimage_estimate_sigma(np.asarray(image)))
    return sigma if np.isfinite(sigma) else 0.0
