"""Reading and writing images together with their axes and geometry.

The format comes from the path: ``.tif``/``.tiff`` (tifffile), ``.png`` (Pillow), ``.npy`` (NumPy,
never pickled), ``.nii``/``.nii.gz`` (nibabel) and DICOM series (pydicom): a folder of single-slice
files, or one file of it (its whole series is read).  Every image comes back as an :class:`Image`
whose ``axes`` use the letters S (sample), T (time), C (channel), Z, Y, X and end in ``YX``.

Conventions
-----------
- ``voxel_size`` is in mm, one value per spatial axis present (Z, Y, X), in axes order.
- ``affine`` follows nibabel: voxel indices (i, j, k) = (X, Y, Z) to RAS+ world mm.  It is set for
  NIfTI and DICOM, so converting between the two keeps the geometry.
- ``.npy`` holds no axes: 2D is read as YX, 3D as ZYX, 4D as SZYX; other shapes need ``axes=``.
- NIfTI is read as ZYX (TZYX for 4D, YX for 2D) with the stored dtype, or float32 when the file
  has a scale slope/intercept.  DICOM is read as ZYX (YX for one slice), rescaled per slice
  (float32 when any slice has a rescale; else the stored dtype), sorted along the slice normal.
- ``axes=`` describes the layout as stored (``"YXC"`` is fine for an RGB TIFF); the returned image
  moves Y and X last.  RGB(A) PNGs are read as CYX.

Writing keeps the geometry and stores float32 unless ``dtype`` says otherwise (``dtype=None``
keeps the array's dtype; bool is stored as uint8).  Integer outputs are rounded; values a little
outside the integer range (up to 5 % of it, e.g. a denoiser's overshoot) are clipped, anything
further is refused, and so are NaN/Inf going to integers and values beyond a float dtype's range
(they would be stored as Inf).  NIfTI cannot store float16.  PNG
holds only uint8/uint16: it uses ``dtype`` when that is one of them, else the dtype the image was
read with, else refuses (write .tif to keep float values).  DICOM output is a folder of
single-slice files: a target ending in ``.dcm``, or a target without a known suffix when the image
came from DICOM (so ``out/<input folder name>`` works).  Float data is stored as int16 with a
per-slice rescale slope (exact for integer values within the int16 range); an integer ``dtype``
stores the values themselves.  ``.npy`` keeps values only (no axes or voxel size).  Every write is
atomic and never touches the image's source or a path in ``protect``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pairless.errors import PairlessError
from pairless.files import WRITE_ERRNOS, WriteError, atomic_path, temporary_folder, write_error

AXES_LETTERS = "STCZYX"
SPATIAL = "ZYX"
SUPPORTED = ".tif, .tiff, .png, .npy, .nii, .nii.gz, and DICOM (.dcm files or a folder of them)"
_HINT = "use letters from STCZYX, each once, ending in YX, e.g. YX, ZYX, CYX or TZYX"
_NPY_AXES = {2: "YX", 3: "ZYX", 4: "SZYX"}
_FORMAT_NAMES = {"tiff": "TIFF", "png": "PNG", "npy": "NumPy .npy", "nifti": "NIfTI", "dicom": "DICOM"}
# tifffile's letters that we share; its I, Q, etc. (generic frames) become our S.
_TIFF_AXES = {"X": "X", "Y": "Y", "Z": "Z", "T": "T", "C": "C"}
_UNIT_MM = {
    "mm": 1.0, "millimeter": 1.0, "millimetre": 1.0, "cm": 10.0, "centimeter": 10.0, "m": 1000.0,
    "meter": 1000.0, "um": 1e-3, "µm": 1e-3, "μm": 1e-3, "\\u00b5m": 1e-3, "micron": 1e-3,
    "microns": 1e-3, "micrometer": 1e-3, "nm": 1e-6, "nanometer": 1e-6, "inch": 25.4,
}
_OVERSHOOT = 0.05  # fraction of an integer dtype's range that is clipped rather than refused
# DICOM tags copied from the input so that the written series sits in the same patient and study.
_DICOM_KEEP = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientWeight",
    "PatientPosition", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "StudyDescription",
    "AccessionNumber", "ReferringPhysicianName", "FrameOfReferenceUID", "PositionReferenceIndicator",
    "Modality", "SOPClassUID", "SeriesDescription", "SeriesNumber", "Manufacturer", "BodyPartExamined",
    "Units", "SliceThickness",
    # PET: what a reading station needs to show SUV and to know the frame (decay correction, timing)
    "SeriesType", "CorrectedImage", "DecayCorrection", "ActualFrameDuration", "FrameReferenceTime",
    "RadiopharmaceuticalInformationSequence", "CountsSource", "ReconstructionMethod", "SeriesDate", "SeriesTime",
    "AcquisitionDate", "AcquisitionTime",
)
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def validate_axes(axes: str, ndim: int, *, end_in_yx: bool = True) -> str:
    """Return ``axes`` upper-cased after checking it names ``ndim`` dimensions and ends in YX.

    ``end_in_yx=False`` accepts Y and X anywhere (a layout as stored, or for :func:`denoise_array`).

    Raises
    ------
    PairlessError
        Naming the bad string and how to write a good one.
    """
    problem = _axes_problem(str(axes).upper(), ndim, end_in_yx=end_in_yx)
    if problem:
        raise PairlessError(f"axes {axes!r} {problem}: {_HINT}")
    return str(axes).upper()


def _axes_problem(axes: str, ndim: int, *, end_in_yx: bool) -> str | None:
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
                f"pass an array of the same shape"
            )
        origin = self.source if self.source is not None else self.meta.get("origin")
        meta = {**self.meta, "origin": origin} if origin is not None else dict(self.meta)
        return replace(self, data=array, source=None, meta=meta)


class _Read(NamedTuple):
    data: np.ndarray
    axes: str
    voxel: dict[str, float]  # mm by spatial letter, only those known
    affine: np.ndarray | None
    meta: dict
    source: Path
    fixed_axes: bool  # the format defines the axes (NIfTI, DICOM): an override must agree


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
    kind = _format_to_read(path)
    reader = {"tiff": _read_tiff, "png": _read_png, "npy": _read_npy, "nifti": _read_nifti,
              "dicom": _read_dicom}[kind]
    try:
        raw = reader(path)
    except (PairlessError, MemoryError):
        raise
    except Exception as err:
        raise PairlessError(
            f"{path}: cannot be read as {_FORMAT_NAMES[kind]} ({_first_line(err)}); "
            f"check that the file is complete and really is {_FORMAT_NAMES[kind]}"
        ) from None
    data = _check_values(raw.data, path)
    stored = raw.axes
    if axes is not None:
        wanted = str(axes).upper()
        problem = _axes_problem(wanted, data.ndim, end_in_yx=False)
        if problem:
            raise PairlessError(f"{path}: axes {axes!r} {problem} (shape {data.shape}); {_HINT}")
        if raw.fixed_axes and wanted != stored:
            raise PairlessError(
                f"{path}: {_FORMAT_NAMES[kind]} images have axes {stored!r} set by the format, not "
                f"{axes!r}; leave out the axes option for this file"
            )
        stored = wanted
    elif stored is None or stored.count("Y") != 1 or stored.count("X") != 1 or len(stored) != data.ndim:
        raise PairlessError(
            f"{path}: cannot tell the axes of this {data.ndim}D array (shape {data.shape}) from the file; "
            f"pass axes=, e.g. 'TZYX' ({_HINT})"
        )
    data, axes_out = _standard_layout(data, stored)
    spatial = [a for a in axes_out if a in SPATIAL]
    voxel = tuple(raw.voxel[a] for a in spatial) if all(a in raw.voxel for a in spatial) else None
    meta = {**raw.meta, "stored_dtype": str(data.dtype)}
    return Image(data, axes_out, voxel, raw.affine, raw.source, meta)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _format_to_read(path: Path) -> str:
    if path.is_dir():
        return "dicom"
    kind = _format_of_suffix(path)
    if kind is None and path.suffix == "" and _has_dicom_preamble(path):
        kind = "dicom"
    if kind is None:
        suffix = path.suffix or "(no suffix)"
        raise PairlessError(f"{path}: unsupported file type {suffix!r}; use {SUPPORTED}")
    return kind


def _format_of_suffix(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".nii.gz") or name.endswith(".nii"):
        return "nifti"
    return {".tif": "tiff", ".tiff": "tiff", ".png": "png", ".npy": "npy", ".dcm": "dicom",
            ".dicom": "dicom"}.get(path.suffix.lower())


def _has_dicom_preamble(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(132)[128:] == b"DICM"


def _check_values(data: np.ndarray, path: Path) -> np.ndarray:
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if data.dtype.kind not in "uif":
        raise PairlessError(
            f"{path}: values of type {data.dtype} are not supported; save the image as integers "
            f"or real floating-point numbers (e.g. take the magnitude of complex data)"
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
                f"replace them (e.g. numpy.nan_to_num) before denoising"
            )
    return data


def _standard_layout(data: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """Move Y and X last (others keep their order); merge repeated letters into one axis."""
    groups = [a for a in dict.fromkeys(axes) if a not in "YX"] + ["Y", "X"]
    order = [i for g in groups for i, a in enumerate(axes) if a == g]
    if order != list(range(len(axes))):
        data = np.transpose(data, order)
    if len(groups) != len(axes):
        merged = "".join(axes[i] for i in order)
        data = data.reshape([int(np.prod([n for a, n in zip(merged, data.shape) if a == g])) for g in groups])
    return data, "".join(groups)


# ---------------------------------------------------------------- header-only validation


class ImageInfo(NamedTuple):
    """What :func:`inspect_image` learns from a file's header: enough to refuse it before any pixel is read."""

    path: Path
    shape: tuple[int, ...]  # in the standard layout (Y and X last), as read_image returns it
    dtype: np.dtype
    axes: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


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
    kind = _format_to_read(path)
    header = {"tiff": _header_tiff, "png": _header_png, "npy": _header_npy, "nifti": _header_nifti,
              "dicom": _header_dicom}[kind]
    try:
        shape, dtype, stored, fixed = header(path)
    except (PairlessError, MemoryError):
        raise
    except Exception as err:
        raise PairlessError(
            f"{path}: cannot be read as {_FORMAT_NAMES[kind]} ({_first_line(err)}); "
            f"check that the file is complete and really is {_FORMAT_NAMES[kind]}"
        ) from None
    dtype = np.dtype(np.uint8) if dtype == bool else np.dtype(dtype)
    if dtype.kind not in "uif":
        raise PairlessError(
            f"{path}: values of type {dtype} are not supported; save the image as integers "
            f"or real floating-point numbers (e.g. take the magnitude of complex data)"
        )
    if 0 in shape:
        raise PairlessError(f"{path}: the image is empty (shape {shape}); pass an image with pixels")
    if len(shape) < 2:
        raise PairlessError(f"{path}: the array has shape {shape}; an image needs at least Y and X")
    if axes is not None:
        wanted = str(axes).upper()
        problem = _axes_problem(wanted, len(shape), end_in_yx=False)
        if problem:
            raise PairlessError(f"{path}: axes {axes!r} {problem} (shape {shape}); {_HINT}")
        if fixed and wanted != stored:
            raise PairlessError(
                f"{path}: {_FORMAT_NAMES[kind]} images have axes {stored!r} set by the format, not "
                f"{axes!r}; leave out the axes option for this file"
            )
        stored = wanted
    elif stored is None or stored.count("Y") != 1 or stored.count("X") != 1 or len(stored) != len(shape):
        raise PairlessError(
            f"{path}: cannot tell the axes of this {len(shape)}D array (shape {shape}) from the file; "
            f"pass axes=, e.g. 'TZYX' ({_HINT})"
        )
    groups = [a for a in dict.fromkeys(stored) if a not in "YX"] + ["Y", "X"]
    standard = tuple(int(np.prod([n for a, n in zip(stored, shape) if a == g])) for g in groups)
    return ImageInfo(path, standard, dtype, "".join(groups))


