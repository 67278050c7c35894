"""Image I/O: round trips keep values, axes and geometry; bad inputs give one clear PairlessError."""

from __future__ import annotations

import numpy as np
import pytest

from pairless import io
from pairless.errors import PairlessError
from pairless.io import Image, read_image, validate_axes, write_image


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _files(folder):
    return sorted(p.name for p in folder.rglob("*"))


# ---------------------------------------------------------------- axes and Image


def test_validate_axes_upper_cases_good_strings():
    assert validate_axes("zyx", 3) == "ZYX"
    assert validate_axes("STCZYX", 6) == "STCZYX"


@pytest.mark.parametrize(
    "axes, ndim, words",
    [
        ("XYZ", 3, "end in YX"),
        ("ZQYX", 4, "unknown letters 'Q'"),
        ("ZZYX", 4, "repeats"),
        ("ZYX", 2, "3 letters but the image has 2"),
    ],
)
def test_validate_axes_names_bad_string_and_fix(axes, ndim, words):
    with pytest.raises(PairlessError, match=words) as err:
        validate_axes(axes, ndim)
    assert repr(axes) in str(err.value) and "STCZYX" in str(err.value)


def test_with_data_keeps_geometry_and_checks_shape(rng, tmp_path):
    image = Image(rng.random((3, 4, 5)), "ZYX", (2.0, 0.5, 0.5), np.eye(4), tmp_path / "a.tif", {"k": 1})
    new = image.with_data(np.zeros((3, 4, 5), np.float32))
    assert new.axes == "ZYX" and new.voxel_size == (2.0, 0.5, 0.5) and new.meta["k"] == 1
    assert new.source is None and new.meta["origin"] == tmp_path / "a.tif"
    assert new.spatial_axes == "ZYX" and Image(np.zeros((2, 3, 4)), "CYX").spatial_axes == "YX"
    with pytest.raises(PairlessError, match="same shape"):
        image.with_data(np.zeros((3, 4)))


def test_image_rejects_voxel_size_of_wrong_length():
    with pytest.raises(PairlessError, match="voxel_size"):
        Image(np.zeros((3, 4, 5)), "ZYX", (1.0, 1.0))


# ---------------------------------------------------------------- TIFF


def test_tiff_imagej_round_trip_keeps_values_axes_voxel(rng, tmp_path):
    image = Image(rng.random((3, 6, 7)).astype(np.float64), "ZYX", (2.5, 0.3, 0.4))
    out = write_image(tmp_path / "sub" / "a.tif", image)
    back = read_image(out)
    assert back.data.dtype == np.float32 and back.axes == "ZYX"
    np.testing.assert_array_equal(back.data, image.data.astype(np.float32))
    np.testing.assert_allclose(back.voxel_size, image.voxel_size, rtol=1e-6)
    assert back.source == out


@pytest.mark.parametrize(
    "axes, shape, dtype",
    [
        ("SZYX", (2, 3, 4, 5), "float64"),
        ("CZYX", (1, 3, 4, 5), "uint16"),
        ("TCYX", (2, 3, 4, 5), "int32"),
        ("ZCYX", (2, 3, 4, 5), "uint16"),
    ],
)
def test_tiff_other_axes_and_dtypes_round_trip(rng, tmp_path, axes, shape, dtype):
    data = (rng.random(shape) * 1000).astype(dtype)
    spatial = sum(a in "ZYX" for a in axes)
    image = Image(data, axes, (1e-3, 2e-4, 2e-4)[-spatial:])
    back = read_image(write_image(tmp_path / "a.tiff", image, dtype=None))
    assert back.axes == axes and back.data.dtype == data.dtype
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_allclose(back.voxel_size, image.voxel_size, rtol=1e-6)


