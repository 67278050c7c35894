"""Classical denoisers with the same call shape as the learned ones.

Each filter is a :class:`~pairless.denoiser.Denoiser`; it filters every image of the batch in
all its spatial dimensions (2D or 3D) with scipy / scikit-image.  With ``auto=True`` the filter's
parameter is chosen per image without clean data by J-invariance (Noise2Self; scikit-image's
``calibrate_denoiser``): the parameter minimising the self-supervised loss wins.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage

from pairless.denoiser import Denoiser
from pairless.errors import PairlessError

METHODS = ("gaussian", "median", "nlm", "bm3d")
_STRIDE = 4  # scikit-image's calibrate_denoiser default
BM3D_MIN_SIDE = 16


class ClassicalDenoiser(Denoiser):
    """A filter ``fn(image, **params)`` on numpy arrays, tuned by J-invariance when ``auto``."""

    spatial_ndim = None

    def __init__(self, fn: Callable[..., np.ndarray], params: dict, grid: Callable[[np.ndarray], dict], *, auto: bool):
        super().__init__()
        self.fn, self.params, self.grid, self.auto = fn, params, grid, auto
        self.chosen: list[dict] = []  # the parameters used per image of the last call

    def forward(self, y: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        images = y.detach().to("cpu", torch.float32).numpy()
        out = np.empty_like(images)
        self.chosen = []
        for i, image in enumerate(images[:, 0]):
            params = self._calibrate(image) if self.auto else self.params
            out[i, 0] = self.fn(image, **params)
            self.chosen.append(params)
        return torch.from_numpy(out).to(y.device, y.dtype)

    def _calibrate(self, image: np.ndarray) -> dict:
        from skimage.restoration import calibrate_denoiser

        if min(image.shape) < _STRIDE:  # the self-supervised loss is measured on a stride-4 grid
            raise PairlessError(
                f"--auto needs at least {_STRIDE} pixels along every axis to tune itself, but this "
                f"image is {'×'.join(map(str, image.shape))}; set --sigma/--size instead (or --axes SYX "
                f"for thin stacks)"
            )
        grid = self.grid(image)
        # float64 so that the self-supervised MSE of large intensities does not overflow to Inf
        _, (parameters, losses) = calibrate_denoiser(
            image.astype(np.float64), self.fn, denoise_parameters=grid, extra_output=True
        )
        return parameters[int(np.argmin(losses))]


def gaussian(image: np.ndarray, *, sigma: float = 1.0) -> np.ndarray:
    # scipy's kernel reaches 4σ; past a few image widths the reflected image only repeats, so a huge
    # σ stops there instead of allocating a kernel longer than memory
    radius = int(min(4.0 * sigma, 4.0 * max(image.shape)) + 0.5)
    return ndimage.gaussian_filter(image, sigma=sigma, mode="reflect", radius=radius)


def median(image: np.ndarray, *, size: int = 3) -> np.ndarray:
    if size > 2 * max(image.shape) + 1:  # the window's footprint (size**ndim) would be allocated
        raise PairlessError(
            f"--size {size} is far wider than the image ({'×'.join(map(str, image.shape))}); "
            f"choose a median width of at most {2 * max(image.shape) + 1} pixels"
        )
    return ndimage.median_filter(image, size=size, mode="reflect")


def nlm(image: np.ndarray, *, h: float | None = None, noise_sigma: float | None = None) -> np.ndarray:
    """Non-local means; ``h`` defaults to 0.8 × the noise σ, estimated from the image when not given."""
    from skimage.restoration import denoise_nl_means

    noise_sigma = _estimate_sigma(image) if noise_sigma is None else noise_sigma
    h = 0.8 * noise_sigma if h is None else h
    out = denoise_nl_means(image, h=h, sigma=noise_sigma, patch_size=5, patch_distance=6, fast_mode=True)
    return out.astype(np.float32).reshape(image.shape)  # scikit-image squeezes 1-pixel axes away


def bm3d(image: np.ndarray, *, noise_sigma: float | None = None) -> np.ndarray:
    """BM3D (optional extra ``pairless[bm3d]``, non-commercial licence); 3D images slice by slice."""
    try:
        import bm3d as bm3d_lib
    except ImportError:
        raise PairlessError(
            "BM3D needs the optional package 'bm3d'; install it with `pip install 'pairless[bm3d]'`"
        ) from None
    if image.ndim == 3:
        return np.stack([bm3d(s, noise_sigma=noise_sigma) for s in image])
    if min(image.shape) < BM3D_MIN_SIDE:  # the bm3d package raises below its 8-pixel block and crashes at 8×8
        raise PairlessError(
            f"BM3D needs images of at least {BM3D_MIN_SIDE}×{BM3D_MIN_SIDE} pixels, but this one is "
            f"{'×'.join(map(str, image.shape))}; use gaussian, median or nlm for images this small"
        )
    noise_sigma = _estimate_sigma(image) if noise_sigma is None else noise_sigma
    return np.asarray(bm3d_lib.bm3d(image, sigma_psd=noise_sigma), dtype=np.float32)


def _estimate_sigma(image: np.ndarray) -> float:
    """The noise σ by scikit-image's wavelet estimate; 0 for images too small to estimate it from."""
    from skimage.restoration import estimate_sigma

    with warnings.catch_warnings():  # tiny images warn (channel axis? empty slice) and give NaN
        warnings.simplefilter("ignore")
        sigma = float(estimate_sigma(image))
    return sigma if np.isfinite(sigma) else 0.0


def _sigma_scaled(image: np.ndarray, key: str, factors: tuple[float, ...]) -> dict:
    base = max(_estimate_sigma(image), 1e-12)
    return {key: [f * base for f in factors]}


_GRIDS: dict[str, Callable[[np.ndarray], dict]] = {
    "gaussian": lambda image: {"sigma": [0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0]},
    "median": lambda image: {"size": [3, 5, 7]},
    "nlm": functools.partial(_sigma_scaled, key="h", factors=(0.4, 0.6, 0.8, 1.0, 1.2)),
    "bm3d": functools.partial(_sigma_scaled, key="noise_sigma", factors=(0.5, 0.75, 1.0, 1.25, 1.5)),
}
_FUNCTIONS = {"gaussian": gaussian, "median": median, "nlm": nlm, "bm3d": bm3d}


def make_classical(
    name: str, *, sigma: float | None = None, size: int | None = None, auto: bool = False
) -> ClassicalDenoiser:
    """Build a classical denoiser by name.

    ``sigma`` is the Gaussian's σ in pixels, or the noise σ (image units) for nlm and bm3d;
    ``size`` is the median filter's width in pixels.  ``auto`` tunes them per image instead.
    """
    if name not in _FUNCTIONS:
        raise PairlessError(f"unknown method {name!r}; use one of {', '.join(METHODS)} or a model folder")
    if sigma is not None and not 0 < sigma < float("inf"):
        raise PairlessError(f"--sigma must be a positive finite number, got {sigma}")
    if size is not None and size < 1:
        raise PairlessError(f"--size must be a positive number of pixels, got {size}")
    params: dict = {}
    if name == "gaussian" and sigma is not None:
        params["sigma"] = sigma
    elif name in ("nlm", "bm3d") and sigma is not None:
        params["noise_sigma"] = sigma
    if name == "median" and size is not None:
        params["size"] = size
    return ClassicalDenoiser(_FUNCTIONS[name], params, _GRIDS[name], auto=auto)
