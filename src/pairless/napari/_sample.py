"""Sample data for the napari plugin, simulated on the spot (nothing is downloaded).

- the NEMA IQ phantom of the PET seed paper, scanned for 2 and 10 minutes and reconstructed with OSEM
  (``pairless.sim.pet``), in kBq/mL with the voxel size in mm as the layers' scale;
- an electron-microscopy section (procedural cells: membranes, vesicles and mitochondria-like
  bodies, in [0, 1]) with scanning-EM charge noise (``pairless.sim.em``), and its clean version.
"""

from __future__ import annotations

import numpy as np

PET_SLICES = 21  # enough planes around the sphere plane for the largest (37 mm) sphere and its background


def pet_phantom(*, slices: int = PET_SLICES, seed: int = 0) -> list[tuple]:
    """The 2-minute and 10-minute reconstructions and the true activity, as napari layer data tuples."""
    from pairless.sim.pet import simulate_pet

    study = simulate_pet(minutes=(2.0, 10.0), slices=slices, seed=seed)
    scale = tuple(float(v) for v in study.voxel_size)
    layers = []
    for minutes in sorted(study.images, reverse=True):
        image = study.images[minutes].astype(np.float32)
        layers.append(
            (
                image,
                {
                    "name": f"PET {minutes:g} min",
                    "scale": scale,
                    "colormap": "inferno",
                    "metadata": {
                        "pairless": {
                            "kind": "pet",
                            "minutes": minutes,
                            "units": "kBq/mL",
                            "sphere_activity": _sphere_activity(study),
                            "background_activity": _background_activity(study),
                        }
                    },
                },
                "image",
            )
        )
    truth = study.truth.astype(np.float32)
    layers.append(
        (truth, {"name": "PET truth", "scale": scale, "colormap": "inferno", "visible": False}, "image")
    )
    return layers


def _sphere_activity(study) -> float:
    return float(study.phantom.sphere_activity)


def _background_activity(study) -> float:
    return float(study.phantom.background_activity)


def clean_em(shape: tuple[int, int] = (256, 256), *, rng: np.random.Generator | int | None = 0) -> np.ndarray:
    """A procedural EM section in [0, 1]: cytoplasm, dark cell membranes (Voronoi edges), vesicles and dark
    bodies."""
    from scipy import ndimage

    rng = np.random.default_rng(rng)
    h, w = shape
    seeds = rng.uniform((0, 0), (h, w), size=(max(8, h * w // 2500), 2))
    yy, xx = np.mgrid[:h, :w]
    d = np.sqrt((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2)
    d.sort(axis=-1)
    membrane = np.exp(
        -((d[..., 1] - d[..., 0]) ** 2) / (2 * 1.5**2)
    )  # thin ridges between neighbouring cells
    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape), 3)
    image = 0.62 + 0.05 * texture / texture.std() - 0.45 * membrane
    for _ in range(h * w // 4000):  # vesicles: small rings
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 5)
        ring = np.abs(np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) - r)
        image -= 0.25 * np.exp(-(ring**2) / 0.8)
    for _ in range(h * w // 12000):  # dark elongated bodies
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        a, b, t = rng.uniform(8, 18), rng.uniform(3, 6), rng.uniform(0, np.pi)
        u = (yy - cy) * np.cos(t) + (xx - cx) * np.sin(t)
        v = -(yy - cy) * np.sin(t) + (xx - cx) * np.cos(t)
        image -= 0.2 * ((u / a) ** 2 + (v / b) ** 2 < 1)
    return np.clip(ndimage.gaussian_filter(image, 0.7), 0, 1).astype(np.float32)


def em_image(*, shape: tuple[int, int] = (256, 256), seed: int = 0) -> list[tuple]:
    """A simulated EM section with charge noise, and the clean section (hidden) to evaluate against."""
    from pairless.sim.em import em_noise

    clean = clean_em(shape, rng=seed)
    noisy = em_noise(clean, kind="charge", rng=seed + 1).astype(np.float32)
    return [
        (noisy, {"name": "EM charge noise", "colormap": "gray", "contrast_limits": (0.0, 1.0)}, "image"),
        (
            clean,
            {"name": "EM clean", "colormap": "gray", "contrast_limits": (0.0, 1.0), "visible": False},
            "image",
        ),
    ]
