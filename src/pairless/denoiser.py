"""The call shape every denoiser shares, classical or learned (after deepinv's ``models/base.py``).

A denoiser is a :class:`torch.nn.Module` called as ``denoiser(y, sigma=None)`` on a float tensor of
shape ``(B, 1, *spatial)`` with 2 or 3 spatial dimensions and returns a tensor of the same shape,
in the same intensity units.  ``sigma`` is the noise level where a method can use it and is
ignored otherwise.  :func:`denoise_array` applies any denoiser to an image with an axes string,
so the command line, the experiments and users' scripts treat all methods alike.
"""

from __future__ import annotations

import numpy as np
import torch

from pairless.errors import PairlessError

SPATIAL = "ZYX"


class Denoiser(torch.nn.Module):
    """Base class. Subclasses implement :meth:`forward`.

    ``spatial_ndim`` is the number of spatial dimensions the denoiser works in: 2 for a 2D network
    (a ZYX volume is then denoised slice by slice), 3 for a 3D network, ``None`` when it adapts
    to whatever the image has (classical filters).
    """

    spatial_ndim: int | None = None

    def forward(self, y: torch.Tensor, sigma: float | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def denoise_array(
    image: np.ndarray, denoiser: Denoiser, *, axes: str, sigma: float | None = None
) -> np.ndarray:
    """Denoise ``image`` whose dimensions are named by ``axes`` (e.g. ``"YX"``, ``"ZYX"``, ``"SYX"``).

    Non-spatial axes (S, T, C) and, for a 2D denoiser, Z are treated as independent images.
    Returns a float32 array of the input's shape.  Denoisers compute in float32, so an image with
    NaN/Inf or values beyond float32's range is refused rather than denoised into Inf/NaN.
    """
    from pairless.io import validate_axes

    image = np.asarray(image)
    if len(axes) != image.ndim:
        raise PairlessError(
            f"axes {axes!r} names {len(axes)} dimensions but the image has {image.ndim} "
            f"(shape {image.shape}); pass an axes string with one letter per dimension"
        )
    axes = validate_axes(axes, image.ndim, end_in_yx=False)
    if image.size == 0:
        raise PairlessError(f"the image is empty (shape {image.shape}); pass an image with pixels")
    if image.dtype.kind not in "buif":
        raise PairlessError(f"images of type {image.dtype} cannot be denoised; pass integers or real floats")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow shows up as Inf, refused below
        values = np.asarray(image, dtype=np.float32)
    if not np.all(np.isfinite(values)):
        raise PairlessError(
            "the image has NaN/Inf values or values beyond float32's range (±3.4e38); replace or "
            "rescale them (e.g. numpy.nan_to_num) before denoising"
        )
    spatial = worked_axes(axes, denoiser)
    batch = [a for a in axes if a not in spatial]
    order = [axes.index(a) for a in batch + spatial]
    moved = np.transpose(values, order)
    spatial_shape = moved.shape[len(batch) :]
    flat = np.ascontiguousarray(moved.reshape(-1, 1, *spatial_shape))
    with torch.no_grad():
        out = denoiser(torch.from_numpy(flat), sigma=sigma).numpy()
    if not np.all(np.isfinite(out)):
        raise PairlessError(
            "the denoiser produced NaN/Inf values (a diverged or corrupt model); retrain it or use "
            "another method"
        )
    out = out.reshape(moved.shape)
    return np.ascontiguousarray(np.transpose(out, np.argsort(order)), dtype=np.float32)


def worked_axes(axes: str, denoiser: Denoiser) -> list[str]:
    """The axes ``denoiser`` works across: the last ``spatial_ndim`` of Z, Y, X (all of them for a filter).

    Every other axis of ``axes`` holds separate images.
    """
    spatial = [a for a in axes if a in SPATIAL]
    ndim = denoiser.spatial_ndim
    if ndim is not None and len(spatial) < ndim:
        raise PairlessError(
            f"this denoiser works on {ndim}D images but axes {axes!r} have only {len(spatial)} "
            f"spatial axes; use a {len(spatial)}D model or pass a volume with axes ZYX"
        )
    return spatial[-ndim:] if ndim is not None else spatial
