"""NEMA IQ phantom analysis: find the six spheres in any image, then RCs, NEMA contrast and EARL verdicts.

Localisation works for any voxel size and phantom position (real scans are neither centred nor
aligned with the grid): the sphere plane is the hottest band of slices; in it the sphere ring (six
disks and the cold lung insert, rendered at the image's pixel size) is matched over translations
(by FFT correlation), ring rotations and the mirror pose; each sphere's centre is then refined in
3D by matching a ball of its diameter on a 1 mm grid.

Recovery coefficients (EARL accreditation specifications) are measured / true sphere concentration:

- RCmax: the hottest voxel within the sphere's radius plus one voxel of its centre;
- RCmean: the mean of the connected 50 % isocontour of the maximum, background-corrected,
  threshold = C_B + 0.5 (max − C_B), with C_B the measured background (EARL, pynemaiqpet);
- RCpeak: the highest mean of a 1 mL ball (Ø 12.4 mm, partial-volume weights) centred on a voxel
  inside the sphere.

NEMA NU 2 contrast Q_H and background variability use 2D circular ROIs of each sphere's diameter
on the sphere plane, and 12 background circles of Ø 37 mm (with concentric smaller ones) on the
sphere plane and ±10, ±20 mm, placed at least 15 mm from the phantom edge, the spheres and the lung.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy import ndimage
from scipy.signal import fftconvolve

from pairless.errors import PairlessError
from pairless.sim.nema import (
    LUNG_RADIUS_MM,
    RING_RADIUS_MM,
    SPHERE_DIAMETERS_MM,
    body_offset_mm,
    inside_body,
    ring_offsets_mm,
    rotate_yx,
    sphere_fraction,
)

# EARL recovery-coefficient bands, per sphere diameter (mm): (low, high), inclusive.  Only bands whose numbers
# were read in a source (EARL_SOURCES) are here; a metric without one gives "no band", never a verdict.
EARL: dict[str, dict[str, dict[float, tuple[float, float]]]] = {
    "earl1": {
        "rc_mean": {
            37.0: (0.76, 0.89),
            28.0: (0.72, 0.85),
            22.0: (0.63, 0.78),
            17.0: (0.57, 0.73),
            13.0: (0.44, 0.60),
            10.0: (0.27, 0.43),
        },
        "rc_max": {
            37.0: (0.95, 1.16),
            28.0: (0.91, 1.13),
            22.0: (0.83, 1.09),
            17.0: (0.73, 1.01),
            13.0: (0.59, 0.85),
            10.0: (0.34, 0.57),
        },
    },
    "earl2": {
        "rc_mean": {
            37.0: (0.85, 1.00),
            28.0: (0.82, 0.97),
            22.0: (0.80, 0.99),
            17.0: (0.76, 0.97),
            13.0: (0.63, 0.86),
            10.0: (0.39, 0.61),
        },
        "rc_max": {
            37.0: (1.05, 1.29),
            28.0: (1.01, 1.26),
            22.0: (1.01, 1.32),
            17.0: (1.00, 1.38),
            13.0: (0.85, 1.22),
            10.0: (0.52, 0.88),
        },
    },
}
_EARL1 = (
    "EARL1: EANM Research Ltd (EARL), FDG-PET/CT accreditation specifications (R. Boellaard, January 2017, "
    "earl.eanm.org)"
)
_EARL2 = (
    "EARL2 (EARL 18F standards 2; Kaalep et al., Eur J Nucl Med Mol Imaging 2018;45:1344-1361): the EARL "
    "document was not available to check; the numbers are those of pynemaiqpet 0.5.4 "
    "(nema_wb.show_WB_NEMA_recoveries, earlversion=2), which cites the EARL accreditation specifications"
)
#: where each band comes from (document, version, table), and why a metric has none
EARL_SOURCES: dict[str, dict[str, str]] = {
    "earl1": {
        "rc_mean": f"{_EARL1}, Table 1 (RC specifications for VOI-A50)",
        "rc_max": f"{_EARL1}, Table 2 (RC specifications for MAX)",
        "rc_peak": "no band: EARL1 specifies no RCpeak",
    },
    "earl2": {
        "rc_mean": f"{_EARL2} (VOI-A50)",
        "rc_max": f"{_EARL2} (MAX)",
        "rc_peak": (
            "no band: the EARL2 RCpeak limits could not be read in an EARL document or checked against "
            "another source, so they give no verdict"
        ),
    },
}
NO_BAND = "no band"
PEAK_RADIUS_MM = (3.0 / (4.0 * np.pi)) ** (1.0 / 3.0) * 10.0  # a 1 mL ball: 6.20 mm
BACKGROUND_ROI_MM = 37.0
BACKGROUND_SLICES_MM = (0.0, -10.0, 10.0, -20.0, 20.0)
EDGE_CLEARANCE_MM = 15.0


def earl_band(spec: str, metric: str, diameter_mm: float) -> tuple[float, float] | None:
    """The EARL ``spec`` ("earl1" / "earl2") band of ``metric`` ("rc_max", "rc_mean", "rc_peak") for a sphere.

    Returns ``None`` where there is no band to judge by (``EARL_SOURCES`` says why).
    """
    if spec not in EARL:
        raise PairlessError(f"unknown EARL specification {spec!r}; use one of {', '.join(EARL)}")
    if float(diameter_mm) not in SPHERE_DIAMETERS_MM:
        raise PairlessError(f"no NEMA sphere of {diameter_mm} mm; the spheres are {SPHERE_DIAMETERS_MM} mm")
    bands = EARL[spec].get(metric)
    return None if bands is None else bands[float(diameter_mm)]


def earl_verdict(value: float, spec: str, metric: str, diameter_mm: float) -> str:
    """``"pass"`` inside the band (inclusive), ``"fail"`` outside it, ``"no band"`` where there is none."""
    band = earl_band(spec, metric, diameter_mm)
    if band is None:
        return NO_BAND
    return "pass" if band[0] <= value <= band[1] else "fail"


@dataclass(frozen=True)
class NemaFit:
    """Where the phantom is: index mm (voxel index × voxel size), the ring pose and each sphere's centre."""

    lung_center_mm: tuple[float, float, float]
    rotation_deg: float
    mirror: bool
    sphere_centers_mm: dict[float, tuple[float, float, float]]