def test_tiff_rgb_is_read_channels_first_and_axes_override(rng, tmp_path):
    import tifffile

    rgb = rng.integers(0, 255, (6, 7, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    back = read_image(tmp_path / "rgb.tif")
    assert back.axes == "CYX"
    np.testing.assert_array_equal(back.data, np.moveaxis(rgb, -1, 0))
    plain = rng.random((4, 6, 7)).astype(np.float32)
    tifffile.imwrite(tmp_path / "stack.tif", plain, photometric="minisblack")
    assert read_image(tmp_path / "stack.tif").axes == "SYX"  # generic frames are samples
    assert read_image(tmp_path / "stack.tif", axes="zyx").axes == "ZYX"
    moved = read_image(tmp_path / "stack.tif", axes="YXC")
    assert moved.axes == "CYX" and moved.data.shape == (7, 4, 6)
    frames = rng.random((2, 3, 6, 7)).astype(np.float32)
    tifffile.imwrite(tmp_path / "iq.tif", frames, metadata={"axes": "IQYX"}, photometric="minisblack")
    with pytest.raises(PairlessError, match="'SSYX'.*--axes"):  # two generic axes: which is which?
        read_image(tmp_path / "iq.tif")
    named = read_image(tmp_path / "iq.tif", axes="TZYX")
    assert named.axes == "TZYX"
    np.testing.assert_array_equal(named.data, frames)


def test_tiff_voxel_from_imagej_micron_and_ome(rng, tmp_path):
    import tifffile

    data = rng.random((3, 6, 7)).astype(np.float32)
    tifffile.imwrite(
        tmp_path / "ij.tif",
        data,
        imagej=True,
        resolution=(1 / 0.2, 1 / 0.1),
        metadata={"axes": "ZYX", "spacing": 0.5, "unit": "micron"},
    )
    np.testing.assert_allclose(read_image(tmp_path / "ij.tif").voxel_size, (5e-4, 1e-4, 2e-4), rtol=1e-6)
    sizes = {"PhysicalSizeX": 0.2, "PhysicalSizeY": 0.1, "PhysicalSizeZ": 0.5}  # µm, OME's default unit
    tifffile.imwrite(tmp_path / "o.ome.tif", data, ome=True, metadata={"axes": "ZYX", **sizes})
    ome = read_image(tmp_path / "o.ome.tif")
    assert ome.axes == "ZYX"
    np.testing.assert_allclose(ome.voxel_size, (5e-4, 1e-4, 2e-4), rtol=1e-6)
    tifffile.imwrite(tmp_path / "none.tif", data, photometric="minisblack")
    assert read_image(tmp_path / "none.tif").voxel_size is None


# ---------------------------------------------------------------- PNG


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_png_round_trip_keeps_integer_dtype_and_pixel_size(rng, tmp_path, dtype):
    data = rng.integers(0, np.iinfo(dtype).max, (9, 11), dtype=dtype)
    write_image(tmp_path / "a.png", Image(data, "YX", (0.5, 0.25)), dtype=dtype)
    back = read_image(tmp_path / "a.png")
    assert back.axes == "YX" and back.data.dtype == dtype
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_allclose(back.voxel_size, (0.5, 0.25), rtol=1e-6)
    # A denoised float copy goes back to the dtype the PNG was read with, rounded and clipped.
    noisy = back.data.astype(np.float32) + 0.3
    noisy[0, 0] = -1.0
    again = read_image(write_image(tmp_path / "b.png", back.with_data(noisy)))
    assert again.data.dtype == dtype and again.data[0, 0] == 0
    np.testing.assert_array_equal(again.data[1:], data[1:])


def test_png_rgb_reads_as_cyx_and_round_trips(rng, tmp_path):
    from PIL import Image as PILImage

    rgb = rng.integers(0, 255, (5, 6, 3), dtype=np.uint8)
    PILImage.fromarray(rgb).save(tmp_path / "c.png")
    back = read_image(tmp_path / "c.png")
    assert back.axes == "CYX"
    np.testing.assert_array_equal(back.data, np.moveaxis(rgb, -1, 0))
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "d.png", back)).data, back.data)


def test_png_refuses_float_without_integer_dtype(tmp_path):
    image = Image(np.linspace(0, 1, 20).reshape(4, 5), "YX")
    with pytest.raises(PairlessError, match=r"uint8/uint16.*\.tif"):
        write_image(tmp_path / "f.png", image)
    with pytest.raises(PairlessError, match="outside uint8's range"):
        write_image(tmp_path / "f.png", image.with_data(image.data * 1000), dtype="uint8")
    assert _files(tmp_path) == []


# ---------------------------------------------------------------- NumPy