def _header_tiff(path: Path):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise PairlessError(f"{path}: the TIFF holds no image; pass a TIFF with pixel data")
        series = tif.series[0]
        colour = {"S": "C"} if series.keyframe.samplesperpixel > 1 else {"S": "S"}
        axes = "".join({**_TIFF_AXES, **colour}.get(a, "S") for a in series.axes)
        return tuple(series.shape), series.dtype, axes, False


_PNG_MODES = {"1": ("bool", 0), "L": ("uint8", 0), "LA": ("uint8", 2), "I": ("int32", 0), "I;16": ("uint16", 0),
              "I;16B": (">u2", 0), "F": ("float32", 0), "RGB": ("uint8", 3), "RGBA": ("uint8", 4)}


def _header_png(path: Path):
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
        raw = _read_png(path)
        return raw.data.shape, raw.data.dtype, raw.axes, False
    dtype, channels = _PNG_MODES[mode]
    shape = (height, width, channels) if channels else (height, width)
    return shape, np.dtype(dtype), "YXC" if channels else "YX", False


def _header_npy(path: Path):
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    if dtype.hasobject:
        raise PairlessError(f"{path}: holds Python objects, not numbers; save a numeric array with numpy.save")
    need = offset + int(np.prod(shape)) * dtype.itemsize
    if path.stat().st_size < need:
        raise PairlessError(
            f"{path}: cannot be read as NumPy .npy (the file is {path.stat().st_size} bytes but its header "
            f"announces {need}); check that the file is complete"
        )
    return tuple(shape), dtype, _NPY_AXES.get(len(shape)), False


