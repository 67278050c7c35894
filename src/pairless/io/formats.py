"""Reading, inspecting and writing images in the format their path names, through one table of formats."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pairless.errors import PairlessError
from pairless.io import dicom, nifti, npy, png, tiff
from pairless.io.files import WRITE_ERRNOS, WriteError, atomic_folder, atomic_path, write_error
from pairless.io.image import (
    AXES_HINT,
    SPATIAL,
    Image,
    ImageInfo,
    as_dtype,
    axes_problem,
    cast,
    check_values,
    first_line,
    standard_layout,
)
from pairless.io.limits import check_regular, check_size

SUPPORTED = ".tif, .tiff, .png, .npy, .nii, .nii.gz, and DICOM (.dcm files or a folder of them)"


# suffix -> the module that reads and writes it: each has NAME, header(path) -> (shape, dtype, axes,
# fixed_axes), read(path) -> RawImage and write(tmp, image, data) (DICOM writes a folder)
FORMATS = {"tiff": tiff, "png": png, "npy": npy, "nifti": nifti, "dicom": dicom}


def read_image(path: str | os.PathLike, *, axes: str | None = None) -> Image:
    """Read an image file (or DICOM folder) with its axes and geometry.

    Parameters
    ----------
    path : path-like
        A file, or a folder of DICOM slices.
    axes : str, optional
        The stored layout, one letter per dimension from STCZYX (e.g. ``"ZYX"``, ``"YXC"``);
        default: from the file's metadata, or by dimension count for ``.npy``.

    Returns
    -------
    Image

    Raises
    ------
    PairlessError
        For a missing, corrupt, empty or non-finite image, bad axes or an unsupported format.
    """
    path = Path(path)
    if not path.exists():
        raise PairlessError(f"{path}: no such file or folder; check the path")
    check_regular(path)
    kind = format_to_read(path)
    reader = FORMATS[kind].read
    try:
        raw = reader(path)
    except (PairlessError, MemoryError):
        raise
    except Exception as err:
        raise PairlessError(
            f"{path}: cannot be read as {FORMATS[kind].NAME} ({first_line(err)}); "
            f"check that the file is complete and really is {FORMATS[kind].NAME}"
        ) from None
    data = check_values(raw.data, path)
    stored = _stored_axes(path, kind, data.shape, raw.axes, raw.fixed_axes, axes)
    data, axes_out = standard_layout(data, stored)
    spatial = [a for a in axes_out if a in SPATIAL]
    voxel = tuple(raw.voxel[a] for a in spatial) if all(a in raw.voxel for a in spatial) else None
    meta = {**raw.meta, "stored_dtype": str(data.dtype)}
    return Image(data, axes_out, voxel, raw.affine, raw.source, meta)


def format_to_read(path: Path) -> str:
    if path.is_dir():
        return "dicom"
    kind = format_of_suffix(path)
    if kind is None and path.suffix == "" and dicom.has_preamble(path):
        kind = "dicom"
    if kind is None:
        suffix = path.suffix or "(no suffix)"
        raise PairlessError(f"{path}: unsupported file type {suffix!r}; use {SUPPORTED}")
    return kind


def format_of_suffix(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".nii.gz") or name.endswith(".nii"):
        return "nifti"
    return {
        ".tif": "tiff",
        ".tiff": "tiff",
        ".png": "png",
        ".npy": "npy",
        ".dcm": "dicom",
        ".dicom": "dicom",
    }.get(path.suffix.lower())


def inspect_image(path: str | os.PathLike, *, axes: str | None = None) -> ImageInfo:
    """Check an image file from its header alone (format, shape, dtype, axes), reading no pixel data.

    It raises the same one-line :class:`PairlessError` as :func:`read_image` for a missing file, an
    unsupported format, an unreadable header, an empty image, an unsupported dtype or axes that do not
    fit; what only the pixels can show (NaN/Inf values, a truncated pixel block) is left to
    :func:`read_image`.
    """
    path = Path(path)
    if not path.exists():
        raise PairlessError(f"{path}: no such file or folder; check the path")
    check_regular(path)
    kind = format_to_read(path)
    header = FORMATS[kind].header
    try:
        shape, dtype, stored, fixed = header(path)
    except (PairlessError, MemoryError):
        raise
    except Exception as err:
        raise PairlessError(
            f"{path}: cannot be read as {FORMATS[kind].NAME} ({first_line(err)}); "
            f"check that the file is complete and really is {FORMATS[kind].NAME}"
        ) from None
    dtype = np.dtype(np.uint8) if np.dtype(dtype) == np.bool_ else np.dtype(dtype)
    if dtype.kind not in "uif":
        raise PairlessError(
            f"{path}: values of type {dtype} are not supported; save the image as integers "
            "or real floating-point numbers (e.g. take the magnitude of complex data)"
        )
    if 0 in shape:
        raise PairlessError(f"{path}: the image is empty (shape {shape}); pass an image with pixels")
    if len(shape) < 2:
        raise PairlessError(f"{path}: the array has shape {shape}; an image needs at least Y and X")
    check_size(path, shape, dtype)
    stored = _stored_axes(path, kind, tuple(shape), stored, fixed, axes)
    order = [i for i, a in enumerate(stored) if a not in "YX"] + [stored.index("Y"), stored.index("X")]
    return ImageInfo(path, tuple(int(shape[i]) for i in order), dtype, "".join(stored[i] for i in order))


def _stored_axes(
    path: Path, kind: str, shape: tuple, stored: str | None, fixed: bool, axes: str | None
) -> str:
    """The layout as stored: ``axes`` when given (and the format allows it), else the file's own."""
    if axes is not None:
        wanted = str(axes).upper()
        problem = axes_problem(wanted, len(shape), end_in_yx=False)
        if problem:
            raise PairlessError(f"{path}: axes {axes!r} {problem} (shape {shape}); {AXES_HINT}")
        if fixed and wanted != stored:
            raise PairlessError(
                f"{path}: {FORMATS[kind].NAME} images have axes {stored!r} set by the format, not "
                f"{axes!r}; leave out the axes option for this file"
            )
        return wanted
    if stored is None or len(stored) != len(shape) or not {"Y", "X"} <= set(stored):
        raise PairlessError(
            f"{path}: cannot tell the axes of this {len(shape)}D image (shape {shape}) from the file; "
            f"pass them with --axes (axes= in Python), e.g. 'TZYX' ({AXES_HINT})"
        )
    if len(set(stored)) != len(stored):  # e.g. a TIFF's generic axes QQ: which is time, which slices?
        raise PairlessError(
            f"{path}: the file's axes read as {stored!r} (shape {shape}), one kind twice, which pairless "
            f"will not guess; pass the axes with --axes (axes= in Python), e.g. 'TZCYX' ({AXES_HINT})"
        )
    return stored