@pytest.mark.parametrize("shape, axes", [((4, 5), "YX"), ((2, 4, 5), "ZYX"), ((2, 3, 4, 5), "SZYX")])
def test_npy_default_axes_by_ndim_and_dtype_policy(rng, tmp_path, shape, axes):
    data = rng.integers(-100, 100, shape).astype(np.int16)
    np.save(tmp_path / "a.npy", data)
    image = read_image(tmp_path / "a.npy")
    assert image.axes == axes and image.data.dtype == np.int16 and image.voxel_size is None
    as_float = np.load(write_image(tmp_path / "f.npy", image))
    kept = np.load(write_image(tmp_path / "k.npy", image, dtype=None))
    assert as_float.dtype == np.float32 and kept.dtype == np.int16
    np.testing.assert_array_equal(as_float, data)
    np.testing.assert_array_equal(kept, data)


def test_npy_five_dims_need_axes_and_bool_reads_as_uint8(tmp_path):
    np.save(tmp_path / "five.npy", np.zeros((1, 2, 2, 3, 4)))
    with pytest.raises(PairlessError, match=r"pass them with --axes \(axes= in Python\)"):
        read_image(tmp_path / "five.npy")
    assert read_image(tmp_path / "five.npy", axes="STZYX").axes == "STZYX"
    np.save(tmp_path / "mask.npy", np.eye(3, dtype=bool))
    mask = read_image(tmp_path / "mask.npy")
    assert mask.data.dtype == np.uint8 and mask.data.sum() == 3


# ---------------------------------------------------------------- NIfTI


def _oblique_affine():
    angle = 0.3
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.8, 0.9, 2.5])
    affine[:3, 3] = [-10.0, 20.0, 5.0]
    return affine


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_keeps_array_and_affine(rng, tmp_path, suffix):
    import nibabel as nib

    xyz = rng.integers(-500, 500, (6, 5, 4)).astype(np.int16)
    original = nib.Nifti1Image(xyz, _oblique_affine())
    original.to_filename(tmp_path / f"in{suffix}")
    image = read_image(tmp_path / f"in{suffix}")
    assert image.axes == "ZYX" and image.data.shape == (4, 5, 6) and image.data.dtype == np.int16
    np.testing.assert_array_equal(image.data, xyz.T)
    np.testing.assert_allclose(image.voxel_size, (2.5, 0.9, 0.8), rtol=1e-6)
    out = nib.load(write_image(tmp_path / f"out{suffix}", image))
    np.testing.assert_array_equal(out.get_fdata(), nib.load(tmp_path / f"in{suffix}").get_fdata())
    np.testing.assert_allclose(out.affine, original.affine, atol=1e-6)
    assert out.get_data_dtype() == np.float32


def test_nifti_scaled_and_4d(rng, tmp_path):
    import nibabel as nib

    xyzt = rng.integers(0, 1000, (4, 5, 3, 2)).astype(np.int16)
    scaled = nib.Nifti1Image(xyzt, np.diag([1.0, 2.0, 3.0, 1.0]))
    scaled.header.set_slope_inter(0.5, -7.0)
    scaled.to_filename(tmp_path / "s.nii")
    image = read_image(tmp_path / "s.nii")
    assert image.axes == "TZYX" and image.data.dtype == np.float32 and image.voxel_size == (3.0, 2.0, 1.0)
    np.testing.assert_allclose(image.data, (xyzt * 0.5 - 7.0).transpose(3, 2, 1, 0))
    out = nib.load(write_image(tmp_path / "o.nii", image))
    np.testing.assert_allclose(out.get_fdata(), nib.load(tmp_path / "s.nii").get_fdata(), rtol=1e-6)
    with pytest.raises(PairlessError, match="set by the format"):
        read_image(tmp_path / "s.nii", axes="SZYX")


def test_nifti_from_tiff_geometry_uses_voxel_size(rng, tmp_path):
    import nibabel as nib

    image = Image(rng.random((3, 4, 5)).astype(np.float32), "ZYX", (3.0, 0.5, 0.25))
    out = nib.load(write_image(tmp_path / "v.nii.gz", image))
    np.testing.assert_allclose(out.header.get_zooms(), (0.25, 0.5, 3.0))
    with pytest.raises(PairlessError, match="write .tif"):
        write_image(tmp_path / "c.nii", Image(np.zeros((2, 4, 5)), "CYX"))


# ---------------------------------------------------------------- DICOM


