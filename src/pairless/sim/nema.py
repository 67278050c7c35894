"""The NEMA NU 2 / IEC 61675-1 body phantom ("NEMA IQ") as a partial-volume ZYX activity and μ volume.

Geometry (mm, OpenGATE's ``contrib/phantoms/nemaiec.py``): a D-shaped interior, a semicircle of R 147
over two quarter circles of R 77 centred at x = ±70 and a flat side at y = −77; a 3 mm PMMA wall;
a cold lung insert of Ø 50 whose axis lies 35 mm above the semicircle centre; six hot spheres of
inner Ø 10/13/17/22/28/37 in one transverse plane, on a ring of R 57.2 around the lung insert,
60° apart (17 and 37 on the horizontal axis), 70 mm from the lid.  Phantom coordinates have y up;
in the image the rounded side is at the top (rows grow downwards), as PET viewers show it.

Coordinates throughout pairless's PET analysis are index millimetres: the voxel index times the voxel
size, ``(z, y, x) = (k·dz, j·dy, i·dx)``, so voxel (0, 0, 0)'s centre is the origin.  Where a volume lies
in the patient (the files' affine and DICOM positions) is :func:`pairless.sim.pet.patient_geometry`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pairless.errors import PairlessError

SPHERE_DIAMETERS_MM = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)
RING_RADIUS_MM = 57.2
LUNG_RADIUS_MM = 25.0
LUNG_ABOVE_CENTRE_MM = 35.0  # lung axis above the semicircle centre
SEMICIRCLE_R_MM = 147.0
SIDE_ARC_R_MM = 77.0
SIDE_ARC_X_MM = 70.0
WALL_MM = 3.0
LENGTH_MM = 180.0
SPHERES_FROM_LID_MM = 70.0
# Sphere angles around the lung axis (phantom frame, y up, counter-clockwise from +x), from GATE's centres:
# 10 (−28.6, 84.6) ... 37 (−57.3, 35) relative to the semicircle centre.
SPHERE_ANGLES_DEG = {10.0: 120.0, 13.0: 60.0, 17.0: 0.0, 22.0: 300.0, 28.0: 240.0, 37.0: 180.0}

# Linear attenuation at 511 keV (1/mm): water 0.096 /cm, PMMA ≈ 0.11 /cm, lung insert ≈ 0.03 /cm (notes §1).
MU_WATER = 0.0096
MU_PMMA = 0.0113
MU_LUNG = 0.0030

MCT_VOXEL_MM = (2.027, 4.073, 4.073)  # Biograph mCT: 814.566 mm FOV / 200 pixels, 2.027 mm planes


@dataclass(frozen=True)
class NemaPhantom:
    """A rendered phantom: ``activity`` (kBq/mL) and ``mu`` (1/mm) ZYX volumes with their geometry."""

    activity: np.ndarray
    mu: np.ndarray
    voxel_size: tuple[float, float, float]
    lung_center_mm: tuple[float, float, float]  # lung axis in the sphere plane, index mm (z, y, x)
    sphere_centers_mm: dict[float, tuple[float, float, float]]
    sphere_activity: float
    background_activity: float


def ring_offsets_mm(*, rotation_deg: float = 0.0, mirror: bool = False) -> dict[float, np.ndarray]:
    """In-plane (y, x) image offsets of the sphere centres from the lung axis for a phantom pose.

    ``rotation_deg`` turns the phantom about its axis (counter-clockwise as displayed); ``mirror``
    is the phantom seen from its other end (feet-first), which reverses the order of the spheres.
    """
    out = {}
    for diameter, angle in SPHERE_ANGLES_DEG.items():
        a = np.deg2rad(angle)
        x, y_up = RING_RADIUS_MM * np.cos(a), RING_RADIUS_MM * np.sin(a)
        if mirror:
            x = -x
        out[diameter] = rotate_yx(np.array([-y_up, x]), rotation_deg)
    return out


def body_offset_mm(*, rotation_deg: float = 0.0) -> np.ndarray:
    """(y, x) image offset of the semicircle centre from the lung axis for a phantom pose."""
    return rotate_yx(np.array([LUNG_ABOVE_CENTRE_MM, 0.0]), rotation_deg)


def rotate_yx(yx: np.ndarray, rotation_deg: float) -> np.ndarray:
    """Turn image (row, x) offsets by ``rotation_deg``, counter-clockwise as displayed."""
    # image rows point down, so a counter-clockwise turn as displayed is clockwise in (x, row) terms
    a = np.deg2rad(rotation_deg)
    y, x = yx
    return np.array([y * np.cos(a) - x * np.sin(a), x * np.cos(a) + y * np.sin(a)])


def inside_body(y_up: np.ndarray, x: np.ndarray, *, grow_mm: float = 0.0) -> np.ndarray:
    """Whether phantom-frame points (y up, origin at the semicircle centre) lie in the D shape grown by
    ``grow_mm``."""
    top = (y_up >= 0) & (x**2 + y_up**2 <= (SEMICIRCLE_R_MM + grow_mm) ** 2)
    ax = np.abs(x)
    bottom = (
        (y_up < 0)
        & (y_up >= -(SIDE_ARC_R_MM + grow_mm))
        & ((ax <= SIDE_ARC_X_MM) | ((ax - SIDE_ARC_X_MM) ** 2 + y_up**2 <= (SIDE_ARC_R_MM + grow_mm) ** 2))
    )
    return top | bottom


def default_lung_center_mm(shape: tuple[int, int, int], voxel_size: tuple[float, float, float]) -> tuple:
    """Lung axis near the image centre, moved so the 10 mm sphere's centre is a voxel centre.

    The phantom's bounding box is centred on the lung axis, so this centres the phantom; snapping
    the smallest sphere onto the grid gives it one voxel wholly inside (RCmax = 1 without blur).
    """
    centre = np.array([(n - 1) / 2 * v for n, v in zip(shape, voxel_size)])
    sphere10 = centre[1:] + ring_offsets_mm()[10.0]
    snapped = np.round(sphere10 / np.array(voxel_size[1:])) * np.array(voxel_size[1:])
    z = np.round(centre[0] / voxel_size[0]) * voxel_size[0]
    y, x = centre[1:] + (snapped - sphere10)
    return (float(z), float(y), float(x))


def nema_phantom(
    *,
    shape: tuple[int, int, int] = (31, 200, 200),
    voxel_size: tuple[float, float, float] = MCT_VOXEL_MM,
    lung_center_mm: tuple[float, float, float] | None = None,
    rotation_deg: float = 0.0,
    mirror: bool = False,
    sphere_activity: float = 20.0,
    background_activity: float = 2.0,
    supersample: int = 4,
) -> NemaPhantom:
    """Render the IEC body phantom on a ZYX grid with partial-volume averaging.

    Each voxel holds the mean activity (kBq/mL) and attenuation (1/mm) over ``supersample``³
    sub-voxels.  The sphere plane is at ``lung_center_mm[0]``; by default the phantom is centred
    and the 10 mm sphere sits on a voxel centre (:func:`default_lung_center_mm`).  Activities
    default to the EARL filling (spheres 20, background 2 kBq/mL, lung insert cold).
    """
    if len(shape) != 3 or min(shape) < 1:
        raise PairlessError(f"phantom shape {shape} must be three positive sizes (Z, Y, X)")
    if len(voxel_size) != 3 or min(voxel_size) <= 0:
        raise PairlessError(f"voxel size {voxel_size} must be three positive lengths in mm (Z, Y, X)")
    if not (sphere_activity >= 0 and background_activity >= 0):
        raise PairlessError("sphere and background activities must be non-negative concentrations (kBq/mL)")
    if supersample < 1:
        raise PairlessError(f"supersample must be at least 1, got {supersample}")
    voxel_size = tuple(float(v) for v in voxel_size)
    lung = np.array(
        default_lung_center_mm(shape, voxel_size) if lung_center_mm is None else lung_center_mm, float
    )
    body_yx = lung[1:] + body_offset_mm(rotation_deg=rotation_deg)

    # In-plane fractions of interior, outer shell and lung insert: z-invariant along the body.
    sub_y = _subgrid(shape[1], voxel_size[1], supersample)
    sub_x = _subgrid(shape[2], voxel_size[2], supersample)
    yy, xx = np.meshgrid(sub_y, sub_x, indexing="ij")
    py, px = _to_phantom_frame(yy - body_yx[0], xx - body_yx[1], rotation_deg)
    interior = _block_mean(inside_body(py, px).astype(np.float32), supersample)
    outer = _block_mean(inside_body(py, px, grow_mm=WALL_MM).astype(np.float32), supersample)
    lung_in = _block_mean(
        ((yy - lung[1]) ** 2 + (xx - lung[2]) ** 2 <= LUNG_RADIUS_MM**2).astype(np.float32), supersample
    )

    # Axial fraction inside the body: the lid is 70 mm on one side of the sphere plane, the bottom 110 mm on
    # the other.
    sub_z = _subgrid(shape[0], voxel_size[0], supersample)
    in_length = (sub_z >= lung[0] - (LENGTH_MM - SPHERES_FROM_LID_MM)) & (
        sub_z <= lung[0] + SPHERES_FROM_LID_MM
    )
    axial = in_length.reshape(shape[0], supersample).mean(axis=1).astype(np.float32)

    spheres = np.zeros(shape, np.float32)
    centres = {}
    for diameter, offset in ring_offsets_mm(rotation_deg=rotation_deg, mirror=mirror).items():
        centre = (lung[0], lung[1] + offset[0], lung[2] + offset[1])
        centres[diameter] = tuple(float(c) for c in centre)
        sphere_fraction(spheres, centre, diameter / 2, voxel_size, supersample=supersample)

    plane = (interior - lung_in)[None] * axial[:, None, None]
    activity = background_activity * (plane - spheres) + sphere_activity * spheres
    mu = axial[:, None, None] * (
        MU_WATER * (interior - lung_in)[None] + MU_LUNG * lung_in[None] + MU_PMMA * (outer - interior)[None]
    )
    return NemaPhantom(
        activity=np.clip(activity, 0, None).astype(np.float32),
        mu=mu.astype(np.float32),
        voxel_size=voxel_size,
        lung_center_mm=tuple(float(c) for c in lung),
        sphere_centers_mm=centres,
        sphere_activity=float(sphere_activity),
        background_activity=float(background_activity),
    )


def sphere_fraction(
    volume: np.ndarray, centre_mm, radius_mm: float, voxel_size, *, supersample: int = 4
) -> np.ndarray:
    """Add to ``volume`` (in place) each voxel's fraction inside a sphere, from ``supersample``³ sub-voxel
    points."""
    lo = [max(int(np.floor((c - radius_mm) / v - 0.5)), 0) for c, v in zip(centre_mm, voxel_size)]
    hi = [
        min(int(np.ceil((c + radius_mm) / v + 0.5)) + 1, n)
        for c, v, n in zip(centre_mm, voxel_size, volume.shape)
    ]
    if any(h <= low for low, h in zip(lo, hi)):
        return volume
    axes = [
        _subgrid(h - low, v, supersample) + low * v - c for low, h, v, c in zip(lo, hi, voxel_size, centre_mm)
    ]
    dz, dy, dx = np.meshgrid(*axes, indexing="ij", sparse=True)
    inside = (dz**2 + dy**2 + dx**2 <= radius_mm**2).astype(np.float32)
    sizes = [h - low for low, h in zip(lo, hi)]
    frac = inside.reshape(sizes[0], supersample, sizes[1], supersample, sizes[2], supersample).mean(
        axis=(1, 3, 5)
    )
    volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] += frac
    return volume


def _subgrid(n: int, voxel: float, supersample: int) -> np.ndarray:
    """Sub-voxel sample positions (mm) of ``n`` voxels: ``supersample`` evenly spaced points per voxel."""
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    return ((np.arange(n)[:, None] + offsets[None]) * voxel).ravel()


def _block_mean(a: np.ndarray, s: int) -> np.ndarray:
    return a.reshape(a.shape[0] // s, s, a.shape[1] // s, s).mean(axis=(1, 3))


def _to_phantom_frame(dy_img: np.ndarray, dx_img: np.ndarray, rotation_deg: float):
    """Image offsets (rows down) from the semicircle centre to phantom-frame (y up, x) coordinates."""
    yx = rotate_yx(np.array([dy_img, dx_img]), -rotation_deg)
    return -yx[0], yx[1]
