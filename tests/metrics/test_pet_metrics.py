import numpy as np
import pytest
from scipy import ndimage

from pairless.errors import PairlessError
from pairless.metrics.pet import EARL, EARL_SOURCES, earl_band, earl_verdict, evaluate_nema, locate_nema
from pairless.sim.nema import SPHERE_DIAMETERS_MM, nema_phantom


@pytest.fixture(scope="module")
def centred():
    phantom = nema_phantom(shape=(25, 200, 200))
    return phantom, evaluate_nema(
        phantom.activity, voxel_size=phantom.voxel_size, sphere_activity=20.0, background_activity=2.0
    )


def test_noise_free_unblurred_phantom_gives_rc_max_one(centred):
    phantom, result = centred
    assert [s["diameter_mm"] for s in result["spheres"]] == list(SPHERE_DIAMETERS_MM)
    for sphere in result["spheres"]:
        assert sphere["rc_max"] == pytest.approx(1.0, abs=1e-6)
        assert 0.5 < sphere["rc_mean"] <= 1.0 + 1e-6 and sphere["rc_peak"] <= 1.0 + 1e-6
        assert np.allclose(sphere["center_mm"], phantom.sphere_centers_mm[sphere["diameter_mm"]], atol=1.0)
        assert sphere["background_variability_pct"] == pytest.approx(0.0, abs=1e-6)
    assert result["background_measured"] == pytest.approx(2.0, abs=1e-6)
    # the 1 mL peak ball (with its partial-volume rim) fits wholly inside the spheres of 22 mm and more
    assert [s["rc_peak"] for s in result["spheres"][3:]] == pytest.approx([1.0] * 3, abs=1e-6)
    assert result["spheres"][-1]["earl1"] == {"rc_max": "pass", "rc_mean": "fail", "rc_peak": "no band"}


def test_localisation_on_a_shifted_rotated_mirrored_anisotropic_phantom():
    phantom = nema_phantom(
        shape=(30, 170, 180),
        voxel_size=(3.0, 3.3, 2.9),
        lung_center_mm=(47.3, 251.7, 300.2),
        rotation_deg=23.0,
        mirror=True,
    )
    fit = locate_nema(phantom.activity, voxel_size=phantom.voxel_size)
    assert fit.mirror
    assert (fit.rotation_deg - 23.0 + 180) % 360 - 180 == pytest.approx(0.0, abs=1.5)
    for diameter, centre in phantom.sphere_centers_mm.items():
        assert np.allclose(fit.sphere_centers_mm[diameter], centre, atol=1.5), diameter
    result = evaluate_nema(phantom.activity, voxel_size=phantom.voxel_size, sphere_activity=20.0, fit=fit)
    for sphere in result["spheres"]:
        # RCmax is the phantom's own hottest partial-volume voxel of that sphere
        c = np.array(phantom.sphere_centers_mm[sphere["diameter_mm"]])
        grid = np.stack(
            np.meshgrid(
                *[np.arange(n) * v for n, v in zip(phantom.activity.shape, phantom.voxel_size)], indexing="ij"
            ),
            axis=-1,
        )
        near = np.linalg.norm(grid - c, axis=-1) <= sphere["diameter_mm"] / 2 + 3.3
        assert sphere["rc_max"] == pytest.approx(phantom.activity[near].max() / 20.0, abs=1e-6)


def test_blur_lowers_recovery_most_for_the_small_spheres():
    phantom = nema_phantom(shape=(25, 200, 200))
    sigma = 8.0 / 2.355 / np.array(phantom.voxel_size)
    blurred = ndimage.gaussian_filter(phantom.activity, sigma)
    rng = np.random.default_rng(0)
    noisy = blurred + rng.normal(0, 0.1, blurred.shape).astype(np.float32)
    result = evaluate_nema(
        noisy, voxel_size=phantom.voxel_size, sphere_activity=20.0, background_activity=2.0
    )
    rc = [s["rc_mean"] for s in result["spheres"]]
    assert rc[0] < rc[2] < rc[5] < 1.0
    contrast = [s["contrast_pct"] for s in result["spheres"]]
    assert contrast[0] < contrast[5] <= 100.0
    assert result["background_measured"] == pytest.approx(2.0, rel=0.02)
    assert all(0 < s["background_variability_pct"] < 10 for s in result["spheres"])


