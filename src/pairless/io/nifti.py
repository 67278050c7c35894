"""NIfTI-1/2 (nibabel): ZYX (TZYX, YX) with the affine; float32 when the file has a scale slope."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pairless.errors import PairlessError
from pairless.io.image import UNIT_MM, Image, RawImage
from pairless.io.limits import check_affine, check_size
from pairless.io.units import image_units, nifti_description

NAME = "NIfTI"


def header(path: Path):
    import nibabel as nib

    img = nib.load(path)
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise PairlessError(f"{path}: is not a NIfTI-1/2 image; convert it to NIfTI")
    if not 2 <= len(img.shape) <= 4:
        raise PairlessError(f"{path}: NIfTI with {len(img.shape)} dimensions; pass a 2D, 3D or 4D image")
    proxy = img.dataobj
    scaled = float(getattr(proxy, "slope", 1.0)) != 1.0 or float(getattr(proxy, "inter", 0.0)) != 0.0
    dtype = np.dtype(np.float32) if scaled else img.get_data_dtype()
    check_affine(path, img.affine, len(img.shape))
    shape = tuple(int(n) for n in img.shape)[::-1]
    return shape, dtype, {2: "YX", 3: "ZYX", 4: "TZYX"}[len(shape)], True


def read(path: Path) -> RawImage:
    import nibabel as nib

    img = nib.load(path)
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise PairlessError(f"{path}: is not a NIfTI-1/2 image; convert it to NIfTI")
    if not 2 <= len(img.shape) <= 4:
        raise PairlessError(f"{path}: NIfTI with {len(img.shape)} dimensions; pass a 2D, 3D or 4D image")
    proxy = img.dataobj
    scaled = float(getattr(proxy, "slope", 1.0)) != 1.0 or float(getattr(proxy, "inter", 0.0)) != 0.0
    check_affine(path, img.affine, len(img.shape))
    check_size(path, img.shape, img.get_data_dtype())  # before nibabel allocates what the header states
    data = img.get_fdata(dtype=np.float32) if scaled else np.asanyarray(proxy)
    ndim = data.ndim
    unit = UNIT_MM.get(img.header.get_xyzt_units()[0], 1.0)  # NIfTI's "unknown" is taken as mm
    zooms = [float(z) * unit for z in img.header.get_zooms()[: min(ndim, 3)]]
    voxel = {a: z for a, z in zip("XYZ", zooms) if z > 0}
    axes = {2: "YX", 3: "ZYX", 4: "TZYX"}[ndim]
    meta = {"format": "nifti", "nifti_header": img.header.copy()}
    return RawImage(np.ascontiguousarray(data.T), axes, voxel, img.affine.copy(), meta, path, True)


def write(tmp: Path, image: Image, data: np.ndarray) -> None:
    import nibabel as nib

    if image.axes not in ("YX", "ZYX", "TZYX"):
        raise PairlessError(f"NIfTI holds axes YX, ZYX or TZYX, not {image.axes!r}; write .tif or .npy")
    try:
        nib.Nifti1Header().set_data_dtype(data.dtype)
    except nib.spatialimages.HeaderDataError:
        raise PairlessError(
            f"NIfTI cannot store {data.dtype} values; pass dtype='float32' or write .tif"
        ) from None
    header = image.meta.get("nifti_header")
    header = header.copy() if isinstance(header, nib.Nifti1Header) else None
    affine = image.affine
    if affine is None:
        size = dict(zip(image.spatial_axes, image.voxel_size or (1.0,) * len(image.spatial_axes)))
        affine = np.diag([size.get("X", 1.0), size.get("Y", 1.0), size.get("Z", 1.0), 1.0])
    cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    img = cls(np.asarray(data).T, affine, header=header)
    img.header.set_data_dtype(data.dtype)
    if header is None:
        img.header.set_xyzt_units("mm")
    units, _ = image_units(image)
    if units is not None:  # NIfTI has no field for the values' unit: pairless reads it back from here
        img.header["descrip"] = nifti_description(units)
    nib.save(img, tmp)
