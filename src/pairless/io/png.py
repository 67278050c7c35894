"""PNG (Pillow): gray 8/16-bit, 8-bit RGB(A), or a palette image's indices; the pixel size from its dpi.

A palette (indexed-colour) PNG is read as its indices, one gray channel: the scientific tools that
write such files (ImageJ/Fiji for an 8-bit image with a lookup table, label and segmentation tools)
store the measured values or labels as the indices, and the palette only says how to show them.
Its colours are not data, so denoising them as RGB would smooth across a lookup table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pairless.errors import PairlessError
from pairless.io.image import Image, RawImage
from pairless.io.limits import check_size

NAME = "PNG"
_PNG_MODES = {
    "1": ("bool", 0),
    "L": ("uint8", 0),
    "P": ("uint8", 0),  # the indices (see the module notes)
    "LA": ("uint8", 2),
    "I": ("int32", 0),
    "I;16": ("uint16", 0),
    "I;16B": (">u2", 0),
    "F": ("float32", 0),
    "RGB": ("uint8", 3),
    "RGBA": ("uint8", 4),
}


def _open(path: Path):
    """The PNG with its header parsed and no pixel decoded yet."""
    from PIL import PngImagePlugin

    with open(path, "rb") as f:
        header = f.read(26)
    if header[:8] == b"\x89PNG\r\n\x1a\n" and header[24] == 16 and header[25] in (2, 6):
        raise PairlessError(f"{path}: 16-bit colour PNGs lose bits when read; convert it to TIFF")
    # PngImageFile rather than Image.open: Image.open applies Pillow's own bomb limit (a warning above
    # 89 M pixels, an error above 179 M) whatever --max-pixels says; check_size takes its place.
    im = PngImagePlugin.PngImageFile(path)
    width, height = im.size
    bands = len(im.getbands())
    try:
        check_size(
            path,
            (height, width, bands) if bands > 1 else (height, width),
            _PNG_MODES.get(im.mode, ("uint8",))[0],
        )
    except PairlessError:
        im.close()
        raise
    return im


def header(path: Path):
    with _open(path) as im:
        mode = im.mode
        width, height = im.size
    if mode not in _PNG_MODES:  # a rare mode: let the full read say what it is
        raw = read(path)
        return raw.data.shape, raw.data.dtype, raw.axes, False
    dtype, channels = _PNG_MODES[mode]
    shape = (height, width, channels) if channels else (height, width)
    return shape, np.dtype(dtype), "YXC" if channels else "YX", False


def read(path: Path) -> RawImage:
    with _open(path) as im:
        data = np.array(im)  # a palette image gives its indices
        dpi = im.info.get("dpi")
    voxel = {}
    if dpi and all(d > 0 for d in dpi):
        voxel = {"X": 25.4 / float(dpi[0]), "Y": 25.4 / float(dpi[1])}
    return RawImage(data, "YX" if data.ndim == 2 else "YXC", voxel, None, {"format": "png"}, path, False)


def write(tmp: Path, image: Image, data: np.ndarray) -> None:
    from PIL import Image as PILImage

    gray = image.axes == "YX"
    colour = image.axes == "CYX" and data.shape[0] in (3, 4) and data.dtype == np.uint8
    if not (gray or colour):
        raise PairlessError(
            f"PNG holds one gray 2D image or an 8-bit RGB(A) one, not axes {image.axes!r} with shape "
            f"{data.shape} and {data.dtype}; write .tif instead"
        )
    kwargs = {}
    if image.voxel_size:
        size = dict(zip(image.spatial_axes, image.voxel_size))
        kwargs["dpi"] = (25.4 / size["X"], 25.4 / size["Y"])
    array = np.moveaxis(data, 0, -1) if colour else data
    PILImage.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG", **kwargs)
