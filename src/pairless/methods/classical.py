"""Classical denoisers with the same call shape as the learned ones.

Each filter is a :class:`~pairless.denoiser.Denoiser`; it filters every image of the batch in
all its spatial dimensions (2D or 3D) with scipy / scikit-image.  With ``auto=True`` the filter's
parameter is chosen per image without clean data by J-invariance (Noise2Self; scikit-image's
``calibrate_denoiser``): the parameter minimising the self-supervised loss wins.

With ``vst=True`` (nlm and bm3d) signal-dependent noise is handled the way Mäkitalo & Foi (2013)
do for BM3D: per image, a Poisson–Gaussian model ``Var = a·signal + b`` is fitted without clean
data (:func:`pairless.noise.fit_poisson_gaussian`), the generalized Anscombe transform makes the
noise ≈ N(0, 1), the filter runs with noise σ = 1 ("σ known" after the VST; J-invariance tunes it in
the stabilised domain with ``auto``), and the closed-form unbiased inverse maps the result back.
Without ``vst`` and without ``sigma``, nlm and bm3d estimate the Gaussian σ from the image ("σ
known" filters run blind, as scikit-image's NL-means examples do with ``estimate_sigma``): by the
Gaussian fit of :func:`pairless.noise.fit_poisson_gaussian` (local variances of Haar detail
coefficients on smooth regions), which textured images bias less than the wavelet MAD of
``estimate_sigma`` (camera σ = 10/255: 10.15 vs 11.19, NL-means +0.5 dB); images too small or too
textured for the fit fall back to ``estimate_sigma``.

BM3D also takes spatially correlated noise by its power spectral density (``psd``, Mäkinen, Azzari & Foi
2020; :mod:`pairless.noise_psd`): ``psd="auto"`` estimates it from the noisy images to denoise and, when
given, an unpaired clean set of the same kind of images (their spectra differ by the noise's; the
noise's mean is subtracted too), or else from the noisy images' flat background.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterable

import numpy as np
import torch
from scipy import ndimage

from pairless.denoiser import Denoiser
from pairless.errors import PairlessError
from pairless.noise import PoissonGaussian
from pairless.noise_psd import NoisePSD

METHODS = ("gaussian", "median", "nlm", "bm3d")
_STRIDE = 4  # scikit-image's calibrate_denoiser default
BM3D_MIN_SIDE = 16
MAX_BLUR_PIXELS = 1e4  # a wider Gaussian averages any image to its mean; scipy's kernel length overflows
VST_METHODS = ("nlm", "bm3d")


class ClassicalDenoiser(Denoiser):
    """A filter ``fn(image, **params)`` on numpy arrays, tuned by J-invariance when ``auto``."""

    spatial_ndim = None

    def __init__(
        self,
        fn: Callable[..., np.ndarray],
        params: dict,
        grid: Callable[[np.ndarray], dict],
        *,
        auto: bool,
        vst: bool = False,
        noise: PoissonGaussian | None = None,
    ):
        super().__init__()
        self.fn, self.params, self.grid, self.auto = fn, params, grid, auto
        self.vst, self.noise = vst, noise
        self.chosen: list[dict] = []  # the parameters used per image of the last call
        self.noise_models: list[PoissonGaussian] = []  # with vst: the model used per image of the last call

    def forward(self, y: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        images = y.detach().to("cpu", torch.float32).numpy()
        _check_noise_sigma(self.params.get("noise_sigma"), images)
        out = np.empty_like(images)
        self.chosen, self.noise_models = [], []
        for i, image in enumerate(images[:, 0]):
            if self.vst:
                out[i, 0] = self._vst_filter(image)
                continue
            params = self._calibrate(image) if self.auto else self.params
            out[i, 0] = self.fn(image, **params)
            self.chosen.append(params)
        return torch.from_numpy(out).to(y.device, y.dtype)

    def _vst_filter(self, image: np.ndarray) -> np.ndarray:
        """Fit (a, b), stabilise, filter with noise σ = 1, invert without bias (Mäkitalo & Foi 2013)."""
        from pairless.noise import fit_poisson_gaussian, gat, gat_inverse

        model = self.noise if self.noise is not None else fit_poisson_gaussian(image)
        stabilised = gat(image, model)
        # shift to a minimum of 0 as Mäkitalo & Foi's VST-BM3D code does (it scales to [0, 1]): the
        # filters are shift-equivariant, and a Gaussian fit's z/√b or a tiny a's 2√b/a offset stays small
        low = float(stabilised.min())
        shifted = (stabilised - low).astype(np.float32)
        params = (
            self._calibrate(shifted, base_sigma=1.0) if self.auto else {**self.params, "noise_sigma": 1.0}
        )
        filtered = self.fn(shifted, **params).astype(np.float64) + low
        self.chosen.append(params)
        self.noise_models.append(model)
        return gat_inverse(filtered, model).astype(np.float32)

    def _calibrate(self, image: np.ndarray, base_sigma: float | None = None) -> dict:
        from skimage.restoration import calibrate_denoiser

        if min(image.shape) < _STRIDE:  # the self-supervised loss is measured on a stride-4 grid
            raise PairlessError(
                f"--auto needs at least {_STRIDE} pixels along every axis to tune itself, but this "
                f"image is {'×'.join(map(str, image.shape))}; set --sigma/--size instead (or --axes SYX "
                "for thin stacks)"
            )
        grid = self.grid(image) if base_sigma is None else self.grid(image, base=base_sigma)
        if self.fn is nlm and "noise_sigma" not in grid:  # nlm tunes h; σ is estimated once (1 after the VST)
            grid = {**grid, "noise_sigma": [base_sigma if base_sigma is not None else _noise_sigma(image)]}
        # float64 so that the self-supervised MSE of large intensities does not overflow to Inf
        _, (parameters, losses) = calibrate_denoiser(
            image.astype(np.float64), self.fn, denoise_parameters=grid, extra_output=True
        )
        return parameters[int(np.argmin(losses))]


def _check_noise_sigma(sigma: float | None, image: np.ndarray) -> None:
    """A noise σ beyond ten times the images' whole range is a mistake (a unit mix-up), not a noise level."""
    spread = float(np.max(image)) - float(np.min(image))
    if sigma is not None and sigma > 10 * max(spread, float(np.finfo(np.float32).tiny)):
        raise PairlessError(
            f"--sigma {sigma:g} is far beyond the image's values (range {spread:.4g}); give the noise σ in "
            f"the image's units, or leave --sigma out to estimate it"
        )


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

    noise_sigma = _noise_sigma(image) if noise_sigma is None else noise_sigma
    h = 0.8 * noise_sigma if h is None else h
    out = denoise_nl_means(image, h=h, sigma=noise_sigma, patch_size=5, patch_distance=6, fast_mode=True)
    return out.astype(np.float32).reshape(image.shape)  # scikit-image squeezes 1-pixel axes away