def test_earl_lookups_and_verdicts():
    assert earl_band("earl1", "rc_max", 10) == (0.34, 0.57)
    assert earl_band("earl1", "rc_mean", 37) == (0.76, 0.89)
    assert earl_band("earl2", "rc_max", 17) == (1.00, 1.38)
    assert earl_band("earl1", "rc_peak", 22) is None
    assert earl_verdict(0.34, "earl1", "rc_max", 10) == "pass"  # bands are inclusive
    assert earl_verdict(0.339, "earl1", "rc_max", 10) == "fail"
    assert earl_verdict(0.58, "earl1", "rc_max", 10) == "fail"
    assert earl_verdict(1.0, "earl1", "rc_peak", 10) == "no band"
    for spec in EARL.values():
        for bands in spec.values():
            assert sorted(bands) == sorted(SPHERE_DIAMETERS_MM)
            assert all(lo < hi for lo, hi in bands.values())
    with pytest.raises(PairlessError, match="no NEMA sphere"):
        earl_band("earl1", "rc_max", 11)
    with pytest.raises(PairlessError, match="EARL specification"):
        earl_band("earl3", "rc_max", 10)


def test_bad_inputs_name_the_problem():
    phantom = nema_phantom(shape=(9, 200, 200))
    with pytest.raises(PairlessError, match="ZYX volume"):
        evaluate_nema(phantom.activity[4], voxel_size=(4.0, 4.0), sphere_activity=20)
    bad = phantom.activity.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(PairlessError, match="NaN"):
        evaluate_nema(bad, voxel_size=phantom.voxel_size, sphere_activity=20)
    with pytest.raises(PairlessError, match="voxel size"):
        evaluate_nema(phantom.activity, voxel_size=(1.0, 1.0), sphere_activity=20)
    with pytest.raises(PairlessError, match="sphere ring"):
        evaluate_nema(phantom.activity[:, :20, :20], voxel_size=phantom.voxel_size, sphere_activity=20)
    with pytest.raises(PairlessError, match="sphere-activity"):
        evaluate_nema(phantom.activity, voxel_size=phantom.voxel_size, sphere_activity=-1)
    with pytest.raises(PairlessError, match="not in the image's units"):  # Bq/mL values, kBq/mL activity
        evaluate_nema(phantom.activity * 1000, voxel_size=phantom.voxel_size, sphere_activity=20)
    uniform = nema_phantom(shape=(9, 200, 200), sphere_activity=2.0)
    with pytest.raises(PairlessError, match="no hot spheres"):
        evaluate_nema(uniform.activity, voxel_size=uniform.voxel_size, sphere_activity=20)


def test_every_band_names_its_source_and_an_unverified_band_gives_no_verdict(centred):
    _, result = centred
    for spec, bands in EARL.items():
        for metric in bands:
            assert "EARL" in EARL_SOURCES[spec][metric] and "no band" not in EARL_SOURCES[spec][metric]
    for table, metric in (("Table 1", "rc_mean"), ("Table 2", "rc_max")):
        assert table in EARL_SOURCES["earl1"][metric] and "2017" in EARL_SOURCES["earl1"][metric]
    # the EARL2 RCpeak limits could not be checked against an EARL document: no band, whatever the value
    assert EARL_SOURCES["earl2"]["rc_peak"].startswith("no band")
    for diameter in SPHERE_DIAMETERS_MM:
        assert earl_band("earl2", "rc_peak", diameter) is None
        assert {earl_verdict(v, "earl2", "rc_peak", diameter) for v in (0.0, 0.5, 1.0, 5.0)} == {"no band"}
    assert {s["earl2"]["rc_peak"] for s in result["spheres"]} == {"no band"}
    assert result["conventions"]["earl2"]["rc_peak"] == EARL_SOURCES["earl2"]["rc_peak"]