def _header_nifti(path: Path):
    import nibabel as nib

    img = nib.load(path)
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise PairlessError(f"{path}: is not a NIfTI-1/2 image; convert it to NIfTI")
    if not 2 <= len(img.shape) <= 4:
        raise PairlessError(f"{path}: NIfTI with {len(img.shape)} dimensions; pass a 2D, 3D or 4D image")
    proxy = img.dataobj
    scaled = float(getattr(proxy, "slope", 1.0)) != 1.0 or float(getattr(proxy, "inter", 0.0)) != 0.0
    dtype = np.dtype(np.float32) if scaled else img.get_data_dtype()
    shape = tuple(int(n) for n in img.shape)[::-1]
    return shape, dtype, {2: "YX", 3: "ZYX", 4: "TZYX"}[len(shape)], True


def _header_dicom(path: Path):
    import pydicom

    folder = path if path.is_dir() else path.parent
    wanted = pydicom.dcmread(path, stop_before_pixels=True).get("SeriesInstanceUID") if path.is_file() else None
    headers = []
    for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue
        if "Rows" in ds and (wanted is None or ds.get("SeriesInstanceUID") == wanted):
            headers.append(ds)
    if not headers:
        raise PairlessError(f"{path}: no DICOM images found; pass a folder of DICOM slices or one of them")
    if len({ds.get("SeriesInstanceUID") for ds in headers}) > 1:
        raise PairlessError(f"{folder}: holds several DICOM series; pass one file of the one to read")
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in headers}
    if len(shapes) > 1:
        raise PairlessError(f"{folder}: DICOM slices differ in size {sorted(shapes)}; pass one series")
    rescaled = any(float(ds.get("RescaleSlope", 1)) != 1 or float(ds.get("RescaleIntercept", 0)) != 0
                   or "ModalityLUTSequence" in ds for ds in headers)
    first = headers[0]
    bits = int(first.get("BitsAllocated", 16))
    signed = int(first.get("PixelRepresentation", 0)) == 1
    dtype = np.dtype(np.float32) if rescaled else np.dtype(f"{'i' if signed else 'u'}{max(bits // 8, 1)}")
    rows, cols = shapes.pop()
    if len(headers) == 1:
        return (rows, cols), dtype, "YX", True
    return (len(headers), rows, cols), dtype, "ZYX", True


