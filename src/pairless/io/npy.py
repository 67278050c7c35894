"""NumPy ``.npy``, never unpickled: values only; 2D is YX, 3D ZYX, 4D SZYX, other shapes need ``axes=``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pairless.errors import PairlessError
from pairless.io.image import Image, RawImage
from pairless.io.limits import check_size

NAME = "NumPy .npy"
AXES = {2: "YX", 3: "ZYX", 4: "SZYX"}


def header(path: Path):
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    if dtype.hasobject:
        raise PairlessError(
            f"{path}: holds Python objects, not numbers; save a numeric array with numpy.save"
        )
    check_size(path, shape, dtype)
    need = offset + math.prod(shape) * dtype.itemsize  # Python ints: a hostile header cannot overflow them
    if path.stat().st_size < need:
        raise PairlessError(
            f"{path}: cannot be read as NumPy .npy (the file is {path.stat().st_size} bytes but its header "
            f"announces {need}); check that the file is complete"
        )
    return tuple(shape), dtype, AXES.get(len(shape)), False


def read(path: Path) -> RawImage:
    _, _, axes, _ = header(path)  # of numbers, within the pixel limit, complete: before np.load allocates
    data = np.load(path, allow_pickle=False)
    return RawImage(data, axes, {}, None, {"format": "npy"}, path, False)


def write(tmp: Path, image: Image, data: np.ndarray) -> None:
    np.save(tmp, data, allow_pickle=False)