def write_image(
    path: str | os.PathLike,
    image: Image,
    *,
    dtype: str | np.dtype | None = "float32",
    protect: Iterable[str | os.PathLike] = (),
) -> Path:
    """Write ``image`` to ``path`` in the format its suffix names, keeping axes and geometry.

    Parameters
    ----------
    path : path-like
        Target file, or DICOM folder (see the module notes); its parent is created.
    image : Image
    dtype : str, numpy.dtype or None
        Stored dtype; None keeps the array's.  PNG and DICOM follow the module notes.
    protect : iterable of path-like
        Paths never to overwrite (the inputs); ``image.source`` is always protected.

    Returns
    -------
    Path
        The written path.
    """
    target = Path(path)
    if image.data.size == 0:
        raise PairlessError(
            f"{target}: the image is empty (shape {image.data.shape}); pass an image with pixels"
        )
    kind = _format_to_write(target, image)
    _refuse_inputs(target, image, protect, folder=kind == "dicom")
    check_target(target, kind)
    size = None
    try:
        if kind == "dicom":
            want = as_dtype(image.data.dtype if dtype is None else dtype)
            rescale = want.kind == "f"
            data = image.data if rescale else cast(image.data, want)
            size = image.data.size * (2 if rescale else data.dtype.itemsize)
            with atomic_folder(target, size=size) as tmp:
                dicom.write(tmp, image, data, rescale=rescale)
        else:
            data = cast(image.data, _output_dtype(dtype, image, kind))
            size = data.nbytes
            writer = FORMATS[kind].write
            with atomic_path(target, size=size) as tmp:
                writer(tmp, image, data)
    except WriteError:
        raise
    except PairlessError as err:
        raise PairlessError(f"{target}: {err}") from None
    except OSError as err:
        if err.errno in WRITE_ERRNOS:
            raise write_error(err, target, needed=size) from None
        raise PairlessError(
            f"{target}: cannot be written ({err.strerror or err}); "
            "check the folder's permissions and free space"
        ) from None
    return target


def _format_to_write(target: Path, image: Image) -> str:
    kind = format_of_suffix(target)
    if kind is None and image.meta.get("format") == "dicom":
        kind = "dicom"
    if kind is None:
        raise PairlessError(
            f"{target}: unknown output type {target.suffix or '(no suffix)'!r}; "
            f"end the name with one of {SUPPORTED}"
        )
    return kind


def check_target(target: Path, kind: str) -> None:
    if kind == "dicom":
        if target.is_file():
            raise PairlessError(f"{target}: is a file; DICOM output is a folder of slices, choose a new name")
        if target.is_dir() and any(not p.name.lower().endswith(".dcm") for p in target.iterdir()):
            raise PairlessError(
                f"{target}: is a folder with other files; DICOM output replaces the whole folder, "
                "choose a new name"
            )
    elif target.is_dir():
        raise PairlessError(f"{target}: is a folder; give a file name ending in {target.suffix or '.tif'}")


def _refuse_inputs(target: Path, image: Image, protect: Iterable, *, folder: bool) -> None:
    guarded = [Path(p) for p in (image.source, image.meta.get("origin"), *protect) if p is not None]
    resolved = target.resolve()
    for p in guarded:
        p_resolved = p.resolve()
        same = resolved == p_resolved or (target.exists() and p.exists() and os.path.samefile(target, p))
        if same or (folder and resolved in p_resolved.parents):
            raise PairlessError(
                f"refusing to write {target}: it would overwrite the input {p}; choose another output path"
            )


def _output_dtype(dtype, image: Image, kind: str) -> np.dtype:
    want = as_dtype(image.data.dtype if dtype is None else dtype)
    if kind != "png" or want in (np.uint8, np.uint16):
        return want
    stored = image.meta.get("stored_dtype")
    if stored in ("uint8", "uint16"):
        return np.dtype(stored)
    raise PairlessError(
        f"PNG holds only uint8/uint16 values, not {want}; write .tif to keep them, "
        "or pass dtype='uint8'/'uint16' for values already in that range"
    )