# ---------------------------------------------------------------- TIFF


def _read_tiff(path: Path) -> _Read:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise PairlessError(f"{path}: the TIFF holds no image; pass a TIFF with pixel data")
        series = tif.series[0]
        data = series.asarray()
        page = series.keyframe
        # tifffile's S is the colour-sample axis only when pages hold several samples.
        colour = {"S": "C"} if page.samplesperpixel > 1 else {"S": "S"}
        axes = "".join({**_TIFF_AXES, **colour}.get(a, "S") for a in series.axes)
        voxel = _tiff_voxel(tif, page)
    return _Read(data, axes, voxel, None, {"format": "tiff"}, path, False)


def _tiff_voxel(tif, page) -> dict[str, float]:
    """mm per pixel from our own, ImageJ or OME metadata, or from CM/MM/µm resolution tags."""
    if tif.is_shaped and tif.shaped_metadata and "voxel_size_mm" in tif.shaped_metadata[0]:
        return {str(k): float(v) for k, v in tif.shaped_metadata[0]["voxel_size_mm"].items()}
    if tif.is_ome and tif.ome_metadata:
        return _ome_voxel(tif.ome_metadata)
    per_pixel = _resolution(page)
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        scale = _UNIT_MM.get(str(meta.get("unit", "")).lower())
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
        scale = _UNIT_MM.get(pixels.get(f"PhysicalSize{axis}Unit", "µm").lower())
        if size is not None and scale is not None and float(size) > 0:
            voxel[axis] = float(size) * scale
    return voxel