def _write_slice(path, stored, *, position, slope, intercept, series_uid, instance):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.128"  # PET image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = "Phantom^NEMA", "P123", "PT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", series_uid
    ds.FrameOfReferenceUID = "1.2.3.5"
    ds.InstanceNumber = instance
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = list(position)
    ds.PixelSpacing = [4.0, 3.0]
    ds.SliceThickness = 2.0
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = stored.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture
def dicom_series(rng, tmp_path):
    """Five slices named in shuffled order, z descending with the names, each with its own slope."""
    folder = tmp_path / "series"
    folder.mkdir()
    stored = rng.integers(0, 4000, (5, 6, 7)).astype(np.uint16)
    slopes = [0.5, 1.25, 2.0, 0.125, 3.0]
    names = [3, 0, 4, 1, 2]
    for k in range(5):
        _write_slice(
            folder / f"IM{names[k]}",
            stored[k],
            position=(-10.0, 5.0, 40.0 - 2.0 * k),
            slope=slopes[k],
            intercept=k - 2,
            series_uid="1.2.3.4.9",
            instance=names[k] + 1,
        )
    (folder / "notes.txt").write_text("not dicom")
    # Sorted along the normal (+z), slice k lies at index 4 - k.
    expected = np.stack([stored[k] * slopes[k] + (k - 2) for k in range(5)])[::-1]
    return folder, expected


def test_dicom_reads_sorted_and_rescaled_per_slice(dicom_series):
    folder, expected = dicom_series
    image = read_image(folder)
    assert image.axes == "ZYX" and image.data.dtype == np.float32
    np.testing.assert_allclose(image.data, expected, rtol=1e-6)
    np.testing.assert_allclose(image.voxel_size, (2.0, 4.0, 3.0))
    np.testing.assert_allclose(image.meta["positions"][:, 2], [32, 34, 36, 38, 40])
    one_file = read_image(folder / "IM2")
    np.testing.assert_array_equal(one_file.data, image.data)
    assert one_file.source == folder


def test_dicom_round_trip_keeps_geometry_and_patient(dicom_series, tmp_path):
    folder, _ = dicom_series
    image = read_image(folder)
    written = image.data * 1.5 + 0.25
    out = write_image(tmp_path / "out" / "series", image.with_data(written), protect=[folder])
    back = read_image(out)
    peak = np.abs(written).max(axis=(1, 2), keepdims=True)
    # int16 with a per-slice slope: off by at most half a step, plus float32 rounding.
    assert np.all(np.abs(back.data - written) <= peak / 32767 / 2 + peak * 1e-6)
    np.testing.assert_allclose(back.meta["positions"], image.meta["positions"])
    np.testing.assert_allclose(back.voxel_size, image.voxel_size)
    np.testing.assert_allclose(back.affine, image.affine)
    tags = back.meta["dicom"]
    assert str(tags["PatientName"]) == "Phantom^NEMA" and tags["StudyInstanceUID"] == "1.2.3.4"
    assert tags["SeriesDescription"].endswith("(pairless)")
    import pydicom

    first = pydicom.dcmread(next(out.iterdir()))
    assert first.SeriesInstanceUID != "1.2.3.4.9" and first.Modality == "PT"


def test_dicom_integer_values_are_stored_exactly(rng, tmp_path):
    data = rng.integers(-1000, 3000, (3, 4, 5)).astype(np.float32)
    image = Image(data, "ZYX", (2.0, 0.7, 0.7))
    back = read_image(write_image(tmp_path / "ct.dcm", image))
    assert back.data.dtype == np.int16  # no rescale in the files, so the stored dtype is kept
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_allclose(back.voxel_size, (2.0, 0.7, 0.7))


def test_dicom_to_nifti_and_back_keeps_positions(dicom_series, tmp_path):
    folder, _ = dicom_series
    image = read_image(folder)
    nifti = read_image(write_image(tmp_path / "v.nii.gz", image))
    np.testing.assert_allclose(nifti.affine, image.affine, atol=1e-6)
    again = read_image(write_image(tmp_path / "again.dcm", nifti))
    np.testing.assert_allclose(again.meta["positions"], image.meta["positions"], atol=1e-4)
    np.testing.assert_allclose(again.data, image.data, rtol=1e-3, atol=0.1)


# ---------------------------------------------------------------- bad input


def test_missing_file_and_unsupported_suffix(tmp_path):
    with pytest.raises(PairlessError, match="no such file"):
        read_image(tmp_path / "nope.tif")
    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(PairlessError, match=r"unsupported file type '\.jpg'.*\.nii\.gz"):
        read_image(tmp_path / "a.jpg")
    with pytest.raises(PairlessError, match="unknown output type"):
        write_image(tmp_path / "b.jpg", Image(np.zeros((2, 2)), "YX"))


