"""NEMA recovery coefficients in the clinic's units: DICOM Units, pairless NIfTI units, SUVbw, and one-line
refusals where activities and values cannot be put in one unit."""

import nibabel as nib
import numpy as np
import pytest

from pairless import api
from pairless.cli import main
from pairless.errors import PairlessError
from pairless.io import read_image, write_image
from pairless.io.units import dicom_units, image_units, nifti_units, unit_name
from pairless.metrics.units import suv_factor
from pairless.sim.pet import PetSimConfig, simulate_pet, write_study

SMALL = PetSimConfig(matrix=100, pixel_mm=8.1457, views=42, subsets=7)
ACTIVITIES = {"phantom": "nema", "sphere_activity": 20.0, "background_activity": 2.0}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("units")
    write_study(simulate_pet(slices=9, config=SMALL, seed=4, minutes=(10.0,)), out, dicom=True)
    return out


def _rcs(row: dict) -> np.ndarray:
    return np.array([[s["rc_max"], s["rc_mean"], s["rc_peak"]] for s in row["spheres"]])


def _rewrite(folder, target, **tags):
    """The series in ``folder`` written again with some tags changed (and the values scaled by ``scale``)."""
    image = read_image(folder)
    scale = tags.pop("scale", 1.0)
    meta = {**image.meta, "dicom": {**image.meta["dicom"], **tags}}
    return write_image(
        target, type(image)(image.data * scale, image.axes, image.voxel_size, image.affine, None, meta)
    )


def test_a_bqml_series_with_kbq_activities_gives_the_rcs_of_its_nifti(study):
    dicom, nifti = api.evaluate(
        [study / "pet_10min_dicom", study / "pet_10min_kBq_per_mL.nii.gz"], **ACTIVITIES
    )
    assert dicom["units"]["image"] == "Bq/mL" and dicom["units"]["image_units_from"] == "DICOM Units BQML"
    assert nifti["units"]["image"] == "kBq/mL" and nifti["units"]["image_units_from"] == "NIfTI description"
    assert dicom["units"]["activities"] == nifti["units"]["activities"] == "kBq/mL"
    assert dicom["sphere_activity"] == 20_000 and nifti["sphere_activity"] == 20
    assert np.abs(_rcs(dicom) - _rcs(nifti)).max() < 1e-3  # the DICOM holds int16 values with a slope
    assert 0.5 < dicom["spheres"][-1]["rc_max"] < 1.5
    # the same activities in Bq/mL give the same numbers
    again = api.evaluate(
        [study / "pet_10min_dicom"],
        **{**ACTIVITIES, "sphere_activity": 2e4, "background_activity": 2e3},
        activity_units="Bq/mL",
    )[0]
    assert np.allclose(_rcs(again), _rcs(dicom))