def _write_tiff(tmp: Path, image: Image, data: np.ndarray) -> None:
    import tifffile

    voxel = dict(zip(image.spatial_axes, image.voxel_size)) if image.voxel_size else {}
    singleton = 1 in data.shape
    # ImageJ drops singleton axes (a 1-pixel Y or X too, beside other axes) and allows only its own
    # axis order and three dtypes.
    imagej = (data.dtype in (np.uint8, np.uint16, np.float32) and _in_order(image.axes, "TZCYX")
              and not singleton)
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


# ---------------------------------------------------------------- PNG


def _read_png(path: Path) -> _Read:
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
    return _Read(data, "YX" if data.ndim == 2 else "YXC", voxel, None, {"format": "png"}, path, False)


def _write_png(tmp: Path, image: Image, data: np.ndarray) -> None:
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


# ---------------------------------------------------------------- NumPy


def _read_npy(path: Path) -> _Read:
    data = np.load(path, allow_pickle=False)
    if not isinstance(data, np.ndarray):
        raise PairlessError(f"{path}: holds no single array; save one array with numpy.save")
    return _Read(data, _NPY_AXES.get(data.ndim), {}, None, {"format": "npy"}, path, False)


def _write_npy(tmp: Path, image: Image, data: np.ndarray) -> None:
    np.save(tmp, data, allow_pickle=False)


# ---------------------------------------------------------------- NIfTI


def _read_nifti(path: Path) -> _Read:
    import nibabel as nib

    img = nib.load(path)
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise PairlessError(f"{path}: is not a NIfTI-1/2 image; convert it to NIfTI")
    if not 2 <= len(img.shape) <= 4:
        raise PairlessError(f"{path}: NIfTI with {len(img.shape)} dimensions; pass a 2D, 3D or 4D image")
    proxy = img.dataobj
    scaled = float(getattr(proxy, "slope", 1.0)) != 1.0 or float(getattr(proxy, "inter", 0.0)) != 0.0
    data = img.get_fdata(dtype=np.float32) if scaled else np.asanyarray(proxy)
    ndim = data.ndim
    unit = _UNIT_MM.get(img.header.get_xyzt_units()[0], 1.0)  # NIfTI's "unknown" is taken as mm
    zooms = [float(z) * unit for z in img.header.get_zooms()[: min(ndim, 3)]]
    voxel = {a: z for a, z in zip("XYZ", zooms) if z > 0}
    axes = {2: "YX", 3: "ZYX", 4: "TZYX"}[ndim]
    meta = {"format": "nifti", "nifti_header": img.header.copy()}
    return _Read(np.ascontiguousarray(data.T), axes, voxel, img.affine.copy(), meta, path, True)