@pytest.mark.parametrize(
    "name, kind",
    [("a.tif", "TIFF"), ("a.png", "PNG"), ("a.nii.gz", "NIfTI"), ("a.dcm", "DICOM"), ("a.npy", "NumPy")],
)
def test_corrupt_file_names_format(tmp_path, name, kind):
    (tmp_path / name).write_text("this is only text\n")
    with pytest.raises(PairlessError, match=f"cannot be read as {kind}") as err:
        read_image(tmp_path / name)
    assert name in str(err.value) and "\n" not in str(err.value)


def test_folder_without_dicom(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(PairlessError, match="no DICOM images"):
        read_image(tmp_path)


@pytest.mark.parametrize(
    "array, words",
    [
        (np.zeros((0, 5)), "empty"),
        (np.array([[1.0, np.nan], [np.inf, 2.0]]), "contains 2 NaN/Inf.*nan_to_num"),
        (np.zeros((3, 3), np.complex64), "complex64 are not supported"),
        (np.zeros(5), "at least Y and X"),
    ],
)
def test_bad_arrays(tmp_path, array, words):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(PairlessError, match=words):
        read_image(tmp_path / "bad.npy")


def test_bad_axes_override(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 3, 4)))
    with pytest.raises(PairlessError, match="a.npy: axes 'YX' has 2 letters but the image has 3"):
        read_image(tmp_path / "a.npy", axes="YX")
    with pytest.raises(PairlessError, match="unknown letters 'W'"):
        read_image(tmp_path / "a.npy", axes="WYX")


# ---------------------------------------------------------------- safe writing


def test_refuses_to_overwrite_inputs(rng, tmp_path):
    src = tmp_path / "in.tif"
    write_image(src, Image(rng.random((4, 5)).astype(np.float32), "YX"))
    before = src.read_bytes()
    image = read_image(src)
    for candidate in (image, image.with_data(image.data * 2)):
        with pytest.raises(PairlessError, match="overwrite the input"):
            write_image(tmp_path / "." / "in.tif", candidate)
    other = Image(image.data, "YX")
    with pytest.raises(PairlessError, match="overwrite the input"):
        write_image(src, other, protect=[str(src)])
    assert src.read_bytes() == before


def test_refuses_dicom_output_onto_input_folder(dicom_series):
    folder, _ = dicom_series
    with pytest.raises(PairlessError, match="overwrite the input"):
        write_image(folder, read_image(folder))
    with pytest.raises(PairlessError, match="overwrite the input"):
        write_image(folder.parent, read_image(folder).with_data(read_image(folder).data))


def test_failed_write_leaves_nothing_behind(rng, tmp_path, monkeypatch):
    def broken(tmp, image, data):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk died")

    monkeypatch.setattr(io.tiff, "write", broken)
    with pytest.raises(RuntimeError):
        write_image(tmp_path / "out" / "a.tif", Image(np.zeros((3, 4)), "YX"))
    assert _files(tmp_path / "out") == []

    def broken_dicom(folder, image, data, *, rescale):
        (folder / "0001.dcm").write_bytes(b"half")
        raise RuntimeError("disk died")

    monkeypatch.setattr(io.dicom, "write", broken_dicom)
    with pytest.raises(RuntimeError):
        write_image(tmp_path / "out" / "s.dcm", Image(np.zeros((2, 3, 4)), "ZYX"))
    assert _files(tmp_path / "out") == []


def test_rewriting_a_dicom_output_replaces_it_but_not_other_folders(rng, tmp_path):
    image = Image(rng.integers(0, 100, (2, 3, 4)).astype(np.float32), "ZYX")
    write_image(tmp_path / "s.dcm", image)
    write_image(tmp_path / "s.dcm", image.with_data(image.data[::-1].copy()))
    np.testing.assert_array_equal(read_image(tmp_path / "s.dcm").data, image.data[::-1])
    assert _files(tmp_path) == ["0001.dcm", "0002.dcm", "s.dcm"]
    (tmp_path / "keep.dcm").mkdir()
    (tmp_path / "keep.dcm" / "thesis.docx").write_text("precious")
    with pytest.raises(PairlessError, match="other files"):
        write_image(tmp_path / "keep.dcm", image)
    assert (tmp_path / "keep.dcm" / "thesis.docx").exists()
