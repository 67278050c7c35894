"""Training sets given as folders: every image of a folder as 2D slices, or aligned pairs matched by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pairless.errors import PairlessError


def read_slices(folder: Path, name: str) -> list[np.ndarray]:
    """Every image of ``folder`` as 2D slices (axes before Y and X are split off), sorted by file name."""
    from pairless.io import read_image

    folder = Path(folder)
    if not folder.is_dir():
        raise PairlessError(f"--{name} {str(folder)!r} is not a folder; pass a folder of {name} images")
    files = [f for f in sorted(folder.iterdir()) if not f.name.startswith(".")]
    if not files:
        raise PairlessError(f"--{name} folder {str(folder)!r} holds no images; put TIFF or PNG files in it")
    slices = []
    for f in files:
        data = read_image(f).data
        slices += list(data.reshape(-1, *data.shape[-2:]))
    return slices


def read_pairs(noisy_dir: Path, clean_dir: Path) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Read aligned pairs from two folders, matched by file name without suffix (``a.tif`` ↔ ``a.png``).

    Stacks are split into 2D slices (every axis before Y and X is a batch axis).  Returns noisy
    slices, clean slices and the matched names; unmatched files are an error that names them.
    """
    from pairless.io import read_image

    def by_stem(folder: Path) -> dict[str, Path]:
        if not Path(folder).is_dir():
            raise PairlessError(f"{str(folder)!r} is not a folder; pass a folder of images")
        files = [p for p in sorted(Path(folder).iterdir()) if not p.name.startswith(".")]
        return {p.name[: -len("".join(p.suffixes))] if p.suffixes else p.name: p for p in files}

    noisy_files, clean_files = by_stem(noisy_dir), by_stem(clean_dir)
    only_noisy = sorted(set(noisy_files) - set(clean_files))
    only_clean = sorted(set(clean_files) - set(noisy_files))
    if only_noisy or only_clean:
        raise PairlessError(
            f"pairs are matched by file name, but {', '.join(only_noisy) or 'none'} (noisy) and"
            f" {', '.join(only_clean) or 'none'} (clean) have no partner; give each noisy image a clean one"
            " of the same name"
        )
    if not noisy_files:
        raise PairlessError(f"{str(noisy_dir)!r} holds no images; pass folders of paired images")
    noisy, clean = [], []
    for name in sorted(noisy_files):
        x, y = read_image(noisy_files[name]), read_image(clean_files[name])
        if x.data.shape != y.data.shape:
            raise PairlessError(
                f"{name}: noisy shape {x.data.shape} differs from clean shape {y.data.shape}; pairs must be"
                " aligned"
            )
        noisy += list(x.data.reshape(-1, *x.data.shape[-2:]).astype(np.float32))
        clean += list(y.data.reshape(-1, *y.data.shape[-2:]).astype(np.float32))
    return noisy, clean, sorted(noisy_files)