def _write_nifti(tmp: Path, image: Image, data: np.ndarray) -> None:
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
    nib.save(img, tmp)


# ---------------------------------------------------------------- DICOM


def _read_dicom(path: Path) -> _Read:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    folder = path if path.is_dir() else path.parent
    wanted = None
    if path.is_file():  # one file stands for its whole series
        wanted = pydicom.dcmread(path, stop_before_pixels=True).get("SeriesInstanceUID")
    slices = []
    for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(file)
        except pydicom.errors.InvalidDicomError:
            continue
        if "PixelData" in ds and (wanted is None or ds.get("SeriesInstanceUID") == wanted):
            slices.append(ds)
    if not slices:
        raise PairlessError(f"{path}: no DICOM images found; pass a folder of DICOM slices or one of them")
    series = {ds.get("SeriesInstanceUID") for ds in slices}
    if len(series) > 1:
        raise PairlessError(f"{folder}: holds {len(series)} DICOM series; pass one file of the one to read")
    if any(int(ds.get("SamplesPerPixel", 1)) != 1 or int(ds.get("NumberOfFrames", 1)) != 1 for ds in slices):
        raise PairlessError(f"{path}: colour or multi-frame DICOM is not supported; export gray slices")

    first = slices[0]
    orientation = np.array(first.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), dtype=np.float64)
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    if all("ImagePositionPatient" in ds for ds in slices):
        positions = np.array([ds.ImagePositionPatient for ds in slices], dtype=np.float64)
    else:  # no geometry: order by instance number, stack along the normal
        order = np.argsort([int(ds.get("InstanceNumber", 0)) for ds in slices], kind="stable")
        slices = [slices[i] for i in order]
        step = float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)))
        positions = np.arange(len(slices))[:, None] * step * normal
    depth = positions @ normal
    order = np.argsort(depth, kind="stable")
    slices, positions, depth = [slices[i] for i in order], positions[order], depth[order]
    if len(slices) > 1 and np.min(np.diff(depth)) <= 1e-6:
        raise PairlessError(
            f"{folder}: several DICOM slices share one position (several volumes or time frames); "
            f"put each volume in its own folder"
        )
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in slices}
    if len(shapes) > 1:
        raise PairlessError(f"{folder}: DICOM slices differ in size {sorted(shapes)}; pass one series")

    rescaled = any(float(ds.get("RescaleSlope", 1)) != 1 or float(ds.get("RescaleIntercept", 0)) != 0
                   or "ModalityLUTSequence" in ds for ds in slices)
    if rescaled:  # slopes differ per slice (PET), so rescale each before stacking
        data = np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in slices]).astype(np.float32)
    else:
        data = np.stack([ds.pixel_array for ds in slices])

    dy, dx = (float(v) for v in first.get("PixelSpacing", [1.0, 1.0]))
    dz = float(np.median(np.diff(depth))) if len(slices) > 1 else float(first.get("SliceThickness") or 1.0)
    voxel = {"Z": dz, "Y": dy, "X": dx}
    affine = _LPS_TO_RAS @ np.column_stack([
        np.append(row * dx, 0), np.append(col * dy, 0), np.append(normal * dz, 0), np.append(positions[0], 1)
    ])
    tags = {kw: first.get(kw) for kw in _DICOM_KEEP if first.get(kw) is not None}
    meta = {"format": "dicom", "dicom": tags, "orientation": orientation.tolist(), "positions": positions}
    if len(slices) == 1:
        return _Read(data[0], "YX", voxel, affine, meta, folder, True)
    return _Read(data, "ZYX", voxel, affine, meta, folder, True)


