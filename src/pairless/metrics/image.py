"""PSNR, NRMSE, SSIM and scale-invariant PSNR with explicit conventions.

Every function takes the image first and the reference second, an explicit ``data_range`` where
the metric depends on one (never guessed from the data: the range must not depend on the
prediction), and an optional boolean ``mask`` selecting the pixels that count.  Without a mask
each agrees with scikit-image's function of the same setting; the mask restricts the average
(for SSIM: the average of the SSIM map, whose border scikit-image crops, over the mask).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pairless.errors import PairlessError

METRICS = ("psnr", "nrmse", "ssim", "si_psnr")
NORMALIZATIONS = ("euclidean", "min-max", "mean")
SSIM_WINDOWS = {
    False: "7x7 uniform window, sample covariance (scikit-image default)",
    True: "11-tap Gaussian window sigma 1.5, population covariance (Wang et al. 2004)",
}
# SSIM multiplies fourth powers of the values (and of data_range): beyond this float64 overflows.
LIMIT = 1e75
# SSIM's local variances are E[x²] − E[x]², whose float64 rounding error (~eps·x²) must stay far below
# its constant C2 = (0.03·data_range)²: values beyond this many data ranges would give garbage.
SSIM_VALUE_LIMIT = 1e5


def _check(image, reference, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    image = np.asarray(image, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if image.shape != reference.shape:
        raise PairlessError(
            f"image shape {image.shape} differs from reference shape {reference.shape}; "
            "compare images of the same size (resample or crop one of them)"
        )
    if image.size == 0:
        raise PairlessError("the images are empty; pass images with at least one pixel")
    for name, array in (("image", image), ("reference", reference)):
        if not np.all(np.isfinite(array)):
            raise PairlessError(f"the {name} contains NaN or Inf values; replace them before measuring")
        if np.max(np.abs(array)) > LIMIT:
            raise PairlessError(
                f"the {name} has values up to {np.max(np.abs(array)):.3g}, too large to measure in float64 "
                f"(limit {LIMIT:g}); rescale both images and the data range"
            )
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != image.shape:
            raise PairlessError(
                f"mask shape {mask.shape} differs from the image shape {image.shape}; pass a mask of the"
                " image's size"
            )
        mask = mask.astype(bool)
        if not mask.any():
            raise PairlessError("the mask selects no pixel; pass a mask with at least one nonzero pixel")
    return image, reference, mask


def _check_range(data_range) -> float:
    if data_range is None or not np.isfinite(data_range) or not 0 < data_range <= LIMIT:
        raise PairlessError(
            f"data_range must be a positive number, got {data_range!r}; give the intensity range of the "
            "reference scale (e.g. 255 for 8-bit, 1.0 for [0, 1] images, or the reference's max - min)"
        )
    return float(data_range)


def _select(array: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return array if mask is None else array[mask]


def psnr(image, reference, *, data_range: float, mask=None) -> float:
    """Peak signal-to-noise ratio in dB: 10·log10(data_range² / MSE)."""
    image, reference, mask = _check(image, reference, mask)
    data_range = _check_range(data_range)
    mse = np.mean((_select(image, mask) - _select(reference, mask)) ** 2)
    # 20·log10(R) − 10·log10(MSE) is 10·log10(R²/MSE) without squaring a tiny R to 0
    return float("inf") if mse == 0 else float(20 * np.log10(data_range) - 10 * np.log10(mse))


def nrmse(image, reference, *, normalization: str = "euclidean", mask=None) -> float:
    """Root-mean-square error normalised by the reference.

    ``euclidean``: ‖x − r‖ / ‖r‖; ``min-max``: RMSE / (max r − min r); ``mean``: RMSE / mean r.
    """
    image, reference, mask = _check(image, reference, mask)
    if normalization not in NORMALIZATIONS:
        raise PairlessError(
            f"unknown NRMSE normalization {normalization!r}; use one of {', '.join(NORMALIZATIONS)}"
        )
    x, r = _select(image, mask), _select(reference, mask)
    rmse = np.sqrt(np.mean((x - r) ** 2))
    if normalization == "euclidean":
        denominator = np.sqrt(np.mean(r**2))
    elif normalization == "min-max":
        denominator = r.max() - r.min()
    else:
        denominator = r.mean()
    if denominator == 0:
        raise PairlessError(
            f"NRMSE with {normalization!r} normalization is undefined for this reference (its "
            f"{'norm' if normalization == 'euclidean' else normalization} is 0); choose another normalization"
        )
    return float(rmse / denominator)


def ssim(image, reference, *, data_range: float, gaussian: bool = False, mask=None) -> float:
    """Structural similarity (2D or 3D); ``gaussian`` selects Wang et al.'s window, else scikit-image's
    default."""
    from skimage.metrics import structural_similarity

    image, reference, mask = _check(image, reference, mask)
    data_range = _check_range(data_range)
    win = 11 if gaussian else 7
    if min(image.shape) < win:
        raise PairlessError(
            f"SSIM needs every image side to be at least {win} pixels (shape is {image.shape}); "
            "measure a larger region, or leave SSIM out (--metrics psnr,nrmse,si_psnr)"
        )
    peak = max(np.max(np.abs(image)), np.max(np.abs(reference)))
    if peak > SSIM_VALUE_LIMIT * data_range:
        raise PairlessError(
            f"SSIM cannot be computed reliably for values up to {peak:.4g} with data_range {data_range:g} "
            "(its local variances would be float64 rounding noise); pass the images' real intensity "
            "range as data_range"
        )
    options = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False) if gaussian else {}
    with np.errstate(all="ignore"):  # a data_range tiny next to the values underflows C1, C2: checked below
        mean, ssim_map = structural_similarity(reference, image, data_range=data_range, full=True, **options)
    if not np.all(np.isfinite(ssim_map)):
        raise PairlessError(
            f"SSIM is undefined here (data_range {data_range:g} is too small for float64 next to these "
            "values); pass the reference's real intensity range as data_range"
        )
    if mask is None:
        return float(mean)
    # scikit-image averages the map without its border (half a window), where the window is truncated.
    pad = (win - 1) // 2
    inner = np.zeros_like(mask)
    inner[tuple(slice(pad, s - pad) for s in mask.shape)] = True
    selected = mask & inner
    if not selected.any():
        raise PairlessError(
            f"the mask selects only border pixels, where SSIM is not defined (within {pad} pixels of the"
            " edge); use a mask that reaches into the image"
        )
    return float(ssim_map[selected].mean())


def si_psnr(image, reference, *, data_range: float, mask=None) -> float:
    """Scale-invariant PSNR: PSNR after the affine map a·x + b that best fits the reference (least squares).

    Self-supervised outputs may be offset or rescaled; this separates structure from calibration.
    A constant reference is refused: every image fits it exactly.
    """
    image, reference, mask = _check(image, reference, mask)
    x, r = _select(image, mask).ravel(), _select(reference, mask).ravel()
    if r.min() == r.max():
        raise PairlessError(
            "SI-PSNR is undefined for a constant reference (the affine fit matches any image to it exactly); "
            "leave it out (--metrics psnr,nrmse,ssim), or measure a region where the reference varies"
        )
    design = np.stack([x, np.ones_like(x)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, r, rcond=None)
    return psnr(a * x + b, r, data_range=data_range)


def image_metrics(
    image,
    reference,
    *,
    data_range: float,
    mask=None,
    normalization: str = "euclidean",
    gaussian: bool = False,
    metrics: Sequence[str] = METRICS,
) -> dict:
    """The ``metrics`` (by default all of :data:`METRICS`) and the conventions used, as one JSON dict."""
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown or not metrics:
        raise PairlessError(
            f"unknown metrics {', '.join(unknown) or '(none given)'}; choose among {', '.join(METRICS)}"
        )
    compute = {
        "psnr": lambda: psnr(image, reference, data_range=data_range, mask=mask),
        "nrmse": lambda: nrmse(image, reference, normalization=normalization, mask=mask),
        "ssim": lambda: ssim(image, reference, data_range=data_range, gaussian=gaussian, mask=mask),
        "si_psnr": lambda: si_psnr(image, reference, data_range=data_range, mask=mask),
    }
    return {
        **{name: compute[name]() for name in METRICS if name in metrics},
        "conventions": {
            "data_range": float(data_range),
            "nrmse_normalization": normalization,
            "ssim_window": SSIM_WINDOWS[gaussian],
            "mask": "none" if mask is None else f"{int(np.count_nonzero(mask))} pixels",
        },
    }
