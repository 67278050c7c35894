"""What pairless agrees to read: regular files (or folders) only, and images no larger than a pixel limit.

A file states its size in its header (a TIFF's tags, a PNG's IHDR chunk, a ``.npy`` or NIfTI header,
DICOM's Rows × Columns × the number of slices), and a reader allocates, or decompresses into, what
the header states.  A 150-byte TIFF can state 100000² float32 values (37 GiB), a 1.7 MB zlib TIFF
40000² (1.6 GB once decoded).  So every reader compares the stated number of values with
:func:`max_pixels` (:func:`check_size`) before it allocates or decompresses anything, as Pillow's
``MAX_IMAGE_PIXELS`` does for Pillow's formats; a larger file is refused in one line that names the
limit and ``--max-pixels``.

The limit counts values (pixels × channels × slices × frames), since memory goes with values.  Its
default, :data:`DEFAULT_MAX_PIXELS` = 2**30 (a 1024³ volume), is what a 16 GB laptop survives:
denoising holds about three float32 copies of an image (the input, its float copy or the network's
input, the output), 12 GiB at 2**30 values.  A genuine larger image is read after ``--max-pixels N``
(``max_pixels=N`` in :mod:`pairless.api`, :func:`use_max_pixels` here); saved as a zarr array
(``.zarr``) it is denoised block by block, in the memory of a few blocks, and needs no limit.

A named pipe (FIFO), device or socket given as an image waits for a writer or never ends, so
:func:`check_regular` refuses everything that is neither a regular file nor a folder.  An image whose
voxel-to-world matrix holds NaN/Inf or is singular has no geometry to keep, so :func:`check_affine`
refuses it on reading, not when its result is written.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pairless.errors import PairlessError

DEFAULT_MAX_PIXELS = 2**30
_LIMIT: contextvars.ContextVar[int] = contextvars.ContextVar(
    "pairless_max_pixels", default=DEFAULT_MAX_PIXELS
)
_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def max_pixels() -> int:
    """The most values an image may state in its header to be read (see the module notes)."""
    return _LIMIT.get()


@contextlib.contextmanager
def use_max_pixels(limit: int | None) -> Iterator[None]:
    """Read images of up to ``limit`` values inside the block; ``None`` keeps the limit in force."""
    if limit is None:
        yield
        return
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise PairlessError(
            f"--max-pixels (max_pixels) must be a whole number of values ≥ 1, not {limit!r}; "
            f"the default is {DEFAULT_MAX_PIXELS} (2**30)"
        )
    token = _LIMIT.set(int(limit))
    try:
        yield
    finally:
        _LIMIT.reset(token)


def with_max_pixels(func):
    """Run ``func`` under :func:`use_max_pixels` of its keyword argument ``max_pixels`` (the API's)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with use_max_pixels(kwargs.get("max_pixels")):
            return func(*args, **kwargs)

    return wrapper


def check_size(path: Path, shape, dtype=None) -> None:
    """Refuse ``path`` when the ``shape`` its header states holds more values than :func:`max_pixels`."""
    values = math.prod(int(n) for n in shape)  # Python ints: a hostile header cannot overflow them
    limit = max_pixels()
    if values <= limit:
        return
    size = " × ".join(str(int(n)) for n in shape)
    nbytes = f", {values * np.dtype(dtype).itemsize / 2**30:.1f} GiB" if dtype is not None else ""
    raise PairlessError(
        f"{path}: its header states {size} values ({values:,}{nbytes}), more than the limit of {limit:,}; "
        f"if the image is genuine and fits in memory, raise the limit with --max-pixels {values} "
        "(max_pixels= in Python), or save it as .zarr to denoise it block by block"
    )


def check_regular(path: Path) -> None:
    """Refuse ``path`` unless it is a regular file or a folder (a FIFO would wait for a writer forever)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise PairlessError(f"{path}: cannot be read ({err.strerror or err}); check the path") from None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kind = _KINDS.get(stat.S_IFMT(mode), "a special file")
    raise PairlessError(
        f"{path}: is {kind}, not a file; pairless reads images, configurations and models only from "
        "regular files and folders: pass the file itself"
    )


def check_affine(path: Path, affine: np.ndarray, ndim: int) -> None:
    """Refuse a voxel-to-world ``affine`` with NaN/Inf, or whose columns for the ``ndim`` (≤ 3) spatial axes
    of the image do not span as many directions (a zero or repeated column: voxels that share a place)."""
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise PairlessError(
            f"{path}: its affine (voxel-to-world matrix) holds NaN/Inf values, so the image has no geometry; "
            "fix the file's sform/qform (e.g. with nibabel) and read it again"
        )
    columns = affine[:3, : min(ndim, 3)]
    spread = np.linalg.svd(columns, compute_uv=False)
    if spread[0] == 0 or spread[-1] / spread[0] < 1e-6:  # anisotropy beyond 10⁶ is no real voxel
        rows = "; ".join(" ".join(f"{v:g}" for v in row) for row in affine[:3])
        raise PairlessError(
            f"{path}: its affine (voxel-to-world matrix) is singular ({rows}), so voxels would share a place "
            "in space; fix the file's sform/qform (e.g. with nibabel) and read it again"
        )
