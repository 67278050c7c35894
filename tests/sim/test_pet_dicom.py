"""DICOM in, DICOM out, as a PET station expects: conformant series (dciodvfy), read back by pydicom and
SimpleITK, in the same patient frame as the NIfTI files, with what SUV needs."""

import json
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage

from pairless.cli import main
from pairless.io import read_image, write_image
from pairless.metrics.units import suv_factor
from pairless.sim.pet import (
    PET_IMAGE_STORAGE,
    PetSimConfig,
    background_volume_ml,
    simulate_pet,
    write_study,
)

SMALL = PetSimConfig(matrix=100, pixel_mm=8.1457, views=42, subsets=7)
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


def _series(folder):
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    study = simulate_pet(slices=9, config=SMALL, seed=2, splits=2)
    write_study(study, out, dicom=True)
    return study, out


@pytest.fixture(scope="module")
def denoised(written, tmp_path_factory):
    _, out = written
    target = tmp_path_factory.mktemp("denoised")
    assert (
        main(["denoise", "gaussian", str(out / "pet_2min_dicom"), "--sigma", "1", "--out", str(target)]) == 0
    )
    return target / "pet_2min_dicom"


def test_the_simulator_writes_each_frame_as_a_quantitative_pet_series(written):
    study, out = written
    assert {p.name for p in out.glob("*_dicom")} == {
        "pet_2min_dicom",
        "pet_10min_dicom",
        "pet_2min_part1_dicom",
        "pet_2min_part2_dicom",
        "pet_10min_part1_dicom",
        "pet_10min_part2_dicom",
    }
    slices = _series(out / "pet_2min_dicom")
    assert len(slices) == 9
    first = slices[0]
    assert first.SOPClassUID == PET_IMAGE_STORAGE and first.Modality == "PT" and first.Units == "BQML"
    assert first.ActualFrameDuration == 120_000 and first.DecayCorrection == "START"
    assert "ATTN" in first.CorrectedImage and "DECY" in first.CorrectedImage
    assert [ds.ImageIndex for ds in slices] == list(range(1, 10)) and first.NumberOfSlices == 9
    assert "PatientPosition" not in first  # the orientation code sequences replace it
    # decay corrected to the start: 2-min frame, DF = λT/(1 − e^(−λT)), Tave = ln(DF)/λ
    lam = np.log(2) / float(first.RadiopharmaceuticalInformationSequence[0].RadionuclideHalfLife)
    assert float(first.DecayFactor) == pytest.approx(lam * 120 / -np.expm1(-lam * 120), rel=1e-9)
    assert float(first.FrameReferenceTime) == pytest.approx(np.log(float(first.DecayFactor)) / lam * 1000)
    assert len({float(ds.RescaleSlope) for ds in slices}) > 1  # each plane has its own rescale
    # one study and frame of reference for all frames
    other = _series(out / "pet_10min_dicom")[0]
    assert (
        other.StudyInstanceUID == first.StudyInstanceUID
        and other.FrameOfReferenceUID == first.FrameOfReferenceUID
    )
    assert other.SeriesInstanceUID != first.SeriesInstanceUID and other.SeriesNumber != first.SeriesNumber
    image = read_image(out / "pet_2min_dicom")
    assert image.axes == "ZYX" and np.allclose(image.voxel_size, study.voxel_size, atol=1e-4)
    expected = 1000 * study.images[2.0]  # kBq/mL -> Bq/mL
    assert np.abs(image.data - expected).max() <= 1e-4 * np.abs(expected).max()


def test_the_series_carry_what_suv_needs_background_reads_one(written):
    study, out = written
    first = _series(out / "pet_10min_dicom")[0]
    assert float(first.PatientWeight) == pytest.approx(background_volume_ml() / 1000)
    factor = suv_factor(read_image(out / "pet_10min_dicom").meta["dicom"])
    # the phantom convention: weight = background water, dose at the scan = background activity x its volume
    assert factor * 1000 * study.phantom.background_activity == pytest.approx(1.0, rel=1e-9)


def test_denoising_a_series_writes_a_new_series_that_keeps_dose_weight_and_timing(written, denoised):
    study, out = written
    source = out / "pet_2min_dicom"
    before, after = _series(source), _series(denoised)
    assert len(after) == len(before)
    kept = (
        "Units",
        "PatientWeight",
        "SeriesDate",
        "SeriesTime",
        "AcquisitionDate",
        "AcquisitionTime",
        "ActualFrameDuration",
        "FrameReferenceTime",
        "DecayFactor",
        "DecayCorrection",
        "RadiopharmaceuticalInformationSequence",
        "PatientOrientationCodeSequence",
    )
    for a, b in zip(before, after):
        assert b.SeriesInstanceUID != a.SeriesInstanceUID and b.SOPInstanceUID != a.SOPInstanceUID
        assert b.FrameOfReferenceUID == a.FrameOfReferenceUID and b.StudyInstanceUID == a.StudyInstanceUID
        assert b.SeriesNumber == a.SeriesNumber + 1000
        assert list(b.ImagePositionPatient) == list(a.ImagePositionPatient)
        assert list(b.ImageOrientationPatient) == list(a.ImageOrientationPatient)
        assert list(b.PixelSpacing) == list(a.PixelSpacing)
        assert all(b.get(k) == a.get(k) for k in kept), [k for k in kept if b.get(k) != a.get(k)]
        assert list(b.ImageType) == ["DERIVED", "PRIMARY"] and "gaussian" in b.DerivationDescription
        assert b.SourceImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
        assert "gaussian" in b.SeriesDescription and b.Modality == "PT" and b.ImageIndex == a.ImageIndex
    original, result = read_image(source), read_image(denoised)
    expected = ndimage.gaussian_filter(original.data, 1.0)  # a volume is filtered in 3D
    assert result.voxel_size == original.voxel_size
    assert np.abs(result.data - expected).max() <= 2e-3 * np.abs(expected).max()
    # quantitation: the denoised background mean is the input's
    assert result.data.mean() == pytest.approx(original.data.mean(), rel=1e-3)


