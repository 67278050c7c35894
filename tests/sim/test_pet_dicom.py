"""DICOM in, DICOM out, as a PET station expects: the simulator's series and a denoised one re-read."""

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from pairless.cli import main
from pairless.io import read_image
from pairless.sim.pet import PET_IMAGE_STORAGE, PetSimConfig, simulate_pet, write_study

SMALL = PetSimConfig(matrix=100, pixel_mm=8.1457, views=42, subsets=7)


def _series(folder):
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    study = simulate_pet(slices=4, config=SMALL, seed=2, splits=2)
    write_study(study, out, dicom=True)
    return study, out


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
    assert len(slices) == 4
    first = slices[0]
    assert first.SOPClassUID == PET_IMAGE_STORAGE and first.Modality == "PT" and first.Units == "BQML"
    assert first.ActualFrameDuration == 120_000 and first.DecayCorrection == "START"
    assert (
        "ATTN" in first.CorrectedImage
        and first.RadiopharmaceuticalInformationSequence[0].RadionuclideHalfLife
    )
    assert len({float(ds.RescaleSlope) for ds in slices}) > 1  # each plane has its own rescale
    # one study and frame of reference for all frames
    other = _series(out / "pet_10min_dicom")[0]
    assert (
        other.StudyInstanceUID == first.StudyInstanceUID
        and other.FrameOfReferenceUID == first.FrameOfReferenceUID
    )
    assert other.SeriesInstanceUID != first.SeriesInstanceUID
    image = read_image(out / "pet_2min_dicom")
    assert image.axes == "ZYX" and np.allclose(image.voxel_size, study.voxel_size, atol=1e-4)
    expected = 1000 * study.images[2.0]  # kBq/mL -> Bq/mL
    assert np.abs(image.data - expected).max() <= 1e-4 * np.abs(expected).max()


def test_denoising_a_series_writes_a_new_series_in_the_same_frame_of_reference(written, tmp_path):
    study, out = written
    source = out / "pet_2min_dicom"
    assert main(["denoise", "gaussian", str(source), "--sigma", "1", "--out", str(tmp_path)]) == 0
    result_folder = tmp_path / "pet_2min_dicom"
    before, after = _series(source), _series(result_folder)
    assert len(after) == len(before)
    for a, b in zip(before, after):
        assert b.SeriesInstanceUID != a.SeriesInstanceUID and b.SOPInstanceUID != a.SOPInstanceUID
        assert b.FrameOfReferenceUID == a.FrameOfReferenceUID and b.StudyInstanceUID == a.StudyInstanceUID
        assert list(b.ImagePositionPatient) == list(a.ImagePositionPatient)
        assert list(b.ImageOrientationPatient) == list(a.ImageOrientationPatient)
        assert list(b.PixelSpacing) == list(a.PixelSpacing)
        assert b.Units == "BQML" and b.ActualFrameDuration == a.ActualFrameDuration and b.Modality == "PT"
        assert "gaussian" in b.SeriesDescription and "DERIVED" in b.ImageType
    original, denoised = read_image(source), read_image(result_folder)
    expected = ndimage.gaussian_filter(original.data, 1.0)  # a volume is filtered in 3D
    assert denoised.voxel_size == original.voxel_size
    assert np.abs(denoised.data - expected).max() <= 2e-3 * np.abs(expected).max()
    # quantitation: the denoised background mean is the input's
    assert denoised.data.mean() == pytest.approx(original.data.mean(), rel=1e-3)
