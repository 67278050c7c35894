import numpy as np
import pytest

from pairless.errors import PairlessError
from pairless.sim.nema import (
    SPHERE_DIAMETERS_MM,
    inside_body,
    nema_phantom,
    ring_offsets_mm,
    sphere_fraction,
)


def test_sphere_volumes_match_the_nema_spheres():
    phantom = nema_phantom(shape=(31, 120, 120), voxel_size=(2.027, 4.073, 4.073))
    voxel_ml = np.prod(phantom.voxel_size) / 1000
    for diameter, centre in phantom.sphere_centers_mm.items():
        volume = np.zeros(phantom.activity.shape, np.float32)
        sphere_fraction(volume, centre, diameter / 2, phantom.voxel_size, supersample=6)
        expected = 4 / 3 * np.pi * (diameter / 20) ** 3  # mL
        assert volume.sum() * voxel_ml == pytest.approx(expected, rel=0.01)


def test_sphere_ring_geometry_matches_gate_centres():
    offsets = ring_offsets_mm()
    # GATE (x, y up) centres relative to the semicircle centre; the lung axis is 35 mm above it
    gate = {
        10.0: (-28.6, 84.6),
        13.0: (28.6, 84.6),
        17.0: (57.3, 35.0),
        22.0: (28.6, -14.6),
        28.0: (-28.6, -14.6),
        37.0: (-57.3, 35.0),
    }
    for diameter, (x, y_up) in gate.items():
        row, col = offsets[diameter]
        assert col == pytest.approx(x, abs=0.1) and -row == pytest.approx(y_up - 35.0, abs=0.1)
    for d in SPHERE_DIAMETERS_MM:
        assert np.hypot(*offsets[d]) == pytest.approx(57.2)


def test_body_area_lung_and_activities():
    phantom = nema_phantom(
        shape=(9, 100, 100), voxel_size=(2.0, 4.0, 4.0), lung_center_mm=(8.0, 200.0, 200.0)
    )
    # one plane 40 mm from the sphere plane: background and lung only
    far = nema_phantom(shape=(1, 100, 100), voxel_size=(2.0, 4.0, 4.0), lung_center_mm=(40.0, 200.0, 200.0))
    area_cm2 = far.activity[0].sum() / 2.0 * 16 / 100
    # D-shaped interior 540.4 cm² minus the Ø 50 mm lung insert
    assert area_cm2 == pytest.approx(540.4 - np.pi * 2.5**2, rel=0.01)
    assert far.activity.max() == pytest.approx(2.0)
    assert far.activity[0, 50, 50] == 0.0  # lung insert is cold
    assert far.mu[0, 50, 50] == pytest.approx(0.0030, rel=0.01)
    assert far.mu[0, 50, 20] == pytest.approx(0.0096, rel=0.01)
    assert phantom.activity.max() == pytest.approx(20.0)  # the big spheres have voxels wholly inside


def test_inside_body_d_shape():
    assert inside_body(np.array([146.0]), np.array([0.0]))[0]
    assert not inside_body(np.array([148.0]), np.array([0.0]))[0]
    assert inside_body(np.array([-76.0]), np.array([69.0]))[0]
    assert not inside_body(np.array([-78.0]), np.array([0.0]))[0]
    assert not inside_body(np.array([-60.0]), np.array([140.0]))[0]  # outside the R77 side arc


def test_default_placement_puts_the_smallest_sphere_on_a_voxel_centre():
    phantom = nema_phantom()
    centre = np.array(phantom.sphere_centers_mm[10.0]) / np.array(phantom.voxel_size)
    assert np.allclose(centre, np.round(centre), atol=1e-6)
    index = tuple(int(round(c)) for c in centre)
    assert phantom.activity[index] == pytest.approx(20.0)


def test_rotation_and_mirror_move_spheres_rigidly():
    base = ring_offsets_mm()
    turned = ring_offsets_mm(rotation_deg=60.0)
    mirrored = ring_offsets_mm(mirror=True)
    for d in SPHERE_DIAMETERS_MM:
        assert np.hypot(*turned[d]) == pytest.approx(57.2)
        assert mirrored[d][0] == pytest.approx(base[d][0]) and mirrored[d][1] == pytest.approx(-base[d][1])
    # a 60° turn moves the 17 mm sphere (angle 0°) to where the 13 mm sphere was (60°)
    assert np.allclose(turned[17.0], base[13.0], atol=1e-9)


def test_bad_arguments_raise_pairless_error():
    with pytest.raises(PairlessError, match="voxel size"):
        nema_phantom(voxel_size=(0, 4, 4))
    with pytest.raises(PairlessError, match="shape"):
        nema_phantom(shape=(0, 10, 10))