def bm3d(image: np.ndarray, *, noise_sigma: float | None = None, psd: NoisePSD | None = None) -> np.ndarray:
    """BM3D (optional extra ``pairless[bm3d]``, non-commercial licence); 3D images slice by slice.

    With ``psd`` the noise is coloured: the image minus the noise's mean is filtered with that PSD on the
    image's own DFT grid, and BM3D's thresholds are matched to the PSD's shape (its ``profile="np"``).
    """
    try:
        import bm3d as bm3d_lib
    except ImportError:
        raise PairlessError(
            "BM3D needs the optional package 'bm3d'; install it with `pip install 'pairless[bm3d]'`"
        ) from None
    if image.ndim == 3:
        if psd is not None:
            return np.stack([bm3d(s, psd=psd) for s in image])
        noise_sigma = _noise_sigma(image) if noise_sigma is None else noise_sigma  # one σ for the volume
        return np.stack([bm3d(s, noise_sigma=noise_sigma) for s in image])
    if min(image.shape) < BM3D_MIN_SIDE:  # the bm3d package raises below its 8-pixel block and crashes at 8×8
        raise PairlessError(
            f"BM3D needs images of at least {BM3D_MIN_SIDE}×{BM3D_MIN_SIDE} pixels, but this one is "
            f"{'×'.join(map(str, image.shape))}; use gaussian, median or nlm for images this small"
        )
    if psd is not None:
        with _numpy_trapz():
            out = bm3d_lib.bm3d(image - psd.offset, sigma_psd=psd.bm3d_psd(image.shape))
        return np.asarray(out, dtype=np.float32)
    noise_sigma = _noise_sigma(image) if noise_sigma is None else noise_sigma
    return np.asarray(bm3d_lib.bm3d(image, sigma_psd=noise_sigma), dtype=np.float32)


