"""TIFF (tifffile): axes from the file's metadata, voxel sizes from pairless's own, ImageJ or OME metadata."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from pairless.errors import PairlessError
from pairless.io.image import SPATIAL, UNIT_MM, Image, RawImage
from pairless.io.limits import check_size

NAME = "TIFF"


# tifffile's letters that we share; its I, Q, etc. (generic frames) become our S.  Two generic axes
# become SS, which the reader refuses without --axes rather than guess which is which.
_TIFF_AXES = {"X": "X", "Y": "Y", "Z": "Z", "T": "T", "C": "C"}


def header(path: Path):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = _series(tif, path)
        return tuple(series.shape), series.dtype, _axes(series), False


def read(path: Path) -> RawImage:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = _series(tif, path)
        check_size(path, series.shape, series.dtype)  # before tifffile allocates and decompresses
        data = series.asarray()
        axes = _axes(series)
        voxel = _voxel_size(tif, series.keyframe)
    return RawImage(data, axes, voxel, None, {"format": "tiff"}, path, False)


def _series(tif, path: Path):
    if not tif.series:
        raise PairlessError(f"{path}: the TIFF holds no image; pass a TIFF with pixel data")
    return tif.series[0]


def _axes(series) -> str:
    # tifffile's S is the colour-sample axis only when pages hold several samples.
    colour = {"S": "C"} if series.keyframe.samplesperpixel > 1 else {"S": "S"}
    return "".join({**_TIFF_AXES, **colour}.get(a, "S") for a in series.axes)


def _voxel_size(tif, page) -> dict[str, float]:
    """mm per pixel from our own, ImageJ or OME metadata, or from CM/MM/µm resolution tags."""
    if tif.is_shaped and tif.shaped_metadata and "voxel_size_mm" in tif.shaped_metadata[0]:
        return {str(k): float(v) for k, v in tif.shaped_metadata[0]["voxel_size_mm"].items()}
    if tif.is_ome and tif.ome_metadata:
        return _ome_voxel(tif.ome_metadata)
    per_pixel = _resolution(page)
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        scale = UNIT_MM.get(str(meta.get("unit", "")).lower())
        if scale is None:
            return {}
        voxel = {a: s * scale for a, s in per_pixel.items()}
        if meta.get("spacing"):
            voxel["Z"] = float(meta["spacing"]) * scale
        return voxel
    unit = page.tags.get("ResolutionUnit")
    # Inch resolutions are nearly always a print setting (72, 96, 300 dpi), not a pixel size.
    scale = {3: 10.0, 4: 1.0, 5: 1e-3}.get(int(unit.value) if unit is not None else 2)
    return {a: s * scale for a, s in per_pixel.items()} if scale else {}


def _resolution(page) -> dict[str, float]:
    sizes = {}
    for axis, tag in (("X", "XResolution"), ("Y", "YResolution")):
        value = page.tags.get(tag)
        if value is not None:
            num, den = value.value
            if num > 0 and den > 0:
                sizes[axis] = den / num
    return sizes


def _ome_voxel(xml: str) -> dict[str, float]:
    root = ET.fromstring(xml)
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None)
    voxel = {}
    for axis in SPATIAL if pixels is not None else ():
        size = pixels.get(f"PhysicalSize{axis}")
        scale = UNIT_MM.get(pixels.get(f"PhysicalSize{axis}Unit", "µm").lower())
        if size is not None and scale is not None and float(size) > 0:
            voxel[axis] = float(size) * scale
    return voxel


def write(tmp: Path, image: Image, data: np.ndarray) -> None:
    import tifffile

    voxel = dict(zip(image.spatial_axes, image.voxel_size)) if image.voxel_size else {}
    singleton = 1 in data.shape
    # ImageJ drops singleton axes (a 1-pixel Y or X too, beside other axes) and allows only its own
    # axis order and three dtypes.
    imagej = (
        data.dtype in (np.uint8, np.uint16, np.float32) and _in_order(image.axes, "TZCYX") and not singleton
    )
    if imagej:
        metadata: dict = {"axes": image.axes}
        kwargs: dict = {}
        if voxel:
            unit, scale = ("micron", 1e-3) if max(voxel.values()) < 0.1 else ("mm", 1.0)
            metadata["unit"] = unit
            kwargs["resolution"] = (scale / voxel["X"], scale / voxel["Y"])
            if "Z" in voxel:
                metadata["spacing"] = voxel["Z"] / scale
        tifffile.imwrite(tmp, data, imagej=True, metadata=metadata, photometric="minisblack", **kwargs)
    else:
        metadata = {"axes": image.axes}
        kwargs = {}
        if voxel:
            metadata["voxel_size_mm"] = voxel
            kwargs = {"resolution": (10.0 / voxel["X"], 10.0 / voxel["Y"]), "resolutionunit": "CENTIMETER"}
        tifffile.imwrite(tmp, data, metadata=metadata, photometric="minisblack", **kwargs)


def _in_order(axes: str, reference: str) -> bool:
    positions = [reference.find(a) for a in axes]
    return -1 not in positions and positions == sorted(positions)
