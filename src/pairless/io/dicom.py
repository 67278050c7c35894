"""DICOM series (pydicom): a folder of single-slice files, read as ZYX sorted along the slice normal and
rescaled per slice; written as a new series in the same study and frame of reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pairless.errors import PairlessError
from pairless.io.dicom_iod import series_tags, slice_tags
from pairless.io.image import Image, RawImage
from pairless.io.limits import check_size

NAME = "DICOM"


# DICOM tags copied from the input so that the written series sits in the same patient and study.
KEEP = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "PatientPosition",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "StudyDescription",
    "AccessionNumber",
    "ReferringPhysicianName",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "Modality",
    "SOPClassUID",
    "SeriesDescription",
    "SeriesNumber",
    "Manufacturer",
    "BodyPartExamined",
    "Units",
    "SliceThickness",
    # PET: what a reading station needs to show SUV and to know the frame (decay correction, timing)
    "SeriesType",
    "CorrectedImage",
    "DecayCorrection",
    "ActualFrameDuration",
    "FrameReferenceTime",
    "RadiopharmaceuticalInformationSequence",
    "CountsSource",
    "ReconstructionMethod",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "DecayFactor",
    "SUVType",
    "RescaleType",
    # PET IOD: the patient's orientation (it replaces PatientPosition), collimation and laterality
    "PatientOrientationCodeSequence",
    "PatientGantryRelationshipCodeSequence",
    "CollimatorType",
    "ImageLaterality",
)


_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def has_preamble(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(132)[128:] == b"DICM"


def header(path: Path):
    import pydicom

    folder = path if path.is_dir() else path.parent
    wanted = (
        pydicom.dcmread(path, stop_before_pixels=True).get("SeriesInstanceUID") if path.is_file() else None
    )
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
    rescaled = any(
        float(ds.get("RescaleSlope", 1)) != 1
        or float(ds.get("RescaleIntercept", 0)) != 0
        or "ModalityLUTSequence" in ds
        for ds in headers
    )
    first = headers[0]
    bits = int(first.get("BitsAllocated", 16))
    signed = int(first.get("PixelRepresentation", 0)) == 1
    dtype = np.dtype(np.float32) if rescaled else np.dtype(f"{'i' if signed else 'u'}{max(bits // 8, 1)}")
    rows, cols = shapes.pop()
    if len(headers) == 1:
        return (rows, cols), dtype, "YX", True
    return (len(headers), rows, cols), dtype, "ZYX", True


def read(path: Path) -> RawImage:
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
            "put each volume in its own folder"
        )
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in slices}
    if len(shapes) > 1:
        raise PairlessError(f"{folder}: DICOM slices differ in size {sorted(shapes)}; pass one series")
    check_size(folder, (len(slices), *next(iter(shapes))))  # before any slice is decoded
    _warn_uneven(folder, slices, depth)

    rescaled = any(
        float(ds.get("RescaleSlope", 1)) != 1
        or float(ds.get("RescaleIntercept", 0)) != 0
        or "ModalityLUTSequence" in ds
        for ds in slices
    )
    if rescaled:  # slopes differ per slice (PET), so rescale each before stacking
        data = np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in slices]).astype(np.float32)
    else:
        data = np.stack([ds.pixel_array for ds in slices])

    dy, dx = (float(v) for v in first.get("PixelSpacing", [1.0, 1.0]))
    dz = float(np.median(np.diff(depth))) if len(slices) > 1 else float(first.get("SliceThickness") or 1.0)
    voxel = {"Z": dz, "Y": dy, "X": dx}
    affine = _LPS_TO_RAS @ np.column_stack(
        [
            np.append(row * dx, 0),
            np.append(col * dy, 0),
            np.append(normal * dz, 0),
            np.append(positions[0], 1),
        ]
    )
    tags = {kw: first.get(kw) for kw in KEEP if first.get(kw) is not None}
    meta = {"format": "dicom", "dicom": tags, "orientation": orientation.tolist(), "positions": positions}
    meta["sop_instance_uids"] = [str(ds.get("SOPInstanceUID", "")) for ds in slices]  # a derived series cites
    meta["slice_thickness"] = [ds.get("SliceThickness") for ds in slices]  # each slice keeps its own
    if len(slices) == 1:
        return RawImage(data[0], "YX", voxel, affine, meta, folder, True)
    return RawImage(data, "ZYX", voxel, affine, meta, folder, True)


def _warn_uneven(folder: Path, slices: list, depth: np.ndarray) -> None:
    """Warn, naming the slices, of gaps in a series (missing slices) or slices of another thickness.

    A DICOM output keeps every slice's position and thickness, but a volume (NIfTI, TIFF) and a 3D
    method take the slices as evenly spaced at the median spacing.
    """
    import warnings

    names = [Path(ds.filename).name if ds.filename else f"#{ds.get('InstanceNumber')}" for ds in slices]
    steps = np.diff(depth)
    typical = float(np.median(steps)) if len(steps) else 0.0
    # DICOM stores positions as decimal strings of at most 16 characters: 1 % is far above their rounding
    uneven = np.flatnonzero(np.abs(steps - typical) > 0.01 * typical) if len(steps) > 1 else []
    if len(uneven):
        listed = [f"{names[i]} to {names[i + 1]} {steps[i]:.4g} mm" for i in uneven]
        warnings.warn(
            f"{folder}: the slices are not evenly spaced ({_few(listed)}; the others {typical:.4g} mm): "
            f"missing slices? A volume output or a 3D method takes them as {typical:.4g} mm apart",
            stacklevel=3,
        )
    thickness = [float(ds.SliceThickness) if ds.get("SliceThickness") else None for ds in slices]
    known = [t for t in thickness if t is not None]
    if len(set(known)) > 1:
        common = max(set(known), key=known.count)
        odd = [f"{name} {t:g} mm" for name, t in zip(names, thickness) if t is not None and t != common]
        warnings.warn(
            f"{folder}: the slices differ in thickness ({_few(odd)}; the others {common:g} mm); each keeps "
            "its own in a DICOM output",
            stacklevel=3,
        )


def _few(items: list[str]) -> str:
    return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def _geometry(image: Image, depth: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Orientation (6,), positions (depth, 3), row and column spacing for a written series."""
    size = dict(zip(image.spatial_axes, image.voxel_size)) if image.voxel_size else {}
    positions = image.meta.get("positions")
    if image.meta.get("format") == "dicom" and positions is not None and len(positions) == depth:
        return (
            np.asarray(image.meta["orientation"], float),
            np.asarray(positions, float),
            size.get("Y", 1.0),
            size.get("X", 1.0),
        )
    if image.affine is not None:
        lps = _LPS_TO_RAS @ image.affine
        dx, dy = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
        orientation = np.concatenate([lps[:3, 0] / dx, lps[:3, 1] / dy])
        return orientation, lps[:3, 3] + np.arange(depth)[:, None] * lps[:3, 2], dy, dx
    dz = size.get("Z", 1.0)
    positions = np.zeros((depth, 3))
    positions[:, 2] = np.arange(depth) * dz
    return np.array([1.0, 0, 0, 0, 1, 0]), positions, size.get("Y", 1.0), size.get("X", 1.0)