def locate_nema(image: np.ndarray, *, voxel_size: tuple[float, float, float]) -> NemaFit:
    """Find the sphere plane, the ring pose and each sphere's centre in a ZYX NEMA IQ image."""
    image, voxel_size = _check(image, voxel_size)
    vs = np.array(voxel_size)
    smooth = ndimage.gaussian_filter(image, 4.0 / vs)

    # the sphere plane: the band of slices holding the most activity above half the smoothed maximum
    excess = np.clip(smooth - 0.5 * smooth.max(), 0, None).sum(axis=(1, 2))
    z0 = int(np.argmax(excess))
    lo, hi = max(z0 - 2, 0), min(z0 + 3, len(excess))
    z_plane = float(np.sum(excess[lo:hi] * np.arange(lo, hi)) / max(excess[lo:hi].sum(), 1e-30)) * vs[0]
    half = max(int(round(5.0 / vs[0])), 0)
    slab = image[max(z0 - half, 0) : z0 + half + 1].mean(axis=0)

    yx, rotation, mirror = _match_ring(slab, vs[1:])
    offsets = ring_offsets_mm(rotation_deg=rotation, mirror=mirror)
    centres = {}
    for diameter, off in offsets.items():
        guess = np.array([z_plane, yx[0] + off[0], yx[1] + off[1]])
        centres[diameter] = tuple(float(c) for c in _refine_sphere(image, guess, diameter / 2, vs))
    ring_centre = np.mean(list(centres.values()), axis=0)  # the six centres are symmetric about the lung axis
    return NemaFit(tuple(float(c) for c in ring_centre), float(rotation), bool(mirror), centres)