@contextlib.contextmanager
def _numpy_trapz():
    """bm4d 4.2.5 (the newest release) calls ``np.trapz``, which numpy 2 removed, when it matches BM3D's
    thresholds to a PSD's shape; lend it ``np.trapezoid`` (the same function) for that call only."""
    lent = not hasattr(np, "trapz")
    if lent:
        np.trapz = np.trapezoid
    try:
        yield
    finally:
        if lent:
            del np.trapz


def _noise_sigma(image: np.ndarray) -> float:
    """The Gaussian noise σ of an image: the Gaussian noise fit where the image allows one, else
    scikit-image's wavelet estimate (tiny, constant or all-texture images)."""
    from pairless.noise import fit_poisson_gaussian

    try:
        return fit_poisson_gaussian(image, model="gaussian").sigma
    except PairlessError:
        return _estimate_sigma(image)


def _estimate_sigma(image: np.ndarray) -> float:
    """The noise σ by scikit-image's wavelet estimate; 0 for images too small to estimate it from."""
    from pairless.noise import estimate_sigma

    return estimate_sigma(image)


def _sigma_scaled(image: np.ndarray, key: str, factors: tuple[float, ...], base: float | None = None) -> dict:
    base = max(_estimate_sigma(image), 1e-12) if base is None else base
    return {key: [f * base for f in factors]}


_GRIDS: dict[str, Callable[..., dict]] = {
    "gaussian": lambda image, base=None: {"sigma": [0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0]},
    "median": lambda image, base=None: {"size": [3, 5, 7]},
    "nlm": functools.partial(_sigma_scaled, key="h", factors=(0.4, 0.6, 0.8, 1.0, 1.2)),
    "bm3d": functools.partial(_sigma_scaled, key="noise_sigma", factors=(0.5, 0.75, 1.0, 1.25, 1.5)),
}
_FUNCTIONS = {"gaussian": gaussian, "median": median, "nlm": nlm, "bm3d": bm3d}