def _dicom_geometry(image: Image, depth: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Orientation (6,), positions (depth, 3), row and column spacing for a written series."""
    size = dict(zip(image.spatial_axes, image.voxel_size)) if image.voxel_size else {}
    positions = image.meta.get("positions")
    if image.meta.get("format") == "dicom" and positions is not None and len(positions) == depth:
        return (np.asarray(image.meta["orientation"], float), np.asarray(positions, float),
                size.get("Y", 1.0), size.get("X", 1.0))
    if image.affine is not None:
        lps = _LPS_TO_RAS @ image.affine
        dx, dy = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
        orientation = np.concatenate([lps[:3, 0] / dx, lps[:3, 1] / dy])
        return orientation, lps[:3, 3] + np.arange(depth)[:, None] * lps[:3, 2], dy, dx
    dz = size.get("Z", 1.0)
    positions = np.zeros((depth, 3))
    positions[:, 2] = np.arange(depth) * dz
    return np.array([1.0, 0, 0, 0, 1, 0]), positions, size.get("Y", 1.0), size.get("X", 1.0)


def _write_dicom(folder: Path, image: Image, data: np.ndarray, *, rescale: bool) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if image.axes not in ("YX", "ZYX"):
        raise PairlessError(f"DICOM output holds axes YX or ZYX, not {image.axes!r}; write .tif or .nii")
    volume = data if image.axes == "ZYX" else data[None]
    orientation, positions, dy, dx = _dicom_geometry(image, len(volume))
    tags = dict(image.meta.get("dicom", {})) if image.meta.get("format") == "dicom" else {}
    tags.setdefault("SOPClassUID", _SECONDARY_CAPTURE)
    tags.setdefault("Modality", "OT")
    tags.setdefault("PatientName", "anonymous")
    tags.setdefault("PatientID", "pairless")
    tags.setdefault("StudyInstanceUID", generate_uid())
    tags.setdefault("FrameOfReferenceUID", generate_uid())
    # the writer of an original series (the simulator) says so; everything else pairless writes is derived
    image_type = tags.pop("ImageType", ["DERIVED", "SECONDARY"])
    method = image.meta.get("derived_by")
    tags["SeriesDescription"] = f"{tags.get('SeriesDescription', '')} ({f'pairless {method}' if method else 'pairless'})".strip()
    series_uid = generate_uid()
    if len(volume) > 1:
        normal = np.cross(orientation[:3], orientation[3:])
        tags["SpacingBetweenSlices"] = _ds(np.median(np.diff(positions @ normal)))

    for k, plane in enumerate(volume):
        if rescale:
            stored, slope = _to_int16(plane)
        else:
            stored, slope = plane, _ds(1.0)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = tags["SOPClassUID"]
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        ds.ImageType = image_type
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in positions[k]]
        ds.ImageOrientationPatient = [_ds(v) for v in orientation]
        ds.PixelSpacing = [_ds(dy), _ds(dx)]
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = stored.dtype.itemsize * 8
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = int(stored.dtype.kind == "i")
        ds.RescaleSlope, ds.RescaleIntercept = slope, _ds(0.0)
        ds.PixelData = np.ascontiguousarray(stored, dtype=stored.dtype.newbyteorder("<")).tobytes()
        ds.save_as(folder / f"{k + 1:04d}.dcm", enforce_file_format=True)


def _ds(value):
    """A DICOM decimal string; these hold at most 16 characters, so long floats are shortened."""
    from pydicom.valuerep import DSfloat

    return DSfloat(float(value), auto_format=True)


def _to_int16(plane: np.ndarray):
    """Stored int16 values and the slope (a DICOM DS value) that rescales them back."""
    peak = float(np.max(np.abs(plane)))
    exact = peak <= 32767 and np.array_equal(plane, np.round(plane))
    slope = _ds(1.0 if exact or peak == 0 else peak / 32767)
    stored = np.clip(np.round(plane / float(slope)), -32768, 32767).astype(np.int16)
    return stored, slope


# ---------------------------------------------------------------- writing


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
    _check_target(target, kind)
    size = None
    try:
        if kind == "dicom":
            want = _dtype(image.data.dtype if dtype is None else dtype)
            rescale = want.kind == "f"
            data = image.data if rescale else _cast(image.data, want)
            size = image.data.size * (2 if rescale else data.dtype.itemsize)
            with _atomic_folder(target, size=size) as tmp:
                _write_dicom(tmp, image, data, rescale=rescale)
        else:
            data = _cast(image.data, _output_dtype(dtype, image, kind))
            size = data.nbytes
            writer = {"tiff": _write_tiff, "png": _write_png, "npy": _write_npy, "nifti": _write_nifti}[kind]
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
            f"check the folder's permissions and free space"
        ) from None
    return target


def _format_to_write(target: Path, image: Image) -> str:
    kind = _format_of_suffix(target)
    if kind is None and image.meta.get("format") == "dicom":
        kind = "dicom"
    if kind is None:
        raise PairlessError(
            f"{target}: unknown output type {target.suffix or '(no suffix)'!r}; "
            f"end the name with one of {SUPPORTED}"
        )
    return kind


def _check_target(target: Path, kind: str) -> None:
    if kind == "dicom":
        if target.is_file():
            raise PairlessError(f"{target}: is a file; DICOM output is a folder of slices, choose a new name")
        if target.is_dir() and any(not p.name.lower().endswith(".dcm") for p in target.iterdir()):
            raise PairlessError(
                f"{target}: is a folder with other files; DICOM output replaces the whole folder, "
                f"choose a new name"
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


def _dtype(dtype) -> np.dtype:
    try:
        out = np.dtype(dtype)
    except TypeError:
        raise PairlessError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'uint16' or 'uint8'") from None
    if out.kind == "b":  # stored as 0/1, the way bool images are read
        return np.dtype(np.uint8)
    if out.kind not in "uif":
        raise PairlessError(f"cannot store dtype {out}; use e.g. 'float32', 'uint16' or 'uint8'")
    return out


def _output_dtype(dtype, image: Image, kind: str) -> np.dtype:
    want = _dtype(image.data.dtype if dtype is None else dtype)
    if kind != "png" or want in (np.uint8, np.uint16):
        return want
    stored = image.meta.get("stored_dtype")
    if stored in ("uint8", "uint16"):
        return np.dtype(stored)
    raise PairlessError(
        f"PNG holds only uint8/uint16 values, not {want}; write .tif to keep them, "
        f"or pass dtype='uint8'/'uint16' for values already in that range"
    )


def _cast(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
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
                f"float64 (dtype='float64' in .tif, .npy or .nii)"
            )
        return data.astype(dtype, copy=False)
    if not np.all(finite):
        raise PairlessError(
            f"the image holds NaN/Inf values, which {dtype} cannot store; replace them "
            f"(e.g. numpy.nan_to_num) or store floats"
        )
    info = np.iinfo(dtype)
    slack = _OVERSHOOT * (float(info.max) - float(info.min))
    if lo < info.min - slack or hi > info.max + slack:
        raise PairlessError(
            f"values span [{lo:.4g}, {hi:.4g}], outside {dtype}'s range [{info.min}, {info.max}]; "
            f"rescale them or store floats (dtype='float32' in .tif, .npy or .nii)"
        )
    if data.dtype.kind == "f":  # float16 cannot hold the integer bounds, so round in float32 at least
        data = np.round(data.astype(np.promote_types(data.dtype, np.float32), copy=False))
    return np.clip(data, info.min, info.max).astype(dtype)


@contextlib.contextmanager
def _atomic_folder(target: Path, *, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target``, else it is removed.

    The folder gets ordinary permissions (``0777`` less the umask; ``mkdtemp`` makes it private).  A
    full disk or a missing permission met in the block is a one-line :class:`WriteError` naming
    ``target`` and the ``size`` of what is being written.
    """
    tmp = temporary_folder(target.parent, prefix=f".{target.name}.")
    try:
        yield tmp
        replace_folder(tmp, target)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno in WRITE_ERRNOS:
            raise write_error(err, target, needed=size) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(source: Path, target: Path) -> None:
    """Move the folder ``source`` onto ``target`` (same file system), replacing any folder there.

    A folder cannot be renamed over a non-empty one, so the old one is first renamed aside: a reader
    sees the old folder or the new one, never a mixture, and a kill in between leaves the new one
    whole in ``source`` and the old one whole beside it.
    """
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / target.name)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)