def test_counts_with_a_physical_activity_give_one_line_saying_what_to_pass(study, tmp_path, capsys):
    counts = _rewrite(study / "pet_10min_dicom", tmp_path / "cnts.dcm", Units="CNTS")
    with pytest.raises(PairlessError, match="--activity-units image") as err:
        api.evaluate([counts], **ACTIVITIES)
    assert "counts (DICOM Units CNTS)" in str(err.value) and "\n" not in str(err.value)
    assert main(["evaluate", "--phantom", "nema", "--sphere-activity", "20", "--images", str(counts)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    # activities in the image's own units are taken as they are
    row = api.evaluate(
        [counts], **{**ACTIVITIES, "sphere_activity": 2e4, "background_activity": 2e3}, activity_units="image"
    )[0]
    assert row["units"]["activity_to_image"] == 1.0 and 0.5 < row["spheres"][-1]["rc_max"] < 1.5


def test_unknown_units_need_units_or_activities_in_the_image_units(study, tmp_path):
    plain = tmp_path / "plain.nii.gz"  # a NIfTI written by another tool: no units anywhere
    source = nib.load(study / "pet_10min_kBq_per_mL.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj), source.affine), plain)
    with pytest.raises(PairlessError, match=r"units of its values are unknown.*pass --units"):
        api.evaluate([plain], **ACTIVITIES)
    given = api.evaluate([plain], **ACTIVITIES, units="kBq/mL")[0]
    own = api.evaluate([study / "pet_10min_kBq_per_mL.nii.gz"], **ACTIVITIES)[0]
    assert given["units"]["image_units_from"] == "--units" and np.allclose(_rcs(given), _rcs(own))
    with pytest.raises(PairlessError, match="unknown unit 'kBq/L' for --activity-units"):
        api.evaluate([plain], **ACTIVITIES, activity_units="kBq/L")
    # arrays have no units: the caller says
    data = read_image(plain).data
    rows = api.evaluate({"a": data}, **ACTIVITIES, units="kBq/mL", voxel_size=(2.027, 8.1457, 8.1457))
    assert np.allclose(_rcs(rows[0]), _rcs(own))
    with pytest.raises(PairlessError, match="unknown"):
        api.evaluate({"a": data}, **ACTIVITIES, voxel_size=(2.027, 8.1457, 8.1457))


def test_suv_round_trip(study, tmp_path):
    bqml = read_image(study / "pet_10min_dicom")
    factor = suv_factor(bqml.meta["dicom"])
    assert factor * 2000 == pytest.approx(1.0, rel=1e-9)  # background 2 kBq/mL reads SUV 1
    suv = _rewrite(study / "pet_10min_dicom", tmp_path / "suv.dcm", Units="GML", SUVType="BW", scale=factor)
    back = read_image(suv)
    assert image_units(back) == ("g/mL", "DICOM Units GML")
    assert np.abs(back.data - bqml.data * factor).max() < 1e-4 * np.abs(bqml.data * factor).max()
    physical, bq, in_suv = (
        api.evaluate([suv], **ACTIVITIES)[0],
        api.evaluate([study / "pet_10min_dicom"], **ACTIVITIES)[0],
        api.evaluate([suv], phantom="nema", sphere_activity=10, background_activity=1, activity_units="g/mL")[
            0
        ],
    )
    assert physical["sphere_activity"] == pytest.approx(10.0, rel=1e-9)  # 20 kBq/mL is SUV 10
    assert np.abs(_rcs(physical) - _rcs(bq)).max() < 1e-3 and np.allclose(_rcs(in_suv), _rcs(physical))
    # a Bq/mL series judged with SUV activities converts the other way
    reverse = api.evaluate(
        [study / "pet_10min_dicom"], phantom="nema", sphere_activity=10, activity_units="g/mL"
    )[0]
    assert reverse["sphere_activity"] == pytest.approx(20_000, rel=1e-9)
    # written as NIfTI the SUV image keeps its unit, but not the weight and dose a physical activity needs
    nifti = write_image(tmp_path / "suv.nii.gz", read_image(suv))
    assert nifti_units(nib.load(nifti).header) == "g/mL"
    with pytest.raises(PairlessError, match="patient weight, injected dose"):
        api.evaluate([nifti], **ACTIVITIES)


def test_suv_times_follow_the_qiba_rules():
    from pydicom.dataset import Dataset

    drug = Dataset()
    drug.RadionuclideTotalDose, drug.RadionuclideHalfLife = "370000000", "6586.2"
    drug.RadiopharmaceuticalStartTime = "233000"  # the evening before
    tags = {
        "PatientWeight": "74",
        "DecayCorrection": "START",
        "RadiopharmaceuticalInformationSequence": [drug],
        "SeriesDate": "20240102",
        "SeriesTime": "003000.5",
        "AcquisitionDate": "20240102",
        "AcquisitionTime": "003000.5",
    }
    one_hour = 74_000 / (370e6 * 2 ** (-3600.5 / 6586.2))  # 23:30 to 00:30:00.5
    assert suv_factor(tags) == pytest.approx(one_hour, rel=1e-9)
    # a series time after the acquisition (post-processed): the acquisition time is the scan time
    assert suv_factor({**tags, "SeriesTime": "013000"}) == pytest.approx(one_hour, rel=1e-9)
    assert suv_factor({**tags, "DecayCorrection": "ADMIN"}) == pytest.approx(74_000 / 370e6)
    with pytest.raises(PairlessError, match="DecayCorrection NONE"):
        suv_factor({**tags, "DecayCorrection": "NONE"})


def test_unit_names_and_dicom_codes():
    assert unit_name("kbq/cc") == "kBq/mL" and unit_name("SUV") == "g/mL" and unit_name("BQML") == "Bq/mL"
    assert dicom_units({"Units": "BQML"}) == ("Bq/mL", "DICOM Units BQML")
    assert dicom_units({"Units": "PROPCPS"}) == ("PROPCPS", "DICOM Units PROPCPS")
    assert dicom_units({"Units": "GML", "SUVType": "LBM"})[0] == "GML (SUVType LBM)"  # not body weight
    assert dicom_units({"RescaleType": "HU"}) == ("HU", "DICOM RescaleType HU")
    assert dicom_units({"RescaleType": "US"})[0] is None