@pytest.mark.skipif(
    shutil.which("dciodvfy") is None, reason="dciodvfy (Debian's dicom3tools) is not installed"
)
def test_dciodvfy_finds_no_error_in_simulated_and_denoised_series(written, denoised):
    _, out = written
    files = [
        *sorted((out / "pet_2min_dicom").glob("*.dcm")),
        *sorted((out / "pet_10min_part1_dicom").glob("*.dcm"))[:2],
        *sorted(denoised.glob("*.dcm")),
    ]
    problems = []
    for f in files:
        run = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True)
        problems += [
            f"{f.parent.name}/{f.name}: {line}"
            for line in (run.stdout + run.stderr).splitlines()
            if line.startswith(("Error", "Warning"))
        ]
    assert problems == []
    # one study, frame of reference and patient across the series (dicom3tools' entity check)
    run = subprocess.run(["dcentvfy", *map(str, files)], capture_output=True, text=True)
    assert run.returncode == 0 and not (run.stdout + run.stderr).strip()


def test_simpleitk_reads_the_series_with_the_nifti_geometry_and_values(written, denoised):
    sitk = pytest.importorskip("SimpleITK")
    _, out = written
    for folder in (out / "pet_2min_dicom", denoised):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
        itk = reader.Execute()
        # ITK's physical space is LPS: p = origin + direction · diag(spacing) · (i, j, k)
        direction = np.array(itk.GetDirection()).reshape(3, 3)
        lps = np.eye(4)
        lps[:3, :3] = direction * np.array(itk.GetSpacing())
        lps[:3, 3] = itk.GetOrigin()
        ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
        ours = read_image(folder)
        assert np.abs(ras - ours.affine).max() < 1e-4
        assert np.abs(sitk.GetArrayFromImage(itk) - ours.data).max() <= 1e-4 * np.abs(ours.data).max()
    nifti = nib.load(out / "pet_2min_kBq_per_mL.nii.gz")
    assert np.abs(nifti.affine - read_image(out / "pet_2min_dicom").affine).max() < 1e-4


def test_a_voxel_has_one_world_coordinate_in_the_nifti_and_the_dicom(written):
    study, out = written
    nifti = nib.load(out / "pet_10min_kBq_per_mL.nii.gz")
    slices = {int(ds.InstanceNumber): ds for ds in _series(out / "pet_10min_dicom")}
    nz, ny, nx = study.truth.shape
    for i, j, k in [(0, 0, 0), (nx - 1, ny - 1, nz - 1), (17, 60, 4), (nx - 1, 3, 0)]:
        ds = slices[k + 1]  # InstanceNumber counts the slices from the first along +z
        row, col = (
            np.array(ds.ImageOrientationPatient[:3], float),
            np.array(ds.ImageOrientationPatient[3:], float),
        )
        dy, dx = (float(v) for v in ds.PixelSpacing)
        lps = np.array(ds.ImagePositionPatient, float) + i * dx * row + j * dy * col
        assert np.abs((nifti.affine @ [i, j, k, 1])[:3] - lps * LPS_TO_RAS).max() < 1e-3
        # and the NIfTI holds that voxel's value there (volume.T: X, Y, Z)
        value = np.asarray(nifti.dataobj)[i, j, k] * 1000
        stored = ds.pixel_array[j, i] * float(ds.RescaleSlope)
        assert stored == pytest.approx(value, abs=float(ds.RescaleSlope))
    info = json.loads((out / "phantom.json").read_text())
    for diameter, zyx in info["sphere_centers_mm_zyx"].items():
        ijk = np.array(zyx[::-1]) / np.array(study.voxel_size[::-1])
        assert np.allclose(nifti.affine @ [*ijk, 1], [*info["sphere_centers_ras_mm"][diameter], 1], atol=1e-3)


def test_dicom_to_nifti_to_dicom_keeps_positions_within_0_01_mm(written, tmp_path):
    _, out = written
    series = read_image(out / "pet_2min_dicom")
    nifti = read_image(write_image(tmp_path / "pet.nii.gz", series))
    again = write_image(tmp_path / "again.dcm", nifti)
    before = np.array([ds.ImagePositionPatient for ds in _series(out / "pet_2min_dicom")], float)
    after = np.array([ds.ImagePositionPatient for ds in _series(again)], float)
    assert np.abs(after - before).max() < 0.01
    assert np.allclose(read_image(again).data, series.data, rtol=1e-3, atol=0.5)
