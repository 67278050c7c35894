"""2.5D PET acquisition and ordinary-Poisson OSEM reconstruction of a phantom, slice by slice.

Forward model of the mean sinogram of one 2D plane (parallelproj's OSEM example):

    ȳ = c · a ⊙ A G x + s + r                                   (1)

with ``A`` a parallel-beam projector (a sparse matrix; its adjoint is its transpose, exactly),
``G`` the system blur (transaxial Gaussian PSF; axially, the slice thickness and the axial PSF),
``a = exp(−A μ)`` the attenuation factors, ``c`` the counts per unit activity, ``s`` scatter (a
heavily smoothed copy of the attenuated trues scaled to the scatter fraction) and ``r`` randoms
(flat).  The longest frame is Poisson(ȳ); a shorter frame taken from the start of the same
list-mode acquisition is its binomial thinning with the fraction of counts F-18 decay leaves in it.
A frame can also be split into ``k`` independent parts, as list-mode data can: each count goes to
one part with probability 1/k (multinomial thinning), so the parts are independent Poisson
acquisitions of the same object with 1/k of the frame's mean, and they sum to the frame.
Reconstruction is ordinary-Poisson OSEM with ``c``, ``a``, ``s`` and ``r`` known and no PSF model,
as a non-PSF Biograph mCT reconstruction (EARL1) does.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field
from scipy import ndimage, sparse

from pairless.config import Config
from pairless.errors import PairlessError
from pairless.io.dicom_iod import PET_IMAGE_STORAGE
from pairless.sim.nema import (
    LENGTH_MM,
    LUNG_RADIUS_MM,
    MCT_VOXEL_MM,
    SEMICIRCLE_R_MM,
    SIDE_ARC_R_MM,
    SIDE_ARC_X_MM,
    SPHERE_DIAMETERS_MM,
    NemaPhantom,
    nema_phantom,
)

HALF_LIFE_F18_MIN = 109.77
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))

# Calibration (recorded in the PET study report).  Scanned with the default phantom (61 planes, seed 0,
# OSEM 3 it × 21 subsets): transaxial PSF 6.5/8/9/10 mm × axial 5–9 mm, and 2e6–1.3e7 trues per plane.
# 6.5 mm gave 10-minute RCmax of 0.97/1.07 for the 13/17 mm spheres (EARL1 tops: 0.85/1.01); 9 mm + 7 mm
# axial puts all six RCmax and RCmean inside EARL1 (10 mm: 0.43/0.31; 37 mm: 1.07/0.85).  The count level
# then sets NRMSE(2 min vs 10 min, phantom interior, all planes): 11.9 % at 9e6, 9.9 % at 1.3e7 (paper 9.954
# %).
PSF_FWHM_MM = 9.0
AXIAL_FWHM_MM = 7.0
TRUES_PER_PLANE_10MIN = 1.3e7


class PetSimConfig(Config):
    """Scanner, acquisition and reconstruction settings; defaults: the Biograph mCT study of seed 000."""

    matrix: int = Field(200, ge=16, description="image matrix (pixels per side)")
    pixel_mm: float = Field(MCT_VOXEL_MM[1], gt=0)
    slice_mm: float = Field(MCT_VOXEL_MM[0], gt=0)
    views: int = Field(168, ge=1, description="projection angles over 180°")
    iterations: int = Field(3, ge=1)
    subsets: int = Field(21, ge=1)
    psf_fwhm_mm: float = Field(PSF_FWHM_MM, ge=0, description="transaxial system resolution (data only)")
    axial_fwhm_mm: float = Field(
        AXIAL_FWHM_MM, ge=0, description="axial resolution on top of the slice thickness"
    )
    scatter_fraction: float = Field(
        0.335, ge=0, lt=1, description="scatter / (trues + scatter), mCT NEMA NU2"
    )
    randoms_fraction: float = Field(0.10, ge=0, lt=1, description="randoms / prompts")
    trues_per_plane: float = Field(
        TRUES_PER_PLANE_10MIN, gt=0, description="mean trues per plane, longest frame"
    )
    postfilter_fwhm_mm: float = Field(0.0, ge=0, description="Gaussian post-filter of the reconstruction")


def frame_fraction(
    minutes: float, total_minutes: float, *, half_life_min: float = HALF_LIFE_F18_MIN
) -> float:
    """Share of the counts of a ``total_minutes`` acquisition that fall in its first ``minutes`` (decay
    included)."""
    if not 0 < minutes <= total_minutes:
        raise PairlessError(
            f"frame of {minutes} min must be positive and at most the acquisition's {total_minutes} min"
        )
    lam = np.log(2.0) / half_life_min
    return float(np.expm1(-lam * minutes) / np.expm1(-lam * total_minutes))


class Projector:
    """Parallel-beam projector of a square image as a sparse matrix, split into interleaved OSEM subsets.

    Each pixel inside the field-of-view circle is cut into 2×2 sub-pixels, each spread linearly over
    the two nearest radial bins: line integrals in mm.  Bins have the pixel's width and cover the
    field of view.  ``forward``/``adjoint`` take and return stacks of slices, ``(Z, Y, X)`` ⇄
    ``(Z, views, bins)``; with ``subset`` they act on that subset's views only.
    """

    def __init__(self, matrix: int, pixel_mm: float, views: int, subsets: int):
        if views % subsets:
            raise PairlessError(
                f"{views} views cannot be split into {subsets} equal subsets; pick a divisor of {views}"
            )
        self.matrix, self.pixel_mm, self.views, self.subsets = matrix, pixel_mm, views, subsets
        self.bins = matrix
        coords = (np.arange(matrix) - (matrix - 1) / 2) * pixel_mm
        yy, xx = np.meshgrid(coords, coords, indexing="ij")
        radius = matrix / 2 * pixel_mm
        self.fov = (yy**2 + xx**2) <= (radius - pixel_mm) ** 2
        self.subset_views = [np.arange(s, views, subsets) for s in range(subsets)]
        self._blocks = [self._build(v, yy[self.fov], xx[self.fov]) for v in self.subset_views]
        self._blocks_t = [b.T.tocsr() for b in self._blocks]

    def _build(self, view_ids: np.ndarray, y: np.ndarray, x: np.ndarray) -> sparse.csr_matrix:
        npix, step = y.size, self.pixel_mm
        sub = np.array([-0.25, 0.25]) * step
        rows, cols, vals = [], [], []
        for k, v in enumerate(view_ids):
            theta = np.pi * v / self.views
            t = (x[:, None, None] + sub[None, None, :]) * np.cos(theta) + (
                y[:, None, None] + sub[None, :, None]
            ) * np.sin(theta)
            u = t.reshape(npix, 4) / step + self.bins / 2 - 0.5
            base = np.floor(u.min(axis=1)).astype(np.int64)
            lower = np.floor(u).astype(np.int64)
            w_up = u - lower
            # bins base..base+3 cover every sub-pixel's two bins: accumulate into that 4-bin window
            idx = np.arange(npix)[:, None]
            slot = (idx * 4 + lower - base[:, None]).ravel()
            window = (
                np.bincount(slot, (1 - w_up).ravel(), minlength=npix * 4)
                + np.bincount(slot + 1, w_up.ravel(), minlength=npix * 4)
            ).reshape(npix, 4)
            b = base[:, None] + np.arange(4)[None]
            keep = (window > 0) & (b >= 0) & (b < self.bins)
            rows.append((k * self.bins + b)[keep])
            cols.append(np.broadcast_to(idx, keep.shape)[keep])
            vals.append(
                window[keep] * step / 4
            )  # each sub-pixel carries a quarter of the pixel's area / bin width
        shape = (len(view_ids) * self.bins, npix)
        return sparse.csr_matrix(
            (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
            shape=shape,
        )

    def _subsets(self, subset: int | None) -> list[int]:
        return list(range(self.subsets)) if subset is None else [subset]

    def forward(self, images: np.ndarray, subset: int | None = None) -> np.ndarray:
        """Project ``(Z, Y, X)`` images to ``(Z, views, bins)`` sinograms (views of ``subset`` only, if
        given)."""
        cols = np.ascontiguousarray(images[:, self.fov].T, dtype=np.float32)  # (npix, Z)
        out = np.empty(
            (len(self._subsets(subset)), len(self.subset_views[0]), self.bins, images.shape[0]), np.float32
        )
        for i, s in enumerate(self._subsets(subset)):
            out[i] = (self._blocks[s] @ cols).reshape(-1, self.bins, images.shape[0])
        sino = out.reshape(-1, self.bins, images.shape[0]).transpose(2, 0, 1)
        if subset is None:  # back to natural view order
            order = np.argsort(np.concatenate(self.subset_views))
            sino = sino[:, order]
        return np.ascontiguousarray(sino)

    def adjoint(self, sinograms: np.ndarray, subset: int | None = None) -> np.ndarray:
        """Back-project ``(Z, views, bins)`` sinograms (the subset's views, if given) to ``(Z, Y, X)``."""
        nz = sinograms.shape[0]
        if subset is None:
            sinograms = sinograms[:, np.concatenate(self.subset_views)]
        per = len(self.subset_views[0])
        acc = np.zeros((self._blocks[0].shape[1], nz), np.float32)
        for i, s in enumerate(self._subsets(subset)):
            block = sinograms[:, i * per : (i + 1) * per].reshape(nz, -1).T
            acc += self._blocks_t[s] @ np.ascontiguousarray(block, dtype=np.float32)
        images = np.zeros((nz, self.matrix, self.matrix), np.float32)
        images[:, self.fov] = acc.T
        return images


@functools.lru_cache(maxsize=2)
def projector(matrix: int, pixel_mm: float, views: int, subsets: int) -> Projector:
    """A cached :class:`Projector` (building the matrix takes a few seconds)."""
    return Projector(matrix, pixel_mm, views, subsets)


def poisson_loglik(counts: np.ndarray, mean: np.ndarray) -> float:
    """Poisson log-likelihood Σ y log ȳ − ȳ, without the constant −log y! term."""
    mean = np.maximum(mean.astype(np.float64), 1e-30)
    return float(np.sum(counts * np.log(mean) - mean))


def osem(
    counts: np.ndarray,
    *,
    proj: Projector,
    sensitivity: np.ndarray,
    additive: np.ndarray,
    iterations: int = 3,
    callback=None,
) -> np.ndarray:
    """Ordinary-Poisson OSEM for ``counts ~ Poisson(m ⊙ A x + additive)`` on ``(Z, views, bins)`` data.

    ``sensitivity`` is the multiplicative factor ``m = c · a`` per bin.  The update per subset S is

        x ← x / A_Sᵀ m_S · A_Sᵀ (m_S ⊙ y_S / (m_S ⊙ A_S x + b_S))          (2)

    ``callback(iteration, x)`` is called after each full iteration.  Returns ``(Z, Y, X)``.
    """
    nz = counts.shape[0]
    x = np.zeros((nz, proj.matrix, proj.matrix), np.float32)
    x[:, proj.fov] = 1.0
    norms = [proj.adjoint(sensitivity[:, v], subset=s) for s, v in enumerate(proj.subset_views)]
    for it in range(iterations):
        for s, v in enumerate(proj.subset_views):
            m, y, b = sensitivity[:, v], counts[:, v], additive[:, v]
            expected = m * proj.forward(x, subset=s) + b
            ratio = np.divide(m * y, expected, out=np.zeros_like(expected), where=expected > 0)
            x = np.divide(
                x * proj.adjoint(ratio, subset=s), norms[s], out=np.zeros_like(x), where=norms[s] > 0
            )
        if callback is not None:
            callback(it, x)
    return x


@dataclass
class PetStudy:
    """A simulated phantom study: truth, the reconstructed frames (kBq/mL) and the stage timings."""

    phantom: NemaPhantom
    images: dict[float, np.ndarray]  # minutes -> reconstruction (Z, Y, X)
    counts: dict[float, float]  # minutes -> total prompts
    config: PetSimConfig
    seconds: dict[str, float] = field(default_factory=dict)
    #: minutes -> reconstructions of the frame's independent parts (``splits`` > 1), same OSEM
    parts: dict[float, list[np.ndarray]] = field(default_factory=dict)

    @property
    def truth(self) -> np.ndarray:
        return self.phantom.activity

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return self.phantom.voxel_size


def simulate_pet(
    phantom: NemaPhantom | None = None,
    *,
    minutes: tuple[float, ...] = (2.0, 10.0),
    slices: int = 61,
    config: PetSimConfig | None = None,
    seed: int = 0,
    splits: int | tuple[float, ...] = 1,
) -> PetStudy:
    """Simulate one list-mode acquisition of a NEMA IQ phantom and reconstruct each frame with OSEM.

    The longest of ``minutes`` is the acquisition; each shorter frame is its first minutes, drawn
    by binomial thinning of the same counts.  ``slices`` planes (centred on the sphere plane) are
    simulated when no ``phantom`` is given.  ``splits`` > 1 also splits every frame's counts into
    that many independent parts and reconstructs each (``PetStudy.parts``): the pairs Noise2Noise
    trains on; a tuple of fractions (e.g. ``(0.8, 0.2)``) splits unequally.
    """
    config = config or PetSimConfig()
    if not minutes or min(minutes) <= 0:
        raise PairlessError(f"--minutes must be positive frame durations, got {list(minutes)}")
    if slices < 1:
        raise PairlessError(f"--slices must be at least 1, got {slices}")
    fractions = split_fractions(splits)
    rng = np.random.default_rng(seed)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if phantom is None:
        phantom = nema_phantom(
            shape=(slices, config.matrix, config.matrix),
            voxel_size=(config.slice_mm, config.pixel_mm, config.pixel_mm),
        )
    if phantom.activity.shape[1:] != (config.matrix, config.matrix):
        raise PairlessError(
            f"phantom planes {phantom.activity.shape[1:]} do not match the {config.matrix}² matrix"
        )
    seconds["phantom"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    proj = projector(config.matrix, config.pixel_mm, config.views, config.subsets)
    seconds["system matrix"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    data = acquire(phantom, proj=proj, config=config, minutes=minutes, rng=rng)
    # drawn after the frames, from the same generator: a study with splits has the same frames as one without
    parts = (
        {m: split_counts(c, fractions, rng=rng) for m, c in data.counts.items()} if len(fractions) > 1 else {}
    )
    seconds["acquisition"] = time.perf_counter() - t0

    def reconstruct(counts: np.ndarray, m: float, share: float) -> np.ndarray:
        image = osem(
            counts,
            proj=proj,
            sensitivity=share * data.sensitivity[m],
            additive=share * data.additive[m],
            iterations=config.iterations,
        )
        if config.postfilter_fwhm_mm > 0:
            sigma = config.postfilter_fwhm_mm * FWHM_TO_SIGMA
            image = ndimage.gaussian_filter(image, (0, sigma / config.pixel_mm, sigma / config.pixel_mm))
        return image

    t0 = time.perf_counter()
    images = {m: reconstruct(counts, m, 1.0) for m, counts in sorted(data.counts.items())}
    seconds["osem"] = time.perf_counter() - t0
    if parts:
        t0 = time.perf_counter()
        parts = {m: [reconstruct(c, m, f) for c, f in zip(parts[m], fractions)] for m in sorted(parts)}
        seconds[f"osem of the {len(fractions)} parts"] = time.perf_counter() - t0
    return PetStudy(
        phantom=phantom,
        images=images,
        counts={m: float(data.counts[m].sum()) for m in sorted(data.counts)},
        config=config,
        seconds=seconds,
        parts=parts,
    )


def split_counts(counts: np.ndarray, parts, *, rng: np.random.Generator) -> list[np.ndarray]:
    """Split prompts into independent frames: ``parts`` equal ones, or one per fraction of a sequence summing
    to 1.

    Each count goes to part ``k`` with probability ``fractions[k]``.  Multinomial thinning of a
    Poisson frame gives independent Poisson frames, each with its fraction of the mean (the
    list-mode split a scanner can make); they sum to ``counts`` exactly.
    """
    fractions = split_fractions(parts)
    left = counts.astype(np.int64)
    out, remaining = [], 1.0
    for f in fractions[:-1]:  # binomial chain: each part takes its share of what is left
        part = rng.binomial(left, min(f / remaining, 1.0))
        out.append(part.astype(np.float32))
        left = left - part
        remaining -= f
    out.append(left.astype(np.float32))
    return out


def split_fractions(parts) -> list[float]:
    """The fraction of the counts of each part: ``parts`` equal ones, or the given fractions (checked)."""
    if isinstance(parts, int | np.integer):
        if parts < 1:
            raise PairlessError(f"--splits must be at least 1 (2 gives the independent halves), got {parts}")
        return [1.0 / parts] * int(parts)
    fractions = [float(f) for f in parts]
    if len(fractions) < 2 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise PairlessError(
            f"split fractions {fractions} must be at least two positive shares summing to 1, e.g. 0.5 0.5"
        )
    return fractions


@dataclass
class Acquisition:
    """Prompts per frame (``(Z, views, bins)``) and the known parts of eq. (1) each frame's OSEM needs."""

    counts: dict[float, np.ndarray]
    sensitivity: dict[float, np.ndarray]  # c · a, scaled to the frame's share of the counts
    additive: dict[float, np.ndarray]  # s + r, likewise


def acquire(
    phantom: NemaPhantom,
    *,
    proj: Projector,
    config: PetSimConfig,
    minutes: tuple[float, ...],
    rng: np.random.Generator,
) -> Acquisition:
    """Draw the longest frame's prompts from eq. (1) and each shorter frame as its binomial thinning."""
    attenuation = np.exp(-proj.forward(phantom.mu))
    trues_shape = attenuation * proj.forward(system_blur(phantom.activity, phantom.voxel_size, config))
    scale = config.trues_per_plane / float(trues_shape.sum(axis=(1, 2)).mean())
    trues = scale * trues_shape
    scatter = scatter_sinogram(trues, config.scatter_fraction, bin_mm=config.pixel_mm)
    per_plane = (trues + scatter).sum(axis=(1, 2), keepdims=True)
    randoms = np.broadcast_to(
        config.randoms_fraction / (1 - config.randoms_fraction) * per_plane / (config.views * proj.bins),
        trues.shape,
    )
    total = max(minutes)
    counts = {total: rng.poisson(trues + scatter + randoms).astype(np.float32)}
    for m in sorted(set(minutes) - {total}, reverse=True):
        counts[m] = rng.binomial(counts[total].astype(np.int64), frame_fraction(m, total)).astype(np.float32)
    share = {m: frame_fraction(m, total) for m in counts}
    return Acquisition(
        counts=counts,
        sensitivity={m: (p * scale * attenuation).astype(np.float32) for m, p in share.items()},
        additive={m: (p * (scatter + randoms)).astype(np.float32) for m, p in share.items()},
    )


def system_blur(activity: np.ndarray, voxel_size, config: PetSimConfig) -> np.ndarray:
    """``G x`` of eq. (1): transaxial PSF and axial PSF over the partial-volume slices ("2.5D" emission)."""
    sz = config.axial_fwhm_mm * FWHM_TO_SIGMA / voxel_size[0]
    sxy = config.psf_fwhm_mm * FWHM_TO_SIGMA / voxel_size[1]
    out = ndimage.gaussian_filter1d(activity, sz, axis=0, mode="nearest") if sz > 0 else activity
    if sxy > 0:
        out = ndimage.gaussian_filter(out, (0, sxy, sxy), mode="constant")
    return out.astype(np.float32)


def scatter_sinogram(
    trues: np.ndarray, fraction: float, *, bin_mm: float, width_mm: float = 100.0
) -> np.ndarray:
    """Scatter as a smooth copy of the trues (Gaussian of ``width_mm`` FWHM along the bins) with the given
    fraction."""
    if fraction == 0:
        return np.zeros_like(trues)
    smooth = ndimage.gaussian_filter1d(trues, width_mm * FWHM_TO_SIGMA / bin_mm, axis=2, mode="constant")
    smooth = ndimage.gaussian_filter1d(smooth, 2.0, axis=1, mode="wrap")
    per_plane = trues.sum(axis=(1, 2), keepdims=True) * fraction / (1 - fraction)
    return (smooth * per_plane / np.maximum(smooth.sum(axis=(1, 2), keepdims=True), 1e-30)).astype(np.float32)


def write_study(study: PetStudy, out, *, dicom: bool = False) -> list:
    """Write the true activity, μ-map and each frame as NIfTI (units in the file) and ``phantom.json``.

    Every file of the study shares one patient frame (:func:`patient_geometry`): a voxel has the same
    world coordinate in the NIfTI volumes and the DICOM series.  ``dicom`` also writes each frame (and
    part) as a DICOM PET series (:func:`dicom_series`) in a folder of the same name, all in one study
    and frame of reference.
    """
    import json
    from pathlib import Path

    from pairless.io import Image, write_image
    from pairless.io.files import atomic_path

    out = Path(out)
    written = []
    _, _, affine = patient_geometry(study.truth.shape, study.voxel_size)
    if dicom:
        from pydicom.uid import generate_uid

        uids = {"StudyInstanceUID": generate_uid(), "FrameOfReferenceUID": generate_uid()}
        frames = [(f"pet_{m:g}min", m, image, 0) for m, image in study.images.items()]
        frames += [
            (f"pet_{m:g}min_part{k + 1}", m, image, k + 1)
            for m, parts in study.parts.items()
            for k, image in enumerate(parts)
        ]
        for number, (name, minutes, image, part) in enumerate(frames, start=1):
            series = dicom_series(image, study, minutes=minutes, part=part, series_number=number, uids=uids)
            written.append(write_image(out / f"{name}_dicom", series, dtype=None))
    volumes = {"truth_kBq_per_mL": (study.truth, "kBq/mL"), "mu_per_mm": (study.phantom.mu, "1/mm")}
    volumes.update({f"pet_{m:g}min_kBq_per_mL": (image, "kBq/mL") for m, image in study.images.items()})
    volumes.update(
        {
            f"pet_{m:g}min_part{k + 1}_kBq_per_mL": (image, "kBq/mL")
            for m, parts in study.parts.items()
            for k, image in enumerate(parts)
        }
    )
    written += [
        write_image(
            out / f"{name}.nii.gz",
            Image(
                np.asarray(v, np.float32),
                axes="ZYX",
                voxel_size=study.voxel_size,
                affine=affine,
                meta={"units": units},
            ),
        )
        for name, (v, units) in volumes.items()
    ]
    ph = study.phantom

    def ras(zyx_mm) -> list[float]:
        ijk = np.asarray(zyx_mm, float)[::-1] / np.asarray(ph.voxel_size)[::-1]
        return [round(float(c), 4) for c in (affine @ np.append(ijk, 1.0))[:3]]

    info = {
        "voxel_size_mm_zyx": list(ph.voxel_size),
        "sphere_activity_kBq_per_mL": ph.sphere_activity,
        "background_activity_kBq_per_mL": ph.background_activity,
        "lung_center_mm_zyx": list(ph.lung_center_mm),
        "sphere_centers_mm_zyx": {f"{d:g}": list(c) for d, c in ph.sphere_centers_mm.items()},
        "coordinates": (
            "*_mm_zyx: index mm = voxel index x voxel size (Z, Y, X), the frame of pairless's NEMA analysis;"
            " *_ras_mm: patient (world) mm, RAS+, = affine_ras @ (i, j, k, 1) with i the X index, the frame"
            " of every NIfTI file (sform/qform) and DICOM series (LPS: x and y negated) of this study"
        ),
        "affine_ras": np.round(affine, 6).tolist(),
        "lung_center_ras_mm": ras(ph.lung_center_mm),
        "sphere_centers_ras_mm": {f"{d:g}": ras(c) for d, c in ph.sphere_centers_mm.items()},
        "patient_weight_kg": background_volume_ml() / 1000.0,
        "injected_dose_Bq": injected_dose_bq(ph.background_activity),
        "prompts": {f"{m:g}min": c for m, c in study.counts.items()},
        "parts_per_frame": max((len(p) for p in study.parts.values()), default=1),
        "config": study.config.model_dump(mode="json"),
    }
    with atomic_path(out / "phantom.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2))
    return [*written, out / "phantom.json"]


# The simulated scan's clock and dose, so that a reading station can compute SUV: the frames start at
# SCAN_START, an FDG injection UPTAKE_S earlier.  In the usual phantom convention the "patient" is the
# background water (weight = its volume at 1 g/mL) and the dose at the scan start is the background activity
# times that volume, so the background reads SUVbw 1 and the spheres sphere/background activity (10 for the
# EARL filling).
SCAN_START = (2024, 1, 1, 12, 0, 0)  # fixed, so that the same seed writes the same headers (but UIDs)
UPTAKE_S = 3600.0
HALF_LIFE_F18_S = HALF_LIFE_F18_MIN * 60.0


def background_volume_ml() -> float:
    """Volume of the phantom's background compartment (mL): the D-shaped interior over the phantom's length,
    less the lung insert and the six spheres: 9325 mL."""
    # semicircle on top; below, a rectangle between two quarter circles
    d_shape = (
        np.pi * SEMICIRCLE_R_MM**2 / 2 + 2 * SIDE_ARC_X_MM * SIDE_ARC_R_MM + np.pi * SIDE_ARC_R_MM**2 / 2
    )
    lung = np.pi * LUNG_RADIUS_MM**2
    spheres = sum(np.pi / 6 * d**3 for d in SPHERE_DIAMETERS_MM)
    return float(((d_shape - lung) * LENGTH_MM - spheres) / 1000.0)


def injected_dose_bq(background_kbq_per_ml: float) -> float:
    """The FDG dose (Bq) injected UPTAKE_S before the scan that leaves ``background_kbq_per_ml`` in the
    background water at the scan start."""
    at_scan = background_kbq_per_ml * 1000.0 * background_volume_ml()
    return float(at_scan * 2.0 ** (UPTAKE_S / HALF_LIFE_F18_S))


def frame_decay(seconds: float, *, half_life_s: float = HALF_LIFE_F18_S) -> tuple[float, float]:
    """DecayFactor and FrameReferenceTime (s) of a frame of ``seconds`` decay corrected to its start.

    The frame's mean concentration times DF = λT / (1 − e^(−λT)) is the concentration at the frame start;
    the mean occurred at ln(DF)/λ into the frame (DICOM PS3.3 C.8.9.4.1.5, frame reference time).
    """
    lam = np.log(2.0) / half_life_s
    factor = float(lam * seconds / -np.expm1(-lam * seconds)) if seconds > 0 else 1.0
    return factor, float(np.log(factor) / lam)


def patient_geometry(shape, voxel_size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where a simulated ZYX volume lies in the patient: centred on the scanner origin, axial slices of a
    head-first supine patient (rows along +x, patient left; columns along +y, posterior; slices along +z).

    Returns the DICOM ImageOrientationPatient (6,), each slice's ImagePositionPatient (Z, 3) in LPS mm,
    and the same placement as a NIfTI affine (voxel (i, j, k) = (X, Y, Z) index to RAS mm).
    """
    nz, ny, nx = shape
    dz, dy, dx = voxel_size
    orientation = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    first = -0.5 * np.array([(nx - 1) * dx, (ny - 1) * dy, (nz - 1) * dz])
    positions = first + np.arange(nz)[:, None] * np.array([0.0, 0.0, dz])
    # LPS -> RAS negates x and y
    affine = np.diag([-dx, -dy, dz, 1.0])
    affine[:3, 3] = first * np.array([-1.0, -1.0, 1.0])
    return orientation, positions, affine


def dicom_series(
    image: np.ndarray,
    study: PetStudy,
    *,
    minutes: float,
    part: int = 0,
    series_number: int = 1,
    uids: dict | None = None,
):
    """One frame as a DICOM PET image series (:class:`pairless.io.Image` with its tags): what a reading
    station reads, with every attribute the PET Image IOD requires.

    Values in Bq/mL (``Units`` BQML), stored per slice as int16 with its own rescale slope; placed by
    :func:`patient_geometry`; ``ActualFrameDuration`` in ms; decay corrected to the acquisition start
    (``DecayCorrection`` START), as the reconstruction is, with the frame's DecayFactor and
    FrameReferenceTime.  Patient weight, FDG dose and injection time make SUVbw computable
    (background 1).  ``part`` > 0 names one of the frame's independent parts in the description.
    ``uids`` (``StudyInstanceUID``, ``FrameOfReferenceUID``) put several series in one study.
    """
    import datetime as dt

    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.valuerep import DSfloat

    from pairless.io import Image

    def code(value: str, scheme: str, meaning: str) -> Dataset:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
        return item

    def ds(value: float) -> DSfloat:
        return DSfloat(float(value), auto_format=True)

    orientation, positions, affine = patient_geometry(image.shape, study.voxel_size)
    start = dt.datetime(*SCAN_START)
    injection = start - dt.timedelta(seconds=UPTAKE_S)
    date, time_ = start.strftime("%Y%m%d"), start.strftime("%H%M%S")
    decay_factor, reference_s = frame_decay(minutes * 60.0)
    drug = Dataset()
    drug.Radiopharmaceutical = "Fluorodeoxyglucose"
    drug.RadiopharmaceuticalStartTime = injection.strftime("%H%M%S")
    drug.RadiopharmaceuticalStartDateTime = injection.strftime("%Y%m%d%H%M%S")
    drug.RadionuclideTotalDose = ds(injected_dose_bq(study.phantom.background_activity))  # Bq at injection
    drug.RadionuclideHalfLife = ds(HALF_LIFE_F18_S)
    # SNOMED CT codes (the SRT ones are deprecated): F-18, FDG, intravenous
    drug.RadionuclideCodeSequence = Sequence([code("77004003", "SCT", "^18^Fluorine")])
    drug.RadiopharmaceuticalCodeSequence = Sequence([code("35321007", "SCT", "Fluorodeoxyglucose F^18^")])
    drug.AdministrationRouteCodeSequence = Sequence([code("47625008", "SCT", "Intravenous route")])
    recumbent = code("102538003", "SCT", "recumbent")
    recumbent.PatientOrientationModifierCodeSequence = Sequence([code("40199007", "SCT", "supine")])
    description = f"NEMA IQ {minutes:g} min" + (f" part {part}" if part else "") + " OSEM"
    tags = {
        "SOPClassUID": PET_IMAGE_STORAGE,
        "Modality": "PT",
        "ImageType": ["ORIGINAL", "PRIMARY"],
        "PatientName": "NEMA^IQ phantom",
        "PatientID": "pairless-sim",
        "PatientBirthDate": "",
        "PatientSex": "O",
        "PatientWeight": ds(background_volume_ml() / 1000.0),
        "StudyDate": date,
        "StudyTime": time_,
        "StudyID": "1",
        "AccessionNumber": "",
        "ReferringPhysicianName": "",
        "StudyDescription": "NEMA IQ phantom (pairless simulation)",
        "SeriesDate": date,
        "SeriesTime": time_,
        "AcquisitionDate": date,
        "AcquisitionTime": time_,
        "Manufacturer": "pairless simulator",
        "SeriesDescription": description,
        "SeriesNumber": series_number,
        "Units": "BQML",
        "SeriesType": ["STATIC", "IMAGE"],
        "CountsSource": "EMISSION",
        "CorrectedImage": ["DECY", "ATTN", "SCAT", "RAN", "NORM"],
        "DecayCorrection": "START",
        "DecayFactor": ds(decay_factor),
        "CollimatorType": "NONE",
        "ActualFrameDuration": int(round(minutes * 60_000)),
        "FrameReferenceTime": ds(reference_s * 1000.0),
        "ReconstructionMethod": f"OSEM {study.config.iterations}i{study.config.subsets}s",
        "SliceThickness": ds(study.voxel_size[0]),
        "RadiopharmaceuticalInformationSequence": Sequence([drug]),
        "PatientOrientationCodeSequence": Sequence([recumbent]),
        "PatientGantryRelationshipCodeSequence": Sequence([code("102540008", "SCT", "headfirst")]),
        "ImageLaterality": "U",  # a phantom is unpaired
        "PositionReferenceIndicator": "",
        **(uids or {}),
    }
    meta = {"format": "dicom", "dicom": tags, "orientation": orientation.tolist(), "positions": positions}
    return Image(
        np.asarray(image, np.float32) * 1000.0,
        axes="ZYX",
        voxel_size=study.voxel_size,
        affine=affine,
        meta=meta,
    )