def evaluate_nema(
    image: np.ndarray,
    *,
    voxel_size: tuple[float, float, float],
    sphere_activity: float,
    background_activity: float | None = None,
    fit: NemaFit | None = None,
) -> dict:
    """Recovery coefficients, NEMA contrast and background variability, and EARL verdicts of a NEMA IQ image.

    ``image`` is ZYX in any activity unit, ``voxel_size`` in mm (Z, Y, X), ``sphere_activity`` the
    true sphere concentration in the image's unit; ``background_activity`` the true background
    (for the NEMA contrast's activity ratio; the measured background is used when not given).
    ``fit`` reuses a localisation (e.g. from a less noisy image of the same scan).
    Returns a JSON-ready dict.
    """
    image, voxel_size = _check(image, voxel_size)
    if not (np.isfinite(sphere_activity) and sphere_activity > 0):
        raise PairlessError(f"--sphere-activity must be a positive concentration, got {sphere_activity}")
    if background_activity is not None and not (np.isfinite(background_activity) and background_activity > 0):
        raise PairlessError(
            f"--background-activity must be a positive concentration, got {background_activity}"
        )
    vs = np.array(voxel_size)
    fit = fit or locate_nema(image, voxel_size=voxel_size)

    rois = _background_rois(image, fit, vs)
    measured_bg = float(np.mean(rois[BACKGROUND_ROI_MM]))
    if not measured_bg > 0:
        raise PairlessError(
            "the phantom background has no positive activity; is this a NEMA IQ emission image?"
        )
    true_bg = measured_bg if background_activity is None else float(background_activity)
    ratio = sphere_activity / true_bg

    spheres = []
    for diameter in SPHERE_DIAMETERS_MM:
        centre = np.array(fit.sphere_centers_mm[diameter])
        rc_max, rc_mean, rc_peak = _recoveries(image, centre, diameter / 2, vs, measured_bg, sphere_activity)
        c_hot = _hot_roi_mean(image, centre, diameter / 2, vs)
        bg = np.array(rois[diameter])
        entry = {
            "diameter_mm": diameter,
            "rc_max": rc_max,
            "rc_mean": rc_mean,
            "rc_peak": rc_peak,
            **{
                spec: {
                    m: earl_verdict(v, spec, m, diameter)
                    for m, v in (("rc_max", rc_max), ("rc_mean", rc_mean), ("rc_peak", rc_peak))
                }
                for spec in EARL
            },
            "contrast_pct": (
                float((c_hot / bg.mean() - 1) / (ratio - 1) * 100) if ratio != 1 else float("nan")
            ),
            "background_variability_pct": (
                float(bg.std(ddof=1) / bg.mean() * 100) if bg.size > 1 else float("nan")
            ),
            "center_mm": [round(c, 3) for c in centre.tolist()],
        }
        spheres.append(entry)
    if spheres[-1]["rc_mean"] < 1.5 * measured_bg / sphere_activity:
        raise PairlessError(
            "no hot spheres found: the 37 mm sphere is not clearly hotter than the background; check that the"
            " image is a NEMA IQ phantom with hot spheres and that --sphere-activity and its units are right"
        )
    if spheres[-1]["rc_mean"] > 3.0:  # partial volume only lowers it: the activity is in another unit
        raise PairlessError(
            f"the 37 mm sphere reads {spheres[-1]['rc_mean']:.3g} times the sphere activity; the activity is "
            "not in the image's units: pass --activity-units (and --units if the file does not state them)"
        )
    return {
        "spheres": spheres,
        "background_activity": true_bg,
        "background_measured": measured_bg,
        "sphere_activity": float(sphere_activity),
        "fit": {
            "lung_center_mm": [round(c, 3) for c in fit.lung_center_mm],
            "rotation_deg": fit.rotation_deg,
            "mirror": fit.mirror,
        },
        "conventions": {
            "coordinates": (
                "index mm = voxel index x voxel size (Z, Y, X); voxel (0,0,0) centre at the origin; not the "
                "patient frame of the file (its affine / DICOM positions)"
            ),
            "rc": "measured / sphere_activity",
            "rc_max": "hottest voxel within the sphere radius + one voxel of the fitted centre",
            "rc_mean": (
                "mean of the connected 3D 50% isocontour, threshold = C_B + 0.5 (max - C_B), "
                "C_B = measured background (EARL A50, background-corrected)"
            ),
            "rc_peak": (
                f"highest mean of a 1 mL ball (diameter {2 * PEAK_RADIUS_MM:.1f} mm, partial-volume "
                "weights) centred on a voxel inside the sphere"
            ),
            "background": (
                f"12 circles of {BACKGROUND_ROI_MM:.0f} mm on slices {list(BACKGROUND_SLICES_MM)} mm "
                f"from the sphere plane (K = {len(rois[BACKGROUND_ROI_MM])} ROIs), >= "
                f"{EDGE_CLEARANCE_MM:.0f} mm from edge, spheres and lung"
            ),
            "contrast_pct": (
                "NEMA NU 2 Q_H = (C_H/C_B - 1)/(a_H/a_B - 1) x 100, 2D circle of the sphere "
                "diameter on the sphere's nearest slice; a_B = background_activity"
            ),
            "background_variability_pct": (
                "SD/mean x 100 over the K background ROIs of the sphere's diameter (ddof=1)"
            ),
            **{spec: dict(EARL_SOURCES[spec]) for spec in EARL},
        },
    }


