"""The image type pairless reads and writes, its axes, and the value checks every format shares.

``axes`` use the letters S (sample), T (time), C (channel), Z, Y, X, each once, ending in ``YX``;
``voxel_size`` is in mm per spatial axis present; ``affine`` follows nibabel (voxel (X, Y, Z) to
RAS+ mm).  What a format reader returns (:class:`RawImage`) becomes an :class:`Image` through
:func:`check_values` and :func:`standard_layout`; what a writer stores goes through :func:`cast`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pairless.errors import PairlessError

AXES_LETTERS = "STCZYX"
SPATIAL = "ZYX"
AXES_HINT = "use letters from STCZYX, each once, ending in YX, e.g. YX, ZYX, CYX or TZYX"
UNIT_MM = {
    "mm": 1.0,
    "millimeter": 1.0,
    "millimetre": 1.0,
    "cm": 10.0,
    "centimeter": 10.0,
    "m": 1000.0,
    "meter": 1000.0,
    "um": 1e-3,
    "µm": 1e-3,
    "μm": 1e-3,
    "\\u00b5m": 1e-3,
    "micron": 1e-3,
    "microns": 1e-3,
    "micrometer": 1e-3,
    "nm": 1e-6,
    "nanometer": 1e-6,
    "inch": 25.4,
}
OVERSHOOT = 0.05  # fraction of an integer dtype's range that is clipped rather than refused
# DICOM tags copied from the input so that the written series sits in the same patient and study.


def validate_axes(axes: str, ndim: int, *, end_in_yx: bool = True) -> str:
    """Return ``axes`` upper-cased after checking it names ``ndim`` dimensions and ends in YX.

    ``end_in_yx=False`` accepts Y and X anywhere (a layout as stored, or for :func:`denoise_array`).

    Raises
    ------
    PairlessError
        Naming the bad string and how to write a good one.
    """
    problem = axes_problem(str(axes).upper(), ndim, end_in_yx=end_in_yx)
    if problem:
        raise PairlessError(f"axes {axes!r} {problem}: {AXES_HINT}")
    return str(axes).upper()


def axes_problem(axes: str, ndim: int, *, end_in_yx: bool) -> str | None:
    unknown = sorted(set(axes) - set(AXES_LETTERS))
    if unknown:
        return f"has unknown letters {''.join(unknown)!r}"
    if len(set(axes)) != len(axes):
        return "repeats a letter"
    if end_in_yx and not axes.endswith("YX"):
        return "does not end in YX"
    if not {"Y", "X"} <= set(axes):
        return "lacks Y or X"
    if len(axes) != ndim:
        return f"has {len(axes)} letters but the image has {ndim} dimensions"
    return None


@dataclass(frozen=True, eq=False)
class Image:
    """An image array with named axes and the geometry needed to write it back faithfully.

    Attributes
    ----------
    data : numpy.ndarray
        The values, in the dtype they were stored with.
    axes : str
        One letter per dimension from STCZYX, ending in YX.
    voxel_size : tuple of float or None
        mm per spatial axis present, in axes order.
    affine : numpy.ndarray or None
        4×4 voxel (X, Y, Z) to RAS+ mm matrix (nibabel's convention).
    source : Path or None
        The file or folder the image was read from.
    meta : dict
        Format extras (NIfTI header, DICOM tags and slice positions, stored dtype).
    """

    data: np.ndarray
    axes: str
    voxel_size: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    source: Path | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "axes", validate_axes(self.axes, np.ndim(self.data)))
        if self.voxel_size is not None:
            size = tuple(float(v) for v in self.voxel_size)
            if len(size) != len(self.spatial_axes) or not all(np.isfinite(v) and v > 0 for v in size):
                raise PairlessError(
                    f"voxel_size {self.voxel_size} does not give one positive size per spatial axis "
                    f"of {self.axes!r}; pass {len(self.spatial_axes)} sizes in mm, or None"
                )
            object.__setattr__(self, "voxel_size", size)
        if self.affine is not None:
            affine = np.asarray(self.affine, dtype=np.float64)
            if affine.shape != (4, 4):
                raise PairlessError(f"affine has shape {affine.shape}; pass a 4×4 matrix or None")
            object.__setattr__(self, "affine", affine)

    @property
    def spatial_axes(self) -> str:
        """The spatial letters (Z, Y, X) of ``axes``, in order."""
        return "".join(a for a in self.axes if a in SPATIAL)

    def with_data(self, array: np.ndarray) -> Image:
        """Return a new image holding ``array`` with this one's axes and geometry.

        The new image has no ``source``; the input it derives from is remembered in
        ``meta["origin"]`` so that :func:`write_image` still refuses to overwrite it.
        """
        array = np.asarray(array)
        if array.shape != self.data.shape:
            raise PairlessError(
                f"new data has shape {array.shape} but the image is {self.data.shape} ({self.axes}); "
                "pass an array of the same shape"
            )
        origin = self.source if self.source is not None else self.meta.get("origin")
        meta = {**self.meta, "origin": origin} if origin is not None else dict(self.meta)
        return replace(self, data=array, source=None, meta=meta)


class RawImage(NamedTuple):
    data: np.ndarray
    axes: str
    voxel: dict[str, float]  # mm by spatial letter, only those known
    affine: np.ndarray | None
    meta: dict
    source: Path
    fixed_axes: bool  # the format defines the axes (NIfTI, DICOM): an override must agree


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def check_values(data: np.ndarray, path: Path) -> np.ndarray:
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if data.dtype.kind not in "uif":
        raise PairlessError(
            f"{path}: values of type {data.dtype} are not supported; save the image as integers "
            "or real floating-point numbers (e.g. take the magnitude of complex data)"
        )
    if data.size == 0:
        raise PairlessError(f"{path}: the image is empty (shape {data.shape}); pass an image with pixels")
    if data.ndim < 2:
        raise PairlessError(f"{path}: the array has shape {data.shape}; an image needs at least Y and X")
    if data.dtype.kind == "f":
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if bad:
            raise PairlessError(
                f"{path}: contains {bad} NaN/Inf values; "
                "replace them (e.g. numpy.nan_to_num) before denoising"
            )
    return data


def standard_layout(data: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """Move Y and X last, the other axes (each letter once) keeping their order."""
    order = [i for i, a in enumerate(axes) if a not in "YX"] + [axes.index("Y"), axes.index("X")]
    if order != list(range(len(axes))):
        data = np.transpose(data, order)
    return data, "".join(axes[i] for i in order)


class ImageInfo(NamedTuple):
    """What :func:`inspect_image` learns from a header: enough to refuse a file before any pixel is read."""

    path: Path
    shape: tuple[int, ...]  # in the standard layout (Y and X last), as read_image returns it
    dtype: np.dtype
    axes: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


def as_dtype(dtype) -> np.dtype:
    try:
        out = np.dtype(dtype)
    except TypeError:
        raise PairlessError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'uint16' or 'uint8'") from None
    if out.kind == "b":  # stored as 0/1, the way bool images are read
        return np.dtype(np.uint8)
    if out.kind not in "uif":
        raise PairlessError(f"cannot store dtype {out}; use e.g. 'float32', 'uint16' or 'uint8'")
    return out


def cast(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast to ``dtype``; integers are rounded, clipped if barely out of range, else refused.

    Finite values beyond a float dtype's range (they would become Inf) and NaN/Inf going to integers
    (they have no integer value) are refused too.
    """
    if data.dtype == dtype:
        return data
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        lo = float(np.min(data, where=finite, initial=np.inf))
        hi = float(np.max(data, where=finite, initial=-np.inf))
    else:
        finite, lo, hi = np.True_, float(np.min(data)), float(np.max(data))
    if dtype.kind == "f":
        if max(-lo, hi) > float(np.finfo(dtype).max):
            raise PairlessError(
                f"values reach {max(-lo, hi):.4g}, beyond {dtype}'s range; rescale them or store "
                "float64 (dtype='float64' in .tif, .npy or .nii)"
            )
        return data.astype(dtype, copy=False)
    if not np.all(finite):
        raise PairlessError(
            f"the image holds NaN/Inf values, which {dtype} cannot store; replace them "
            "(e.g. numpy.nan_to_num) or store floats"
        )
    info = np.iinfo(dtype)
    slack = OVERSHOOT * (float(info.max) - float(info.min))
    if lo < info.min - slack or hi > info.max + slack:
        raise PairlessError(
            f"values span [{lo:.4g}, {hi:.4g}], outside {dtype}'s range [{info.min}, {info.max}]; "
            "rescale them or store floats (dtype='float32' in .tif, .npy or .nii)"
        )
    if data.dtype.kind == "f":  # float16 cannot hold the integer bounds, so round in float32 at least
        data = np.round(data.astype(np.promote_types(data.dtype, np.float32), copy=False))
    return np.clip(data, info.min, info.max).astype(dtype)
