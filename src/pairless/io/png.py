"""PNG (Pillow): gray 8/16-bit or 8-bit RGB(A); the pixel size from its dpi."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pairless.errors import PairlessError
from pairless.io.image import Image, RawImage

NAME = "PNG"
_PNG_MODES = {
    "1": ("bool", 0),
    "L": ("uint8", 0),
    "LA": ("uint8", 2),
    "I": ("int32", 0),
    "I;16": ("uint16", 0),
    "I;16B": (">u2", 0),
    "F": ("float32", 0),
    "RGB": ("uint8", 3),
    "RGBA": ("uint8", 4),
}


def header(path: Path):
    from PIL import Image as PILImage

    with open(path, "rb") as f:
        header = f.read(26)
    if header[:8] == b"\x89PNG\r\n\x1a\n" and header[24] == 16 and header[25] in (2, 6):
        raise PairlessError(f"{path}: 16-bit colour PNGs lose bits when read; convert it to TIFF")
    with PILImage.open(path) as im:
        if im.format != "PNG":
            raise PairlessError(f"{path}: the file is {im.format}, not PNG; give it its proper suffix")
        mode = ("RGBA" if "transparency" in im.info else "RGB") if im.mode == "P" else im.mode
        width, height = im.size
    if mode not in _PNG_MODES:  # a rare mode: let the full read say what it is
        raw = read(path)
        return raw.data.shape, raw.data.dtype, raw.axes, False
    dtype, channels = _PNG_MODES[mode]
    shape = (height, width, channels) if channels else (height, width)
    return shape, np.dtype(dtype), "YXC" if channels else "YX", False


def read(path: Path) -> RawImage:
    from PIL import Image as PILImage

    with open(path, "rb") as f:
        header = f.read(26)
    if header[:8] == b"\x89PNG\r\n\x1a\n" and header[24] == 16 and header[25] in (2, 6):
        raise PairlessError(f"{path}: 16-bit colour PNGs lose bits when read; convert it to TIFF")
    with PILImage.open(path) as im:
        if im.format != "PNG":
            raise PairlessError(f"{path}: the file is {im.format}, not PNG; give it its proper suffix")
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        data = np.array(im)
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