def _check(image, voxel_size) -> tuple[np.ndarray, tuple[float, float, float]]:
    image = np.asarray(image)
    if image.ndim != 3:
        raise PairlessError(
            f"NEMA analysis needs a ZYX volume, got {image.ndim} dimensions (shape {image.shape}); "
            "pass the reconstructed volume (a single slice as shape (1, Y, X))"
        )
    if voxel_size is None or len(voxel_size) != 3 or not all(np.isfinite(v) and v > 0 for v in voxel_size):
        raise PairlessError(f"voxel size {voxel_size} must be three positive lengths in mm (Z, Y, X)")
    if not np.all(np.isfinite(image)):
        raise PairlessError("the image contains NaN or Inf values; replace them before the NEMA analysis")
    ring_extent = 2 * (RING_RADIUS_MM + max(SPHERE_DIAMETERS_MM) / 2)
    if image.shape[1] * voxel_size[1] < ring_extent or image.shape[2] * voxel_size[2] < ring_extent:
        raise PairlessError(
            f"the image covers {image.shape[1] * voxel_size[1]:.0f} x {image.shape[2] * voxel_size[2]:.0f}"
            f" mm, less than the {ring_extent:.0f} mm sphere ring; check the voxel size (mm) or pass the"
            " whole phantom"
        )
    return image.astype(np.float32, copy=False), tuple(float(v) for v in voxel_size)


def _render_ring(rotation: float, mirror: bool, pixel: np.ndarray) -> np.ndarray:
    """Matched filter of the ring in one plane: the hot disks minus the cold lung, zero-mean over its reach.

    Weighting each sphere by its area makes a pose one sphere off (60°) lose about 40 % of the overlap,
    and the zero mean makes the score blind to the uniform background.
    """
    reach = RING_RADIUS_MM + max(SPHERE_DIAMETERS_MM) / 2 + 2 * pixel.max()
    n = [2 * int(np.ceil(reach / p)) + 1 for p in pixel]
    ss = 4
    yy = ((np.arange(n[0] * ss) + 0.5) / ss - n[0] / 2) * pixel[0]
    xx = ((np.arange(n[1] * ss) + 0.5) / ss - n[1] / 2) * pixel[1]
    yy, xx = np.meshgrid(yy, xx, indexing="ij")
    template = -(yy**2 + xx**2 <= LUNG_RADIUS_MM**2).astype(np.float32)
    for diameter, (oy, ox) in ring_offsets_mm(rotation_deg=rotation, mirror=mirror).items():
        template += (yy - oy) ** 2 + (xx - ox) ** 2 <= (diameter / 2) ** 2
    support = yy**2 + xx**2 <= reach**2
    template = np.where(support, template - template[support].mean(), 0.0)
    return template.reshape(n[0], ss, n[1], ss).sum(axis=(1, 3))


