"""The best linear filter fitted with clean/noisy pairs: a ceiling for filters, a floor for networks.

A finite-impulse-response filter ``h`` of a given support (rows × columns) and an offset are fitted
to aligned pairs by least squares,

    min_h  Σ_images Σ_pixels ( Σ_k h_k (x - x̄)(p + k) + ȳ - y(p) )²,

through the Wiener–Hopf normal equations ``R h = r``: ``R`` is the block-Toeplitz matrix of the
noisy images' autocorrelation at lags within the support and ``r`` their cross-correlation with
the clean images, both summed over the pairs (the "autocorrelation method": sums over the pixels
two shifted copies share, so ``R`` is positive semi-definite).  No linear shift-invariant filter of
that support does better in mean squared error on the training pairs; a network trained on the
same pairs that does not beat it has not learned what the pairs can teach.

The support should reach as far as the noise is correlated: EM scan streaks are correlated over
tens of pixels along x, hence the wide default.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg, signal

from pairless.denoiser import Denoiser
from pairless.errors import PairlessError


class LinearFilter(Denoiser):
    """``(x - x̄) ⋆ h + ȳ`` with reflected borders; ``kernel`` is ``(rows, cols)`` (both odd)."""

    spatial_ndim = 2

    def __init__(self, kernel: np.ndarray, *, noisy_mean: float, clean_mean: float):
        super().__init__()
        self.kernel = np.asarray(kernel, dtype=np.float64)
        self.noisy_mean, self.clean_mean = float(noisy_mean), float(clean_mean)

    def apply(self, image: np.ndarray) -> np.ndarray:
        ry, rx = (s // 2 for s in self.kernel.shape)
        padded = np.pad(np.asarray(image, np.float64) - self.noisy_mean, ((ry, ry), (rx, rx)), mode="reflect")
        return (
            signal.fftconvolve(padded, self.kernel[::-1, ::-1], mode="valid") + self.clean_mean
        )  # ⋆ = correlation

    def forward(self, y: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        flat = y.detach().cpu().numpy().reshape(-1, *y.shape[-2:])
        out = np.stack([self.apply(im) for im in flat]).reshape(y.shape)
        return torch.from_numpy(out).to(y.dtype)


def fit_linear_filter(
    noisy: list[np.ndarray],
    clean: list[np.ndarray],
    *,
    support: tuple[int, int] = (21, 101),
    ridge: float = 1e-6,
) -> LinearFilter:
    """Least-squares FIR filter of ``support`` (odd rows, odd columns) from aligned 2D pairs.

    ``ridge`` is relative to the noisy images' variance; it only matters when a pair set is too
    small or too smooth to pin every tap down.
    """
    ky, kx = support
    if ky % 2 == 0 or kx % 2 == 0 or ky < 1 or kx < 1:
        raise PairlessError(f"the filter support {support} must be two odd sizes, e.g. (21, 101)")
    if len(noisy) != len(clean) or not noisy:
        raise PairlessError(
            f"the linear filter needs the same non-zero number of noisy and clean images (got {len(noisy)} "
            f"and {len(clean)}); pass one clean image per noisy image, in the same order"
        )
    for i, (x, y) in enumerate(zip(noisy, clean)):
        if np.shape(x) != np.shape(y) or np.ndim(x) != 2:
            raise PairlessError(
                f"pair {i}: noisy {np.shape(x)} and clean {np.shape(y)} must be the same 2D shape"
            )
        if min(np.shape(x)) < max(ky, kx) // 2 + 1:
            raise PairlessError(
                f"pair {i} ({np.shape(x)}) is smaller than the filter's reach {support}; "
                "use larger images or a smaller support"
            )
    xm = float(np.mean([np.mean(x) for x in noisy]))
    ym = float(np.mean([np.mean(y) for y in clean]))
    ry, rx = ky // 2, kx // 2
    auto = np.zeros((4 * ry + 1, 4 * rx + 1))  # lags -2r..2r: differences of two support offsets
    cross = np.zeros((2 * ry + 1, 2 * rx + 1))
    for x, y in zip(noisy, clean):
        x = np.asarray(x, np.float64) - xm
        y = np.asarray(y, np.float64) - ym
        auto += _correlation(x, x, 2 * ry, 2 * rx)
        cross += _correlation(x, y, ry, rx)
    # R[a, b] = Σ_p x(p + a) x(p + b) = auto(b - a); r[a] = Σ_p x(p + a) y(p) = cross(a)
    dy, dx = np.meshgrid(np.arange(-ry, ry + 1), np.arange(-rx, rx + 1), indexing="ij")
    dy, dx = dy.ravel(), dx.ravel()
    R = auto[(dy[None, :] - dy[:, None]) + 2 * ry, (dx[None, :] - dx[:, None]) + 2 * rx]
    r = cross[dy + ry, dx + rx]
    R[np.diag_indices_from(R)] += ridge * auto[2 * ry, 2 * rx]
    h = linalg.solve(R, r, assume_a="pos")
    return LinearFilter(h.reshape(ky, kx), noisy_mean=xm, clean_mean=ym)


def _correlation(x: np.ndarray, y: np.ndarray, ly: int, lx: int) -> np.ndarray:
    """c[a] = Σ_p x(p + a)·y(p) for lags |a_y| ≤ ly, |a_x| ≤ lx (zero outside the image), by FFT."""
    h, w = x.shape
    full = signal.fftconvolve(x, y[::-1, ::-1], mode="full")  # index (h-1, w-1) is lag 0
    out = np.zeros((2 * ly + 1, 2 * lx + 1))  # lags beyond the image share no pixels: zero
    cy, cx = min(ly, h - 1), min(lx, w - 1)
    out[ly - cy : ly + cy + 1, lx - cx : lx + cx + 1] = full[h - 1 - cy : h + cy, w - 1 - cx : w + cx]
    return out
