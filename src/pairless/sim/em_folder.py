"""EM noise on a folder of clean images (``pairless simulate em``), and reading such a folder in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pairless.errors import PairlessError
from pairless.sim.em import MODES, NOISE_TYPES, em_noise


def read_clean_folder(folder: Path) -> list[tuple[str, np.ndarray]]:
    """Every 2D image in ``folder`` (in natural name order), scaled to [0, 1] by :func:`to_unit`."""
    from pairless.io import read_image

    return [(p.name, to_unit(read_image(p).data, p)) for p in _image_files(folder)]


def _image_files(folder: Path) -> list[Path]:
    files = [p for p in Path(folder).iterdir() if not p.name.startswith(".")]
    if not files:
        raise PairlessError(f"{str(folder)!r} holds no images; pass a folder of clean 2D EM images")
    return sorted(files, key=lambda p: (len(p.name), p.name))  # 2.png before 10.png


def to_unit(data: np.ndarray, path: Path | str) -> np.ndarray:
    """Scale an image to [0, 1]: integers by their dtype's maximum, floats must already be there."""
    if data.ndim != 2:
        raise PairlessError(
            f"{path}: EM noise needs 2D images, got shape {data.shape}; split stacks into slices"
        )
    if np.issubdtype(data.dtype, np.integer):
        return (data / np.iinfo(data.dtype).max).astype(np.float32)
    data = data.astype(np.float32)
    if data.min() < 0 or data.max() > 1:
        raise PairlessError(
            f"{path}: float images must be in [0, 1] (range {data.min():.4g}..{data.max():.4g}); rescale them"
        )
    return data


def simulate_em_folder(
    clean: Path, *, kind: str, out: Path, seed: int = 0, mode: str = "structural"
) -> list[Path]:
    """Write a noisy copy of every image in ``clean`` to ``out`` (same names, same dtype) and
    ``out/em_noise.png``.

    Integer images are scaled by their dtype's maximum to [0, 1], noised and scaled back; slice
    ``i`` (in natural name order) gets the noise of ``rng((seed, i))``.  ``mode`` is
    ``structural`` or ``additive`` (noise-only images pasted on, as seed 002 did).
    """
    from pairless.io import read_image, write_image
    from pairless.io.files import atomic_path
    from pairless.sim.em import noise_figure

    if kind not in NOISE_TYPES:
        raise PairlessError(f"unknown EM noise {kind!r}; use one of {', '.join(NOISE_TYPES)}")
    if mode not in MODES:
        raise PairlessError(f"unknown EM noise mode {mode!r}; use one of {', '.join(MODES)}")
    files = _image_files(clean)
    sources = [read_image(p) for p in files]  # validate every input before writing anything
    units = [to_unit(s.data, p) for s, p in zip(sources, files)]
    written = []
    for i, (path, source, unit) in enumerate(zip(files, sources, units)):
        noisy = em_noise(unit, kind=kind, mode=mode, rng=np.random.default_rng((seed, i)))
        if np.issubdtype(source.data.dtype, np.integer):
            noisy = noisy * np.iinfo(source.data.dtype).max
        written.append(write_image(Path(out) / path.name, source.with_data(noisy), dtype=source.data.dtype))
    fig = noise_figure(
        units[0],
        charge=em_noise(units[0], kind="charge", mode=mode, rng=seed),
        film=em_noise(units[0], kind="film", mode=mode, rng=seed),
    )
    with atomic_path(Path(out) / "em_noise.png") as tmp:
        fig.savefig(tmp, dpi=100)
    return written