def _match_ring(slab: np.ndarray, pixel: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """Best (lung centre (y, x) mm, rotation°, mirror) of the ring template over translations, by FFT
    correlation."""
    best = (-np.inf, None, 0.0, False)
    shape = None
    spectrum = None

    def score(rotation: float, mirror: bool):
        nonlocal shape, spectrum
        t = _render_ring(rotation, mirror, pixel)
        if spectrum is None:
            shape = [sfft.next_fast_len(a + b - 1) for a, b in zip(slab.shape, t.shape)]
            spectrum = sfft.rfft2(slab, shape)
        full = sfft.irfft2(spectrum * sfft.rfft2(t[::-1, ::-1], shape), shape)
        cy, cx = t.shape[0] // 2, t.shape[1] // 2
        same = full[cy : cy + slab.shape[0], cx : cx + slab.shape[1]]  # template centre at each pixel
        j, i = np.unravel_index(int(np.argmax(same)), same.shape)
        return float(same[j, i]), (j, i)

    coarse = [
        (score(rotation, mirror)[0], rotation, mirror)
        for mirror in (False, True)
        for rotation in np.arange(0.0, 360.0, 3.0)
    ]
    # poses one sphere apart (60°) score alike at a coarse angle: refine the best few, not just the best
    for _, start, mirror in sorted(coarse, reverse=True)[:4]:
        for rotation in start + np.arange(-2.5, 2.75, 0.5):
            value, where = score(rotation, mirror)
            if value > best[0]:
                best = (value, where, float(rotation) % 360.0, mirror)
    _, (j, i), rotation, mirror = best
    return np.array([j * pixel[0], i * pixel[1]]), rotation, mirror


def _ball(radius_mm: float, step: float) -> np.ndarray:
    n = int(np.ceil(radius_mm / step))
    g = np.arange(-n, n + 1) * step
    z, y, x = np.meshgrid(g, g, g, indexing="ij", sparse=True)
    return (z**2 + y**2 + x**2 <= radius_mm**2).astype(np.float32)


def _refine_sphere(image: np.ndarray, guess: np.ndarray, radius: float, vs: np.ndarray) -> np.ndarray:
    """Centre of the ball of ``radius`` with the highest mean near ``guess``, on a 1 mm grid (trilinear
    sampling)."""
    step = 1.0
    search = np.maximum(vs * 1.5, 4.0)  # the ring fit is within about a voxel
    ball = _ball(radius, step)
    n_ball = ball.shape[0] // 2
    axes = [
        np.arange(-(int(s / step) + n_ball), int(s / step) + n_ball + 1) * step + g
        for s, g in zip(search, guess)
    ]
    grid = np.meshgrid(*[a / v for a, v in zip(axes, vs)], indexing="ij")
    local = ndimage.map_coordinates(image, grid, order=1, mode="nearest")
    response = fftconvolve(local, ball[::-1, ::-1, ::-1], mode="valid")
    k = np.unravel_index(int(np.argmax(response)), response.shape)
    return np.array([axes[d][k[d] + n_ball] for d in range(3)])


def _voxel_distances(shape, centre: np.ndarray, vs: np.ndarray, reach: float):
    """Slices of the box within ``reach`` mm of ``centre`` and the voxel-centre distances inside it."""
    lo = [max(int(np.floor((c - reach) / v)), 0) for c, v in zip(centre, vs)]
    hi = [min(int(np.ceil((c + reach) / v)) + 1, n) for c, v, n in zip(centre, vs, shape)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    z, y, x = np.meshgrid(
        *[(np.arange(a, b) * v - c) for a, b, v, c in zip(lo, hi, vs, centre)], indexing="ij", sparse=True
    )
    return box, np.sqrt(z**2 + y**2 + x**2)


@functools.lru_cache(maxsize=8)
def _peak_kernel(vs: tuple[float, float, float]) -> np.ndarray:
    shape = tuple(2 * int(np.ceil(PEAK_RADIUS_MM / v)) + 1 for v in vs)
    kernel = np.zeros(shape, np.float32)
    sphere_fraction(kernel, tuple((n // 2) * v for n, v in zip(shape, vs)), PEAK_RADIUS_MM, vs, supersample=5)
    return kernel / kernel.sum()


def _recoveries(image, centre, radius, vs, background, activity) -> tuple[float, float, float]:
    box, dist = _voxel_distances(image.shape, centre, vs, radius + vs.max() + PEAK_RADIUS_MM)
    local = image[box]
    voi = dist <= radius + vs.max()
    peak_value = float(local[voi].max())
    rc_max = peak_value / activity

    threshold = background + 0.5 * (peak_value - background)
    labels, _ = ndimage.label(voi & (local >= threshold), structure=np.ones((3, 3, 3)))
    where_max = np.unravel_index(int(np.argmax(np.where(voi, local, -np.inf))), local.shape)
    rc_mean = float(local[labels == labels[where_max]].mean()) / activity

    peak_map = ndimage.correlate(local, _peak_kernel(tuple(vs)), mode="nearest")
    inside = dist <= radius
    if not inside.any():  # a sphere smaller than the voxel spacing: use the voxel nearest its centre
        inside = dist == dist.min()
    rc_peak = float(peak_map[inside].max()) / activity
    return float(rc_max), rc_mean, rc_peak


def _hot_roi_mean(image, centre, radius, vs) -> float:
    k = int(np.clip(np.round(centre[0] / vs[0]), 0, image.shape[0] - 1))
    return float(_circle_mean(image[k], centre[1:], radius, vs[1:]))


def _circle_mean(plane: np.ndarray, centre_yx, radius, pixel) -> float:
    lo = [max(int(np.floor((c - radius) / p)), 0) for c, p in zip(centre_yx, pixel)]
    hi = [min(int(np.ceil((c + radius) / p)) + 1, n) for c, p, n in zip(centre_yx, pixel, plane.shape)]
    y, x = np.meshgrid(
        *[np.arange(a, b) * p - c for a, b, p, c in zip(lo, hi, pixel, centre_yx)], indexing="ij", sparse=True
    )
    inside = y**2 + x**2 <= radius**2
    if not inside.any():
        inside = (y**2 + x**2) == (y**2 + x**2).min()
    return float(plane[lo[0] : hi[0], lo[1] : hi[1]][inside].mean())


@functools.lru_cache(maxsize=1)
def background_roi_offsets() -> np.ndarray:
    """12 background ROI centres (phantom frame, (y up, x) mm from the lung axis), NEMA NU 2 clearances.

    The candidates are all 1 mm grid points at least 15 mm (plus the ROI radius) from the phantom
    edge, every sphere and the lung insert; 12 are picked by farthest-point sampling, deterministically.
    """
    r = BACKGROUND_ROI_MM / 2
    g = np.arange(-160.0, 160.0, 1.0)
    y_up, x = np.meshgrid(g, g, indexing="ij")
    body_y = y_up + body_offset_mm()[0]  # from the lung axis to the semicircle-centre frame (y up)
    ok = inside_body(body_y, x, grow_mm=-(EDGE_CLEARANCE_MM + r))
    ok &= np.hypot(y_up, x) >= LUNG_RADIUS_MM + EDGE_CLEARANCE_MM + r
    for diameter, (oy, ox) in ring_offsets_mm().items():
        ok &= np.hypot(-y_up - oy, x - ox) >= diameter / 2 + EDGE_CLEARANCE_MM + r
    points = np.stack([y_up[ok], x[ok]], axis=1)
    chosen = [int(np.argmax(points[:, 0]))]
    dist = np.hypot(*(points - points[chosen[0]]).T)
    for _ in range(11):
        chosen.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.hypot(*(points - points[chosen[-1]]).T))
    return points[chosen]


def _background_rois(image: np.ndarray, fit: NemaFit, vs: np.ndarray) -> dict[float, list[float]]:
    """Mean of each background ROI, per ROI diameter (37 mm and each sphere's), over the available slices."""
    offsets = background_roi_offsets()
    out: dict[float, list[float]] = {d: [] for d in (*SPHERE_DIAMETERS_MM, BACKGROUND_ROI_MM)}
    for dz in BACKGROUND_SLICES_MM:
        k = int(np.round((fit.lung_center_mm[0] + dz) / vs[0]))
        if not 0 <= k < image.shape[0]:
            continue
        for y_up, x in offsets:
            oy, ox = rotate_yx(np.array([-y_up, -x if fit.mirror else x]), fit.rotation_deg)
            centre = (fit.lung_center_mm[1] + oy, fit.lung_center_mm[2] + ox)
            for diameter in out:
                out[diameter].append(_circle_mean(image[k], centre, diameter / 2, vs[1:]))
    if not out[BACKGROUND_ROI_MM]:
        raise PairlessError("the sphere plane lies outside the volume; pass the slices that hold the spheres")
    return out