def make_classical(
    name: str,
    *,
    sigma: float | None = None,
    size: int | None = None,
    auto: bool = False,
    vst: bool = False,
    noise: PoissonGaussian | None = None,
    psd: NoisePSD | None = None,
) -> ClassicalDenoiser:
    """Build a classical denoiser by name.

    ``sigma`` is the Gaussian's σ in pixels, or the noise σ (image units) for nlm and bm3d;
    ``size`` is the median filter's width in pixels.  ``auto`` tunes them per image instead.
    ``vst`` (nlm, bm3d) filters after a generalized Anscombe transform with a Poisson–Gaussian model
    fitted per image, or the given ``noise`` model, and inverts it without bias.
    ``psd`` (bm3d) is the correlated noise's model (:func:`noise_model`).
    """
    if name not in _FUNCTIONS:
        raise PairlessError(f"unknown method {name!r}; use one of {', '.join(METHODS)} or a model folder")
    if noise is not None and not vst:
        raise PairlessError(
            "a noise model is used by the variance-stabilised path only; pass vst=True with it"
        )
    if vst and name not in VST_METHODS:
        raise PairlessError(
            f"--vst works with {' and '.join(VST_METHODS)} (filters that take the noise σ), not {name}; "
            "drop --vst or use nlm/bm3d"
        )
    if vst and sigma is not None:
        raise PairlessError(
            "--sigma and --vst exclude each other: after the variance-stabilising transform the noise σ is 1 "
            "by construction; drop --sigma (the noise model is fitted from each image)"
        )
    if sigma is not None and not 0 < sigma < float("inf"):
        raise PairlessError(f"--sigma must be a positive finite number, got {sigma}")
    if name == "gaussian" and sigma is not None and sigma > MAX_BLUR_PIXELS:
        raise PairlessError(
            f"--sigma {sigma:g} is the Gaussian's width in pixels, far beyond any image; give at most "
            f"{MAX_BLUR_PIXELS:g} pixels"
        )
    if size is not None and size < 1:
        raise PairlessError(f"--size must be a positive number of pixels, got {size}")
    if psd is not None:
        noise_model(name, psd, sigma=sigma, auto=auto, vst=vst)  # the same checks
        return ClassicalDenoiser(bm3d, {"psd": psd}, _GRIDS[name], auto=False)
    params: dict = {}
    if name == "gaussian" and sigma is not None:
        params["sigma"] = sigma
    elif name in ("nlm", "bm3d") and sigma is not None:
        params["noise_sigma"] = sigma
    if name == "median" and size is not None:
        params["size"] = size
    return ClassicalDenoiser(_FUNCTIONS[name], params, _GRIDS[name], auto=auto, vst=vst, noise=noise)


def noise_model(
    name: str,
    psd: NoisePSD | str | None,
    *,
    noisy: Iterable | None = None,
    clean=None,
    sigma: float | None = None,
    auto: bool = False,
    vst: bool = False,
) -> NoisePSD | None:
    """The correlated-noise model of filter ``name``: ``psd`` as given, or ``"auto"``: estimated from
    ``noisy`` (the images to denoise: arrays or files) and ``clean`` (an unpaired clean set: a folder,
    files or arrays), or without ``clean`` from the noisy images' flat background; ``None`` without
    ``psd``."""
    from pairless import noise_psd

    if psd is None:
        if clean is not None:
            raise PairlessError(
                "--psd-clean is the clean set of --psd auto; add --psd auto (bm3d) or drop it"
            )
        return None
    if name != "bm3d":
        raise PairlessError(f"--psd is for bm3d (colour-noise BM3D), not {name}; drop --psd or use bm3d")
    if sigma is not None or auto or vst:
        raise PairlessError(
            "--psd sets the noise (its whole spectrum): drop --sigma, --auto and --vst, which set it "
            "otherwise"
        )
    if isinstance(psd, NoisePSD):
        return psd
    if psd != "auto":
        raise PairlessError(f"--psd takes 'auto' (estimate the noise spectrum), not {psd!r}")
    if noisy is None:
        raise PairlessError(
            "--psd auto estimates the noise from the images to denoise; pass them (psd_noisy=...)"
        )
    if clean is None:
        return noise_psd.from_background(_arrays(noisy))
    return noise_psd.from_sets(_arrays(noisy), _arrays(clean))


def _arrays(source) -> Iterable[np.ndarray]:
    """Images one at a time from a folder, image files or arrays (a single array is one image)."""
    from pairless.io import read_image
    from pairless.io.folders import read_slices

    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        yield from read_slices(source, "psd-clean")
        return
    for item in [source] if isinstance(source, (np.ndarray, str, os.PathLike)) else source:
        yield read_image(item).data if isinstance(item, (str, os.PathLike)) else np.asarray(item)