def write(folder: Path, image: Image, data: np.ndarray, *, rescale: bool) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if image.axes not in ("YX", "ZYX"):
        raise PairlessError(f"DICOM output holds axes YX or ZYX, not {image.axes!r}; write .tif or .nii")
    volume = data if image.axes == "ZYX" else data[None]
    orientation, positions, dy, dx = _geometry(image, len(volume))
    tags = dict(image.meta.get("dicom", {})) if image.meta.get("format") == "dicom" else {}
    tags.setdefault("SOPClassUID", _SECONDARY_CAPTURE)
    tags.setdefault("Modality", "OT")
    tags.setdefault("PatientName", "anonymous")
    tags.setdefault("PatientID", "pairless")
    tags.setdefault("StudyInstanceUID", generate_uid())
    tags.setdefault("FrameOfReferenceUID", generate_uid())
    method = image.meta.get("derived_by")
    # the writer of an original series (the simulator) gives its ImageType; all else pairless writes derives
    tags = series_tags(tags, derived="ImageType" not in tags, method=method, slices=len(volume))
    sources = image.meta.get("sop_instance_uids") if image.meta.get("format") == "dicom" else None
    if sources is None or len(sources) != len(volume):
        sources = [None] * len(volume)
    thickness = image.meta.get("slice_thickness") if image.meta.get("format") == "dicom" else None
    if thickness is None or len(thickness) != len(volume):  # not slice for slice of a series: the tags' one
        thickness = [None] * len(volume)
    normal = np.cross(orientation[:3], orientation[3:])
    tags["SeriesDescription"] = (
        f"{tags.get('SeriesDescription', '')} ({f'pairless {method}' if method else 'pairless'})".strip()
    )
    series_uid = generate_uid()
    if len(volume) > 1:
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
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in positions[k]]
        slice_tags(ds, tags, k, float(positions[k] @ normal), sources[k])
        if thickness[k] is not None:
            ds.SliceThickness = thickness[k]
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
